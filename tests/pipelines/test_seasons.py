"""Seasons: a 90-day model trained across seasons stays within the calibration gate on a summer
and on a winter held-out month, and the test shows what makes it do so.

The generator's admissions rise every winter by England's published size (``winter_amplitude``
0.095; a January index month's 90-day odds about 1.2 times a June one's). A training plan
calibrates on one month about five months before its primary held-out month, so in the
opposite season: January for a June primary month, August for a January one. Three models are
fitted on the same rows of one generated population (50,000 people, 48 months), under two
plans, each the plan a training on an extract dated then would make (the labels of its months
end before that date):

- **season-blind**: the shipped spec without ``index_month`` or its baseline (the control);
- **index month as a feature**: the shipped spec without ``training.seasonal_baseline``;
- **seasonal baseline**: the shipped spec: its trees start from a harmonic in the index month
  fitted to the training rows (``training.seasonal_baseline: true``).

O/E on the primary month, seed 11 (2026-12-06): season-blind 0.87 in June and 1.10 in January;
index month as a feature 0.91 and 0.99; seasonal baseline 0.99 and 0.95. With the generator's
earlier, stronger rise (0.15), over seeds 11-13 and one 100,000-person population: 0.73-0.81
and 1.14-1.23; 0.81-0.87 and 1.02-1.15; 0.87-0.98 and 0.98-1.08.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from riskstrat.data.extract import validate_extract
from riskstrat.explain.treeshap import tree_shap
from riskstrat.modelling.evaluation import EvaluationPlan, evaluate_predictions
from riskstrat.modelling.model import IndexPlan
from riskstrat.modelling.spec import default_spec_dir, load_spec
from riskstrat.pipelines.train import build_training_frame, fit_model, split_by_plan, training_plan
from riskstrat.synth import generate_extract

pytestmark = pytest.mark.slow

EXTRACT_DATE = date(2027, 5, 1)
#: The extract date each training would have: June 2026 is the summer plan's primary month
#: (calibrated on January 2026), January 2027 the winter plan's (calibrated on August 2026).
PLANS = {"summer": date(2026, 9, 1), "winter": EXTRACT_DATE}
MODELS = ("season-blind", "index month as a feature", "seasonal baseline")


@pytest.fixture(scope="module")
def seasons(tmp_path_factory):
    extract = tmp_path_factory.mktemp("seasons") / "extract"
    generate_extract(
        extract, n_patients=50_000, seed=11, months=48, extract_date=EXTRACT_DATE, fmt="parquet"
    )
    spec = load_spec(default_spec_dir())  # the shipped spec: training.seasonal_baseline on
    assert spec.training.seasonal_baseline
    plain = spec.model_copy(
        update={"training": spec.training.model_copy(update={"seasonal_baseline": False})}
    )
    blind = plain.model_copy(update={"exclude_features": [*spec.exclude_features, "index_month"]})
    assert "index_month" in spec.feature_names and "index_month" not in blind.feature_names
    with validate_extract(extract) as ex:
        plans = {name: training_plan(ex.con, spec, d) for name, d in PLANS.items()}
        months = sorted({m for plan in plans.values() for m in plan.all_months})
        # Features and labels once for every month either plan uses (no sampling: a plan's
        # months are the same rows whichever plan reads them).
        everything = IndexPlan(tuple(months[:-1]), (), (), (months[-1],))
        frame = build_training_frame(ex.con, spec, everything)
    measure = EvaluationPlan(bootstrap_samples=0)
    out = {"spec": spec, "plans": plans, "results": {}, "models": {}, "rows": {}}
    for name, plan in plans.items():
        parts = split_by_plan(frame.loc[frame["index_date"].isin(plan.all_months)], spec, plan)
        rows = parts["evaluate"].loc[parts["evaluate"]["index_date"] == plan.validation_month]
        models = {
            "season-blind": (blind, fit_model(blind, parts)),
            "index month as a feature": (plain, fit_model(plain, parts)),
            "seasonal baseline": (spec, fit_model(spec, parts)),
        }
        for label, (used, model) in models.items():
            risk = model.predict_proba(rows[used.feature_names])
            calibration = evaluate_predictions(rows["label"], risk, plan=measure)["calibration"]
            out["results"][name, label] = {
                "oe": calibration["oe"]["value"],
                "slope": calibration["slope"]["value"],
                "expected": float(risk.sum()),
            }
        out["models"][name] = models["seasonal baseline"][1]
        out["rows"][name] = rows
    return out


def test_the_plans_judge_a_summer_and_a_winter_month_calibrated_in_the_other_season(seasons):
    summer, winter = seasons["plans"]["summer"], seasons["plans"]["winter"]
    assert summer.validation_month == date(2026, 6, 1)
    assert summer.calibration_months == (date(2026, 1, 1),)
    assert winter.validation_month == date(2027, 1, 1)
    assert winter.calibration_months == (date(2026, 8, 1),)
    for plan in (summer, winter):
        # Trained across seasons: every calendar month is among the training months.
        assert {m.month for m in plan.train_months} == set(range(1, 13))
        assert len(plan.train_months) >= 18


def test_the_seasonal_baseline_keeps_both_months_within_the_calibration_gate(seasons):
    gate = seasons["spec"].gates.calibration
    for plan in PLANS:
        result = seasons["results"][plan, "seasonal baseline"]
        assert gate.oe_range[0] <= result["oe"] <= gate.oe_range[1], (plan, result)
        assert gate.slope_range[0] <= result["slope"] <= gate.slope_range[1], (plan, result)


def test_without_the_index_month_the_model_misses_the_season(seasons):
    """The control: the same spec without the month over-predicts the summer month, outside
    the gate, and under-predicts the winter one; on the same rows the seasonal baseline's
    expected admissions differ from it in the season's direction by over 7%."""
    gate = seasons["spec"].gates.calibration
    results = seasons["results"]
    assert results["summer", "season-blind"]["oe"] < gate.oe_range[0]
    assert results["winter", "season-blind"]["oe"] > results["winter", "seasonal baseline"]["oe"]
    expected = {key: result["expected"] for key, result in results.items()}
    blind_over_seasonal = {
        plan: expected[plan, "season-blind"] / expected[plan, "seasonal baseline"] for plan in PLANS
    }
    assert blind_over_seasonal["summer"] > 1.07, blind_over_seasonal
    assert blind_over_seasonal["winter"] < 1 / 1.07, blind_over_seasonal


def test_the_index_month_as_a_feature_learns_too_little_of_it_for_summer(seasons):
    """The trees learn part of the season from the month before early stopping ends them:
    better than season-blind in both months, but June, calibrated on January, stays
    over-predicted, at the gate's edge and further from 1 than with the seasonal baseline.
    (In January, calibrated on August, the feature alone did as well as the baseline here.)"""
    results = seasons["results"]

    def miss(plan: str, model: str) -> float:
        return abs(np.log(results[plan, model]["oe"]))

    assert results["summer", "index month as a feature"]["oe"] < 0.92
    assert miss("summer", "seasonal baseline") < miss("summer", "index month as a feature") / 3
    for plan in PLANS:
        assert miss(plan, "index month as a feature") < miss(plan, "season-blind")


def test_the_baseline_is_the_generators_winter_rise(seasons):
    for plan in PLANS:
        baseline = seasons["models"][plan].seasonal_baseline_
        assert baseline is not None
        assert baseline.peak_month in (12, 1, 2)
        # The generator's January/July hazard ratio is 1.095/0.905 = 1.21 (England's size);
        # the fitted odds of the highest month over the lowest come to 1.2-1.25.
        assert 1.1 < baseline.peak_to_trough < 1.35, baseline


def test_the_season_is_part_of_the_model_and_explained_as_the_index_month(seasons):
    """The baseline is the booster's first tree: exact TreeSHAP puts it in ``index_month``'s
    contribution (the "time of year" reason), raising January's risk and lowering June's."""
    model = seasons["models"]["winter"]
    names = model.feature_names_
    month = names.index("index_month")
    share = {}
    for plan, rows in seasons["rows"].items():
        X = rows[names].head(2000)
        contributions = tree_shap(model.booster_, X)
        raw = model.booster_.predict(X.to_numpy(dtype=np.float32), raw_score=True)
        np.testing.assert_allclose(contributions.sum(axis=1), raw, atol=1e-6)
        share[plan] = float(contributions[:, month].mean())
    assert share["winter"] > 0.05 and share["summer"] < -0.05, share
