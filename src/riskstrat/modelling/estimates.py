"""Estimates and intervals on weighted rows: the building blocks of model evaluation.

:mod:`riskstrat.modelling.evaluation` and the fairness audit measure models with these, on
the full rows (weights of one) and on bootstrap resamples (weights = row counts, from
:func:`bootstrap_counts`), so that every metric is computed on exactly the resampled rows
without copying them. The conventions for intervals (the :data:`CI` dict, Wilson and
percentile intervals) are in the docstring of :mod:`riskstrat.modelling.evaluation`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

#: ``{"value": float, "lo": float | None, "hi": float | None}``
CI = dict[str, float | None]
FloatArray = npt.NDArray[np.float64]

_CLIP = 1e-6


def _z(level: float) -> float:
    return NormalDist().inv_cdf(1 - (1 - level) / 2)


def wilson_interval(successes: int, trials: int, *, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a proportion ``successes / trials``.

    Raises:
        ValueError: when ``trials`` is 0 or ``successes`` is outside ``[0, trials]``.
    """
    if trials <= 0:
        raise ValueError("a Wilson interval needs at least one trial")
    if not 0 <= successes <= trials:
        raise ValueError("successes must be between 0 and trials")
    z = _z(level)
    n = float(trials)
    phat = successes / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == trials else min(1.0, centre + half)
    return lo, hi


def rate_ci(successes: int, trials: int, *, level: float = 0.95) -> CI | None:
    """A proportion with its Wilson interval as a CI; None when ``trials`` is 0."""
    if trials <= 0:
        return None
    lo, hi = wilson_interval(int(successes), int(trials), level=level)
    return {"value": successes / trials, "lo": lo, "hi": hi}


def _num(x: float | np.floating[Any] | None) -> float | None:
    """A plain float, or None for a missing or non-finite value."""
    if x is None:
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def percentile_ci(value: float | None, samples: npt.ArrayLike, *, level: float) -> CI:
    """A CI from a point estimate and bootstrap replicates (percentile method).

    Non-finite replicates are ignored; with none left, ``lo`` and ``hi`` are None.
    """
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return {"value": _num(value), "lo": None, "hi": None}
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(s, [tail, 100 - tail])
    return {"value": _num(value), "lo": float(lo), "hi": float(hi)}


def top_share_flags(
    risk: FloatArray, share: float, *, order: npt.NDArray[np.intp] | None = None
) -> tuple[npt.NDArray[np.bool_], float, int]:
    """Flag the ``ceil(share * rows)`` highest risks, ties broken stably by row order.

    ``order`` may pass ``np.argsort(-risk, kind="stable")`` when it is at hand already.

    Returns:
        ``(flagged, threshold, count)``: a boolean mask, the lowest flagged risk, and how many
        were flagged.
    """
    n = len(risk)
    # the small tolerance keeps 0.1 * 30 = 3.0000000000000004 from flagging 4 people
    k = min(n, max(1, math.ceil(share * n - 1e-9)))
    if order is None:
        order = np.argsort(-risk, kind="stable")
    flagged = np.zeros(n, dtype=bool)
    flagged[order[:k]] = True
    return flagged, float(risk[order[k - 1]]), k


def logit(p: npt.ArrayLike) -> FloatArray:
    """``log(p / (1 - p))`` after clipping p to ``[1e-6, 1 - 1e-6]``."""
    q = np.clip(np.asarray(p, dtype=np.float64), _CLIP, 1 - _CLIP)
    return np.log(q) - np.log1p(-q)


def dot(a: FloatArray, b: FloatArray) -> float:
    # einsum, not BLAS: OpenBLAS threads a long dot product, which costs more CPU than it
    # saves here and competes with other work on a two-core machine
    return float(np.einsum("i,i->", a, b))


def _sigmoid(eta: FloatArray, out: FloatArray | None = None) -> FloatArray:
    """``1 / (1 + exp(-eta))``, into ``out`` when given: the same operations in the same
    order either way, so the same bits."""
    with np.errstate(over="ignore"):  # exp overflow gives 1 / inf = 0, which is right
        if out is None:
            result: FloatArray = 1.0 / (1.0 + np.exp(-eta))
            return result
        np.negative(eta, out=out)
        np.exp(out, out=out)
        np.add(1.0, out, out=out)
        np.divide(1.0, out, out=out)
    return out


def _log_likelihood(eta: FloatArray, y: FloatArray, w: FloatArray) -> float:
    # sum w * (y * eta - log(1 + exp(eta))), written to avoid overflow
    return dot(w, y * eta - np.logaddexp(0.0, eta))


_MAX_FULL_STEP = 0.5  # Newton steps this small are taken without a line search
_TOL = 1e-9


def fit_calibration_intercept(
    x: FloatArray, y: FloatArray, w: FloatArray | None = None, *, start: float = 0.0
) -> float:
    """Unpenalised ML fit of ``a`` in ``logit P(y=1) = a + x`` (x = logit(p) as an offset).

    Newton's method (a line search guards large steps); ``w`` are row weights (bootstrap
    counts). Returns NaN when the fit does not converge (for instance when all outcomes are
    the same).
    """
    ww = np.ones_like(x) if w is None else w
    # Each iteration writes into the same three arrays (a bootstrap fits thousands of
    # times): the operations and their order are those of the plain expressions in the
    # comments, so the result is the same to the last bit.
    eta, mu, tmp = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    a = start
    np.add(a, x, out=eta)  # eta = a + x
    for _ in range(100):
        _sigmoid(eta, out=mu)
        np.subtract(1.0, mu, out=tmp)
        np.multiply(mu, tmp, out=tmp)  # mu * (1 - mu)
        info = dot(ww, tmp)
        if not info > 0:
            return math.nan
        np.subtract(y, mu, out=tmp)  # y - mu
        step = dot(ww, tmp) / info
        if abs(step) > _MAX_FULL_STEP:
            ll = _log_likelihood(eta, y, ww)
            for _ in range(50):
                if _log_likelihood(a + step + x, y, ww) >= ll:
                    break
                step /= 2
        a += step
        np.add(a, x, out=eta)
        if abs(step) < _TOL:
            return a
    return math.nan


def fit_calibration_slope(
    x: FloatArray,
    y: FloatArray,
    w: FloatArray | None = None,
    *,
    start: tuple[float, float] = (0.0, 1.0),
) -> tuple[float, float]:
    """Unpenalised ML fit of ``(c, b)`` in ``logit P(y=1) = c + b * x`` (x = logit(p)).

    Newton's method (a line search guards large steps); ``w`` are row weights (bootstrap
    counts). Returns ``(nan, nan)`` when the fit does not converge (for instance under
    perfect separation).
    """
    ww = np.ones_like(x) if w is None else w
    # As in fit_calibration_intercept: reused arrays, the plain expressions' operations.
    eta, mu, r, v, tmp = (np.empty_like(x) for _ in range(5))
    c, b = start
    np.add(c, np.multiply(b, x, out=eta), out=eta)  # eta = c + b * x
    for _ in range(100):
        _sigmoid(eta, out=mu)
        np.subtract(y, mu, out=tmp)
        np.multiply(ww, tmp, out=r)  # r = ww * (y - mu)
        np.multiply(ww, mu, out=v)
        np.subtract(1.0, mu, out=tmp)
        np.multiply(v, tmp, out=v)  # v = ww * mu * (1 - mu)
        g0, g1 = float(r.sum()), dot(r, x)
        np.multiply(v, x, out=tmp)  # vx = v * x
        h00, h01, h11 = float(v.sum()), float(tmp.sum()), dot(tmp, x)
        det = h00 * h11 - h01 * h01
        if not det > 0:
            return math.nan, math.nan
        s0 = (h11 * g0 - h01 * g1) / det
        s1 = (h00 * g1 - h01 * g0) / det
        if max(abs(s0), abs(s1)) > _MAX_FULL_STEP:
            ll = _log_likelihood(eta, y, ww)
            for _ in range(50):
                if _log_likelihood((c + s0) + (b + s1) * x, y, ww) >= ll:
                    break
                s0, s1 = s0 / 2, s1 / 2
        c, b = c + s0, b + s1
        np.add(c, np.multiply(b, x, out=eta), out=eta)
        if max(abs(s0), abs(s1)) < _TOL:
            return c, b
    return math.nan, math.nan


class RankedScores:
    """Outcomes sorted by risk once, so weighted AUROC and AUPRC need no sorting per resample.

    Rows are sorted ascending by risk (stably); rows with equal risk form one tie block. A
    bootstrap resample is a vector ``w`` of row counts in this sorted order. Both metrics are
    sums over the events only, of quantities read from one cumulative sum of ``w``:

    - AUROC (Mann-Whitney): each event scores the non-event weight below its tie block plus
      half the non-event weight inside it; the total is divided by ``events * non_events``.
    - AUPRC (average precision, as scikit-learn): each event adds its recall step times the
      precision at its block's threshold, where the flagged rows are those at or above the
      block's first row.
    """

    def __init__(self, y: FloatArray, p: FloatArray) -> None:
        n = len(p)
        self.order = np.argsort(p, kind="stable")
        self.y = y[self.order]
        self.p = p[self.order]
        change = np.empty(n, dtype=bool)
        change[:1] = True
        np.not_equal(self.p[1:], self.p[:-1], out=change[1:])
        starts = np.flatnonzero(change)
        block = np.cumsum(change) - 1  # the tie block of each sorted row
        self._events = np.flatnonzero(self.y == 1)  # sorted positions of the events
        self._start = starts[block[self._events]]  # first row of each event's block
        self._end = np.append(starts[1:], n)[block[self._events]]  # one past its last row
        # events lying before each block start / end, to read the events' cumulative weight
        self._events_before_start = np.searchsorted(self._events, self._start)
        self._events_before_end = np.searchsorted(self._events, self._end)
        # For weights in the rows' own order (auroc_auprc_by_row): the events' rows, and the
        # sorted positions the metrics read the running weight at (the events' block starts
        # and ends). Each row is labelled with the stretch between two such positions that
        # holds it, so that one weighted count per stretch gives the running weight there.
        self._event_rows = self.order[self._events]
        self._bounds = np.unique(np.concatenate((self._start, self._end)))
        rank = np.empty(n, dtype=np.intp)
        rank[self.order] = np.arange(n)
        self._stretch = np.searchsorted(self._bounds, rank, side="right")
        self._start_bound = np.searchsorted(self._bounds, self._start)
        self._end_bound = np.searchsorted(self._bounds, self._end)

    def auroc_auprc(self, w: FloatArray) -> tuple[float, float]:
        """AUROC and average precision of the rows weighted by ``w`` (in sorted order).

        Returns NaNs when the weighted rows lack either outcome.
        """
        cum_all = np.concatenate(([0.0], np.cumsum(w)))
        return self._metrics(
            w[self._events], cum_all[self._start], cum_all[self._end], float(cum_all[-1])
        )

    def auroc_auprc_by_row(self, w: FloatArray) -> tuple[float, float]:
        """``auroc_auprc`` for weights that are whole numbers (bootstrap counts, or ones) in
        the rows' own order, to the last bit, without sorting them: one weighted count per
        stretch of rows between the positions the metrics read (``np.bincount``) replaces
        the running sum over every row. Sums of whole numbers are exact in any order."""
        stretches = np.bincount(self._stretch, weights=w, minlength=len(self._bounds) + 1)
        running = np.cumsum(stretches)  # running[j]: the weight below the j-th position
        return self._metrics(
            w[self._event_rows],
            running[self._start_bound],
            running[self._end_bound],
            float(running[-1]),
        )

    def _metrics(
        self, we: FloatArray, all_below: FloatArray, all_through: FloatArray, total: float
    ) -> tuple[float, float]:
        """AUROC and AUPRC from the events' weights (in sorted order), the weight below each
        event's tie block and through its end, and the total weight."""
        cum_events = np.concatenate(([0.0], np.cumsum(we)))
        n_pos = float(cum_events[-1])
        n_neg = total - n_pos
        if n_pos <= 0 or n_neg <= 0:
            return math.nan, math.nan
        events_below = cum_events[self._events_before_start]  # below each event's block
        non_events_below = all_below - events_below
        non_events_through = all_through - cum_events[self._events_before_end]
        auroc = dot(we, non_events_below + non_events_through) / 2 / (n_pos * n_neg)
        flagged = total - all_below  # rows at or above each event's block
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(flagged > 0, (n_pos - events_below) / flagged, 0.0)
        return auroc, dot(we, precision) / n_pos

    def auroc(self, w: FloatArray) -> float:
        """P(risk of an event > risk of a non-event), ties counting one half; NaN if one class."""
        return self.auroc_auprc(w)[0]


def share_flagged_for_recall(
    y_desc: FloatArray, w_desc: FloatArray, recall_target: float, rows: float
) -> float:
    """The smallest share of people, highest risk first, who include ``recall_target`` of events.

    ``y_desc`` and ``w_desc`` are outcomes and row counts in descending risk order (ties by row
    order). The comparison ``m / events >= recall_target`` is written exactly as in
    :func:`discrimination_metrics`, so the two agree to the last bit.
    """
    cum_pos = np.cumsum(w_desc * y_desc)
    events = float(cum_pos[-1])
    if events <= 0:
        return math.nan
    needed = _events_needed(events, recall_target)
    i = int(np.searchsorted(cum_pos, needed))  # the row holding the needed-th event
    people_before = float(w_desc[:i].sum())
    events_before = float(cum_pos[i - 1]) if i > 0 else 0.0
    return (people_before + (needed - events_before)) / rows


class RecallShares:
    """``share_flagged_for_recall`` of bootstrap resamples, reading only the events' counts.

    Rows are ranked by descending risk once (ties by row order). A resample's running count
    of events, taken over the events alone, finds the event that reaches the recall target;
    the people ranked above it are counted from the rows above that event. Every count is a
    whole number, exact in floating point whatever the order of summing, so the share equals
    ``share_flagged_for_recall(y_desc, w_desc, ...)`` on the same counts to the last bit,
    without a pass over every row's count.
    """

    def __init__(self, y: FloatArray, p: FloatArray) -> None:
        self.desc = np.argsort(-p, kind="stable")
        self.y_desc = y[self.desc]
        self._event_positions = np.flatnonzero(self.y_desc == 1)  # in descending order
        self._event_rows = self.desc[self._event_positions]

    def share(self, w: FloatArray, recall_target: float, rows: float) -> float:
        """The share for the row counts ``w`` (in the rows' own order)."""
        cum_events = np.cumsum(w[self._event_rows])
        events = float(cum_events[-1]) if cum_events.size else 0.0
        if events <= 0:
            return math.nan
        needed = _events_needed(events, recall_target)
        j = int(np.searchsorted(cum_events, needed))  # the event holding the needed-th
        if j == cum_events.size:  # not reached (cannot happen for a target <= 1)
            i, events_before = len(self.desc), events
        else:
            i = int(self._event_positions[j])
            events_before = float(cum_events[j - 1]) if j > 0 else 0.0
        people_before = float(w[self.desc[:i]].sum())
        return (people_before + (needed - events_before)) / rows


def _events_needed(events: float, recall_target: float) -> int:
    """The fewest events m with ``m / events >= recall_target``, written as
    :func:`share_flagged_for_recall` and :func:`discrimination_metrics` compare."""
    needed = max(1, math.ceil(recall_target * events))
    while needed > 1 and (needed - 1) / events >= recall_target:
        needed -= 1
    while needed / events < recall_target:
        needed += 1
    return needed


def bootstrap_counts(rng: np.random.Generator, rows: int, samples: int) -> Iterator[FloatArray]:
    """Row counts (as floats) of ``samples`` resamples of ``rows`` rows with replacement."""
    for _ in range(samples):
        idx = rng.integers(0, rows, rows)
        yield np.bincount(idx, minlength=rows).astype(np.float64)
