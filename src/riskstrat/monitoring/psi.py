"""Population stability index (PSI) of a feature or the score against a reference.

No well-kept library offers PSI on its own (it comes inside large monitoring suites), and it
is a few lines of numpy, so it is written here. The reference is compact and JSON-friendly:
decile cut points of the reference values, the share of reference rows in each bin, and the
share missing. Missing values are a bin of their own, so a feature that starts arriving empty
shows as drift.

PSI = sum over bins of (actual - expected) * ln(actual / expected), with each share floored at
``EPSILON`` so an empty bin does not make it infinite. The usual reading: below 0.1 stable,
0.1 to 0.25 a moderate shift, above 0.25 a large shift (the thresholds are the model spec's
``monitoring.psi_amber`` and ``monitoring.psi_red``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

EPSILON = 1e-4
DEFAULT_BINS = 10


def _values(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    return np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=np.float64)


def reference_bins(values: npt.ArrayLike, *, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """The compact reference of ``values``: ``{"edges", "shares", "missing_share", "rows"}``.

    ``edges`` are the distinct interior quantile cut points (deciles by default); bin ``i``
    holds values ``edges[i-1] < v <= edges[i]`` (the first from minus infinity, the last to
    plus infinity). A binary or few-valued feature gets fewer bins, one per distinct cut.
    """
    x = _values(values)
    present = x[~np.isnan(x)]
    rows = len(x)
    if len(present):
        # "lower": cut points are values the data holds, so a count or flag keeps its values
        quantiles = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1], method="lower")
        edges = np.unique(quantiles)
    else:
        edges = np.zeros(0)
    shares = _shares(present, edges, rows)
    return {
        "edges": [float(e) for e in edges],
        "shares": shares,
        "missing_share": float((rows - len(present)) / rows) if rows else 0.0,
        "rows": rows,
    }


def _shares(
    present: npt.NDArray[np.float64], edges: npt.NDArray[np.float64], rows: int
) -> list[float]:
    counts = np.bincount(np.searchsorted(edges, present, side="left"), minlength=len(edges) + 1)
    return [float(c / rows) if rows else 0.0 for c in counts]


def psi(expected: Sequence[float], actual: Sequence[float], *, epsilon: float = EPSILON) -> float:
    """PSI between two share vectors over the same bins (missing included as a bin)."""
    if len(expected) != len(actual):
        raise ValueError("the share vectors must have the same bins")
    e = np.maximum(np.asarray(expected, dtype=np.float64), epsilon)
    a = np.maximum(np.asarray(actual, dtype=np.float64), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_against(reference: Mapping[str, Any], values: npt.ArrayLike) -> dict[str, float]:
    """PSI of ``values`` against a :func:`reference_bins` reference, and the missing shares.

    Returns ``{"psi", "missing_share", "reference_missing_share"}``; ``psi`` is NaN when
    there are no values.
    """
    x = _values(values)
    rows = len(x)
    present = x[~np.isnan(x)]
    missing = float((rows - len(present)) / rows) if rows else math.nan
    if not rows:
        return {"psi": math.nan, "missing_share": missing,
                "reference_missing_share": float(reference["missing_share"])}  # fmt: skip
    edges = np.asarray(reference["edges"], dtype=np.float64)
    actual = [*_shares(present, edges, rows), missing]
    expected = [*reference["shares"], float(reference["missing_share"])]
    return {
        "psi": psi(expected, actual),
        "missing_share": missing,
        "reference_missing_share": float(reference["missing_share"]),
    }


def reference_distributions(
    frame: pd.DataFrame, features: Sequence[str], *, score: npt.ArrayLike | None = None
) -> dict[str, Any]:
    """The training window's reference: one :func:`reference_bins` per feature and for the
    score, as stored with a version (``monitoring/reference.json``)."""
    out: dict[str, Any] = {
        "rows": len(frame),
        "features": {name: reference_bins(frame[name].to_numpy()) for name in features},
    }
    if score is not None:
        out["score"] = reference_bins(score)
    return out
