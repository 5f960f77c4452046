"""Model metrics on held-out rows, with confidence intervals.

Every function here returns plain JSON-serialisable data (dicts, lists, floats, ints, str,
bool, None) because the results feed the model card, the MLflow logs and the promotion gates.

Conventions:

- A *CI* is ``{"value": float, "lo": float | None, "hi": float | None}``: a point estimate with
  a two-sided interval at ``ci_level``. ``lo``/``hi`` are None when no interval can be formed
  (for instance ``bootstrap_samples=0``); ``value`` is None only where the quantity itself is
  undefined (an O/E with no predicted risk, a slope fit that does not converge).
- Bootstrap intervals are percentile intervals over resamples of rows drawn with replacement
  from ``numpy.random.default_rng(seed)``; the same inputs and seed give the same output.
  A resample is drawn as ``rng.integers(0, n, n)`` and used through its row counts, so every
  metric is computed on exactly the resampled rows without copying them. Resamples with no
  events or no non-events are skipped (AUROC and the calibration fits are undefined there).
- Proportions (sensitivity, PPV, rates) use Wilson score intervals.

The weighted estimators and intervals are in :mod:`riskstrat.modelling.estimates`; the
promotion gates built on these results are in :mod:`riskstrat.modelling.gates`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from riskstrat.modelling.estimates import (
    CI,
    FloatArray,
    RankedScores,
    RecallShares,
    bootstrap_counts,
    dot,
    fit_calibration_intercept,
    fit_calibration_slope,
    logit,
    percentile_ci,
    rate_ci,
    share_flagged_for_recall,
    top_share_flags,
    wilson_interval,
)


def discrimination_metrics(
    y_true: npt.ArrayLike, risk: npt.ArrayLike, *, recall_target: float = 0.7
) -> dict[str, float]:
    """AUROC, AUPRC, Brier score, event rate, and the share flagged to catch ``recall_target``.

    ``share_flagged_for_70pct_recall`` answers "what share of the population must be listed,
    highest risk first, to include 70% of the people who were admitted?".
    """
    y = np.asarray(y_true, dtype=np.int8)
    p = np.asarray(risk, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError("y_true and risk must be 1-D and the same length")
    if y.min(initial=0) == y.max(initial=0):
        raise ValueError("need both outcomes among the rows to measure discrimination")
    order = np.argsort(-p, kind="stable")
    caught = np.cumsum(y[order]) / y.sum()
    flagged = int(np.searchsorted(caught, recall_target) + 1)
    return {
        "auroc": float(roc_auc_score(y, p)),
        "auprc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "event_rate": float(y.mean()),
        "mean_risk": float(p.mean()),
        "share_flagged_for_70pct_recall": flagged / len(y),
        "rows": float(len(y)),
    }


def oracle_comparison(
    y_true: npt.ArrayLike, risk: npt.ArrayLike, true_risk: npt.ArrayLike
) -> dict[str, float]:
    """The model beside the ceiling: the oracle's AUROC on the same rows and the ratio.

    ``true_risk`` is each person's true probability from the synthetic population's hidden
    state; no model can rank the realised outcomes better on average.
    """
    y = np.asarray(y_true, dtype=np.int8)
    model_auroc = float(roc_auc_score(y, np.asarray(risk, dtype=np.float64)))
    oracle_auroc = float(roc_auc_score(y, np.asarray(true_risk, dtype=np.float64)))
    return {
        "oracle_auroc": oracle_auroc,
        "auroc_ratio_to_oracle": model_auroc / oracle_auroc,
        "oracle_brier": float(brier_score_loss(y, np.asarray(true_risk, dtype=np.float64))),
        "oracle_rows": float(len(y)),
    }


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class EvaluationPlan:
    """What :func:`evaluate_predictions` measures, and how its intervals are drawn.

    Attributes:
        bootstrap_samples: resamples of rows for the bootstrap intervals (0: no intervals).
        ci_level: two-sided coverage of every interval.
        list_shares: list sizes as shares of the population (top 1%, 5%, 10% of risk).
        recall_target: the share of events a list must include, for
            ``share_flagged_for_recall``.
        net_benefit_thresholds: risk thresholds for the decision curve, each in (0, 1).
        calibration_bins: equal-count bins for the calibration table (deciles by default).
        seed: seed of ``numpy.random.default_rng`` for the bootstrap.
    """

    bootstrap_samples: int = 200
    ci_level: float = 0.95
    list_shares: tuple[float, ...] = (0.01, 0.05, 0.10)
    recall_target: float = 0.7
    net_benefit_thresholds: tuple[float, ...] = (0.01, 0.02, 0.05, 0.10, 0.20, 0.30)
    calibration_bins: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.bootstrap_samples < 0:
            raise ValueError("bootstrap_samples must be 0 or more")
        if not 0 < self.ci_level < 1:
            raise ValueError("ci_level must be between 0 and 1")
        if any(not 0 < s <= 1 for s in self.list_shares):
            raise ValueError("every list share must be in (0, 1]")
        if not 0 < self.recall_target <= 1:
            raise ValueError("recall_target must be in (0, 1]")
        if any(not 0 < t < 1 for t in self.net_benefit_thresholds):
            raise ValueError("every net benefit threshold must be in (0, 1)")
        if self.calibration_bins < 1:
            raise ValueError("calibration_bins must be 1 or more")


# --------------------------------------------------------------------------- small helpers


def validate_predictions(
    y_true: npt.ArrayLike, risk: npt.ArrayLike, *, name: str = "risk"
) -> tuple[FloatArray, FloatArray]:
    """Check and convert outcomes and risks: 1-D, same length, y in {0, 1}, risk in [0, 1].

    Returns:
        ``(y, p)`` as float64 arrays.

    Raises:
        ValueError: with a message that says which check failed.
    """
    y_raw = np.asarray(y_true)
    p_raw = np.asarray(risk)
    if y_raw.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {y_raw.shape}")
    if p_raw.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {p_raw.shape}")
    if y_raw.shape != p_raw.shape:
        raise ValueError(
            f"y_true and {name} must be the same length, got {len(y_raw)} and {len(p_raw)}"
        )
    if len(y_raw) == 0:
        raise ValueError("no rows to evaluate")
    try:
        y = y_raw.astype(np.float64)
        p = p_raw.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"y_true and {name} must be numeric: {err}") from err
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must hold only 0 and 1 (missing values are not allowed)")
    if not np.isfinite(p).all():
        raise ValueError(f"{name} must be finite (no NaN or infinity)")
    if p.min() < 0 or p.max() > 1:
        raise ValueError(f"{name} must be a probability in [0, 1]")
    return y, p


class _Prepared:
    """One risk vector prepared for fast repeated weighted metrics."""

    def __init__(self, y: FloatArray, p: FloatArray) -> None:
        self.y = y
        self.p = p
        self.ranked = RankedScores(y, p)
        self.squared_error = (p - y) ** 2

    @cached_property
    def recall(self) -> RecallShares:
        return RecallShares(self.y, self.p)

    @property
    def desc(self) -> npt.NDArray[np.intp]:
        """Rows by descending risk, ties by row order."""
        return self.recall.desc

    @property
    def y_desc(self) -> FloatArray:
        return self.recall.y_desc

    @cached_property
    def x(self) -> FloatArray:
        """The risks' log-odds, for the calibration fits."""
        return logit(self.p)

    def basic(
        self, w: FloatArray, *, total: float | None = None, observed: float | None = None
    ) -> dict[str, float]:
        """AUROC, AUPRC, Brier and O/E on the rows weighted by ``w`` (original order).

        ``total`` (the weights' sum) and ``observed`` (their events) may be passed in when
        several models are measured on the same weights: they are the same for each."""
        total = float(w.sum()) if total is None else total
        expected = dot(w, self.p)
        observed = dot(w, self.y) if observed is None else observed
        auroc, auprc = self.ranked.auroc_auprc_by_row(w)
        return {
            "auroc": auroc,
            "auprc": auprc,
            "brier": dot(w, self.squared_error) / total,
            "oe": observed / expected if expected > 0 else math.nan,
        }


#: What a bootstrap measures on every resample, for every model (``_Prepared.basic``).
_BASIC = ("auroc", "auprc", "brier", "oe")


def _bootstrap_replicates(
    y: FloatArray,
    prepared: Mapping[str, _Prepared],
    plan: EvaluationPlan,
    *,
    fitted: str | None = None,
    fits: tuple[str, ...] = ("intercept", "slope", "share"),
    starts: tuple[float, tuple[float, float]] = (0.0, (0.0, 1.0)),
) -> dict[str, dict[str, list[float]]]:
    """Every model's measures on every resample of ``plan`` (``numpy.random.default_rng(
    plan.seed)``, resamples without both outcomes skipped), in resample order.

    Each resample is drawn once and shared by all the models, so the intervals of several
    models (and of their differences) come from the same resamples, exactly as measuring the
    models one at a time with the same plan would give. The model named ``fitted`` is also
    measured by ``fits``: its calibration ``intercept`` and ``slope`` (Newton's method from
    ``starts``) and its ``share`` flagged for ``plan.recall_target``.
    """
    n = len(y)
    reps: dict[str, dict[str, list[float]]] = {name: {k: [] for k in _BASIC} for name in prepared}
    if fitted is not None:
        reps[fitted].update({k: [] for k in fits})
    a_start, cb_start = starts
    rng = np.random.default_rng(plan.seed)
    for w in bootstrap_counts(rng, n, plan.bootstrap_samples):
        total = float(w.sum())
        observed = dot(w, y)
        if not 0 < observed < total:  # AUROC and the calibration fits need both outcomes
            continue
        for name, prep in prepared.items():
            for k, v in prep.basic(w, total=total, observed=observed).items():
                reps[name][k].append(v)
        if fitted is None:
            continue
        prep, out = prepared[fitted], reps[fitted]
        if "intercept" in fits or "slope" in fits:
            drawn = np.flatnonzero(w)  # rows drawn at least once: the fits need only these
            xs, ys, ws = prep.x[drawn], y[drawn], w[drawn]
            if "intercept" in fits:
                out["intercept"].append(fit_calibration_intercept(xs, ys, ws, start=a_start))
            if "slope" in fits:
                out["slope"].append(fit_calibration_slope(xs, ys, ws, start=cb_start)[1])
        if "share" in fits:
            out["share"].append(prep.recall.share(w, plan.recall_target, n))
    return reps


# --------------------------------------------------------------------------- evaluation


def evaluate_predictions(
    y_true: npt.ArrayLike, risk: npt.ArrayLike, *, plan: EvaluationPlan = EvaluationPlan()
) -> dict[str, Any]:
    """Discrimination, calibration, classification at list sizes and net benefit, with CIs.

    Definitions:

    - **auroc**: the Mann-Whitney statistic (rank-based; ties count one half), equal to
      scikit-learn's ``roc_auc_score``. **auprc**: average precision, equal to
      ``average_precision_score``. **brier**: mean of ``(risk - y) ** 2``.
    - **O/E** = observed events / sum of predicted risks.
    - **Calibration intercept** (calibration-in-the-large): ``a`` in
      ``logit P(y=1) = a + logit(p)`` with the slope fixed at 1 (``logit(p)`` as an offset).
      **Calibration slope**: ``b`` in ``logit P(y=1) = c + b * logit(p)``. Both are
      unpenalised maximum likelihood (Newton's method), with p clipped to
      ``[1e-6, 1 - 1e-6]``. Perfect calibration gives intercept 0 and slope 1; a slope below
      1 means the risks are too extreme.
    - **bins**: ``calibration_bins`` equal-count bins by predicted risk, ascending (rows
      sorted stably by risk and split into bins whose sizes differ by at most one, so tied
      risks may straddle a boundary). The observed rate carries a Wilson interval.
    - **lists**: for each share, ``flagged = ceil(share * rows)`` people with the highest
      risk (ties broken stably by row order); ``threshold`` = the lowest flagged risk;
      sensitivity = flagged events / all events; PPV = flagged events / flagged. Both carry
      Wilson intervals.
    - **share_flagged_for_recall**: the smallest share of people, taken highest risk first
      (ties by row order), who include ``recall_target`` of the events; it equals
      ``discrimination_metrics(...)["share_flagged_for_70pct_recall"]`` at 0.7.
    - **net_benefit** at threshold ``pt``: people with risk >= pt are flagged;
      ``NB = TP/n - FP/n * pt/(1 - pt)``; ``treat_all = prevalence - (1 - prevalence) *
      pt/(1 - pt)``; ``treat_none`` = 0.

    The bootstrap (``plan.bootstrap_samples`` resamples of rows, percentile intervals at
    ``plan.ci_level``, ``numpy.random.default_rng(plan.seed)``) gives the intervals for
    auroc, auprc, brier, oe, intercept, slope and share_flagged_for_recall. Resamples with no
    events or no non-events are skipped.

    Args:
        y_true: 0/1 outcomes.
        risk: predicted probabilities in [0, 1], same length.
        plan: what to measure and how.

    Returns:
        A JSON-serialisable dict: ``rows``, ``events``, ``event_rate``, ``mean_risk``,
        ``ci_level``, ``auroc``, ``auprc``, ``brier`` (CIs), ``calibration`` (``oe``,
        ``intercept``, ``slope`` CIs and ``bins``), ``lists``, ``recall_target``,
        ``share_flagged_for_recall`` (CI) and ``net_benefit``.

    Raises:
        ValueError: on malformed inputs, or when the rows hold only one outcome.
    """
    y, p = validate_predictions(y_true, risk)
    _need_both_outcomes(y, "evaluate predictions")
    prep = _Prepared(y, p)
    fits = _PointFits.of(prep, y)
    reps = _bootstrap_replicates(y, {"model": prep}, plan, fitted="model", starts=fits.starts)
    return _evaluation(y, prep, plan, fits, reps["model"])


def evaluate_stability(
    y_true: npt.ArrayLike, risk: npt.ArrayLike, *, plan: EvaluationPlan = EvaluationPlan()
) -> dict[str, Any]:
    """The measures the card's temporal stability table reports for one month: ``rows``,
    ``events``, ``auroc``, ``oe``, ``slope`` and ``brier``, each equal to the same field of
    ``evaluate_predictions`` with the same plan (the same resamples), without measuring the
    calibration intercept, the recall share, the lists or the bins, which it does not use."""
    y, p = validate_predictions(y_true, risk)
    _need_both_outcomes(y, "evaluate predictions")
    prep = _Prepared(y, p)
    n = len(y)
    point = prep.basic(np.ones(n))
    c0, slope = fit_calibration_slope(prep.x, y)
    starts = _PointFits(intercept=0.0, c0=c0, slope=slope).starts
    reps = _bootstrap_replicates(y, {"model": prep}, plan, fitted="model", fits=("slope",),
                                 starts=starts)["model"]  # fmt: skip
    level = plan.ci_level
    return {
        "rows": n,
        "events": int(y.sum()),
        "auroc": percentile_ci(point["auroc"], reps["auroc"], level=level),
        "oe": percentile_ci(point["oe"], reps["oe"], level=level),
        "slope": percentile_ci(slope, reps["slope"], level=level),
        "brier": percentile_ci(point["brier"], reps["brier"], level=level),
    }


def _need_both_outcomes(y: FloatArray, what: str) -> None:
    events = int(y.sum())
    if events == 0 or events == len(y):
        raise ValueError(f"need both outcomes among the rows to {what}")


@dataclass(frozen=True)
class _PointFits:
    """The calibration fits on every row, which also start each resample's fits."""

    intercept: float
    c0: float
    slope: float

    @classmethod
    def of(cls, prep: _Prepared, y: FloatArray) -> _PointFits:
        c0, slope = fit_calibration_slope(prep.x, y)
        return cls(intercept=fit_calibration_intercept(prep.x, y), c0=c0, slope=slope)

    @property
    def starts(self) -> tuple[float, tuple[float, float]]:
        a_start = self.intercept if math.isfinite(self.intercept) else 0.0
        cb_start = (self.c0, self.slope) if math.isfinite(self.slope) else (0.0, 1.0)
        return a_start, cb_start


def _evaluation(
    y: FloatArray,
    prep: _Prepared,
    plan: EvaluationPlan,
    fits: _PointFits,
    reps: Mapping[str, list[float]],
) -> dict[str, Any]:
    """``evaluate_predictions``'s result from the point estimates and the replicates."""
    p = prep.p
    n = len(y)
    events = int(y.sum())
    level = plan.ci_level
    ones = np.ones(n)
    point = prep.basic(ones)
    share = share_flagged_for_recall(prep.y_desc, ones, plan.recall_target, n)

    bins = []
    for b, rows_in_bin in enumerate(
        np.array_split(prep.ranked.order, min(plan.calibration_bins, n)), start=1
    ):
        k_bin, n_bin = int(y[rows_in_bin].sum()), len(rows_in_bin)
        lo, hi = wilson_interval(k_bin, n_bin, level=level)
        bins.append(
            {
                "bin": b,
                "rows": n_bin,
                "mean_risk": float(p[rows_in_bin].mean()),
                "observed_rate": k_bin / n_bin,
                "observed_lo": lo,
                "observed_hi": hi,
            }
        )

    lists = []
    for list_share in plan.list_shares:
        flagged, threshold, n_flagged = top_share_flags(p, list_share, order=prep.desc)
        caught = int(y[flagged].sum())
        lists.append(
            {
                "share": float(list_share),
                "flagged": n_flagged,
                "threshold": threshold,
                "sensitivity": rate_ci(caught, events, level=level),
                "ppv": rate_ci(caught, n_flagged, level=level),
            }
        )

    return {
        "rows": n,
        "events": events,
        "event_rate": events / n,
        "mean_risk": float(p.mean()),
        "ci_level": float(level),
        "auroc": percentile_ci(point["auroc"], reps["auroc"], level=level),
        "auprc": percentile_ci(point["auprc"], reps["auprc"], level=level),
        "brier": percentile_ci(point["brier"], reps["brier"], level=level),
        "calibration": {
            "oe": percentile_ci(point["oe"], reps["oe"], level=level),
            "intercept": percentile_ci(fits.intercept, reps["intercept"], level=level),
            "slope": percentile_ci(fits.slope, reps["slope"], level=level),
            "bins": bins,
        },
        "lists": lists,
        "recall_target": float(plan.recall_target),
        "share_flagged_for_recall": percentile_ci(share, reps["share"], level=level),
        "net_benefit": [net_benefit(y, p, t) for t in plan.net_benefit_thresholds],
    }


def net_benefit(y: FloatArray, p: FloatArray, threshold: float) -> dict[str, float]:
    """Net benefit of flagging ``risk >= threshold``, beside treating everyone and no one.

    ``model = TP/n - FP/n * pt/(1 - pt)``; ``treat_all = prevalence - (1 - prevalence) *
    pt/(1 - pt)``; ``treat_none = 0``.
    """
    if not 0 < threshold < 1:
        raise ValueError("a net benefit threshold must be in (0, 1)")
    n = len(y)
    odds = threshold / (1 - threshold)
    flagged = p >= threshold
    tp = float(y[flagged].sum())
    fp = float(flagged.sum()) - tp
    prevalence = float(y.mean())
    return {
        "threshold": float(threshold),
        "model": tp / n - fp / n * odds,
        "treat_all": prevalence - (1 - prevalence) * odds,
        "treat_none": 0.0,
    }


def compare_predictions(
    y_true: npt.ArrayLike,
    risks: Mapping[str, npt.ArrayLike],
    *,
    reference: str,
    plan: EvaluationPlan = EvaluationPlan(),
) -> list[dict[str, Any]]:
    """Several risk scores on the same rows, each beside a reference, with paired intervals.

    Every model is measured on the *same* bootstrap resamples (the resamples that
    :func:`evaluate_predictions` draws with the same plan), so ``auroc_difference`` =
    AUROC(reference) - AUROC(name) has a paired interval: the shared noise of the rows
    cancels, and the interval is much narrower than one built from two separate intervals.
    The model card uses it for "not worse than logistic regression by more than 0.005 AUROC".

    Args:
        y_true: 0/1 outcomes.
        risks: name -> predicted probabilities on the same rows (in report order).
        reference: the name of the model the others are compared against.
        plan: bootstrap size, CI level and seed (other fields are not used).

    Returns:
        For each name in order: ``{"name", "auroc", "auprc", "brier", "oe",
        "auroc_difference"}`` (CIs); the reference's own difference is exactly 0.

    Raises:
        ValueError: on malformed inputs, an unknown reference, or only one outcome.
    """
    y, prepared = _prepare_all(y_true, risks, reference)
    _need_both_outcomes(y, "compare predictions")
    reps = _bootstrap_replicates(y, prepared, plan)
    return _comparison(prepared, reps, reference=reference, plan=plan)


def _prepare_all(
    y_true: npt.ArrayLike, risks: Mapping[str, npt.ArrayLike], reference: str
) -> tuple[FloatArray, dict[str, _Prepared]]:
    if not risks:
        raise ValueError("no risk scores to compare")
    if reference not in risks:
        raise ValueError(f"reference {reference!r} is not among the risks: {list(risks)}")
    prepared: dict[str, _Prepared] = {}
    y: FloatArray | None = None
    for name, r in risks.items():
        y_checked, p = validate_predictions(y_true, r, name=f"risk {name!r}")
        y = y_checked
        prepared[name] = _Prepared(y_checked, p)
    assert y is not None
    return y, prepared


def _comparison(
    prepared: Mapping[str, _Prepared],
    reps: Mapping[str, Mapping[str, list[float]]],
    *,
    reference: str,
    plan: EvaluationPlan,
) -> list[dict[str, Any]]:
    """``compare_predictions``'s rows from the point estimates and the replicates."""
    level = plan.ci_level
    ones = np.ones(len(prepared[reference].y))
    points = {name: prep.basic(ones) for name, prep in prepared.items()}
    ref_auroc = np.asarray(reps[reference]["auroc"])
    out = []
    for name in prepared:
        if name == reference:
            diff: CI = {"value": 0.0, "lo": 0.0, "hi": 0.0}
        else:
            diff = percentile_ci(
                points[reference]["auroc"] - points[name]["auroc"],
                ref_auroc - np.asarray(reps[name]["auroc"]),
                level=level,
            )
        row: dict[str, Any] = {"name": name}
        for k in _BASIC:
            row[k] = percentile_ci(points[name][k], reps[name][k], level=level)
        row["auroc_difference"] = diff
        out.append(row)
    return out
