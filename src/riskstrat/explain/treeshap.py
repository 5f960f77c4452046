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
LightGBM's decision rule is replicated exactly: float32 input is widened to float64; a NaN is
read as 0.0 unless the split's missing type is NaN; a zero (|x| <= 1e-35f) under missing type
Zero, or a NaN under missing type NaN, goes the default way; anything else goes left iff
x <= threshold.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = ["TreeShapExplainer", "tree_shap"]

# LightGBM's kZeroThreshold is the float 1e-35f, compared after widening to double.
_ZERO = float(np.float32(1e-35))
# Masks are held in int64, so a path may split on at most this many distinct features.
_MAX_PATH_FEATURES = 62
# Rows per block: a block's inputs and outputs stay in cache while every tree passes over it.
# Small inputs get smaller blocks (down to the minimum) so that every thread has one.
_BLOCK_ROWS = 1024
_MIN_BLOCK_ROWS = 64
# Rows per chunk of the on-the-fly leaf evaluation, whose scratch stays in the L1 cache.
_CHUNK = 128
# Estimated cost per row, in rough "operations", used only to choose tables (never affects values).
# Calibrated on a 400-tree, 31-leaf model: one unit of cost is about one table addition.
_UNIT_COST = 2.0
_ADD_COST = 1.0
_INNER_COST = 0.3


def _fallback_cost(d: int) -> float:
    """Rough cost of the on-the-fly polynomial evaluation for a leaf with ``d`` features."""
    return 10.0 + 2.0 * d + 0.6 * d * d


# --------------------------------------------------------------------------------------------
# numba kernels. They are plain functions here and compiled by ``_kernels()`` on first use:
# ``_prange`` and ``_leaf_phi`` are rebound to numba objects there, before the kernels that use
# them are compiled, so importing this module neither imports numba nor compiles anything.
# --------------------------------------------------------------------------------------------

_prange = range


def _leaf_phi(d, z, zo, v, mask, W, out, e, f):
    """One leaf's exact contributions to its ``d`` path features for disagreement ``mask``.

    ``z[zo:zo + d]`` are the features' cover fractions, ``mask`` has bit j set when x disagrees
    with the path on feature j, ``W[d, s]`` = s!(d-1-s)!/d!; results go to ``out[:d]``; ``e``
    and ``f`` are scratch of length >= d + 1. The divisions of the polynomial by (1 + z_k t)
    run for all k side by side (independent chains, which vectorise), and the results of the
    disagreeing features are then replaced by their common value.
    """
    zd = 1.0
    a = 0
    e[0] = 1.0
    for j in range(d):
        zj = z[zo + j]
        if (mask >> j) & 1:
            zd *= zj
        else:
            a += 1
            e[a] = zj * e[a - 1]
            for s in range(a - 1, 0, -1):
                e[s] += zj * e[s - 1]
    dis = 0.0
    if a < d:
        qd = 0.0
        for s in range(a + 1):
            qd += W[d, s] * e[a - s]
        dis = -v * zd * qd
    if a > 0:
        w0 = W[d, a - 1]
        for k in range(d):
            f[k] = 1.0
            out[k] = w0
        for t in range(1, a):
            et = e[t]
            wt = W[d, a - 1 - t]
            for k in range(d):
                fk = et - z[zo + k] * f[k]
                f[k] = fk
                out[k] += wt * fk
    for k in range(d):
        if (mask >> k) & 1:
            out[k] = dis
        else:
            out[k] = v * (1.0 - z[zo + k]) * zd * out[k]


def _leaf_phi_rows(d, z, zo, v, keys, nb, W, acc, feats, E, zd, dis, aw, f, q):
    """``_leaf_phi`` for the first ``nb`` rows at once, adding into ``acc[feats[zo + k], i]``.

    The same formulas, with every row's polynomial held in a column of ``E`` so each step is a
    loop over rows (which vectorises); a disagreeing feature multiplies by zero, which adds
    exactly nothing. Rows go in chunks of ``E.shape[1]`` so the scratch (``E``; ``aw``, each
    row's weights W[d, a - 1 - t], 0 outside 0..d-1; ``zd``, ``dis``, ``f``, ``q``) stays in
    the L1 cache.
    """
    chunk = E.shape[1]
    full = (np.int64(1) << d) - 1
    for c0 in range(0, nb, chunk):
        n = min(nb, c0 + chunk) - c0
        kc = keys[c0 : c0 + n]
        for i in range(n):
            E[0, i] = 1.0
            zd[i] = 1.0
        for s in range(1, d + 1):
            es = E[s]
            for i in range(n):
                es[i] = 0.0
        for j in range(d):
            zj = z[zo + j]
            for i in range(n):  # z_j where row i agrees on feature j, else 0
                if (kc[i] >> j) & 1:
                    f[i] = 0.0
                    zd[i] *= zj
                else:
                    f[i] = zj
            for s in range(j + 1, 0, -1):
                es = E[s]
                ep = E[s - 1]
                for i in range(n):
                    es[i] += f[i] * ep[i]
        for i in range(n):
            # a = number of agreeing features; weights by position, zero where out of range.
            m = kc[i] & full
            a = d
            while m:
                m &= m - 1
                a -= 1
            for t in range(d):
                aw[t, i] = W[d, a - 1 - t] if t < a else 0.0
            qd = 0.0
            for k in range(a + 1):
                qd += W[d, a - k] * E[k, i]
            dis[i] = -v * zd[i] * qd
        for k in range(d):
            zk = z[zo + k]
            a0 = aw[0]
            for i in range(n):
                f[i] = 1.0
                q[i] = a0[i]
            for t in range(1, d):
                et = E[t]
                at = aw[t]
                for i in range(n):
                    f[i] = et[i] - zk * f[i]
                    q[i] += at[i] * f[i]
            ak = acc[feats[zo + k], c0 : c0 + n]
            c = v * (1.0 - zk)
            for i in range(n):
                ak[i] += dis[i] if (kc[i] >> k) & 1 else c * zd[i] * q[i]


def _build_tables(
    b_tab_off,
    b_nbits,
    b_nanc,
    b_nout,
    b_leaf_off,
    l_v,
    l_d,
    l_z_off,
    l_z,
    l_pos,
    l_pn_off,
    pn_shift,
    pn_dir,
    pn_bit,
    W,
    max_d,
    table,
):
    """Fill ``table`` with the summed leaf contributions of every tabulated unit, per key.

    Each leaf's contributions are worked out once per mask of its own features (2^d of them),
    then added to every key of its unit, whose other bits do not concern the leaf.
    """
    for u in _prange(b_tab_off.shape[0]):
        e = np.empty(max_d + 2)
        f = np.empty(max_d + 2)
        off = b_tab_off[u]
        nout = b_nout[u]
        n_keys = np.int64(1) << b_nbits[u]
        anc = (np.int64(1) << b_nanc[u]) - 1
        for li in range(b_leaf_off[u], b_leaf_off[u + 1]):
            d = l_d[li]
            zo = l_z_off[li]
            leaf = np.empty(((np.int64(1) << d), d + 2))
            for mask in range(np.int64(1) << d):
                _leaf_phi(d, l_z, zo, l_v[li], mask, W, leaf[mask], e, f)
            for key in range(n_keys):
                mask = key & anc
                for p in range(l_pn_off[li], l_pn_off[li + 1]):
                    if ((key >> pn_shift[p]) & 1) != pn_dir[p]:
                        mask |= pn_bit[p]
                row = off + key * nout
                for k in range(d):
                    table[row + l_pos[zo + k]] += leaf[mask, k]


def _shap_rows(
    X,
    out,
    block,
    t_node_off,
    t_unit_off,
    nd_feat,
    nd_thr,
    nd_nanleft,
    nd_zero,
    nd_defleft,
    nd_inner,
    nd_src,
    nd_left,
    nd_right,
    nd_bit,
    u_slot,
    u_feat_off,
    u_nout,
    u_feat,
    u_z,
    u_v,
    u_tab_off,
    table,
    W,
    n_slots,
    fb_d,
    chunk,
):
    """Add every tree's SHAP values for the rows of ``X`` into ``out[:, :n_features]``.

    Rows go in blocks; within a block, tree by tree, each split is decided for all the block's
    rows at once (simple loops over a transposed copy of the block, which vectorise). A split
    above the units passes its disagreement masks down to its children's slots; a split inside
    a unit sets its bit in the unit's key. Then each unit adds its table row per row.
    """
    n, n_feat = X.shape
    n_trees = t_node_off.shape[0] - 1
    n_blocks = (n + block - 1) // block
    for b in _prange(n_blocks):
        r0 = b * block
        nb = min(n, r0 + block) - r0
        xt = np.empty((n_feat, block), X.dtype)
        for i in range(nb):
            for f in range(n_feat):
                xt[f, i] = X[r0 + i, f]
        acc = np.zeros((n_feat, block))
        slots = np.zeros((n_slots, block), np.int64)
        right = np.zeros(block, np.int64)
        fb_e = np.empty((fb_d + 1, chunk))
        fb_w = np.empty((fb_d, chunk))
        fb_zd = np.empty(chunk)
        fb_dis = np.empty(chunk)
        fb_f = np.empty(chunk)
        fb_q = np.empty(chunk)
        for t in range(n_trees):
            n0 = t_node_off[t]
            ni = t_node_off[t + 1] - n0
            if ni == 0:
                continue
            s0 = slots[0]
            for i in range(nb):
                s0[i] = 0
            for k in range(ni):
                g = n0 + k
                xs = xt[nd_feat[g]]
                thr = nd_thr[g]
                if nd_zero[g]:
                    zero_right = 1 - nd_defleft[g]
                    for i in range(nb):
                        x = np.float64(xs[i])
                        if x != x or (-_ZERO <= x <= _ZERO):
                            right[i] = zero_right
                        else:
                            right[i] = np.int64(x > thr)
                else:
                    nan_right = 1 - nd_nanleft[g]
                    for i in range(nb):
                        x = np.float64(xs[i])
                        right[i] = np.int64(x > thr) | (np.int64(x != x) & nan_right)
                bit = nd_bit[g]
                if nd_inner[g]:
                    key = slots[nd_left[g]]
                    for i in range(nb):
                        key[i] |= right[i] << bit
                else:
                    src = slots[nd_src[g]]
                    sl = slots[nd_left[g]]
                    sr = slots[nd_right[g]]
                    for i in range(nb):
                        sl[i] = src[i] | (bit * right[i])
                        sr[i] = src[i] | (bit - bit * right[i])
            for u in range(t_unit_off[t], t_unit_off[t + 1]):
                key = slots[u_slot[u]]
                fo = u_feat_off[u]
                nout = u_nout[u]
                to = u_tab_off[u]
                if to >= 0:
                    for i in range(nb):
                        key[i] = to + key[i] * nout
                    for k in range(nout):
                        ak = acc[u_feat[fo + k]]
                        for i in range(nb):
                            ak[i] += table[key[i] + k]
                else:
                    _leaf_phi_rows(
                        nout, u_z, fo, u_v[u], key, nb, W, acc, u_feat,
                        fb_e, fb_zd, fb_dis, fb_w, fb_f, fb_q,
                    )  # fmt: skip
        for i in range(nb):
            for f in range(n_feat):
                out[r0 + i, f] = acc[f, i]


_JIT_LOCK = threading.Lock()
_KERNELS: tuple[Callable[..., None], Callable[..., None]] | None = None


def _kernels() -> tuple[Callable[..., None], Callable[..., None]]:
    """The table builder and the row kernel, compiled on first use.

    numba compiles each on its first call (or loads it from its on-disk cache, next to this
    file or in numba's cache folder), once per argument types.
    """
    global _KERNELS
    with _JIT_LOCK:
        if _KERNELS is None:
            import numba

            g = globals()
            g["_prange"] = numba.prange
            g["_leaf_phi"] = numba.njit(cache=True, nogil=True)(_leaf_phi)
            g["_leaf_phi_rows"] = numba.njit(cache=True, nogil=True)(_leaf_phi_rows)
            opts: dict[str, Any] = {"cache": True, "nogil": True, "parallel": True}
            _KERNELS = (numba.njit(**opts)(_build_tables), numba.njit(**opts)(_shap_rows))
        return _KERNELS


@contextmanager
def _threads(num_threads: int | None) -> Iterator[int]:
    """Run numba's parallel loops on ``num_threads`` threads (all cores when ``None``)."""
    import numba

    most = int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
    before = numba.get_num_threads()
    threads = most if num_threads is None else max(1, min(int(num_threads), most))
    numba.set_num_threads(threads)
    try:
        yield threads
    finally:
        numba.set_num_threads(before)


# --------------------------------------------------------------------------------------------
# Reading the trees.
# --------------------------------------------------------------------------------------------


@dataclass
class _Tree:
    """One tree in preorder: internal nodes 0..ni-1, then leaves as ids ni..ni+nl-1."""

    feat: list[int] = field(default_factory=list)
    thr: list[float] = field(default_factory=list)
    nan_left: list[int] = field(default_factory=list)
    zero: list[int] = field(default_factory=list)
    def_left: list[int] = field(default_factory=list)
    bit: list[int] = field(default_factory=list)
    children: list[list[int]] = field(default_factory=list)  # leaves as -(leaf + 1) until fixed
    anc: list[tuple[int, ...]] = field(default_factory=list)  # distinct features above a node
    parent: list[int] = field(default_factory=list)  # combined ids, -1 for the root
    leaf_value: list[float] = field(default_factory=list)
    leaf_count: list[float] = field(default_factory=list)
    leaf_feats: list[tuple[int, ...]] = field(default_factory=list)
    leaf_z: list[list[float]] = field(default_factory=list)
    leaf_parent: list[int] = field(default_factory=list)
    root_count: float = 0.0

    @property
    def ni(self) -> int:
        return len(self.feat)

    @property
    def nl(self) -> int:
        return len(self.leaf_value)


def _count(node: dict[str, Any]) -> float:
    return float(node["leaf_count"] if "leaf_value" in node else node["internal_count"])


def _parse_tree(root: dict[str, Any], index: int) -> _Tree:
    """Read one ``dump_model`` tree, checking that it holds only numerical splits."""
    tree = _Tree(root_count=_count(root) if "leaf_value" not in root else 0.0)
    # (node, parent internal id, side, distinct features above, their cover fractions)
    stack: list[tuple[dict[str, Any], int, int, tuple[int, ...], dict[int, float]]]
    stack = [(root, -1, 0, (), {})]
    while stack:
        node, parent, side, anc, zs = stack.pop()
        if "leaf_value" in node:
            if "leaf_coeff" in node:
                raise ValueError(f"tree {index} is a linear tree; linear trees are not supported")
            leaf = tree.nl
            tree.leaf_value.append(float(node["leaf_value"]))
            tree.leaf_count.append(float(node.get("leaf_count", 0)))
            tree.leaf_feats.append(anc)
            tree.leaf_z.append([zs[f] for f in anc])
            tree.leaf_parent.append(parent)
            if parent >= 0:
                tree.children[parent][side] = -(leaf + 1)
            continue
        if node["decision_type"] != "<=":
            raise ValueError(
                f"tree {index} has a categorical split (decision_type "
                f"{node['decision_type']!r}); categorical splits are not supported by "
                "riskstrat.explain.treeshap: use booster.predict(X, pred_contrib=True)"
            )
        k = tree.ni
        f = int(node["split_feature"])
        missing = node.get("missing_type", "None")
        default_left = int(bool(node.get("default_left", False)))
        threshold = float(node["threshold"])
        tree.feat.append(f)
        tree.thr.append(threshold)
        tree.zero.append(int(missing == "Zero"))
        tree.def_left.append(default_left)
        # NaN goes the default way under missing types NaN and Zero (a NaN reads as 0.0, which is
        # "zero"); under None it reads as 0.0 and is compared with the threshold.
        tree.nan_left.append(default_left if missing in ("NaN", "Zero") else int(threshold >= 0.0))
        tree.children.append([0, 0])
        tree.anc.append(anc)
        tree.parent.append(parent)
        if parent >= 0:
            tree.children[parent][side] = k
        if f in anc:
            tree.bit.append(1 << anc.index(f))
            child_anc = anc
        else:
            if len(anc) >= _MAX_PATH_FEATURES:
                raise ValueError(
                    f"tree {index} has a path splitting on more than {_MAX_PATH_FEATURES} "
                    "distinct features, which riskstrat.explain.treeshap does not support"
                )
            tree.bit.append(1 << len(anc))
            child_anc = (*anc, f)
        total = _count(node)
        kids = (node["left_child"], node["right_child"])
        # Push right first so the left subtree comes first in preorder.
        for s in (1, 0):
            zc = dict(zs)
            zc[f] = zc.get(f, 1.0) * (_count(kids[s]) / total)
            stack.append((kids[s], k, s, child_anc, zc))
    ni = tree.ni
    tree.children = [[c if c >= 0 else ni + (-c - 1) for c in kids] for kids in tree.children]
    return tree


# --------------------------------------------------------------------------------------------
# Choosing the units: subtrees that share one table, single leaves, or leaves done on the fly.
# --------------------------------------------------------------------------------------------


@dataclass
class _Choice:
    """Per-model arrays for the dynamic programme, over all trees' nodes (combined ids)."""

    tree_off: npt.NDArray[np.int64]  # start of each tree's nodes in these arrays
    left: npt.NDArray[np.int64]  # global ids, -1 for leaves
    right: npt.NDArray[np.int64]
    unit_work: npt.NDArray[np.float64]  # inf where a table is not allowed
    unit_mem: npt.NDArray[np.float64]
    fb_work: npt.NDArray[np.float64]  # leaves only: on-the-fly cost (inf for internal nodes)
    levels: list[npt.NDArray[np.int64]]  # nodes by height, leaves first


def _unit_features(tree: _Tree, k: int) -> tuple[int, ...]:
    """Features of the unit rooted at internal node ``k``: those above it, then those inside."""
    size = _subtree_size(tree, k)
    feats = list(tree.anc[k])
    seen = set(feats)
    for j in range(k, k + size):
        if tree.feat[j] not in seen:
            seen.add(tree.feat[j])
            feats.append(tree.feat[j])
    return tuple(feats)


def _subtree_size(tree: _Tree, k: int) -> int:
    """Number of internal nodes in the subtree of internal node ``k`` (contiguous in preorder)."""
    size = 1
    stack = list(tree.children[k])
    while stack:
        c = stack.pop()
        if c < tree.ni:
            size += 1
            stack.extend(tree.children[c])
    return size


def _choice_arrays(trees: list[_Tree], max_bits: int) -> _Choice:
    n_total = sum(t.ni + t.nl for t in trees)
    tree_off = np.zeros(len(trees) + 1, np.int64)
    left = np.full(n_total, -1, np.int64)
    right = np.full(n_total, -1, np.int64)
    unit_work = np.full(n_total, np.inf)
    unit_mem = np.zeros(n_total)
    fb_work = np.full(n_total, np.inf)
    height = np.zeros(n_total, np.int64)
    pos = 0
    for ti, tree in enumerate(trees):
        tree_off[ti] = pos
        ni = tree.ni
        sizes = np.zeros(ni, np.int64)
        for k in range(ni - 1, -1, -1):
            sizes[k] = 1 + sum(int(sizes[c]) for c in tree.children[k] if c < ni)
            left[pos + k] = pos + tree.children[k][0]
            right[pos + k] = pos + tree.children[k][1]
            height[pos + k] = 1 + max(int(height[pos + c]) for c in tree.children[k])
            bits = len(tree.anc[k]) + int(sizes[k])
            if bits <= max_bits:
                nout = len(_unit_features(tree, k))
                unit_work[pos + k] = _UNIT_COST + _INNER_COST * sizes[k] + _ADD_COST * nout
                unit_mem[pos + k] = 8.0 * nout * 2.0**bits
        for leaf in range(tree.nl):
            d = len(tree.leaf_feats[leaf])
            g = pos + ni + leaf
            fb_work[g] = _fallback_cost(d)
            if d <= max_bits:
                unit_work[g] = _UNIT_COST + _ADD_COST * d
                unit_mem[g] = 8.0 * d * 2.0**d
        pos += ni + tree.nl
    tree_off[-1] = pos
    order = np.argsort(height, kind="stable")
    levels = np.split(order, np.flatnonzero(np.diff(height[order])) + 1)
    return _Choice(tree_off, left, right, unit_work, unit_mem, fb_work, levels)


def _solve(ch: _Choice, lam: float) -> tuple[npt.NDArray[np.bool_], float, float]:
    """Minimise work + lam * memory; returns per-node "is a table unit", total work and memory.

    A leaf not chosen as a table is evaluated on the fly; an internal node not chosen defers to
    its children. Roots are the first node of each tree.
    """
    n = ch.left.shape[0]
    cost = np.zeros(n)
    work = np.zeros(n)
    mem = np.zeros(n)
    unit = np.zeros(n, np.bool_)
    for level in ch.levels:
        uw = ch.unit_work[level]
        um = ch.unit_mem[level]
        ucost = uw + lam * um
        lf = ch.left[level]
        rt = ch.right[level]
        is_leaf = lf < 0
        lf0 = np.where(is_leaf, 0, lf)
        rt0 = np.where(is_leaf, 0, rt)
        alt_cost = np.where(is_leaf, ch.fb_work[level], cost[lf0] + cost[rt0])
        alt_work = np.where(is_leaf, ch.fb_work[level], work[lf0] + work[rt0])
        alt_mem = np.where(is_leaf, 0.0, mem[lf0] + mem[rt0])
        take = ucost <= alt_cost
        unit[level] = take
        cost[level] = np.where(take, ucost, alt_cost)
        work[level] = np.where(take, uw, alt_work)
        mem[level] = np.where(take, um, alt_mem)
    roots = ch.tree_off[:-1]
    return unit, float(work[roots].sum()), float(mem[roots].sum())


def _choose_units(ch: _Choice, budget_bytes: float) -> npt.NDArray[np.bool_]:
    """The least-work choice of table units whose tables fit in ``budget_bytes``."""
    unit, _, mem = _solve(ch, 1e-12)
    if mem <= budget_bytes:
        return unit
    lo, hi = -12.0, 6.0  # log10 of the price of a byte, in operations per row
    best, _, mem = _solve(ch, 10.0**hi)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        unit, _, mem = _solve(ch, 10.0**mid)
        if mem <= budget_bytes:
            hi, best = mid, unit
        else:
            lo = mid
        if hi - lo < 1e-3:
            break
    return best


# --------------------------------------------------------------------------------------------
# The explainer.
# --------------------------------------------------------------------------------------------


def _weights(max_d: int) -> npt.NDArray[np.float64]:
    """``W[d, s]`` = s! (d-1-s)! / d! = 1 / (d * C(d-1, s)) for 0 <= s < d; 0 elsewhere."""
    W = np.zeros((max_d + 2, max_d + 2))
    for d in range(1, max_d + 1):
        for s in range(d):
            W[d, s] = 1.0 / (d * math.comb(d - 1, s))
    return W


class TreeShapExplainer:
    """Exact path-dependent TreeSHAP for a binary or regression LightGBM booster.

    Gives the same values as ``booster.predict(X, pred_contrib=True)`` (to rounding, well
    within 1e-6), many times faster, by precomputing per-leaf (and per-subtree) tables of
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
        max_table_mb: Memory budget for the tables in MiB; within it the tables are chosen to
            minimise the expected work per row.

    Raises:
        ValueError: for multiclass models, categorical splits or linear trees.
    """

    def __init__(
        self,
        booster: lgb.Booster,
        *,
        num_iteration: int | None = None,
        max_table_depth: int = 14,
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
        trees = [
            _parse_tree(info["tree_structure"], i) for i, info in enumerate(model["tree_info"])
        ]
        self._expected = 0.0
        for tree in trees:
            if tree.ni == 0:
                self._expected += tree.leaf_value[0]
            else:
                self._expected += sum(
                    c / tree.root_count * v
                    for c, v in zip(tree.leaf_count, tree.leaf_value, strict=True)
                )
        max_bits = max(0, min(int(max_table_depth), _MAX_PATH_FEATURES))
        choice = _choice_arrays(trees, max_bits)
        is_unit = _choose_units(choice, float(max_table_mb) * 2**20)
        self._pack(trees, choice, is_unit)
        self._table = self._build()

    # ---- packing --------------------------------------------------------------------------

    def _pack(self, trees: list[_Tree], ch: _Choice, is_unit: npt.NDArray[np.bool_]) -> None:
        """Lay the trees and the chosen units out in flat arrays for the kernels.

        Each tree's splits are either above the units ("upper": they pass disagreement masks
        down to their children's slots) or inside a unit ("inner": they set one bit of the
        unit's key, in the unit's slot). Slot 0 is the root's.
        """
        nd: dict[str, list[Any]] = {
            k: []
            for k in (
                "feat", "thr", "nan_left", "zero", "def_left", "inner", "src", "left", "right",
                "bit",
            )
        }  # fmt: skip
        t_node_off = [0]
        t_unit_off = [0]
        u: dict[str, list[Any]] = {k: [] for k in ("slot", "feat_off", "nout", "v", "tab_off")}
        u_feat: list[int] = []
        u_z: list[float] = []
        # Units that get a table, and their leaves, for the builder.
        bu: dict[str, list[int]] = {k: [] for k in ("tab_off", "nbits", "nanc", "nout")}
        b_leaf_off = [0]
        bl: dict[str, list[Any]] = {k: [] for k in ("v", "d", "z_off", "pn_off")}
        bl_z: list[float] = []
        bl_pos: list[int] = []
        pn: dict[str, list[int]] = {k: [] for k in ("shift", "dir", "bit")}
        tab_size = 0
        n_slots = 1
        max_d = 1
        fb_d = 1
        for ti, tree in enumerate(trees):
            ni = tree.ni
            base = int(ch.tree_off[ti])
            nd["feat"].extend(tree.feat)
            nd["thr"].extend(tree.thr)
            nd["nan_left"].extend(tree.nan_left)
            nd["zero"].extend(tree.zero)
            nd["def_left"].extend(tree.def_left)
            t_node_off.append(t_node_off[-1] + ni)
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
                    size = _subtree_size(tree, c)
                    inner = list(range(c, c + size))
                    feats = _unit_features(tree, c)
                    nanc = len(tree.anc[c])
                    leaves = [lf for lf in range(tree.nl) if _under(tree, ni + lf, c, ni)]
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
                    continue
                u["v"].append(0.0)
                u_z.extend([0.0] * nout)
                u["tab_off"].append(tab_size)
                nbits = nanc + len(inner)
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
                    nd["bit"].append(tree.bit[k])
                else:
                    key_slot, sh = inner_of[k]
                    nd["inner"].append(1)
                    nd["src"].append(key_slot)
                    nd["left"].append(key_slot)
                    nd["right"].append(key_slot)
                    nd["bit"].append(sh)
            t_unit_off.append(len(u["slot"]))
        bl["pn_off"].append(len(pn["shift"]))

        def i64(x: list[Any]) -> npt.NDArray[np.int64]:
            return np.asarray(x, dtype=np.int64)

        def f64(x: list[Any]) -> npt.NDArray[np.float64]:
            return np.asarray(x, dtype=np.float64)

        self._n_slots = n_slots
        self._fb_d = fb_d
        self._max_d = max_d
        self._W = _weights(max_d)
        self._nodes = (
            i64(t_node_off),
            i64(t_unit_off),
            i64(nd["feat"]),
            f64(nd["thr"]),
            i64(nd["nan_left"]),
            i64(nd["zero"]),
            i64(nd["def_left"]),
            i64(nd["inner"]),
            i64(nd["src"]),
            i64(nd["left"]),
            i64(nd["right"]),
            i64(nd["bit"]),
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
        self._n_units = len(u["slot"])
        self._n_tables = len(bu["tab_off"])

    # ---- tables ---------------------------------------------------------------------------

    def _build(self) -> npt.NDArray[np.float64]:
        """Build the tables, on all cores (the first time, this compiles the kernels)."""
        build, _ = _kernels()
        table = np.zeros(self._tab_size)
        with _threads(None):
            build(*self._build_args, self._W, self._max_d, table)
        return table

    @property
    def table_bytes(self) -> int:
        """Memory the contribution tables take, in bytes."""
        return 8 * self._tab_size

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
        data = self._matrix(X)
        if data.shape[1] != self.n_features:
            raise ValueError(
                f"X has {data.shape[1]} columns but the model has {self.n_features} features"
            )
        out = np.zeros((data.shape[0], self.n_features + 1))
        if data.shape[0]:
            _, rows = _kernels()
            with _threads(num_threads) as threads:
                # Enough blocks to keep every thread busy, but no smaller than needed.
                per_thread = -(-data.shape[0] // threads)
                block = max(_MIN_BLOCK_ROWS, min(_BLOCK_ROWS, per_thread))
                rows(
                    data,
                    out,
                    block,
                    *self._nodes,
                    self._table,
                    self._W,
                    self._n_slots,
                    self._fb_d,
                    _CHUNK,
                )
        out[:, -1] = self._expected
        return out


def _under(tree: _Tree, node: int, root: int, ni: int) -> bool:
    """Whether combined id ``node`` lies in the subtree of internal node ``root``."""
    while node != root:
        node = tree.parent[node] if node < ni else tree.leaf_parent[node - ni]
        if node < 0:
            return False
    return True


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
