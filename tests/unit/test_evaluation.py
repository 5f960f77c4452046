"""Evaluation metrics with intervals: hand-computed cases, scikit-learn agreement, the
bootstrap's behaviour, calibration recovery and the calibration gate."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score

from riskstrat.modelling.estimates import (
    fit_calibration_intercept,
    fit_calibration_slope,
    logit,
    wilson_interval,
)
from riskstrat.modelling.evaluation import (
    EvaluationPlan,
    compare_predictions,
    discrimination_metrics,
    evaluate_predictions,
)
from riskstrat.modelling.gates import GateResult, calibration_gate_results

NO_BOOT = EvaluationPlan(bootstrap_samples=0)

# ten people, highest risk first: 3 events, at rows 0, 2 and 5
Y10 = np.array([1, 0, 1, 0, 0, 1, 0, 0, 0, 0])
P10 = np.array([0.9, 0.8, 0.6, 0.3, 0.2, 0.15, 0.1, 0.05, 0.05, 0.01])


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _population(n, seed, *, a=0.0, b=1.0, mean=-2.5):
    """Risks p and outcomes y ~ Bernoulli(sigmoid(a + b * logit(p)))."""
    rng = np.random.default_rng(seed)
    p = _sigmoid(rng.normal(mean, 1.0, n))
    y = (rng.random(n) < _sigmoid(a + b * logit(p))).astype(int)
    return y, p


def _plain(obj):
    """True when obj holds only JSON's own types (no numpy scalars)."""
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_plain(v) for v in obj)
    return obj is None or type(obj) in (bool, int, float, str)


# --------------------------------------------------------------------------- hand-computed


def test_observed_over_expected_by_hand():
    r = evaluate_predictions([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], plan=NO_BOOT)
    assert r["calibration"]["oe"]["value"] == pytest.approx(2 / 1.0)
    assert r["events"] == 2 and r["rows"] == 4 and r["event_rate"] == 0.5
    assert r["mean_risk"] == pytest.approx(0.25)


def test_net_benefit_and_treat_all_by_hand():
    plan = EvaluationPlan(bootstrap_samples=0, net_benefit_thresholds=(0.1, 0.2))
    nb = evaluate_predictions(Y10, P10, plan=plan)["net_benefit"]
    # pt 0.1: risk >= 0.1 flags rows 0-6: TP 3, FP 4 of 10; odds 1/9
    assert nb[0] == {
        "threshold": 0.1,
        "model": pytest.approx(3 / 10 - 4 / 10 * (1 / 9)),
        "treat_all": pytest.approx(0.3 - 0.7 * (1 / 9)),
        "treat_none": 0.0,
    }
    # pt 0.2: rows 0-4 (risk 0.2 itself is flagged): TP 2, FP 3; odds 1/4
    assert nb[1]["model"] == pytest.approx(0.2 - 0.3 * 0.25)
    assert nb[1]["treat_all"] == pytest.approx(0.3 - 0.7 * 0.25)


def test_lists_by_hand():
    plan = EvaluationPlan(bootstrap_samples=0, list_shares=(0.5, 0.1))
    top_half, top_tenth = evaluate_predictions(Y10, P10, plan=plan)["lists"]
    assert top_half["flagged"] == 5 and top_half["threshold"] == 0.2
    assert top_half["sensitivity"]["value"] == pytest.approx(2 / 3)
    assert top_half["ppv"]["value"] == pytest.approx(2 / 5)
    lo, hi = wilson_interval(2, 5)
    assert (top_half["ppv"]["lo"], top_half["ppv"]["hi"]) == pytest.approx((lo, hi))
    assert top_tenth["flagged"] == 1 and top_tenth["ppv"]["value"] == 1.0


def test_lists_break_ties_by_row_order_and_round_shares_sensibly():
    plan = EvaluationPlan(bootstrap_samples=0, list_shares=(0.5,))
    # rows 0-2 tie; the top 2 are rows 0 and 1, so one event (row 1) is caught
    lst = evaluate_predictions([0, 1, 1, 0], [0.5, 0.5, 0.5, 0.1], plan=plan)["lists"][0]
    assert lst["flagged"] == 2 and lst["threshold"] == 0.5
    assert lst["sensitivity"]["value"] == 0.5
    # 0.1 * 30 is 3.0000000000000004 in floating point: still 3 people
    y = np.r_[np.ones(5), np.zeros(25)]
    plan = EvaluationPlan(bootstrap_samples=0, list_shares=(0.1,))
    assert evaluate_predictions(y, np.linspace(0.9, 0.1, 30), plan=plan)["lists"][0]["flagged"] == 3


def test_wilson_interval_known_values():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))
    for k, n in [(8, 10), (81, 263), (1, 1000)]:
        ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ref.low, ref.high), rel=1e-9)
    assert wilson_interval(81, 263, level=0.9)[1] < wilson_interval(81, 263)[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target", [0.5, 0.7, 0.9])
def test_share_flagged_for_recall_agrees_with_discrimination_metrics(seed, target):
    y, p = _population(3000, seed)
    p = np.round(p, 2)  # plenty of ties
    plan = EvaluationPlan(bootstrap_samples=0, recall_target=target)
    ours = evaluate_predictions(y, p, plan=plan)["share_flagged_for_recall"]["value"]
    theirs = discrimination_metrics(y, p, recall_target=target)
    assert ours == theirs["share_flagged_for_70pct_recall"]


def test_share_flagged_for_recall_by_hand():
    # 70% of 3 events needs 3 events: the third is at row 5, so 6 of 10 people
    r = evaluate_predictions(Y10, P10, plan=NO_BOOT)
    assert r["share_flagged_for_recall"]["value"] == 0.6 and r["recall_target"] == 0.7


# --------------------------------------------------------------------------- against sklearn


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("decimals", [None, 2])
def test_auroc_and_auprc_equal_sklearn(seed, decimals):
    y, p = _population(5000, seed)
    if decimals is not None:
        p = np.round(p, decimals)
    r = evaluate_predictions(y, p, plan=NO_BOOT)
    assert r["auroc"]["value"] == pytest.approx(roc_auc_score(y, p), rel=1e-12)
    assert r["auprc"]["value"] == pytest.approx(average_precision_score(y, p), rel=1e-12)
    assert r["brier"]["value"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-12)
    assert r["auroc"]["lo"] is None and r["auroc"]["hi"] is None  # no bootstrap asked for


def test_bootstrap_metrics_equal_sklearn_on_a_resample():
    # the bootstrap uses row counts; the metric of the weights is the metric of the rows
    from riskstrat.modelling.estimates import RankedScores

    y, p = _population(2000, 3)
    p = np.round(p, 2)
    idx = np.random.default_rng(0).integers(0, len(y), len(y))
    w = np.bincount(idx, minlength=len(y)).astype(float)
    ranked = RankedScores(y.astype(float), p)
    auroc, auprc = ranked.auroc_auprc(w[ranked.order])
    assert auroc == pytest.approx(roc_auc_score(y[idx], p[idx]), rel=1e-12)
    assert auprc == pytest.approx(average_precision_score(y[idx], p[idx]), rel=1e-12)


def test_bootstrap_share_flagged_equals_the_resampled_rows():
    from riskstrat.modelling.estimates import share_flagged_for_recall

    y, p = _population(2000, 4)  # distinct risks: only a row's own copies tie
    desc = np.argsort(-p, kind="stable")
    for seed in range(5):
        idx = np.random.default_rng(seed).integers(0, len(y), len(y))
        w = np.bincount(idx, minlength=len(y)).astype(float)
        ours = share_flagged_for_recall(y[desc].astype(float), w[desc], 0.7, len(y))
        expected = discrimination_metrics(y[idx], p[idx])["share_flagged_for_70pct_recall"]
        assert ours == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- calibration


def test_calibration_intercept_recovers_a_known_shift():
    y, p = _population(200_000, 7, a=0.3, b=1.0)
    cal = evaluate_predictions(y, p, plan=NO_BOOT)["calibration"]
    assert cal["intercept"]["value"] == pytest.approx(0.3, abs=0.03)
    assert cal["slope"]["value"] == pytest.approx(1.0, abs=0.03)


def test_calibration_slope_recovers_known_values():
    y, p = _population(200_000, 8, a=0.3, b=0.7)
    c, b = fit_calibration_slope(logit(p), y.astype(float))
    assert (c, b) == pytest.approx((0.3, 0.7), abs=0.03)
    assert evaluate_predictions(y, p, plan=NO_BOOT)["calibration"]["slope"]["value"] == b


def test_calibration_fits_are_the_unpenalised_maximum_likelihood():
    y, p = _population(20_000, 9, a=-0.2, b=1.3)
    x = logit(p)
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(x[:, None], y)
    c, b = fit_calibration_slope(x, y.astype(float))
    assert (c, b) == pytest.approx((ref.intercept_[0], ref.coef_[0, 0]), abs=1e-5)
    # with the slope fixed at 1, the score equation says observed = expected
    a = fit_calibration_intercept(x, y.astype(float))
    assert np.sum(_sigmoid(a + x)) == pytest.approx(y.sum(), rel=1e-8)


def test_perfectly_calibrated_risks():
    y, p = _population(200_000, 10)
    cal = evaluate_predictions(y, p, plan=NO_BOOT)["calibration"]
    assert cal["intercept"]["value"] == pytest.approx(0.0, abs=0.03)
    assert cal["slope"]["value"] == pytest.approx(1.0, abs=0.03)
    assert cal["oe"]["value"] == pytest.approx(1.0, abs=0.03)


def test_calibration_bins_are_equal_count_and_ascending():
    y, p = _population(1005, 11)
    bins = evaluate_predictions(y, p, plan=NO_BOOT)["calibration"]["bins"]
    assert [b["bin"] for b in bins] == list(range(1, 11))
    assert sum(b["rows"] for b in bins) == 1005 and {b["rows"] for b in bins} == {100, 101}
    assert all(a["mean_risk"] < b["mean_risk"] for a, b in itertools.pairwise(bins))
    assert sum(b["observed_rate"] * b["rows"] for b in bins) == pytest.approx(y.sum())
    first = bins[0]
    assert first["observed_lo"] <= first["observed_rate"] <= first["observed_hi"]


# --------------------------------------------------------------------------- the bootstrap

CI_KEYS = ("auroc", "auprc", "brier", "share_flagged_for_recall")
CAL_KEYS = ("oe", "intercept", "slope")


def _cis(r):
    return [r[k] for k in CI_KEYS] + [r["calibration"][k] for k in CAL_KEYS]


def test_bootstrap_is_deterministic_for_a_seed():
    y, p = _population(4000, 12)
    plan = EvaluationPlan(bootstrap_samples=60, seed=5)
    first = evaluate_predictions(y, p, plan=plan)
    assert evaluate_predictions(y, p, plan=plan) == first
    other = evaluate_predictions(y, p, plan=EvaluationPlan(bootstrap_samples=60, seed=6))
    assert other["auroc"]["lo"] != first["auroc"]["lo"]
    assert other["auroc"]["value"] == first["auroc"]["value"]


def test_intervals_contain_the_point_estimate():
    y, p = _population(10_000, 13)
    r = evaluate_predictions(y, p, plan=EvaluationPlan(bootstrap_samples=100))
    for ci in _cis(r):
        assert ci["lo"] <= ci["value"] <= ci["hi"], ci
    for lst in r["lists"]:
        for ci in (lst["sensitivity"], lst["ppv"]):
            assert ci["lo"] <= ci["value"] <= ci["hi"]


def test_a_larger_sample_gives_narrower_intervals():
    plan = EvaluationPlan(bootstrap_samples=100)
    small = evaluate_predictions(*_population(3000, 14), plan=plan)
    large = evaluate_predictions(*_population(30_000, 14), plan=plan)
    for s, g in zip(_cis(small), _cis(large), strict=True):
        assert g["hi"] - g["lo"] < s["hi"] - s["lo"]


def test_a_lower_level_gives_narrower_intervals():
    y, p = _population(5000, 15)
    wide = evaluate_predictions(y, p, plan=EvaluationPlan(bootstrap_samples=80))
    narrow = evaluate_predictions(y, p, plan=EvaluationPlan(bootstrap_samples=80, ci_level=0.8))
    assert narrow["auroc"]["hi"] - narrow["auroc"]["lo"] < wide["auroc"]["hi"] - wide["auroc"]["lo"]
    assert narrow["ci_level"] == 0.8


def test_resamples_without_events_are_skipped():
    # one event in 40 rows: about a third of resamples have none, and none may give NaN
    y = np.zeros(40, dtype=int)
    y[3] = 1
    p = np.linspace(0.01, 0.4, 40)
    r = evaluate_predictions(y, p, plan=EvaluationPlan(bootstrap_samples=50))
    assert json.dumps(r, allow_nan=False)
    assert r["auroc"]["lo"] is not None


def test_the_result_is_plain_json():
    y, p = _population(3000, 16)
    r = evaluate_predictions(y, p, plan=EvaluationPlan(bootstrap_samples=20))
    assert _plain(r)
    assert json.loads(json.dumps(r, allow_nan=False)) == r
    assert set(r) >= {
        "rows",
        "events",
        "event_rate",
        "mean_risk",
        "auroc",
        "auprc",
        "brier",
        "calibration",
        "lists",
        "recall_target",
        "share_flagged_for_recall",
        "net_benefit",
    }
    assert [lst["share"] for lst in r["lists"]] == [0.01, 0.05, 0.10]
    assert [nb["threshold"] for nb in r["net_benefit"]] == [0.01, 0.02, 0.05, 0.10, 0.20, 0.30]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 1, 1], [0.1, 0.2], "same length"),
        ([[0, 1]], [[0.1, 0.2]], "1-D"),
        ([0, 2], [0.1, 0.2], "only 0 and 1"),
        ([0, 1], [0.1, 1.2], r"\[0, 1\]"),
        ([0, 1], [0.1, np.nan], "finite"),
        ([0, 0], [0.1, 0.2], "both outcomes"),
        ([], [], "no rows"),
    ],
)
def test_bad_inputs_are_refused(y, p, message):
    with pytest.raises(ValueError, match=message):
        evaluate_predictions(y, p, plan=NO_BOOT)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ci_level": 1.0},
        {"bootstrap_samples": -1},
        {"list_shares": (0.0,)},
        {"net_benefit_thresholds": (1.0,)},
        {"recall_target": 0.0},
        {"calibration_bins": 0},
    ],
)
def test_bad_plans_are_refused(kwargs):
    with pytest.raises(ValueError):
        EvaluationPlan(**kwargs)


# --------------------------------------------------------------------------- comparison


def test_compare_predictions_pairs_the_bootstrap():
    rng = np.random.default_rng(17)
    y, p = _population(8000, 17)
    close = _sigmoid(logit(p) + rng.normal(0, 0.3, len(p)))  # a slightly worse model
    plan = EvaluationPlan(bootstrap_samples=100)
    rows = compare_predictions(y, {"model": p, "baseline": close}, reference="model", plan=plan)
    assert [r["name"] for r in rows] == ["model", "baseline"]
    model, baseline = rows
    assert model["auroc_difference"] == {"value": 0.0, "lo": 0.0, "hi": 0.0}
    diff = baseline["auroc_difference"]
    assert diff["value"] == pytest.approx(model["auroc"]["value"] - baseline["auroc"]["value"])
    assert diff["lo"] <= diff["value"] <= diff["hi"]
    # paired: far narrower than the naive interval from two independent intervals
    naive = math.hypot(
        model["auroc"]["hi"] - model["auroc"]["lo"],
        baseline["auroc"]["hi"] - baseline["auroc"]["lo"],
    )
    assert diff["hi"] - diff["lo"] < naive / 2
    # the same resamples as evaluate_predictions with the same plan
    assert model["auroc"] == evaluate_predictions(y, p, plan=plan)["auroc"]
    assert model["oe"] == evaluate_predictions(y, p, plan=plan)["calibration"]["oe"]
    assert _plain(rows)


def test_compare_predictions_refuses_an_unknown_reference():
    with pytest.raises(ValueError, match="reference"):
        compare_predictions([0, 1], {"a": [0.1, 0.9]}, reference="b", plan=NO_BOOT)
    with pytest.raises(ValueError, match="same length"):
        compare_predictions([0, 1], {"a": [0.1, 0.9], "b": [0.1]}, reference="a", plan=NO_BOOT)


# --------------------------------------------------------------------------- the gate


@pytest.mark.parametrize("distort", [lambda p: np.minimum(2 * p, 1.0), lambda p: p / 3])
@pytest.mark.parametrize("rule", ["ci", "point"])
def test_a_miscalibrated_model_fails_the_gate(distort, rule):
    y, p = _population(20_000, 18)
    evaluation = evaluate_predictions(y, distort(p), plan=EvaluationPlan(bootstrap_samples=100))
    gates = {g.name: g for g in calibration_gate_results(evaluation, rule=rule)}
    assert not gates["calibration O/E"].passed
    assert "outside 0.9-1.1" in gates["calibration O/E"].detail


def test_a_well_calibrated_model_passes_the_gate():
    y, p = _population(20_000, 19)
    evaluation = evaluate_predictions(y, p, plan=EvaluationPlan(bootstrap_samples=100))
    results = calibration_gate_results(evaluation, rule="ci")
    assert [g.name for g in results] == ["calibration O/E", "calibration slope"]
    assert all(g.passed for g in results), results
    assert all(g.subject == "overall" for g in results)


def test_ci_rule_fails_only_on_evidence():
    noisy = {
        "ci_level": 0.95,
        "calibration": {
            "oe": {"value": 1.15, "lo": 0.95, "hi": 1.37},
            "slope": {"value": 0.7, "lo": 0.55, "hi": 0.78},
        },
    }
    ci = {g.name: g for g in calibration_gate_results(noisy, rule="ci")}
    point = {g.name: g for g in calibration_gate_results(noisy, rule="point")}
    assert ci["calibration O/E"].passed and not point["calibration O/E"].passed
    assert "not evidence" in ci["calibration O/E"].detail
    assert not ci["calibration slope"].passed and not point["calibration slope"].passed
    assert ci["calibration slope"].detail.startswith("slope 0.70 (95% CI 0.55-0.78) is outside")


def test_gate_result_as_dict_is_plain():
    g = GateResult("calibration O/E", "overall", False, "O/E 0.62 is outside 0.8-1.25")
    assert g.as_dict() == {
        "name": "calibration O/E",
        "subject": "overall",
        "passed": False,
        "detail": "O/E 0.62 is outside 0.8-1.25",
    }
    assert json.dumps(g.as_dict())
