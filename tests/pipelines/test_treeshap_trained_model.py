"""Exact TreeSHAP on a model the project trains: the shipped admission spec fitted on a
generated population (monotone constraints, the seasonal baseline tree, early stopping,
missing types NaN and None). riskstrat's values equal LightGBM's ``pred_contrib`` within
1e-12 on every row and column, the base value included, in the sorted path that large inputs
take and row by row, and with ``best_iteration`` set on the booster."""

from __future__ import annotations

from datetime import date

import lightgbm as lgb
import numpy as np
import pytest

from riskstrat.data.extract import validate_extract
from riskstrat.explain.treeshap import TreeShapExplainer
from riskstrat.modelling.spec import default_spec_dir, load_spec
from riskstrat.pipelines.train import build_training_frame, fit_model, split_by_plan, training_plan
from riskstrat.synth import generate_extract

pytestmark = pytest.mark.slow

EXTRACT_DATE = date(2026, 11, 1)
EXACT = 1e-12


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    extract = tmp_path_factory.mktemp("treeshap") / "extract"
    generate_extract(
        extract, n_patients=3000, seed=5, months=30, extract_date=EXTRACT_DATE, fmt="parquet"
    )
    spec = load_spec(default_spec_dir())
    with validate_extract(extract) as ex:
        plan = training_plan(ex.con, spec, EXTRACT_DATE)
        frame = build_training_frame(ex.con, spec, plan)
    model = fit_model(spec, split_by_plan(frame, spec, plan))
    X = frame[model.feature_names_].to_numpy(dtype=np.float32, na_value=np.nan)
    # Enough rows for the sorted path (several blocks), few enough for pred_contrib's pace.
    rows = np.random.default_rng(0).choice(len(X), size=6000, replace=False)
    return model.booster_, X[np.sort(rows)]


def _missing_types(booster: lgb.Booster) -> set[str]:
    kinds: set[str] = set()
    stack = [info["tree_structure"] for info in booster.dump_model()["tree_info"]]
    while stack:
        node = stack.pop()
        if "leaf_value" not in node:
            kinds.add(node["missing_type"])
            stack += [node["left_child"], node["right_child"]]
    return kinds


def test_equal_to_pred_contrib_on_every_row_and_column(trained):
    booster, X = trained
    assert np.isnan(X).any()
    assert {"NaN", "None"} <= _missing_types(booster)  # as the shipped models use them
    explainer = TreeShapExplainer(booster)
    got = explainer.shap_values(X)
    want = booster.predict(X, pred_contrib=True)
    assert got.shape == want.shape == (len(X), booster.num_feature() + 1)
    assert np.abs(got - want).max() <= EXACT
    # Row by row (no sorting, one short block each): the very same numbers.
    for i in range(0, len(X), 997):
        np.testing.assert_array_equal(explainer.shap_values(X[i : i + 1])[0], got[i])


def test_best_iteration_set_on_the_booster(trained):
    booster, X = trained
    best = lgb.Booster(model_str=booster.model_to_string())
    best.best_iteration = max(1, best.num_trees() // 2)
    got = TreeShapExplainer(best).shap_values(X)
    want = best.predict(X, pred_contrib=True, num_iteration=best.best_iteration)
    assert np.abs(got - want).max() <= EXACT
    assert np.abs(got - booster.predict(X, pred_contrib=True)).max() > 1e-3  # fewer trees
