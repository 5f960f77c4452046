"""The trees of :mod:`riskstrat.explain.treeshap` read, and the table units chosen.

A LightGBM ``dump_model`` tree is read into preorder arrays (:class:`Tree`); a small dynamic
programme then chooses, per model, which subtrees share one contribution table, which leaves
get a table of their own and which are evaluated on the fly, minimising the estimated work per
row within a memory budget. Every choice gives the same values; it only trades memory for
arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

# Masks are held in int64, so a path may split on at most this many distinct features.
MAX_PATH_FEATURES = 62
# Estimated cost per row, in rough "operations", used only to choose tables (never affects values).
# Calibrated on a 400-tree, 31-leaf model: one unit of cost is about one table addition.
_UNIT_COST = 2.0
_ADD_COST = 1.0
_INNER_COST = 0.3


def _fallback_cost(d: int) -> float:
    """Rough cost of the on-the-fly polynomial evaluation for a leaf with ``d`` features."""
    return 10.0 + 2.0 * d + 0.6 * d * d


# --------------------------------------------------------------------------------------------
# Reading the trees.
# --------------------------------------------------------------------------------------------


@dataclass
class Tree:
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


def parse_tree(root: dict[str, Any], index: int) -> Tree:
    """Read one ``dump_model`` tree, checking that it holds only numerical splits."""
    tree = Tree(root_count=_count(root) if "leaf_value" not in root else 0.0)
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
            if len(anc) >= MAX_PATH_FEATURES:
                raise ValueError(
                    f"tree {index} has a path splitting on more than {MAX_PATH_FEATURES} "
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
class Choice:
    """Per-model arrays for the dynamic programme, over all trees' nodes (combined ids)."""

    tree_off: npt.NDArray[np.int64]  # start of each tree's nodes in these arrays
    left: npt.NDArray[np.int64]  # global ids, -1 for leaves
    right: npt.NDArray[np.int64]
    unit_work: npt.NDArray[np.float64]  # inf where a table is not allowed
    unit_mem: npt.NDArray[np.float64]
    fb_work: npt.NDArray[np.float64]  # leaves only: on-the-fly cost (inf for internal nodes)
    levels: list[npt.NDArray[np.int64]]  # nodes by height, leaves first


def unit_features(tree: Tree, k: int) -> tuple[int, ...]:
    """Features of the unit rooted at internal node ``k``: those above it, then those inside."""
    size = subtree_size(tree, k)
    feats = list(tree.anc[k])
    seen = set(feats)
    for j in range(k, k + size):
        if tree.feat[j] not in seen:
            seen.add(tree.feat[j])
            feats.append(tree.feat[j])
    return tuple(feats)


def subtree_size(tree: Tree, k: int) -> int:
    """Number of internal nodes in the subtree of internal node ``k`` (contiguous in preorder)."""
    size = 1
    stack = list(tree.children[k])
    while stack:
        c = stack.pop()
        if c < tree.ni:
            size += 1
            stack.extend(tree.children[c])
    return size


def choice_arrays(trees: list[Tree], max_bits: int) -> Choice:
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
                nout = len(unit_features(tree, k))
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
    return Choice(tree_off, left, right, unit_work, unit_mem, fb_work, levels)


def _solve(ch: Choice, lam: float) -> tuple[npt.NDArray[np.bool_], float, float]:
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


def choose_units(ch: Choice, budget_bytes: float) -> npt.NDArray[np.bool_]:
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


def weights(max_d: int) -> npt.NDArray[np.float64]:
    """``W[d, s]`` = s! (d-1-s)! / d! = 1 / (d * C(d-1, s)) for 0 <= s < d; 0 elsewhere."""
    W = np.zeros((max_d + 2, max_d + 2))
    for d in range(1, max_d + 1):
        for s in range(d):
            W[d, s] = 1.0 / (d * math.comb(d - 1, s))
    return W


def under(tree: Tree, node: int, root: int, ni: int) -> bool:
    """Whether combined id ``node`` lies in the subtree of internal node ``root``."""
    while node != root:
        node = tree.parent[node] if node < ni else tree.leaf_parent[node - ni]
        if node < 0:
            return False
    return True
