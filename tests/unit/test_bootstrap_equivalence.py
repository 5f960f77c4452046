"""The faster bootstrap equals the loops it replaced, to the last bit (issue 27).

The reference loops (tests/support/bootstrap_reference.py) are the code before the change:
the same resamples from the same seed must give the same replicates, so every interval on a
card stays what it was. Each case compares bit patterns, NaN included, over several seeds,
with tied risks, and with resamples that hold no events (skipped)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from riskstrat.modelling.estimates import (
    RecallShares,
    bootstrap_counts,
    fit_calibration_intercept,
    fit_calibration_slope,
    logit,
    share_flagged_for_recall,
)
from riskstrat.modelling.evaluation import (
    EvaluationPlan,
    _bootstrap_replicates,
    _Prepared,
    evaluate_predictions,
    evaluate_stability,
)
from tests.support import bootstrap_reference as ref


def _bits(values) -> bytes:
    return np.asarray(values, dtype=np.float64).tobytes()


def _population(n: int, seed: int, *, decimals: int | None = None, mean: float = -3.0):
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-rng.normal(mean, 1.2, n)))
    if decimals is not None:
        p = np.round(p, decimals)  # ties
    y = (rng.random(n) < p).astype(np.float64)
    return y, p


CASES = [
    (3000, 0, None),
    (3000, 1, 2),  # many tied risks
    (20_000, 2, None),
    (400, 3, 3),
    (60, 4, None),  # few events: some resamples have none and are skipped
]


@pytest.mark.parametrize(("n", "seed", "decimals"), CASES)
def test_evaluation_replicates_equal_the_loop(n, seed, decimals):
    y, p = _population(n, seed, decimals=decimals)
    if not 0 < y.sum() < n:
        y[0], y[1] = 1.0, 0.0
    plan = EvaluationPlan(bootstrap_samples=40, seed=seed)
    expected = ref.evaluation_replicates(y, p, samples=40, seed=seed)
    prep = _Prepared(y, p)
    fits = ref.fit_intercept(prep.x, y), *ref.fit_slope(prep.x, y)
    starts = (fits[0], (fits[1], fits[2]))
    ours = _bootstrap_replicates(y, {"m": prep}, plan, fitted="m", starts=starts)["m"]
    assert set(ours) == set(expected)
    for key in expected:
        assert _bits(ours[key]) == _bits(expected[key]), key


@pytest.mark.parametrize(("n", "seed", "decimals"), CASES)
def test_comparison_replicates_equal_the_loop(n, seed, decimals):
    y, p = _population(n, seed, decimals=decimals)
    if not 0 < y.sum() < n:
        y[0], y[1] = 1.0, 0.0
    rng = np.random.default_rng(seed + 100)
    risks = {
        "model": p,
        "other": np.clip(p + rng.normal(0, 0.02, n), 0, 1),
        "coarse": np.round(p, 1),
    }
    expected = ref.comparison_replicates(y, risks, samples=30, seed=seed)
    prepared = {name: _Prepared(y, r) for name, r in risks.items()}
    ours = _bootstrap_replicates(y, prepared, EvaluationPlan(bootstrap_samples=30, seed=seed))
    for name in risks:
        for key in expected[name]:
            assert _bits(ours[name][key]) == _bits(expected[name][key]), (name, key)


@pytest.mark.parametrize("seed", range(6))
def test_calibration_fits_equal_the_plain_newton_steps(seed):
    y, p = _population(5000, seed, decimals=None if seed % 2 else 3)
    x = logit(p)
    w = np.bincount(np.random.default_rng(seed).integers(0, len(y), len(y)), minlength=len(y))
    w = w.astype(np.float64)
    for weights in (None, w):
        for start in (0.0, 0.3, -2.0):  # -2 is far: the line search runs
            assert _bits(fit_calibration_intercept(x, y, weights, start=start)) == _bits(
                ref.fit_intercept(x, y, weights, start=start)
            )
        for cb in ((0.0, 1.0), (0.1, 0.9), (3.0, 0.2)):
            assert _bits(fit_calibration_slope(x, y, weights, start=cb)) == _bits(
                ref.fit_slope(x, y, weights, start=cb)
            )


@pytest.mark.parametrize("decimals", [None, 1, 2])
@pytest.mark.parametrize("target", [0.5, 0.7, 0.999, 1.0])
def test_recall_shares_equal_share_flagged_for_recall(decimals, target):
    y, p = _population(3000, 9, decimals=decimals)
    recall = RecallShares(y, p)
    rng = np.random.default_rng(1)
    for w in bootstrap_counts(rng, len(y), 20):
        expected = share_flagged_for_recall(recall.y_desc, w[recall.desc], target, len(y))
        assert _bits(recall.share(w, target, len(y))) == _bits(expected)
    no_events = np.where(y == 1, 0.0, 1.0)
    assert np.isnan(recall.share(no_events, target, len(y)))


@pytest.mark.parametrize("seed", range(3))
def test_evaluate_stability_equals_the_same_fields_of_evaluate_predictions(seed):
    y, p = _population(4000, seed)
    plan = EvaluationPlan(bootstrap_samples=25, seed=seed)
    full = evaluate_predictions(y, p, plan=plan)
    assert evaluate_stability(y, p, plan=plan) == {
        "rows": full["rows"],
        "events": full["events"],
        "auroc": full["auroc"],
        "oe": full["calibration"]["oe"],
        "slope": full["calibration"]["slope"],
        "brier": full["brier"],
    }


@pytest.mark.parametrize("seed", range(3))
def test_fairness_intervals_equal_the_loop(seed):
    """Every group's AUROC and O/E interval, from the reference loop's replicates drawn in
    the audit's order (the population first, then each attribute's groups in order)."""
    from riskstrat.fairness.subgroups import (
        FairnessPlan,
        fairness_audit,
        group_labels,
        group_sort_key,
    )
    from riskstrat.modelling.estimates import percentile_ci

    rng = np.random.default_rng(seed)
    n = 6000
    risk = np.round(1 / (1 + np.exp(-rng.normal(-2.5, 1.1, n))), 3)
    frame = pd.DataFrame(
        {
            "label": (rng.random(n) < risk).astype(int),
            "risk": risk,
            "sex": rng.choice(["F", "M"], n),
            "age_band": rng.choice(["0-17", "18-44", "45-64", "65-74", "75-84", "85+"], n),
        }
    )
    frame.loc[:30, "age_band"] = "unusual"  # a small group: some resamples have no events
    plan = FairnessPlan(attributes=("sex", "age_band"), bootstrap_samples=30, seed=seed)
    audit = fairness_audit(frame, plan=plan)

    y = frame["label"].to_numpy(dtype=np.float64)
    draws = np.random.default_rng(seed)
    expected = [ref.group_replicates(y, risk, rng=draws, samples=30)]
    for attribute in plan.attributes:
        labels = group_labels(frame[attribute])
        for group in sorted(set(labels), key=group_sort_key):
            rows = np.flatnonzero(labels == group)
            expected.append(ref.group_replicates(y[rows], risk[rows], rng=draws, samples=30))
    assert len(expected) == 1 + len(audit["groups"])
    for found, reps in zip([audit["overall"], *audit["groups"]], expected, strict=True):
        for key in ("auroc", "oe"):
            if found[key] is None:
                continue
            want = percentile_ci(found[key]["value"], reps[key], level=plan.ci_level)
            assert _bits([found[key]["lo"], found[key]["hi"]]) == _bits([want["lo"], want["hi"]])
