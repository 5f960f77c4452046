"""The numba kernels of a month's reasons (``reasons.choose_reasons`` and
``reasons.explain_as_json``): the groups each row shows, and their JSON text.

``_top_groups`` picks each row's largest and smallest groups as numpy's stable argsort would
order them, without sorting every row. Each writing kernel runs twice over the rows, in
parallel: once to measure every row's text, once to write it into one byte buffer at
offsets from the running sum, which becomes an Arrow string column without a Python object
per row. Text ``i`` is row ``order[i]``'s, so texts come out in the caller's order without
the rows being copied into it first. Numbers are written from whole numbers: a value
rounded to ``places`` decimals is ``k / 10**places`` for a whole ``k``, and orjson (what the
store writes JSON with) writes that double as the decimal ``k / 10**places`` with its trailing
zeros dropped, keeping one ("36.155", "100.0", "-0.0"). Like the TreeSHAP kernels they are
plain functions here, compiled on first use by :func:`kernels`, so importing this module
compiles nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

_prange = range
#: Pieces of text the reasons kernel writes, in ``CONSTANTS`` order.
CONSTANTS = (',"direction":"raises"', ',"direction":"lowers"', ',"log_odds":',
             ',"percentage_points":', "}", ",", "[", "]", "{", "null")  # fmt: skip
_RAISES, _LOWERS, _LOG_ODDS, _POINTS, _CLOSE, _COMMA, _OPEN_LIST, _CLOSE_LIST = range(8)
_OPEN_OBJECT, _NULL = 8, 9


def _number_length(k: int, negative: bool, places: int) -> int:
    """The length of ``k / 10**places`` written as orjson writes it (``k`` >= 0)."""
    scale = 10**places
    whole, fraction = k // scale, k % scale
    digits = 1
    while whole >= 10:
        whole //= 10
        digits += 1
    kept = 1
    if fraction:
        kept = places
        while fraction % 10 == 0:
            fraction //= 10
            kept -= 1
    return int(negative) + digits + 1 + kept


def _write_number(out: U8, at: int, k: int, negative: bool, places: int) -> int:
    """Write ``k / 10**places`` (``k`` >= 0, with a minus sign if ``negative``) at ``at``;
    return the position after it."""
    scale = 10**places
    whole, fraction = k // scale, k % scale
    if negative:
        out[at] = 45  # -
        at += 1
    digits = 1
    w = whole
    while w >= 10:
        w //= 10
        digits += 1
    for i in range(digits - 1, -1, -1):
        out[at + i] = 48 + whole % 10
        whole //= 10
    at += digits
    out[at] = 46  # .
    at += 1
    if not fraction:
        out[at] = 48
        return at + 1
    kept = places
    while fraction % 10 == 0:
        fraction //= 10
        kept -= 1
    for i in range(kept - 1, -1, -1):
        out[at + i] = 48 + fraction % 10
        fraction //= 10
    return at + kept


def _copy(out: U8, at: int, data: U8, offsets: I64, i: int) -> int:
    start, end = offsets[i], offsets[i + 1]
    for b in range(start, end):
        out[at + b - start] = data[b]
    return int(at + end - start)


def _piece_length(offsets: I64, i: int) -> int:
    return int(offsets[i + 1] - offsets[i])


def _reason_lengths(
    order: I64, shown: Any, group: Any, phrase: Any, raises: Any, lo_k: Any, lo_neg: Any,
    pp_k: Any, pp_neg: Any, prefix_offsets: I64, phrase_offsets: I64, const_offsets: I64,
    lengths: I64,
) -> None:  # fmt: skip
    n, slots = shown.shape
    for i in _prange(n):
        r = order[i]
        total = _piece_length(const_offsets, _OPEN_LIST) + _piece_length(const_offsets, _CLOSE_LIST)
        first = True
        for s in range(slots):
            if not shown[r, s]:
                continue
            if not first:
                total += _piece_length(const_offsets, _COMMA)
            first = False
            total += _piece_length(prefix_offsets, group[r, s])
            if phrase[r, s] < 0:
                total += _piece_length(const_offsets, _NULL)
            else:
                total += _piece_length(phrase_offsets, phrase[r, s])
            total += _piece_length(const_offsets, _RAISES if raises[r, s] else _LOWERS)
            total += _piece_length(const_offsets, _LOG_ODDS)
            total += _number_length(lo_k[r, s], lo_neg[r, s], 4)
            total += _piece_length(const_offsets, _POINTS)
            total += _number_length(pp_k[r, s], pp_neg[r, s], 3)
            total += _piece_length(const_offsets, _CLOSE)
        lengths[i] = total


def _write_reasons(
    order: I64, shown: Any, group: Any, phrase: Any, raises: Any, lo_k: Any, lo_neg: Any,
    pp_k: Any, pp_neg: Any, prefixes: U8, prefix_offsets: I64, phrases: U8,
    phrase_offsets: I64, consts: U8, const_offsets: I64, starts: I64, out: U8,
) -> None:  # fmt: skip
    n, slots = shown.shape
    for i in _prange(n):
        r = order[i]
        at = _copy(out, starts[i], consts, const_offsets, _OPEN_LIST)
        first = True
        for s in range(slots):
            if not shown[r, s]:
                continue
            if not first:
                at = _copy(out, at, consts, const_offsets, _COMMA)
            first = False
            at = _copy(out, at, prefixes, prefix_offsets, group[r, s])
            if phrase[r, s] < 0:
                at = _copy(out, at, consts, const_offsets, _NULL)
            else:
                at = _copy(out, at, phrases, phrase_offsets, phrase[r, s])
            at = _copy(out, at, consts, const_offsets, _RAISES if raises[r, s] else _LOWERS)
            at = _copy(out, at, consts, const_offsets, _LOG_ODDS)
            at = _write_number(out, at, lo_k[r, s], lo_neg[r, s], 4)
            at = _copy(out, at, consts, const_offsets, _POINTS)
            at = _write_number(out, at, pp_k[r, s], pp_neg[r, s], 3)
            at = _copy(out, at, consts, const_offsets, _CLOSE)
        _copy(out, at, consts, const_offsets, _CLOSE_LIST)


def _size_lengths(
    order: I64, keep: Any, k: Any, negative: Any, key_offsets: I64, const_offsets: I64,
    lengths: I64,
) -> None:  # fmt: skip
    n, groups = keep.shape
    for i in _prange(n):
        r = order[i]
        total = _piece_length(const_offsets, _OPEN_OBJECT) + _piece_length(const_offsets, _CLOSE)
        first = True
        for j in range(groups):
            if not keep[r, j]:
                continue
            if not first:
                total += _piece_length(const_offsets, _COMMA)
            first = False
            total += _piece_length(key_offsets, j) + _number_length(k[r, j], negative[r, j], 3)
        lengths[i] = total


def _write_sizes(
    order: I64, keep: Any, k: Any, negative: Any, keys: U8, key_offsets: I64, consts: U8,
    const_offsets: I64, starts: I64, out: U8,
) -> None:  # fmt: skip
    n, groups = keep.shape
    for i in _prange(n):
        r = order[i]
        at = _copy(out, starts[i], consts, const_offsets, _OPEN_OBJECT)
        first = True
        for j in range(groups):
            if not keep[r, j]:
                continue
            if not first:
                at = _copy(out, at, consts, const_offsets, _COMMA)
            first = False
            at = _copy(out, at, keys, key_offsets, j)
            at = _write_number(out, at, k[r, j], negative[r, j], 3)
        _copy(out, at, consts, const_offsets, _CLOSE)


def _before(a: float, i: int, b: float, j: int) -> bool:
    """Whether group ``i`` (size ``a``) comes before group ``j`` (size ``b``) in numpy's
    stable argsort of the negated sizes: larger first, equal sizes (0.0 and -0.0 too) in
    group order, NaN last (in group order)."""
    if a != a:
        return b != b and i < j
    if b != b:
        return True
    return a > b or (a == b and i < j)


def _top_groups(
    grouped: npt.NDArray[np.float64],
    pp: npt.NDArray[np.float64],
    n_up: int,
    n_down: int,
    min_pp: float,
    chosen: I64,
    shown: npt.NDArray[np.bool_],
) -> None:
    """Per row of ``grouped`` (rows, groups; at most 63 groups): the first ``n_up`` groups of
    ``np.argsort(-grouped, kind="stable")`` and the last ``n_down`` of it, last first, into
    ``chosen`` (rows, n_up + n_down); ``shown`` says whether a raising slot's ``pp`` is at
    least ``min_pp`` and a lowering slot's at most ``-min_pp``. ``n_up`` and ``n_down`` are at
    most the number of groups."""
    n, g = grouped.shape
    for r in _prange(n):
        x = grouped[r]
        taken = np.int64(0)
        for s in range(n_up):
            best = -1
            for j in range(g):
                if (taken >> j) & 1 == 0 and (best < 0 or _before(x[j], j, x[best], best)):
                    best = j
            taken |= np.int64(1) << best
            chosen[r, s] = best
            shown[r, s] = pp[r, best] >= min_pp
        taken = np.int64(0)
        for s in range(n_down):
            last = -1
            for j in range(g):
                if (taken >> j) & 1 == 0 and (last < 0 or _before(x[last], last, x[j], j)):
                    last = j
            taken |= np.int64(1) << last
            chosen[r, n_up + s] = last
            shown[r, n_up + s] = pp[r, last] <= -min_pp


_KERNELS: dict[str, Callable[..., None]] | None = None
_JIT_LOCK = threading.Lock()


def kernels() -> dict[str, Callable[..., None]]:
    """The kernels, compiled on first use (or loaded from numba's on-disk cache)."""
    global _KERNELS
    with _JIT_LOCK:
        if _KERNELS is None:
            import numba

            g = globals()
            g["_prange"] = numba.prange
            helpers = ("_number_length", "_write_number", "_copy", "_piece_length", "_before")
            for helper in helpers:
                g[helper] = numba.njit(cache=True, nogil=True)(g[helper])
            opts: dict[str, Any] = {"cache": True, "nogil": True, "parallel": True}
            _KERNELS = {
                name: numba.njit(**opts)(g[name])
                for name in (
                    "_reason_lengths", "_write_reasons", "_size_lengths", "_write_sizes",
                    "_top_groups",
                )
            }  # fmt: skip
        return _KERNELS
