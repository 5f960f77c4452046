"""The numba kernels of :mod:`riskstrat.explain.treeshap`: tables built, rows ordered, rows
explained.

They are plain Python functions here and compiled by :func:`kernels` on first use: ``_prange``
and ``_leaf_phi`` are rebound to numba objects there, before the kernels that use them are
compiled, so importing this module neither imports numba nor compiles anything. The formulas,
and LightGBM's decision rule that the row kernel replicates, are in the docstring of
:mod:`riskstrat.explain.treeshap`. The annotations are for readers and mypy; numba infers its
own types from the arguments.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_prange = range


def _leaf_phi(
    d: int, z: F64, zo: int, v: float, mask: int, W: F64, out: F64, e: F64, f: F64
) -> None:
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


def _leaf_phi_rows(
    d: int,
    z: F64,
    zo: int,
    v: float,
    keys: I64,
    nb: int,
    W: F64,
    acc: F64,
    feats: I64,
    E: F64,
    zd: F64,
    dis: F64,
    aw: F64,
    f: F64,
    q: F64,
) -> None:
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
    b_tab_off: I64,
    b_nbits: I64,
    b_nanc: I64,
    b_nout: I64,
    b_leaf_off: I64,
    l_v: F64,
    l_d: I64,
    l_z_off: I64,
    l_z: F64,
    l_pos: I64,
    l_pn_off: I64,
    pn_shift: I64,
    pn_dir: I64,
    pn_bit: I64,
    W: F64,
    max_d: int,
    table: F64,
    b_leaf_tab_off: I64,
    leaf_table: F64,
) -> None:
    """Fill ``table`` with the summed leaf contributions of every tabulated unit, per key,
    and ``leaf_table`` with the value of the leaf each key reaches (0.0 where none).

    Each leaf's contributions are worked out once per mask of its own features (2^d of them),
    then added to every key of its unit, whose other bits do not concern the leaf. A key
    reaches a leaf when its mask for that leaf is empty (the row agrees with every split on
    the way): one leaf of the unit or, where the row leaves the path above the unit, none.
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
                if mask == 0:
                    leaf_table[b_leaf_tab_off[u] + key] = l_v[li]
                row = off + key * nout
                for k in range(d):
                    table[row + l_pos[zo + k]] += leaf[mask, k]


def _shap_rows(
    X: npt.NDArray[np.floating[Any]],
    order: I64,
    out: F64,
    block: int,
    t_node_off: I64,
    t_unit_off: I64,
    nd_feat: I64,
    nd_thr: npt.NDArray[np.floating[Any]],
    nd_nan: npt.NDArray[np.integer[Any]],
    nd_zero: I64,
    nd_inner: I64,
    nd_src: I64,
    nd_left: I64,
    nd_right: I64,
    nd_mask: npt.NDArray[np.integer[Any]],
    zero_lim: npt.NDArray[np.floating[Any]],
    u_slot: I64,
    u_feat_off: I64,
    u_nout: I64,
    u_feat: I64,
    u_z: F64,
    u_v: F64,
    u_tab_off: I64,
    table: F64,
    W: F64,
    expected: float,
    n_slots: int,
    fb_d: int,
    chunk: int,
    n_workers: int,
    u_leaf_tab_off: I64,
    leaf_table: F64,
    t_leaf: F64,
    raw: F64,
    want_raw: bool,
) -> None:
    """Write every row's SHAP values, and the expected value last, into ``out``; with
    ``want_raw``, each row's raw score into ``raw`` too.

    Row ``order[r]`` of ``X`` is the r-th row explained: rows go in blocks of ``block``
    consecutive positions of ``order``, so an order that keeps similar rows together keeps the
    table rows they read in cache. Within a block, tree by tree, each split is decided for all
    the block's rows at once (simple loops over a transposed copy of the block, which
    vectorise). ``nd_thr`` has ``X``'s dtype, so float32 rows are compared in float32 (with
    thresholds rounded down, which decides every float32 the way the float64 threshold does);
    the keys and masks have ``nd_mask``'s integer dtype (int32 where every key fits, so twice
    as many go in a vector). A split above the units passes its disagreement masks down to its
    children's slots (``nd_mask`` is the feature's bit); a split inside a unit sets its bit in
    the unit's key. ``nd_nan`` is the bit to set when x is NaN (0 where NaN goes left). Then
    each unit adds its table row, per row.

    The raw score is LightGBM's own sum, to the bit: the value of the leaf the row reaches in
    each tree, added in tree order in float64 from 0.0. A tabulated unit adds its
    ``leaf_table`` entry for the row's key (0.0 unless the key reaches one of its leaves, and
    adding 0.0 changes no sum); a leaf done on the fly adds its value where its mask is empty;
    a tree of one leaf (``t_leaf``) adds that leaf's value.
    """
    n, n_feat = X.shape
    n_trees = t_node_off.shape[0] - 1
    n_blocks = (n + block - 1) // block
    zl = zero_lim[0]
    # One worker per thread, each with its own scratch, taking every n_workers-th block: a
    # sorted input's costly rows are not all in one thread's share.
    for w in _prange(n_workers):
        xt = np.empty((n_feat, block), X.dtype)
        acc = np.empty((n_feat, block))
        slots = np.zeros((n_slots, block), nd_mask.dtype)
        fb_e = np.empty((fb_d + 1, chunk))
        fb_w = np.empty((fb_d, chunk))
        fb_zd = np.empty(chunk)
        fb_dis = np.empty(chunk)
        fb_f = np.empty(chunk)
        fb_q = np.empty(chunk)
        score = np.zeros(block)
        for b in range(w, n_blocks, n_workers):
            r0 = b * block
            nb = min(n, r0 + block) - r0
            for i in range(nb):
                r = order[r0 + i]
                for f in range(n_feat):
                    xt[f, i] = X[r, f]
            for f in range(n_feat):
                af = acc[f]
                for i in range(nb):
                    af[i] = 0.0
            for i in range(nb):
                score[i] = 0.0
            for t in range(n_trees):
                n0 = t_node_off[t]
                ni = t_node_off[t + 1] - n0
                if ni == 0:
                    if want_raw:
                        lv = t_leaf[t]
                        for i in range(nb):
                            score[i] += lv
                    continue
                s0 = slots[0]
                for i in range(nb):
                    s0[i] = 0
                for k in range(ni):
                    g = n0 + k
                    xs = xt[nd_feat[g]]
                    thr = nd_thr[g]
                    bit = nd_mask[g]
                    nbit = nd_nan[g]
                    no = bit - bit
                    if nd_inner[g]:
                        key = slots[nd_left[g]]
                        if nd_zero[g]:
                            for i in range(nb):
                                x = xs[i]
                                if x != x or (-zl <= x and x <= zl):
                                    key[i] |= nbit
                                elif x > thr:
                                    key[i] |= bit
                        else:
                            for i in range(nb):
                                x = xs[i]
                                key[i] |= (bit if x > thr else no) | (nbit if x != x else no)
                    else:
                        src = slots[nd_src[g]]
                        sl = slots[nd_left[g]]
                        sr = slots[nd_right[g]]
                        for i in range(nb):
                            x = xs[i]
                            if nd_zero[g] and (x != x or (-zl <= x and x <= zl)):
                                go = nbit
                            else:
                                go = (bit if x > thr else no) | (nbit if x != x else no)
                            # Right disagrees with the left child's path; left, with the right's.
                            sl[i] = src[i] | go
                            sr[i] = src[i] | (bit - go)
                for u in range(t_unit_off[t], t_unit_off[t + 1]):
                    key = slots[u_slot[u]]
                    fo = u_feat_off[u]
                    nout = u_nout[u]
                    to = u_tab_off[u]
                    if to >= 0:
                        if want_raw:
                            lo = u_leaf_tab_off[u]
                            for i in range(nb):
                                score[i] += leaf_table[np.uint64(lo + key[i])]
                        for i in range(nb):
                            key[i] = to + key[i] * nout
                        # Two features per pass over the rows: the table row's address is read once.
                        # An unsigned index spares numba's negative-index fix-up on every read
                        # (these reads do not vectorise, so each instruction counts).
                        for k in range(0, nout - 1, 2):
                            a0 = acc[u_feat[fo + k]]
                            a1 = acc[u_feat[fo + k + 1]]
                            for i in range(nb):
                                j = np.uint64(key[i] + k)
                                a0[i] += table[j]
                                a1[i] += table[j + np.uint64(1)]
                        if nout & 1:
                            k = nout - 1
                            ak = acc[u_feat[fo + k]]
                            for i in range(nb):
                                ak[i] += table[np.uint64(key[i] + k)]
                    else:
                        if want_raw:
                            lv = u_v[u]
                            for i in range(nb):
                                if key[i] == 0:
                                    score[i] += lv
                        _leaf_phi_rows(
                            nout, u_z, fo, u_v[u], key, nb, W, acc, u_feat,
                            fb_e, fb_zd, fb_dis, fb_w, fb_f, fb_q,
                        )  # fmt: skip
            for i in range(nb):
                row = out[order[r0 + i]]
                for f in range(n_feat):
                    row[f] = acc[f, i]
                row[n_feat] = expected
            if want_raw:
                for i in range(nb):
                    raw[order[r0 + i]] = score[i]


def _order_keys(
    X: npt.NDArray[np.floating[Any]], feats: I64, th_off: I64, th: F64, shift: I64, keys: I64
) -> None:
    """Each row's bins on the model's most used features, packed into one sortable key.

    Feature ``feats[j]`` is binned by the number of its thresholds ``th[th_off[j]:th_off[j +
    1]]`` (sorted) that lie below x, NaN last, and the bin goes to the bits from ``shift[j]``
    up; the first feature takes the highest bits. Rows with equal keys go the same way at
    every split on those features, so sorting by key brings together rows that read the same
    table rows.
    """
    for r in _prange(X.shape[0]):
        key = np.int64(0)
        for j in range(feats.shape[0]):
            x = np.float64(X[r, feats[j]])
            lo = th_off[j]
            hi = th_off[j + 1]
            b = np.int64(0)
            for m in range(lo, hi):  # a count, not a search: no branches to mispredict
                b += np.int64(th[m] < x)
            if x != x:
                b = hi - lo + 1
            key |= b << shift[j]
        keys[r] = key


_JIT_LOCK = threading.Lock()
_KERNELS: tuple[Callable[..., None], Callable[..., None], Callable[..., None]] | None = None


def kernels() -> tuple[Callable[..., None], Callable[..., None], Callable[..., None]]:
    """The table builder, the row kernel and the row-order keys, compiled on first use (once
    per process).

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
            _KERNELS = (
                numba.njit(**opts)(_build_tables),
                numba.njit(**opts)(_shap_rows),
                numba.njit(**opts)(_order_keys),
            )
        return _KERNELS


@contextmanager
def numba_threads(num_threads: int | None) -> Iterator[int]:
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
