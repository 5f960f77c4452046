"""Subgroup fairness audit (fairlearn underneath) and the fairness gates.

The audit measures, for every group of every audited attribute, how well the model ranks
(AUROC), how well its risks add up (observed/expected), and what the top-of-list threshold
does to the group (selection rate, false positive and negative rates, false omission and
false discovery rates). One threshold applies to everyone, as it would on a PCN list. Every
group is reported, including "Not stated", "Not known" and "U"; groups too small to estimate
are reported as such, with their counts, and are not gated.

Everything returned is plain JSON-serialisable data, and every estimate carries an interval:
Wilson intervals for the rates, and a bootstrap within each group for AUROC and O/E (the
conventions of :mod:`riskstrat.modelling.evaluation`).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    false_negative_rate,
    false_positive_rate,
    selection_rate,
)

from riskstrat.modelling.estimates import (
    CI,
    FloatArray,
    RankedScores,
    bootstrap_counts,
    percentile_ci,
    rate_ci,
    top_share_flags,
)
from riskstrat.modelling.evaluation import validate_predictions
from riskstrat.modelling.gates import GateResult, range_gate

#: Labels for a value that was not recorded; they sort after the real groups, in this order.
MISSING_LABELS = ("Not stated", "Not known", "U")
#: The label given to an empty cell in an attribute column.
EMPTY_LABEL = "Not known"


@dataclass(frozen=True)
class FairnessPlan:
    """What :func:`fairness_audit` measures, and when a group is large enough to estimate.

    Attributes:
        attributes: the columns to audit, in report order.
        list_share: the share of the population on the list (top 5% of risk by default);
            its lowest risk is the one threshold applied to every group.
        min_group_rows: a group needs at least this many rows to be estimable...
        min_group_events: ...and at least this many events and this many non-events.
        bootstrap_samples: resamples within each group for the AUROC and O/E intervals.
        ci_level: two-sided coverage of every interval.
        seed: seed of ``numpy.random.default_rng`` for the bootstrap.
    """

    attributes: tuple[str, ...] = ("sex", "age_band", "imd_quintile", "ethnic_group")
    list_share: float = 0.05
    min_group_rows: int = 100
    min_group_events: int = 20
    bootstrap_samples: int = 200
    ci_level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.list_share <= 1:
            raise ValueError("list_share must be in (0, 1]")
        if self.min_group_rows < 0 or self.min_group_events < 0:
            raise ValueError("min_group_rows and min_group_events must be 0 or more")
        if self.bootstrap_samples < 0:
            raise ValueError("bootstrap_samples must be 0 or more")
        if not 0 < self.ci_level < 1:
            raise ValueError("ci_level must be between 0 and 1")
        if len(set(self.attributes)) != len(self.attributes):
            raise ValueError("attributes must not repeat")


@dataclass(frozen=True)
class FairnessGates:
    """Fairness gate thresholds (they live in the model spec).

    Attributes:
        oe_range: every estimable group's observed/expected must lie in this range.
        max_auroc_gap: no estimable group of ``auroc_gap_attributes`` may have an AUROC more
            than this below the overall AUROC.
        auroc_gap_attributes: the attributes gated on AUROC. Age bands are reported but not
            gated: discrimination within a band of a strong predictor is naturally lower.
        rule: "ci" fails a gate only when the whole interval is on the wrong side (evidence,
            not noise); "point" judges the point estimate.
    """

    oe_range: tuple[float, float] = (0.8, 1.25)
    max_auroc_gap: float = 0.05
    auroc_gap_attributes: tuple[str, ...] = ("sex", "imd_quintile", "ethnic_group")
    rule: Literal["ci", "point"] = "ci"

    def __post_init__(self) -> None:
        if self.rule not in ("ci", "point"):
            raise ValueError(f"rule must be 'ci' or 'point', got {self.rule!r}")
        if not self.oe_range[0] < self.oe_range[1]:
            raise ValueError("oe_range must be (low, high) with low < high")
        if self.max_auroc_gap < 0:
            raise ValueError("max_auroc_gap must be 0 or more")


# --------------------------------------------------------------------------- labels and order


def _label(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return EMPTY_LABEL
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))  # an IMD quintile read as 3.0 is the group "3"
    return str(value)


def group_labels(column: pd.Series) -> npt.NDArray[np.object_]:
    """The group label of each row as a string; empty cells become "Not known"."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    labels = np.array([_label(v) for v in uniques] + [EMPTY_LABEL], dtype=object)
    return labels[codes]  # code -1 (empty) picks the last label


_LEADING_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?)")


def group_sort_key(label: str) -> tuple[int, int, float, str]:
    """A natural order for groups: numbers by value ("0-17" < "18-44" < "85+"; IMD 1..5),
    then names alphabetically, then "Not stated", "Not known" and "U" last."""
    if label in MISSING_LABELS:
        return (1, MISSING_LABELS.index(label), 0.0, label)
    number = _LEADING_NUMBER.match(label)
    if number:
        return (0, 0, float(number.group(1)), label)
    return (0, 1, 0.0, label.casefold())


# --------------------------------------------------------------------------- per-group metrics


def _weighted_counts(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, sample_weight: npt.ArrayLike
) -> tuple[int, int, int, int]:
    y = np.asarray(y_true) == 1
    f = np.asarray(y_pred) == 1
    w = np.asarray(sample_weight, dtype=np.float64)
    tp, fp, fn, tn = (float(w[m].sum()) for m in (y & f, ~y & f, y & ~f, ~y & ~f))
    return round(tp), round(fp), round(fn), round(tn)


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def _false_omission_rate(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, *, sample_weight: npt.ArrayLike
) -> float:
    _, _, fn, tn = _weighted_counts(y_true, y_pred, sample_weight)
    return _ratio(fn, fn + tn)


def _false_discovery_rate(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, *, sample_weight: npt.ArrayLike
) -> float:
    tp, fp, _, _ = _weighted_counts(y_true, y_pred, sample_weight)
    return _ratio(fp, fp + tp)


def _count_metric(i: int) -> Callable[..., float]:
    def metric(
        y_true: npt.ArrayLike, y_pred: npt.ArrayLike, *, sample_weight: npt.ArrayLike
    ) -> float:
        return float(_weighted_counts(y_true, y_pred, sample_weight)[i])

    return metric


def _expected(y_true: npt.ArrayLike, y_pred: npt.ArrayLike, *, risk_sum: npt.ArrayLike) -> float:
    return float(np.asarray(risk_sum, dtype=np.float64).sum())


_METRICS: dict[str, Callable[..., float]] = {
    "tp": _count_metric(0),
    "fp": _count_metric(1),
    "fn": _count_metric(2),
    "tn": _count_metric(3),
    "selection_rate": selection_rate,
    "fpr": partial(false_positive_rate, pos_label=1),
    "fnr": partial(false_negative_rate, pos_label=1),
    "false_omission_rate": _false_omission_rate,
    "false_discovery_rate": _false_discovery_rate,
    "expected": _expected,
}


def _metric_frame(
    y: FloatArray, flagged: npt.NDArray[np.bool_], risk: FloatArray, groups: pd.Series
) -> MetricFrame:
    """The per-group confusion counts and rates at the list threshold, computed by fairlearn.

    fairlearn 0.15's MetricFrame passes every argument of every metric through ``np.stack``
    one value at a time (about 2 us per value), so on 80,000 rows and four attributes a
    row-level MetricFrame takes tens of seconds. These metrics depend on the rows only
    through the cells (group, outcome, flagged), so fairlearn is given one row per cell with
    its row count as ``sample_weight`` and its summed risk: the results are the same.
    """
    cells = (
        pd.DataFrame(
            {"group": groups.to_numpy(), "y": y.astype(np.int64), "flagged": flagged, "risk": risk}
        )
        .groupby(["group", "y", "flagged"], sort=False)
        .agg(rows=("risk", "size"), risk_sum=("risk", "sum"))
        .reset_index()
    )
    weights = {"sample_weight": cells["rows"].to_numpy(dtype=np.float64)}
    params: dict[str, dict[str, Any]] = {name: weights for name in _METRICS}
    params["expected"] = {"risk_sum": cells["risk_sum"].to_numpy()}
    with warnings.catch_warnings():
        # one-class groups make scikit-learn warn; their rates are set to None below
        warnings.simplefilter("ignore")
        return MetricFrame(
            metrics=_METRICS,
            y_true=cells["y"].to_numpy(),
            y_pred=cells["flagged"].to_numpy().astype(np.int64),
            sensitive_features=pd.Series(cells["group"].to_numpy(), name=groups.name),
            sample_params=params,
        )


def _rate(value: float, successes: int, trials: int, level: float) -> CI | None:
    ci = rate_ci(successes, trials, level=level)
    if ci is not None:
        ci["value"] = float(value)  # fairlearn's value; the Wilson interval from the counts
    return ci


def _summarise(
    values: Mapping[str, Any],
    y: FloatArray,
    risk: FloatArray,
    *,
    rng: np.random.Generator,
    plan: FairnessPlan,
) -> dict[str, Any]:
    """One group's (or the population's) metrics with intervals, as plain data."""
    level = plan.ci_level
    tp, fp, fn, tn = (int(values[k]) for k in ("tp", "fp", "fn", "tn"))
    rows, events = tp + fp + fn + tn, tp + fn
    expected = float(values["expected"])

    auroc_reps: list[float] = []
    oe_reps: list[float] = []
    ranked = RankedScores(y, risk) if 0 < events < rows else None
    for w in bootstrap_counts(rng, rows, plan.bootstrap_samples):
        boot_events = float(np.einsum("i,i->", w, y))
        if boot_events == 0:
            continue  # no events: skipped, as in every bootstrap here
        boot_expected = float(np.einsum("i,i->", w, risk))
        oe_reps.append(boot_events / boot_expected if boot_expected > 0 else math.nan)
        if ranked is not None:
            auroc_reps.append(ranked.auroc_auprc_by_row(w)[0])

    auroc_value = ranked.auroc(np.ones(rows)) if ranked else None
    auroc = percentile_ci(auroc_value, auroc_reps, level=level) if ranked else None
    oe = percentile_ci(events / expected, oe_reps, level=level) if expected > 0 else None
    return {
        "rows": rows,
        "events": events,
        "auroc": auroc,
        "oe": oe,
        "selection_rate": _rate(values["selection_rate"], tp + fp, rows, level),
        "fpr": _rate(values["fpr"], fp, fp + tn, level),
        "fnr": _rate(values["fnr"], fn, fn + tp, level),
        "false_omission_rate": _rate(values["false_omission_rate"], fn, fn + tn, level),
        "false_discovery_rate": _rate(values["false_discovery_rate"], fp, fp + tp, level),
        "mean_risk": float(risk.mean()),
        "event_rate": events / rows,
    }


def _estimability(rows: int, events: int, plan: FairnessPlan) -> tuple[bool, str]:
    non_events = rows - events
    if (
        rows >= plan.min_group_rows
        and events >= plan.min_group_events
        and non_events >= plan.min_group_events
    ):
        return True, ""
    counts = f"{rows} rows, {events} events"
    if non_events < plan.min_group_events:
        counts += f", {non_events} non-events"
    needs = f"needs {plan.min_group_rows} rows and {plan.min_group_events} of each outcome"
    return False, f"too small to estimate: {counts} ({needs})"


# --------------------------------------------------------------------------- the audit


def fairness_audit(
    frame: pd.DataFrame,
    *,
    y_col: str = "label",
    risk_col: str = "risk",
    plan: FairnessPlan = FairnessPlan(),
) -> dict[str, Any]:
    """Subgroup metrics at the top-of-list threshold, with group sizes and intervals.

    **The flagged set** is the overall top ``plan.list_share`` list, one threshold for
    everyone as on a PCN list: the ``ceil(share * rows)`` highest risks, ties broken stably by
    row order; ``threshold`` is the lowest flagged risk.

    **Metrics** (per group and overall): selection rate = flagged share; FPR = FP / (FP +
    TN); FNR = FN / (FN + TP); false omission rate = FN / (FN + TN); false discovery rate =
    FP / (FP + TP); O/E = observed events / sum of predicted risks; AUROC within the group
    (rank-based, as :func:`riskstrat.modelling.evaluation.evaluate_predictions`); mean risk and
    event rate. The confusion counts, the rates and the summed risks come from fairlearn's
    ``MetricFrame`` with the attribute as ``sensitive_features`` (given one row per group,
    outcome and flag cell, weighted by its row count: see ``_metric_frame``). Rates carry
    Wilson intervals and are None when their denominator is 0. AUROC and O/E carry
    percentile bootstrap intervals from resamples within the group (resamples with no events
    are skipped); AUROC is None when the group lacks either outcome, O/E is None when the
    group's predicted risks sum to 0.

    **Groups.** Every value present in each attribute column is a group, including "Not
    stated", "Not known" and "U" (an empty cell is "Not known"); labels are strings (a
    quintile stored as 3.0 is "3"). A group is ``estimable`` when it has at least
    ``min_group_rows`` rows and ``min_group_events`` events and as many non-events; other
    groups are still reported, with their counts, metrics and a ``reason``, but are not gated.
    Attributes come in plan order; groups in a natural order (age bands by age, IMD quintiles
    1..5, other attributes alphabetically; "Not stated", "Not known" and "U" last).

    Args:
        frame: one row per person, with the outcome, the risk and the attribute columns.
        y_col: the 0/1 outcome column.
        risk_col: the predicted probability column.
        plan: attributes, list share, estimability thresholds and bootstrap settings.

    Returns:
        ``{"list_share", "threshold", "ci_level", "overall": {...}, "groups": [{"attribute",
        "group", "rows", "events", "estimable", "reason", "auroc", "oe", "selection_rate",
        "fpr", "fnr", "false_omission_rate", "false_discovery_rate", "mean_risk",
        "event_rate"}, ...]}``, all plain JSON-serialisable data.

    Raises:
        ValueError: on a missing column, malformed outcomes or risks, or only one outcome.
    """
    missing = [c for c in (y_col, risk_col, *plan.attributes) if c not in frame.columns]
    if missing:
        raise ValueError(f"the frame has no column(s) {missing}")
    y, risk = validate_predictions(
        frame[y_col].to_numpy(), frame[risk_col].to_numpy(), name=risk_col
    )
    n = len(y)
    if y.sum() == 0 or y.sum() == n:
        raise ValueError("need both outcomes among the rows to audit a model")
    flagged, threshold, _ = top_share_flags(risk, plan.list_share)
    rng = np.random.default_rng(plan.seed)

    frames = {
        attribute: _metric_frame(
            y, flagged, risk, pd.Series(group_labels(frame[attribute]), name=attribute)
        )
        for attribute in plan.attributes
    }
    if frames:  # every MetricFrame carries the population's values too
        overall_values = next(iter(frames.values())).overall
    else:
        everyone = pd.Series(np.full(n, "overall", dtype=object), name="overall")
        overall_values = _metric_frame(y, flagged, risk, everyone).overall
    overall = _summarise(overall_values, y, risk, rng=rng, plan=plan)

    groups: list[dict[str, Any]] = []
    for attribute, mf in frames.items():
        labels = group_labels(frame[attribute])
        by_group = mf.by_group
        for group in sorted(by_group.index, key=group_sort_key):
            rows_in = np.flatnonzero(labels == group)
            summary = _summarise(by_group.loc[group], y[rows_in], risk[rows_in], rng=rng, plan=plan)
            estimable, reason = _estimability(summary["rows"], summary["events"], plan)
            groups.append(
                {
                    "attribute": attribute,
                    "group": str(group),
                    "rows": summary.pop("rows"),
                    "events": summary.pop("events"),
                    "estimable": estimable,
                    "reason": reason,
                    **summary,
                }
            )
    return {
        "list_share": float(plan.list_share),
        "threshold": threshold,
        "ci_level": float(plan.ci_level),
        "overall": overall,
        "groups": groups,
    }


# --------------------------------------------------------------------------- gates


def _auroc_gap_gate(
    subject: str,
    ci: Mapping[str, Any] | None,
    overall: float,
    max_gap: float,
    *,
    rule: Literal["ci", "point"],
    level: float,
) -> GateResult:
    name = "subgroup AUROC gap"
    if ci is None or ci.get("value") is None:
        return GateResult(name, subject, False, "AUROC could not be estimated")
    floor = overall - max_gap
    value = float(ci["value"])
    text = f"AUROC {value:.3f}"
    hi = ci.get("hi")
    if ci.get("lo") is not None and hi is not None:
        text += f" ({level * 100:g}% CI {ci['lo']:.3f}-{hi:.3f})"
    against = f"the floor {floor:.3f} (overall {overall:.3f} - {max_gap:g})"
    if rule == "point" or hi is None:
        if value >= floor:
            return GateResult(name, subject, True, f"{text} is at or above {against}")
        return GateResult(name, subject, False, f"{text} is below {against}")
    if float(hi) < floor:
        return GateResult(
            name, subject, False, f"{text} is below {against}: the whole interval lies below"
        )
    if value >= floor:
        return GateResult(name, subject, True, f"{text} is at or above {against}")
    return GateResult(
        name,
        subject,
        True,
        f"{text} is below {against} but the interval reaches it, so this is not evidence of a gap",
    )


def fairness_gate_results(
    audit: Mapping[str, Any],
    gates: FairnessGates = FairnessGates(),
) -> list[GateResult]:
    """The fairness gates on a :func:`fairness_audit` result: one GateResult per gate checked.

    - **subgroup O/E**: every estimable group of every attribute must have O/E within
      ``gates.oe_range``.
    - **subgroup AUROC gap**: every estimable group of ``gates.auroc_gap_attributes`` must
      have an AUROC no more than ``gates.max_auroc_gap`` below the overall AUROC (point
      estimate). Age bands are reported, not gated on AUROC: discrimination within a band of
      a strong predictor is naturally lower.

    Under ``rule="ci"`` a gate fails only on evidence: the whole O/E interval outside the
    range, or the group's AUROC upper bound below the floor. Small groups make point-estimate
    gates fail by chance. Under ``rule="point"`` the point estimates are judged. Groups that
    are not estimable are not gated.

    Args:
        audit: the dict from :func:`fairness_audit` (or the same read back from JSON).
        gates: thresholds and rule.

    Returns:
        GateResults in audit order, passed or not; subjects read like "ethnic_group=Black".
    """
    level = float(audit.get("ci_level", 0.95))
    overall_auroc = audit["overall"]["auroc"]
    results: list[GateResult] = []
    for g in audit["groups"]:
        if not g["estimable"]:
            continue
        subject = f"{g['attribute']}={g['group']}"
        results.append(
            range_gate(
                "subgroup O/E",
                subject,
                "O/E",
                g["oe"],
                gates.oe_range,
                rule=gates.rule,
                level=level,
            )
        )
        if g["attribute"] in gates.auroc_gap_attributes:
            if overall_auroc is None or overall_auroc.get("value") is None:
                results.append(
                    GateResult(
                        "subgroup AUROC gap", subject, False, "overall AUROC is not available"
                    )
                )
                continue
            results.append(
                _auroc_gap_gate(
                    subject,
                    g["auroc"],
                    float(overall_auroc["value"]),
                    gates.max_auroc_gap,
                    rule=gates.rule,
                    level=level,
                )
            )
    return results


# --------------------------------------------------------------------------- comparison


def _value(ci: Mapping[str, Any] | None) -> float | None:
    if ci is None or ci.get("value") is None:
        return None
    return float(ci["value"])


def _change(new: float | None, old: float | None) -> float | None:
    return None if new is None or old is None else new - old


def compare_audits(new: Mapping[str, Any], old: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each group's AUROC and O/E in a new audit beside an old one (e.g. the champion's).

    Returns one row per (attribute, group) found in either audit: attributes in the order
    they first appear (new audit first), groups in the new audit's order followed by groups
    only the old one has. Values are None where a group or a metric is missing; changes are
    new - old.
    """

    def index(audit: Mapping[str, Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
        return {(str(g["attribute"]), str(g["group"])): g for g in audit.get("groups", [])}

    new_groups, old_groups = index(new), index(old)
    keys: list[tuple[str, str]] = list(new_groups)
    keys += [k for k in old_groups if k not in new_groups]
    attribute_order = {a: i for i, a in enumerate(dict.fromkeys(a for a, _ in keys))}
    keys.sort(key=lambda k: attribute_order[k[0]])  # stable: groups keep their order

    rows = []
    for attribute, group in keys:
        n, o = new_groups.get((attribute, group)), old_groups.get((attribute, group))
        auroc_new = _value(n["auroc"]) if n else None
        auroc_old = _value(o["auroc"]) if o else None
        oe_new = _value(n["oe"]) if n else None
        oe_old = _value(o["oe"]) if o else None
        rows.append(
            {
                "attribute": attribute,
                "group": group,
                "auroc_new": auroc_new,
                "auroc_old": auroc_old,
                "auroc_change": _change(auroc_new, auroc_old),
                "oe_new": oe_new,
                "oe_old": oe_old,
                "oe_change": _change(oe_new, oe_old),
            }
        )
    return rows
