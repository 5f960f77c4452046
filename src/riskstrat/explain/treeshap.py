"""Exact, fast TreeSHAP for LightGBM boosters: the same numbers as ``pred_contrib``, sooner.

LightGBM's ``booster.predict(X, pred_contrib=True)`` runs the path-dependent TreeSHAP
algorithm (Lundberg et al. 2020, Algorithm 2) row by row, which costs O(L D^2) per tree and
row (L leaves, D depth). This module computes exactly the same values in O(L D) or less per
tree and row by moving the x-independent part of the work to a one-off precomputation, in
the spirit of Fast TreeSHAP v2 (Yang 2021).

Why the leaf decomposition is exact
-----------------------------------
Path-dependent TreeSHAP explains the set function v(S) = sum over leaves l of
v_l * prod_{j in P_l} c_lj(S), where P_l is the set of distinct features split on along the
path to leaf l, and c_lj(S) = o_lj if j is in S, else z_lj. Here z_lj is the product, over the
path's splits on j, of child cover / parent cover (LightGBM's covers are the training row
counts), and o_lj is 1 if x goes the path's way at every split on j and 0 otherwise. (Repeated
splits on a feature along a path multiply, which is what the "unwind" step of the algorithm
does.) Shapley values are linear in v, so each leaf can be explained on its own, and a leaf's
game involves only its d = |P_l| features. With A the features of P_l that x agrees with and
D = P_l - A the ones it disagrees with, the Shapley value of feature i in P_l is

    phi_i = v_l * (o_i - z_i) * sum_{S subset of P_l - {i}, S subset of A}
            |S|! (d - 1 - |S|)! / d! * prod_{j in P_l - {i} - S} z_j,

because the marginal contribution of i to S vanishes unless every feature of S agrees.
Grouping the subsets by size turns the sum into elementary symmetric polynomials e_k of the
z's of the agreeing features, times the product Z_D of the z's of the disagreeing ones:

    i in D:  phi_i = -v_l * Z_D * sum_{s=0}^{|A|} w(s) e_{|A|-s}(z_A)        (one value for all)
    i in A:  phi_i = v_l * (1 - z_i) * Z_D * sum_{s=0}^{|A|-1} w(s) e_{|A|-1-s}(z_{A - {i}})

with w(s) = s! (d-1-s)! / d!. The polynomial e(z_A) costs O(d^2); e(z_{A - {i}}) follows from
it by dividing out (1 + z_i t), O(d) per feature. The expected value (the last column) is
sum over leaves of v_l * (leaf count / root count), as in LightGBM's ``Tree::ExpectedValue``.

Tables
------
The only thing a leaf's contribution depends on is its disagreement mask: d bits. So for a
leaf with small d the whole answer is tabulated, a (2^d, d) table of contributions built once
per model, and explaining a row costs one pass over each tree's splits (each split tells which
child x disagrees with, which sets that feature's bit in the masks below it) and one table row
added per leaf. Sibling leaves, and more generally all the leaves of a small subtree, can share
one table: its key is the mask of the subtree root's path features plus one bit per split
inside the subtree (every leaf's mask follows from those), and its row holds the summed
contributions of all its leaves to the union of their features. That cuts the additions per
row, and often the memory too. Which subtrees get a table, and which deep leaves are instead
evaluated on the fly with the polynomial formulas above, is chosen per model by a small
dynamic programme that minimises the estimated work per row within a memory budget. Every
choice gives the same values; it only trades table memory against arithmetic.

Kernels
-------
The kernels are compiled with numba on first use (never at import) and cached on disk, so the
compile cost is paid once per machine. Rows go in blocks of up to 1024, spread over threads;
within a block the trees are taken one at a time, and each split is decided for all the
block's rows in one loop over a transposed copy of the block (which vectorises), so a tree's
splits and tables stay in cache. Leaves done on the fly are also evaluated for all the
block's rows at once. Sums are in float64; they differ from LightGBM's only by rounding.

Most of the time goes in reading table rows, one per unit and row, wherever the row's key
points. Inputs of a few blocks or more are therefore explained in a sorted order: by the bins
of the most split-on features, so a block holds similar rows, which read few distinct table
rows, and those stay in cache. Each row's values are its own in any order, bit for bit; the
kernel writes them to the row's place in the output. Keys are held in int32 where every key
fits, so twice as many are decided per vector instruction.

LightGBM's decision rule is replicated exactly. LightGBM widens float32 input to float64; a
NaN is read as 0.0 unless the split's missing type is NaN; a zero (|x| <= 1e-35f) under
missing type Zero, or a NaN under missing type NaN, goes the default way; anything else goes
left iff x <= threshold. Here float32 input is compared in float32 instead, against each
threshold rounded down to the largest float32 not above it: for a float32 x, x <= t exactly
when x <= that float32, so every row goes the way LightGBM sends it.

Modules
-------
This module holds the explainer (the packing of the trees into flat arrays, and the calls);
``_treeshap_trees`` reads the trees and chooses the table units; ``_treeshap_kernels`` holds
the numba kernels.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pandas as pd

from riskstrat.explain._treeshap_kernels import kernels, numba_threads
from riskstrat.explain._treeshap_trees import (
    MAX_PATH_FEATURES,
    Choice,
    Tree,
    choice_arrays,
    choose_units,
    parse_tree,
    subtree_size,
    under,
    unit_features,
    weights,
)

__all__ = ["TreeShapExplainer", "tree_shap"]

# Rows per block: a block's inputs and outputs stay in cache while every tree passes over it.
# Small inputs get smaller blocks (down to the minimum) so that every thread has one.
_BLOCK_ROWS = 1024
_MIN_BLOCK_ROWS = 64
# Inputs at least this long are sorted (see _order), on bins that fit in this many key bits.
_SORT_MIN_ROWS = 4 * _BLOCK_ROWS
_SORT_KEY_BITS = 60
_SORT_THRESHOLDS = 15
# Rows per chunk of the on-the-fly leaf evaluation, whose scratch stays in the L1 cache.
_CHUNK = 128


# Keys of at most this many bits (and table offsets under 2^31) are held in int32.
_INT32_KEY_BITS = 30
# LightGBM's kZeroThreshold (1e-35f): |x| at most this is "zero" under missing type Zero.
_ZERO_LIMIT = float(np.float32(1e-35))


def _round_down_f32(thr: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """The largest float32 at most each threshold: for a float32 x, ``x <= t`` exactly when
    ``x <= t32``, so float32 rows can be compared in float32, as LightGBM's float64 rule says."""
    with np.errstate(over="ignore"):
        t32 = thr.astype(np.float32)
    above = t32.astype(np.float64) > thr
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


def _order_plan(
    trees: list[Tree], key_bits: int
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.int64]
]:
    """What the rows are sorted on: the most split-on features, binned by their thresholds.

    Features are taken by how many splits use them while their bins fit in ``key_bits``; a
    feature with many thresholds is binned on an evenly spaced selection of them
    (``_SORT_THRESHOLDS``), which groups the rows about as well and costs less per row.
    Returns the kernel's ``feats``, ``th_off``, ``th`` and ``shift`` (see ``_order_keys``).
    """
    thresholds: dict[int, set[float]] = {}
    splits: dict[int, int] = {}
    for tree in trees:
        for f, t in zip(tree.feat, tree.thr, strict=True):
            thresholds.setdefault(f, set()).add(t)
            splits[f] = splits.get(f, 0) + 1
    feats: list[int] = []
    th_off = [0]
    th: list[float] = []
    shift: list[int] = []
    used = 0
    for f in sorted(splits, key=lambda f: (-splits[f], f)):
        values = sorted(thresholds[f])
        if len(values) > _SORT_THRESHOLDS:
            picks = np.linspace(0, len(values) - 1, _SORT_THRESHOLDS).round().astype(int)
            values = [values[i] for i in picks]
        bits = (len(values) + 1).bit_length()  # bins 0..len(values), and NaN
        if used + bits > key_bits:
            break
        used += bits
        feats.append(f)
        th.extend(values)
        th_off.append(len(th))
        shift.append(key_bits - used)
    return (
        np.asarray(feats, dtype=np.int64),
        np.asarray(th_off, dtype=np.int64),
        np.asarray(th, dtype=np.float64),
        np.asarray(shift, dtype=np.int64),
    )


class TreeShapExplainer:
    """Exact path-dependent TreeSHAP for a binary or regression LightGBM booster.

    Gives the same values as ``booster.predict(X, pred_contrib=True)`` (to rounding, within
    1e-12 in the tests), many times faster, by precomputing per-leaf (and per-subtree) tables of
    contributions once per model. Building the explainer reads the trees and builds the
    tables (compiling the kernels the first time on a machine); ``shap_values`` can then be
    called any number of times. See the module docstring.

    Args:
        booster: A trained LightGBM booster with numerical splits only and one tree per
            iteration (binary, regression and similar objectives; not multiclass, categorical
            splits or linear trees).
        num_iteration: Number of boosting iterations to explain. ``None`` uses
            ``booster.best_iteration`` when it is set and all iterations otherwise; ``<= 0``
            means all iterations (LightGBM's convention).
        max_table_depth: Largest number of key bits (distinct path features, plus splits
            inside a shared subtree) a table may have; leaves deeper than this are evaluated
            on the fly, exactly, with the O(d^2) formula.
        max_table_mb: Memory budget for the contribution tables in MiB; within it the
            tables are chosen to minimise the expected work per row. The table of the leaf
            each key reaches (for the raw scores) adds one value per key, a fraction of that.

    Raises:
        ValueError: for multiclass models, categorical splits or linear trees.
    """

    def __init__(
        self,
        booster: lgb.Booster,
        *,
        num_iteration: int | None = None,
        max_table_depth: int = 16,
        max_table_mb: float = 256.0,
    ) -> None:
        if num_iteration is None:
            num_iteration = booster.best_iteration if booster.best_iteration > 0 else -1
        model = booster.dump_model(num_iteration=num_iteration)
        if int(model.get("num_class", 1)) > 1 or int(model.get("num_tree_per_iteration", 1)) > 1:
            raise ValueError("multiclass models are not supported by riskstrat.explain.treeshap")
        self.feature_names: list[str] = list(booster.feature_name())
        self.n_features = int(model["max_feature_idx"]) + 1
        self.num_iteration = num_iteration
        trees = [parse_tree(info["tree_structure"], i) for i, info in enumerate(model["tree_info"])]
        self._expected = 0.0
        for tree in trees:
            if tree.ni == 0:
                self._expected += tree.leaf_value[0]
            else:
                self._expected += sum(
                    c / tree.root_count * v
                    for c, v in zip(tree.leaf_count, tree.leaf_value, strict=True)
                )
        max_bits = max(0, min(int(max_table_depth), MAX_PATH_FEATURES))
        choice = choice_arrays(trees, max_bits)
        is_unit = choose_units(choice, float(max_table_mb) * 2**20)
        self._pack(trees, choice, is_unit)
        self._order_plan = _order_plan(trees, _SORT_KEY_BITS)
        self._table, self._leaf_table = self._build()

    # ---- packing --------------------------------------------------------------------------

    def _pack(self, trees: list[Tree], ch: Choice, is_unit: npt.NDArray[np.bool_]) -> None:
        """Lay the trees and the chosen units out in flat arrays for the kernels.

        Each tree's splits are either above the units ("upper": they pass disagreement masks
        down to their children's slots) or inside a unit ("inner": they set one bit of the
        unit's key, in the unit's slot). Slot 0 is the root's.
        """
        nd: dict[str, list[Any]] = {
            k: []
            for k in (
                "feat", "thr", "nan_right", "zero", "inner", "src", "left", "right", "mask",
            )
        }  # fmt: skip
        t_node_off = [0]
        t_unit_off = [0]
        u: dict[str, list[Any]] = {
            k: [] for k in ("slot", "feat_off", "nout", "v", "tab_off", "leaf_tab_off")
        }
        t_leaf: list[float] = []  # a tree of one leaf: its value (the others' 0.0, unused)
        u_feat: list[int] = []
        u_z: list[float] = []
        # Units that get a table, and their leaves, for the builder.
        bu: dict[str, list[int]] = {
            k: [] for k in ("tab_off", "nbits", "nanc", "nout", "leaf_tab_off")
        }
        b_leaf_off = [0]
        bl: dict[str, list[Any]] = {k: [] for k in ("v", "d", "z_off", "pn_off")}
        bl_z: list[float] = []
        bl_pos: list[int] = []
        pn: dict[str, list[int]] = {k: [] for k in ("shift", "dir", "bit")}
        tab_size = 0
        leaf_tab_size = 0
        n_slots = 1
        max_d = 1
        fb_d = 1
        for ti, tree in enumerate(trees):
            ni = tree.ni
            base = int(ch.tree_off[ti])
            nd["feat"].extend(tree.feat)
            nd["thr"].extend(tree.thr)
            nd["zero"].extend(tree.zero)
            # Under missing type Zero a NaN or a zero goes the default way; otherwise a NaN goes
            # the way nan_left says (the default way, or where 0.0 goes under missing type None).
            nd["nan_right"].extend(
                1 - (dl if z else nl)
                for z, dl, nl in zip(tree.zero, tree.def_left, tree.nan_left, strict=True)
            )
            t_node_off.append(t_node_off[-1] + ni)
            t_leaf.append(tree.leaf_value[0] if ni == 0 else 0.0)
            if ni == 0:
                t_unit_off.append(len(u["slot"]))
                continue
            # Walk down from the root: a node is either a unit root or an upper split.
            slot: dict[int, int] = {}
            upper: list[int] = []
            roots: list[int] = []
            stack = [0]
            while stack:
                c = stack.pop()
                slot[c] = len(slot)
                if c < ni and not is_unit[base + c]:
                    upper.append(c)
                    stack.extend(reversed(tree.children[c]))
                else:
                    roots.append(c)
            n_slots = max(n_slots, len(slot))
            inner_of: dict[int, tuple[int, int]] = {}  # inner split -> (slot, key bit)
            for c in roots:
                if c < ni:
                    size = subtree_size(tree, c)
                    inner = list(range(c, c + size))
                    feats = unit_features(tree, c)
                    nanc = len(tree.anc[c])
                    leaves = [lf for lf in range(tree.nl) if under(tree, ni + lf, c, ni)]
                else:
                    inner = []
                    feats = tree.leaf_feats[c - ni]
                    nanc = len(feats)
                    leaves = [c - ni]
                shift = {j: nanc + i for i, j in enumerate(inner)}
                inner_of.update((j, (slot[c], sh)) for j, sh in shift.items())
                nout = len(feats)
                max_d = max(max_d, nout)
                u["slot"].append(slot[c])
                u["feat_off"].append(len(u_feat))
                u["nout"].append(nout)
                u_feat.extend(feats)
                if not is_unit[base + c]:  # a leaf evaluated on the fly
                    fb_d = max(fb_d, nout)
                    u["v"].append(tree.leaf_value[c - ni])
                    u_z.extend(tree.leaf_z[c - ni])
                    u["tab_off"].append(-1)
                    u["leaf_tab_off"].append(-1)
                    continue
                u["v"].append(0.0)
                u_z.extend([0.0] * nout)
                u["tab_off"].append(tab_size)
                nbits = nanc + len(inner)
                u["leaf_tab_off"].append(leaf_tab_size)
                bu["leaf_tab_off"].append(leaf_tab_size)
                leaf_tab_size += 1 << nbits
                bu["tab_off"].append(tab_size)
                bu["nbits"].append(nbits)
                bu["nanc"].append(nanc)
                bu["nout"].append(nout)
                tab_size += nout << nbits
                where = {f: i for i, f in enumerate(feats)}
                for lf in leaves:
                    lfeats = tree.leaf_feats[lf]
                    bl["v"].append(tree.leaf_value[lf])
                    bl["d"].append(len(lfeats))
                    bl["z_off"].append(len(bl_z))
                    bl_z.extend(tree.leaf_z[lf])
                    bl_pos.extend(where[f] for f in lfeats)
                    bl["pn_off"].append(len(pn["shift"]))
                    # The splits inside the unit on the way to this leaf.
                    node, prev = tree.leaf_parent[lf], ni + lf
                    while node >= 0 and node in shift:
                        pn["shift"].append(shift[node])
                        pn["dir"].append(int(tree.children[node][1] == prev))
                        pn["bit"].append(tree.bit[node])
                        node, prev = tree.parent[node], node
                b_leaf_off.append(len(bl["v"]))
            upper_set = set(upper)
            for k in range(ni):
                if k in upper_set:
                    nd["inner"].append(0)
                    nd["src"].append(slot[k])
                    nd["left"].append(slot[tree.children[k][0]])
                    nd["right"].append(slot[tree.children[k][1]])
                    nd["mask"].append(tree.bit[k])
                else:
                    key_slot, sh = inner_of[k]
                    nd["inner"].append(1)
                    nd["src"].append(key_slot)
                    nd["left"].append(key_slot)
                    nd["right"].append(key_slot)
                    nd["mask"].append(1 << sh)
            t_unit_off.append(len(u["slot"]))
        bl["pn_off"].append(len(pn["shift"]))

        def i64(x: list[Any]) -> npt.NDArray[np.int64]:
            return np.asarray(x, dtype=np.int64)

        def f64(x: list[Any]) -> npt.NDArray[np.float64]:
            return np.asarray(x, dtype=np.float64)

        self._n_slots = n_slots
        self._fb_d = fb_d
        self._max_d = max_d
        self._W = weights(max_d)
        # Keys and masks in int32 where every one fits (twice as many to a vector): a key has
        # at most max_bits bits (a fallback leaf's mask, fb_d) and indexes a table row.
        key_bits = max([fb_d, *bu["nbits"]])
        key_type = np.int32 if key_bits <= _INT32_KEY_BITS and tab_size < 2**31 else np.int64
        mask = np.asarray(nd["mask"], dtype=key_type)
        nan_go = mask * np.asarray(nd["nan_right"], dtype=key_type)
        thr = f64(nd["thr"])
        self._thr = {np.dtype(np.float64): thr, np.dtype(np.float32): _round_down_f32(thr)}
        self._nodes_head = (i64(t_node_off), i64(t_unit_off), i64(nd["feat"]))
        self._nodes = (
            nan_go,
            i64(nd["zero"]),
            i64(nd["inner"]),
            i64(nd["src"]),
            i64(nd["left"]),
            i64(nd["right"]),
            mask,
        )
        self._units = (
            i64(u["slot"]),
            i64(u["feat_off"]),
            i64(u["nout"]),
            i64(u_feat),
            f64(u_z),
            f64(u["v"]),
            i64(u["tab_off"]),
        )
        self._build_args = (
            i64(bu["tab_off"]),
            i64(bu["nbits"]),
            i64(bu["nanc"]),
            i64(bu["nout"]),
            i64(b_leaf_off),
            f64(bl["v"]),
            i64(bl["d"]),
            i64(bl["z_off"]),
            f64(bl_z),
            i64(bl_pos),
            i64(bl["pn_off"]),
            i64(pn["shift"]),
            i64(pn["dir"]),
            i64(pn["bit"]),
        )
        self._tab_size = tab_size
        self._leaf_tab_size = leaf_tab_size
        self._u_leaf_tab_off = i64(u["leaf_tab_off"])
        self._t_leaf = f64(t_leaf)
        self._leaf_tab_off = i64(bu["leaf_tab_off"])
        self._n_units = len(u["slot"])
        self._n_tables = len(bu["tab_off"])

    # ---- tables ---------------------------------------------------------------------------

    def _build(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Build the tables of contributions and of the leaf each key reaches, on all cores
        (the first time, this compiles the kernels)."""
        build, _, _ = kernels()
        table = np.zeros(self._tab_size)
        leaf_table = np.zeros(self._leaf_tab_size)
        with numba_threads(None):
            build(*self._build_args, self._W, self._max_d, table, self._leaf_tab_off, leaf_table)
        return table, leaf_table

    @property
    def table_bytes(self) -> int:
        """Memory the contribution tables take, in bytes (what ``max_table_mb`` bounds)."""
        return 8 * self._tab_size

    @property
    def leaf_table_bytes(self) -> int:
        """Memory the tables of the leaf each key reaches take, in bytes: one value per key
        of every tabulated unit, so at most as much as the contribution tables."""
        return 8 * self._leaf_tab_size

    @property
    def expected_value(self) -> float:
        """The base value: the model's mean raw score over its training data (last column)."""
        return self._expected

    # ---- explaining -----------------------------------------------------------------------

    def _matrix(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
        if isinstance(X, pd.DataFrame):
            missing = [c for c in self.feature_names if c not in X.columns]
            if missing:
                raise ValueError(f"X lacks the model's features: {missing[:5]}")
            return np.ascontiguousarray(
                X[self.feature_names].to_numpy(dtype=np.float32, na_value=np.nan)
            )
        data = np.asarray(X)
        if data.ndim != 2:
            raise ValueError(f"X must be two-dimensional, not shape {data.shape}")
        if data.dtype not in (np.float32, np.float64):
            data = data.astype(np.float32)  # as LightGBM does for other dtypes
        return np.ascontiguousarray(data)

    def _order(self, data: np.ndarray) -> npt.NDArray[np.int64]:
        """The order the rows are explained in: similar rows together, so that a block's rows
        read few distinct table rows, which then stay in cache. Each row's values are the same
        in any order; a few blocks' worth of rows are taken as they come."""
        n = data.shape[0]
        if n < _SORT_MIN_ROWS or self._order_plan[0].shape[0] == 0:
            return np.arange(n, dtype=np.int64)
        _, _, order_keys = kernels()
        keys = np.empty(n, dtype=np.int64)
        order_keys(data, *self._order_plan, keys)
        return np.argsort(keys).astype(np.int64, copy=False)

    def shap_values(
        self, X: np.ndarray | pd.DataFrame, *, num_threads: int | None = None
    ) -> npt.NDArray[np.float64]:
        """Exact SHAP values in raw-score units (log-odds for a binary model).

        Args:
            X: Rows to explain: a DataFrame holding the model's features (taken in
                ``booster.feature_name()`` order and converted to float32, as the project feeds
                LightGBM), or a float32/float64 array with the features in model order.
            num_threads: Threads to use; ``None`` uses all cores.

        Returns:
            Array of shape ``(n_rows, n_features + 1)``: one column per model feature and the
            expected value last, as ``booster.predict(X, pred_contrib=True)``. Each row sums to
            the row's raw score.
        """
        return self._explain(X, num_threads, want_raw=False)[0]

    def shap_values_and_raw_scores(
        self, X: np.ndarray | pd.DataFrame, *, num_threads: int | None = None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """``shap_values``, and each row's raw score from the same pass over the trees:
        equal to the bit to ``booster.predict(X, raw_score=True)`` (LightGBM's sum of the
        leaves the row reaches, in tree order), for a fraction of its cost, since the
        explanation already decides every split. The rows' SHAP values sum to the raw score
        only to rounding; the raw score is the one LightGBM would give."""
        return self._explain(X, num_threads, want_raw=True)

    def _explain(
        self, X: np.ndarray | pd.DataFrame, num_threads: int | None, *, want_raw: bool
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        data = self._matrix(X)
        if data.shape[1] != self.n_features:
            raise ValueError(
                f"X has {data.shape[1]} columns but the model has {self.n_features} features"
            )
        n = data.shape[0]
        out = np.empty((n, self.n_features + 1))
        raw = np.empty(n if want_raw else 0)
        if n:
            _, rows, _ = kernels()
            with numba_threads(num_threads) as threads:
                order = self._order(data)
                # Enough blocks to keep every thread busy, but no smaller than needed.
                per_thread = -(-n // threads)
                block = max(_MIN_BLOCK_ROWS, min(_BLOCK_ROWS, per_thread))
                rows(
                    data,
                    order,
                    out,
                    block,
                    *self._nodes_head,
                    self._thr[data.dtype],
                    *self._nodes,
                    np.full(1, _ZERO_LIMIT, dtype=data.dtype),
                    *self._units,
                    self._table,
                    self._W,
                    self._expected,
                    self._n_slots,
                    self._fb_d,
                    _CHUNK,
                    min(threads, -(-n // block)),
                    self._u_leaf_tab_off,
                    self._leaf_table,
                    self._t_leaf,
                    raw,
                    want_raw,
                )
        return out, raw


def tree_shap(
    booster: lgb.Booster,
    X: np.ndarray | pd.DataFrame,
    *,
    num_iteration: int | None = None,
    num_threads: int | None = None,
) -> npt.NDArray[np.float64]:
    """Exact SHAP values for ``X``, as ``booster.predict(X, pred_contrib=True)`` gives them.

    Args:
        booster: A trained LightGBM booster (see ``TreeShapExplainer``).
        X: Rows to explain (see ``TreeShapExplainer.shap_values``).
        num_iteration: Iterations to explain; ``None`` means ``best_iteration`` or all.
        num_threads: Threads to use; ``None`` uses all cores.

    Returns:
        Array of shape ``(n_rows, n_features + 1)``, the expected value last.
    """
    explainer = TreeShapExplainer(booster, num_iteration=num_iteration)
    return explainer.shap_values(X, num_threads=num_threads)
