"""The fast TreeSHAP gives LightGBM's own SHAP values (``pred_contrib``), to rounding."""

from __future__ import annotations

import subprocess
import sys
import warnings

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from riskstrat.explain import treeshap
from riskstrat.explain.treeshap import TreeShapExplainer, tree_shap

TOL = 1e-12


def _data(seed: int, n: int = 1500, p: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """float32 features with NaNs, exact zeros, tiny values and small integers; a binary label."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)).astype(np.float32)
    X[:, 1] = rng.poisson(1.0, n)  # a count: many exact zeros
    X[:, 2] = rng.random(n) < 0.3  # a flag
    X[rng.random((n, p)) < 0.08] = np.nan
    X[rng.random((n, p)) < 0.05] = 0.0
    X[rng.random((n, p)) < 0.01] = np.float32(1e-36)  # "zero" to LightGBM (|x| <= 1e-35)
    X[rng.random((n, p)) < 0.01] = -0.0
    Z = np.nan_to_num(X.astype(np.float64))
    logit = Z[:, 0] + 0.8 * Z[:, 1] * Z[:, 3] - Z[:, 2] + 0.5 * np.sin(2 * Z[:, 4]) - 0.5
    logit += np.isnan(X[:, 5]) - 0.5 * Z[:, 6] * (Z[:, 7] > 0)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


def _train(
    X: np.ndarray,
    y: np.ndarray,
    rounds: int = 25,
    init_model: lgb.Booster | None = None,
    **params: object,
) -> lgb.Booster:
    base = {"objective": "binary", "verbosity": -1, "num_threads": 1, "seed": 3}
    data = lgb.Dataset(X, label=y)
    return lgb.train({**base, **params}, data, num_boost_round=rounds, init_model=init_model)


def _assert_matches(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    explainer = TreeShapExplainer(booster)
    got = explainer.shap_values(X)
    want = booster.predict(X, pred_contrib=True)
    assert got.shape == want.shape == (X.shape[0], booster.num_feature() + 1)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    _assert_raw_scores_are_lightgbms(explainer, booster, X, got)
    return got


def _assert_raw_scores_are_lightgbms(
    explainer: TreeShapExplainer, booster: lgb.Booster, X: np.ndarray, shap: np.ndarray
) -> None:
    """The raw scores from the explanation's pass are LightGBM's own, to the bit, and the
    SHAP values beside them are the ones ``shap_values`` gives."""
    values, raw = explainer.shap_values_and_raw_scores(X)
    assert raw.shape == (X.shape[0],) and raw.dtype == np.float64
    np.testing.assert_array_equal(raw, booster.predict(X, raw_score=True))
    np.testing.assert_array_equal(values, shap)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("num_leaves", [2, 7, 31, 63])
@pytest.mark.parametrize("max_depth", [-1, 4])
def test_matches_pred_contrib(seed, num_leaves, max_depth):
    X, y = _data(seed)
    booster = _train(X, y, num_leaves=num_leaves, max_depth=max_depth, min_data_in_leaf=5)
    _assert_matches(booster, X[:400])


@pytest.mark.parametrize(
    ("max_table_depth", "max_table_mb"),
    [(3, 256.0), (0, 256.0), (14, 0.0), (14, 0.05), (6, 0.5)],
)
def test_deep_leaves_done_on_the_fly_are_exact(max_table_depth, max_table_mb):
    # Deep, narrow trees: many leaves exceed the small table limits, so the O(d^2) evaluation
    # (and, for the mixed budgets, tables shared by subtrees next to it) is exercised.
    X, y = _data(2, n=2000)
    booster = _train(X, y, rounds=15, num_leaves=63, min_data_in_leaf=2, min_sum_hessian_in_leaf=0)
    explainer = TreeShapExplainer(
        booster, max_table_depth=max_table_depth, max_table_mb=max_table_mb
    )
    if max_table_mb == 0.0 or max_table_depth == 0:
        assert explainer.table_bytes == 0
    assert explainer.table_bytes <= max_table_mb * 2**20
    got = explainer.shap_values(X[:300])
    np.testing.assert_allclose(got, booster.predict(X[:300], pred_contrib=True), rtol=0, atol=TOL)
    # The leaves done on the fly, and the tables of the leaf each key reaches, give
    # LightGBM's raw scores to the bit.
    _assert_raw_scores_are_lightgbms(explainer, booster, X[:300], got)
    assert explainer.leaf_table_bytes <= explainer.table_bytes


_PARAMS = {
    "default": {},  # missing type NaN for features that had NaNs in training
    "no-missing": {"use_missing": False},  # missing type None: NaN reads as 0.0
    "zero-as-missing": {"zero_as_missing": True},  # missing type Zero: zeros, NaNs go default
}
_MISSING_TYPE = {"default": "NaN", "no-missing": "None", "zero-as-missing": "Zero"}


@pytest.mark.parametrize("case", list(_PARAMS))
def test_missing_value_handling_matches(case):
    X, y = _data(4)
    booster = _train(X, y, num_leaves=15, **_PARAMS[case])
    kinds = {
        node["missing_type"]
        for info in booster.dump_model()["tree_info"]
        for node in _internal_nodes(info["tree_structure"])
    }
    assert _MISSING_TYPE[case] in kinds
    _assert_matches(booster, X[:400])


def _internal_nodes(node):
    if "leaf_value" in node:
        return []
    return [node, *_internal_nodes(node["left_child"]), *_internal_nodes(node["right_child"])]


def _edge_rows(booster: lgb.Booster, p: int) -> np.ndarray:
    """Rows whose values sit on and right next to every threshold, plus NaNs and zeros."""
    values = {np.float32(np.nan), np.float32(0.0), np.float32(-0.0), np.float32(1e-36)}
    for info in booster.dump_model()["tree_info"]:
        for node in _internal_nodes(info["tree_structure"]):
            t = np.float32(node["threshold"])
            values |= {t, np.nextafter(t, np.float32(np.inf)), np.nextafter(t, np.float32(-np.inf))}
    vals = np.array(sorted(values, key=lambda v: (np.isnan(v), v)), dtype=np.float32)
    rng = np.random.default_rng(0)
    return rng.choice(vals, size=(600, p)).astype(np.float32)


@pytest.mark.parametrize("case", list(_PARAMS))
def test_each_tree_reaches_the_leaf_lightgbm_reaches(case):
    # The SHAP values of the first k trees minus those of the first k - 1 sum to the value of
    # the leaf tree k reaches, which must be the leaf pred_leaf names, on values at thresholds.
    X, y = _data(5)
    booster = _train(X, y, rounds=6, num_leaves=15, **_PARAMS[case])
    edge = np.vstack([_edge_rows(booster, X.shape[1]), X[:200]])
    leaves = booster.predict(edge, pred_leaf=True)
    infos = booster.dump_model()["tree_info"]
    previous = np.zeros(len(edge))
    for k, info in enumerate(infos, start=1):
        total = TreeShapExplainer(booster, num_iteration=k).shap_values(edge).sum(axis=1)
        reached = total - previous
        values = _leaf_values(info["tree_structure"])
        np.testing.assert_allclose(reached, values[leaves[:, k - 1]], rtol=0, atol=TOL)
        previous = total
    _assert_matches(booster, edge)


def _leaf_values(node) -> np.ndarray:
    out: dict[int, float] = {}

    def walk(n):
        if "leaf_value" in n:
            out[int(n.get("leaf_index", 0))] = n["leaf_value"]
        else:
            walk(n["left_child"])
            walk(n["right_child"])

    walk(node)
    return np.array([out[i] for i in range(len(out))])


def test_rows_sum_to_the_raw_score_and_the_base_is_the_expected_value():
    X, y = _data(6)
    booster = _train(X, y, num_leaves=31)
    explainer = TreeShapExplainer(booster)
    phi = explainer.shap_values(X[:500])
    np.testing.assert_allclose(
        phi.sum(axis=1), booster.predict(X[:500], raw_score=True), rtol=0, atol=TOL
    )
    assert (phi[:, -1] == explainer.expected_value).all()
    np.testing.assert_allclose(
        explainer.expected_value, booster.predict(X[:1], pred_contrib=True)[0, -1], atol=1e-12
    )


def test_matches_the_shap_package():
    shap = pytest.importorskip("shap")
    X, y = _data(7)
    booster = _train(X, y, num_leaves=31)
    ours = TreeShapExplainer(booster)
    got = ours.shap_values(X[:300])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = shap.TreeExplainer(booster)
        values = np.asarray(reference.shap_values(X[:300]))  # log-odds, (n, features)
    assert values.shape == (300, X.shape[1])
    np.testing.assert_allclose(got[:, :-1], values, rtol=0, atol=TOL)
    np.testing.assert_allclose(ours.expected_value, float(reference.expected_value), atol=TOL)


def test_a_single_leaf_tree_only_moves_the_base():
    X, y = _data(8)
    # One round that cannot split (every leaf would need more rows than there are) leaves a
    # constant tree; training then goes on from it.
    stump = _train(X, y, rounds=1, min_data_in_leaf=len(X) + 1)
    booster = _train(X, y, rounds=10, num_leaves=7, init_model=stump)
    infos = booster.dump_model()["tree_info"]
    assert infos[0]["num_leaves"] == 1
    assert len(infos) == 11
    _assert_matches(booster, X[:300])
    _assert_matches(stump, X[:50])


def test_monotone_constraints():
    X, y = _data(9)
    booster = _train(X, y, num_leaves=15, monotone_constraints=[1, 1, -1, 0, 0, 0, -1, 0])
    _assert_matches(booster, X[:300])


def test_regression_objective():
    X, y = _data(10)
    target = np.nan_to_num(X[:, 0]) * 3 + y
    booster = _train(X, target, objective="regression", num_leaves=31)
    _assert_matches(booster, X[:300])


def test_num_iteration_and_best_iteration():
    X, y = _data(11, n=3000)
    train, valid = lgb.Dataset(X[:2000], label=y[:2000]), lgb.Dataset(X[2000:], label=y[2000:])
    booster = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_threads": 1, "learning_rate": 0.5},
        train,
        num_boost_round=200,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(3, verbose=False)],
        keep_training_booster=True,  # keeps the trees after the best iteration
    )
    assert 0 < booster.best_iteration < booster.num_trees()
    rows = X[:300]
    # None: the best iteration, as booster.predict does.
    got = TreeShapExplainer(booster).shap_values(rows)
    np.testing.assert_allclose(got, booster.predict(rows, pred_contrib=True), atol=TOL, rtol=0)
    want_best = booster.predict(rows, pred_contrib=True, num_iteration=booster.best_iteration)
    np.testing.assert_allclose(got, want_best, atol=TOL, rtol=0)
    for k in (1, 4):
        got = TreeShapExplainer(booster, num_iteration=k).shap_values(rows)
        want = booster.predict(rows, pred_contrib=True, num_iteration=k)
        np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    everything = booster.predict(rows, pred_contrib=True, num_iteration=-1)
    got = TreeShapExplainer(booster, num_iteration=0).shap_values(rows)
    np.testing.assert_allclose(got, everything, atol=TOL, rtol=0)
    # The raw scores are of the same iterations: the best by default, as booster.predict.
    _, raw = TreeShapExplainer(booster).shap_values_and_raw_scores(rows)
    np.testing.assert_array_equal(raw, booster.predict(rows, raw_score=True))
    _, raw = TreeShapExplainer(booster, num_iteration=4).shap_values_and_raw_scores(rows)
    np.testing.assert_array_equal(raw, booster.predict(rows, raw_score=True, num_iteration=4))


def test_dataframes_are_read_by_feature_name_and_float64_input_works():
    X, y = _data(12)
    names = [f"f{i}" for i in range(X.shape[1])]
    frame = pd.DataFrame(X, columns=names)
    booster = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_threads": 1, "num_leaves": 15},
        lgb.Dataset(frame, label=y),
        num_boost_round=20,
    )
    shuffled = frame[names[::-1]].assign(extra=1.0).iloc[:300]
    got = tree_shap(booster, shuffled, num_threads=1)
    want = booster.predict(X[:300], pred_contrib=True)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    # float64 input is compared as float64, as LightGBM does.
    X64 = X[:300].astype(np.float64) + np.float64(1e-9)
    got = TreeShapExplainer(booster).shap_values(X64, num_threads=2)
    np.testing.assert_allclose(got, booster.predict(X64, pred_contrib=True), atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="columns"):
        TreeShapExplainer(booster).shap_values(X[:, :3])


def test_threads_and_empty_input():
    X, y = _data(13, n=2500)
    booster = _train(X, y, num_leaves=31)
    explainer = TreeShapExplainer(booster)
    one = explainer.shap_values(X, num_threads=1)
    two = explainer.shap_values(X, num_threads=2)
    np.testing.assert_array_equal(one, two)  # blocks of rows are independent
    empty = explainer.shap_values(X[:0])
    assert empty.shape == (0, X.shape[1] + 1)


@pytest.mark.parametrize("case", list(_PARAMS))
def test_large_inputs_are_sorted_and_each_row_keeps_its_own_values(case):
    # Inputs of several blocks are explained in a sorted order (similar rows together); the
    # values are each row's own, bit for bit, whatever the order and the company it keeps.
    X, y = _data(16, n=6000)
    booster = _train(X, y, rounds=30, num_leaves=31, **_PARAMS[case])
    explainer = TreeShapExplainer(booster)
    assert len(X) >= treeshap._SORT_MIN_ROWS
    order = explainer._order(X)
    assert sorted(order.tolist()) == list(range(len(X))) and (order != np.arange(len(X))).any()
    got = _assert_matches(booster, X)
    shuffled = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_array_equal(explainer.shap_values(X[shuffled]), got[shuffled])
    for i in (0, 1234, 5999):
        np.testing.assert_array_equal(explainer.shap_values(X[i : i + 1])[0], got[i])
    X64 = X.astype(np.float64) + np.float64(1e-9)  # float64 rows, compared as float64
    want = booster.predict(X64, pred_contrib=True)
    np.testing.assert_allclose(explainer.shap_values(X64), want, rtol=0, atol=TOL)
    _assert_raw_scores_are_lightgbms(explainer, booster, X64, explainer.shap_values(X64))
    _, raw = explainer.shap_values_and_raw_scores(X[shuffled])
    np.testing.assert_array_equal(raw, booster.predict(X[shuffled], raw_score=True))


def test_wide_keys_in_int64_give_the_same_values(monkeypatch):
    # Keys that could exceed 30 bits (very deep paths, or huge tables) are held in int64.
    X, y = _data(17, n=5000)
    booster = _train(X, y, num_leaves=31)
    narrow = TreeShapExplainer(booster)
    monkeypatch.setattr(treeshap, "_INT32_KEY_BITS", 0)
    wide = TreeShapExplainer(booster)
    assert narrow._nodes[-1].dtype == np.int32 and wide._nodes[-1].dtype == np.int64
    for rows in (X, X[:300], X[:300].astype(np.float64)):
        np.testing.assert_array_equal(wide.shap_values(rows), narrow.shap_values(rows))
    _assert_matches(booster, X)


def test_float32_thresholds_decide_every_float32_as_the_float64_threshold_does():
    rng = np.random.default_rng(18)
    t = np.concatenate([
        rng.normal(size=2000) * 10.0 ** rng.integers(-40, 39, 2000),
        rng.normal(size=500).astype(np.float32).astype(np.float64),  # exactly float32
        [0.0, -0.0, 1e-300, -1e-300, 1e300, -1e300, np.inf, -np.inf, 3.4028235e38, 3.5e38],
    ])  # fmt: skip
    t32 = treeshap._round_down_f32(t)
    assert t32.dtype == np.float32
    # Every float32 x next to each threshold (and far from it) falls on the same side.
    with np.errstate(over="ignore"):  # the float32 after the largest is inf
        x = np.concatenate([
            t32[:, None],
            np.nextafter(t32, np.float32(np.inf))[:, None],
            np.nextafter(t32, np.float32(-np.inf))[:, None],
            np.broadcast_to(np.array([0.0, np.inf, -np.inf], np.float32), (len(t), 3)),
        ], axis=1)  # fmt: skip
    np.testing.assert_array_equal(x <= t32[:, None], x.astype(np.float64) <= t[:, None])


def test_categorical_splits_are_refused():
    rng = np.random.default_rng(14)
    X = rng.integers(0, 6, size=(1000, 3)).astype(np.float32)
    y = np.isin(X[:, 0], [1, 4]).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_threads": 1, "min_data_per_group": 5},
        lgb.Dataset(X, label=y, categorical_feature=[0]),
        num_boost_round=3,
    )
    with pytest.raises(ValueError, match="categorical splits are not supported"):
        TreeShapExplainer(booster)


def test_multiclass_and_linear_trees_are_refused():
    X, y = _data(15, n=600)
    multi = _train(
        X, (y + (X[:, 0] > 1)).astype(int), rounds=2, objective="multiclass", num_class=3
    )
    with pytest.raises(ValueError, match="multiclass"):
        TreeShapExplainer(multi)
    Xl = np.nan_to_num(X)
    linear = _train(Xl, Xl[:, 0] * 2 + y, rounds=2, objective="regression", linear_tree=True)
    with pytest.raises(ValueError, match="linear"):
        TreeShapExplainer(linear)


@pytest.mark.slow  # imports in a fresh process
def test_importing_compiles_nothing():
    code = "import sys, riskstrat.explain.treeshap; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
