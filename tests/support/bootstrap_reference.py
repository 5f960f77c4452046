"""The bootstrap loops as they were before issue 27, kept as the reference the faster code
must equal to the last bit (tests/unit/test_bootstrap_equivalence.py).

Each resample was drawn with ``bootstrap_counts`` and every metric computed from freshly
allocated arrays: the weighted AUROC and AUPRC from a full cumulative sum, the calibration
fits with new arrays at every Newton step, the share flagged for recall from every row's
count. Only the loops and the helpers they changed are copied here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from riskstrat.modelling.estimates import (
    FloatArray,
    bootstrap_counts,
    dot,
    logit,
    share_flagged_for_recall,
)

_MAX_FULL_STEP = 0.5
_TOL = 1e-9


def _sigmoid(eta: FloatArray) -> FloatArray:
    with np.errstate(over="ignore"):
        out: FloatArray = 1.0 / (1.0 + np.exp(-eta))
    return out


def _log_likelihood(eta: FloatArray, y: FloatArray, w: FloatArray) -> float:
    return dot(w, y * eta - np.logaddexp(0.0, eta))


def fit_intercept(
    x: FloatArray, y: FloatArray, w: FloatArray | None = None, *, start: float = 0.0
) -> float:
    ww = np.ones_like(x) if w is None else w
    a = start
    eta = a + x
    for _ in range(100):
        mu = _sigmoid(eta)
        info = dot(ww, mu * (1 - mu))
        if not info > 0:
            return math.nan
        step = dot(ww, y - mu) / info
        if abs(step) > _MAX_FULL_STEP:
            ll = _log_likelihood(eta, y, ww)
            for _ in range(50):
                if _log_likelihood(a + step + x, y, ww) >= ll:
                    break
                step /= 2
        a += step
        eta = a + x
        if abs(step) < _TOL:
            return a
    return math.nan


def fit_slope(
    x: FloatArray,
    y: FloatArray,
    w: FloatArray | None = None,
    *,
    start: tuple[float, float] = (0.0, 1.0),
) -> tuple[float, float]:
    ww = np.ones_like(x) if w is None else w
    c, b = start
    eta = c + b * x
    for _ in range(100):
        mu = _sigmoid(eta)
        r = ww * (y - mu)
        v = ww * mu * (1 - mu)
        g0, g1 = float(r.sum()), dot(r, x)
        vx = v * x
        h00, h01, h11 = float(v.sum()), float(vx.sum()), dot(vx, x)
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
        eta = c + b * x
        if max(abs(s0), abs(s1)) < _TOL:
            return c, b
    return math.nan, math.nan


class Ranked:
    def __init__(self, y: FloatArray, p: FloatArray) -> None:
        n = len(p)
        self.order = np.argsort(p, kind="stable")
        self.y = y[self.order]
        self.p = p[self.order]
        change = np.empty(n, dtype=bool)
        change[:1] = True
        np.not_equal(self.p[1:], self.p[:-1], out=change[1:])
        starts = np.flatnonzero(change)
        block = np.cumsum(change) - 1
        self._events = np.flatnonzero(self.y == 1)
        self._start = starts[block[self._events]]
        self._end = np.append(starts[1:], n)[block[self._events]]
        self._events_before_start = np.searchsorted(self._events, self._start)
        self._events_before_end = np.searchsorted(self._events, self._end)

    def auroc_auprc(self, w: FloatArray) -> tuple[float, float]:
        we = w[self._events]
        cum_events = np.concatenate(([0.0], np.cumsum(we)))
        cum_all = np.concatenate(([0.0], np.cumsum(w)))
        n_pos, total = float(cum_events[-1]), float(cum_all[-1])
        n_neg = total - n_pos
        if n_pos <= 0 or n_neg <= 0:
            return math.nan, math.nan
        events_below = cum_events[self._events_before_start]
        all_below = cum_all[self._start]
        non_events_below = all_below - events_below
        non_events_through = cum_all[self._end] - cum_events[self._events_before_end]
        auroc = dot(we, non_events_below + non_events_through) / 2 / (n_pos * n_neg)
        flagged = total - all_below
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(flagged > 0, (n_pos - events_below) / flagged, 0.0)
        return auroc, dot(we, precision) / n_pos


class Prepared:
    def __init__(self, y: FloatArray, p: FloatArray) -> None:
        self.y = y
        self.p = p
        self.ranked = Ranked(y, p)
        self.desc = np.argsort(-p, kind="stable")
        self.y_desc = y[self.desc]
        self.x = logit(p)

    def basic(self, w: FloatArray) -> dict[str, float]:
        ws = w[self.ranked.order]
        total = float(w.sum())
        expected = dot(w, self.p)
        observed = dot(w, self.y)
        auroc, auprc = self.ranked.auroc_auprc(ws)
        return {
            "auroc": auroc,
            "auprc": auprc,
            "brier": dot(w, (self.p - self.y) ** 2) / total,
            "oe": observed / expected if expected > 0 else math.nan,
        }


def _both(w: FloatArray, y: FloatArray) -> bool:
    events = dot(w, y)
    return 0 < events < float(w.sum())


def evaluation_replicates(
    y: FloatArray, p: FloatArray, *, samples: int, seed: int, recall_target: float = 0.7
) -> dict[str, list[float]]:
    """The replicates ``evaluate_predictions`` took its intervals from."""
    prep = Prepared(y, p)
    n = len(y)
    intercept = fit_intercept(prep.x, y)
    c0, slope = fit_slope(prep.x, y)
    keys = ("auroc", "auprc", "brier", "oe", "intercept", "slope", "share")
    reps: dict[str, list[float]] = {k: [] for k in keys}
    rng = np.random.default_rng(seed)
    a_start = intercept if math.isfinite(intercept) else 0.0
    cb_start = (c0, slope) if math.isfinite(slope) else (0.0, 1.0)
    for w in bootstrap_counts(rng, n, samples):
        if not _both(w, y):
            continue
        for k, v in prep.basic(w).items():
            reps[k].append(v)
        nz = w > 0
        xs, ys, ws = prep.x[nz], y[nz], w[nz]
        reps["intercept"].append(fit_intercept(xs, ys, ws, start=a_start))
        reps["slope"].append(fit_slope(xs, ys, ws, start=cb_start)[1])
        reps["share"].append(share_flagged_for_recall(prep.y_desc, w[prep.desc], recall_target, n))
    return reps


def comparison_replicates(
    y: FloatArray, risks: dict[str, FloatArray], *, samples: int, seed: int
) -> dict[str, dict[str, list[float]]]:
    """The replicates ``compare_predictions`` took its intervals from."""
    prepared = {name: Prepared(y, p) for name, p in risks.items()}
    reps: dict[str, dict[str, list[float]]] = {
        name: {"auroc": [], "auprc": [], "brier": [], "oe": []} for name in prepared
    }
    rng = np.random.default_rng(seed)
    for w in bootstrap_counts(rng, len(y), samples):
        if not _both(w, y):
            continue
        for name, prep in prepared.items():
            for k, v in prep.basic(w).items():
                reps[name][k].append(v)
    return reps


def group_replicates(
    y: FloatArray, risk: FloatArray, *, rng: np.random.Generator, samples: int
) -> dict[str, Any]:
    """One group's AUROC and O/E replicates, as the fairness audit drew them."""
    rows = len(y)
    events = int(y.sum())
    auroc_reps: list[float] = []
    oe_reps: list[float] = []
    ranked = Ranked(y, risk) if 0 < events < rows else None
    for w in bootstrap_counts(rng, rows, samples):
        boot_events = float(np.einsum("i,i->", w, y))
        if boot_events == 0:
            continue
        boot_expected = float(np.einsum("i,i->", w, risk))
        oe_reps.append(boot_events / boot_expected if boot_expected > 0 else math.nan)
        if ranked is not None:
            auroc_reps.append(ranked.auroc_auprc(w[ranked.order])[0])
    return {"auroc": auroc_reps, "oe": oe_reps}
