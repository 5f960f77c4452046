"""riskstrat.explain.treeshap gives LightGBM's own TreeSHAP values (pred_contrib) and shap's, exactly,
on random models and data: NaNs, exact zeros, every missing-value mode, deep trees that
exceed the tables (so the on-the-fly path runs), single-leaf trees and early stopping."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from riskstrat.explain.treeshap import TreeShapExplainer, tree_shap


def _data(seed: int, n: int = 3000, f: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(0.7, size=(n, f // 3))
    flags = rng.integers(0, 2, size=(n, f // 3))
    cont = rng.normal(size=(n, f - 2 * (f // 3)))
    X = np.column_stack([counts, flags, cont]).astype(np.float32)
    X[rng.random(X.shape) < 0.08] = np.nan
    X[rng.random(X.shape) < 0.05] = 0.0
    signal = np.nan_to_num(X[:, 0]) + 0.8 * np.nan_to_num(X[:, f // 3]) - np.nan_to_num(X[:, -1])
    y = (rng.random(n) < 1 / (1 + np.exp(-(signal - 1)))).astype(int)
    return X, y


def _model(X, y, rounds: int = 40, **params) -> lgb.Booster:
    base = {"objective": "binary", "learning_rate": 0.1, "verbosity": -1, "num_threads": 1,
            "min_data_in_leaf": 20, "seed": 1, "deterministic": True}  # fmt: skip
    return lgb.train({**base, **params}, lgb.Dataset(X, y), rounds)


CASES = [
    {"num_leaves": 2},
    {"num_leaves": 7},
    {"num_leaves": 31},
    {"num_leaves": 63, "min_data_in_leaf": 5},
    {"num_leaves": 31, "max_depth": 4},
    {"num_leaves": 31, "zero_as_missing": True},
    {"num_leaves": 31, "use_missing": False},
    {"num_leaves": 15, "monotone_constraints": [1] * 4 + [0] * 8},
]


@pytest.mark.slow  # trains several LightGBM models
@pytest.mark.parametrize("params", CASES, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()))
@pytest.mark.parametrize("seed", [1, 2])
def test_equal_to_pred_contrib(params, seed):
    X, y = _data(seed)
    booster = _model(X, y, **params)
    test = _data(seed + 100, n=800)[0]
    expected = booster.predict(test, pred_contrib=True)
    got = TreeShapExplainer(booster).shap_values(test)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    # each row adds up to the model's raw score
    np.testing.assert_allclose(got.sum(axis=1), booster.predict(test, raw_score=True), atol=1e-12)


@pytest.mark.parametrize("max_table_depth", [0, 1, 3])
def test_deep_leaves_beyond_the_tables_are_still_exact(max_table_depth):
    X, y = _data(7)
    booster = _model(X, y, num_leaves=63, min_data_in_leaf=5)
    test = _data(8, n=500)[0]
    got = TreeShapExplainer(booster, max_table_depth=max_table_depth).shap_values(test)
    np.testing.assert_allclose(got, booster.predict(test, pred_contrib=True), rtol=0, atol=1e-12)


def test_single_leaf_trees_and_best_iteration():
    X, y = _data(3)
    # a first tree that cannot split (a single leaf), then ordinary trees on top of it
    stump = lgb.train(
        {"objective": "binary", "verbosity": -1, "min_gain_to_split": 1e9}, lgb.Dataset(X, y), 5
    )
    booster = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_leaves": 15},
        lgb.Dataset(X, y),
        10,
        init_model=stump,
    )
    dump = booster.dump_model()["tree_info"]
    assert any("split_index" not in t["tree_structure"] for t in dump)
    np.testing.assert_allclose(
        tree_shap(booster, X[:300]), booster.predict(X[:300], pred_contrib=True), atol=1e-12
    )
    # an early-stopped model explains its best iteration, as pred_contrib does by default
    Xv, yv = _data(4, n=1000)
    stopped = lgb.train(
        {"objective": "binary", "verbosity": -1, "learning_rate": 0.3, "num_leaves": 31},
        lgb.Dataset(X, y),
        200,
        valid_sets=[lgb.Dataset(Xv, yv)],
        callbacks=[lgb.early_stopping(5, verbose=False)],
    )
    assert 0 < stopped.best_iteration < 200
    np.testing.assert_allclose(
        TreeShapExplainer(stopped).shap_values(Xv[:300]),
        stopped.predict(Xv[:300], pred_contrib=True, num_iteration=stopped.best_iteration),
        atol=1e-12,
    )


def test_equal_to_shap_tree_explainer():
    shap = pytest.importorskip("shap")  # a dev dependency, always installed by `make test`
    X, y = _data(11)
    booster = _model(X, y, num_leaves=31)
    test = _data(12, n=400)[0]
    explainer = shap.TreeExplainer(booster)
    expected = np.asarray(explainer.shap_values(test))
    expected = expected[1] if expected.ndim == 3 else expected  # older shap: per class
    mine = TreeShapExplainer(booster)
    got = mine.shap_values(test)
    np.testing.assert_allclose(got[:, :-1], expected, rtol=0, atol=1e-12)
    base = np.ravel(explainer.expected_value)[-1]
    assert mine.expected_value == pytest.approx(float(base), abs=1e-12)
    np.testing.assert_allclose(got[:, -1], mine.expected_value, atol=1e-12)


def test_dataframe_columns_are_taken_in_model_order():
    X, y = _data(5)
    names = [f"f{i}" for i in range(X.shape[1])]
    booster = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_leaves": 15},
        lgb.Dataset(pd.DataFrame(X, columns=names), y),
        20,
    )
    frame = pd.DataFrame(X[:200], columns=names)[names[::-1]]  # shuffled columns
    np.testing.assert_allclose(
        tree_shap(booster, frame), booster.predict(X[:200], pred_contrib=True), atol=1e-12
    )


def test_categorical_splits_are_refused():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 6, 2000), rng.normal(size=2000)]).astype(float)
    y = ((X[:, 0] % 2 == 0) ^ (rng.random(2000) < 0.1)).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbosity": -1, "min_data_per_group": 5, "cat_smooth": 1},
        lgb.Dataset(X, y, categorical_feature=[0]),
        5,
    )
    with pytest.raises(ValueError, match="categorical"):
        TreeShapExplainer(booster)
