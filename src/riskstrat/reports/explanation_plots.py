"""PNG plots of what drives a model's risks: the SHAP summary and the reasons' weights.

Drawn as every riskstrat plot is (see :mod:`riskstrat.reports.figures`): one figure of its own,
no pyplot, one PNG at ``path``, which the function returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pandas as pd

from riskstrat.reports.figures import (
    GREY,
    PALETTE,
    REFERENCE,
    FloatArray,
    PathLike,
    new_figure,
    save_png,
)

if TYPE_CHECKING:
    from matplotlib.colors import Colormap

_SHAP_MAX_ROWS = 5000
_SHAP_SEED = 20261101

_REASON_LABELS = {
    "recent_emergency_admissions": "Recent emergency admissions",
    "ae_attendances": "A&E attendances",
    "planned_care": "Planned care (GP, outpatient, elective)",
    "age": "Age",
    "sex": "Sex",
    "deprivation": "Area deprivation",
    "long_term_conditions": "Long-term conditions",
    "medicines": "Medicines",
    "frailty": "Frailty",
    "falls": "Falls",
    "living_situation": "Living situation",
    "other_recorded_problems": "Other recorded problems",
    "care_already_given": "Care already given",
}


def _feature_ranks(values: pd.Series) -> FloatArray:
    """Each value's rank within the feature, scaled to 0 (lowest) .. 1 (highest); NaN if missing."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        numeric = pd.Series(values.cat.codes, dtype="float64").where(values.cat.codes >= 0)
    elif pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_numeric_dtype(values.dtype):
        numeric = pd.to_numeric(values, errors="coerce").astype("float64")
    else:
        codes = pd.Series(pd.Categorical(values).codes, dtype="float64")
        numeric = codes.where(codes >= 0)
    ranks = numeric.rank(method="average").to_numpy(dtype=np.float64)
    lo, hi = np.nanmin(ranks, initial=np.inf), np.nanmax(ranks, initial=-np.inf)
    if not np.isfinite(lo) or hi <= lo:
        return np.where(np.isnan(ranks), np.nan, 0.5)
    return (ranks - lo) / (hi - lo)


def _swarm_offsets(x: FloatArray, rng: np.random.Generator, width: float = 0.4) -> FloatArray:
    """Vertical offsets that stack points sharing an x bin outwards: a beeswarm."""
    n = len(x)
    if n == 0:
        return np.zeros(0)
    span = float(x.max() - x.min())
    nbins = 100
    q = np.zeros(n, np.int64) if span == 0 else np.round(nbins * (x - x.min()) / span).astype(int)
    order = np.lexsort((rng.permutation(n), q))
    q_sorted = q[order]
    starts = np.r_[0, np.flatnonzero(np.diff(q_sorted)) + 1]
    counts = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, counts)
    layer = np.ceil(rank / 2) * np.where(rank % 2 == 1, 1.0, -1.0)
    offsets = np.empty(n)
    offsets[order] = layer
    biggest = float(np.abs(offsets).max())
    return offsets * (width / biggest) if biggest > 0 else offsets


def shap_summary_png(
    contributions: npt.ArrayLike,
    X: pd.DataFrame,
    path: PathLike,
    *,
    max_features: int = 20,
) -> Path:
    """Beeswarm summary of SHAP values for the top features by mean absolute SHAP.

    ``contributions`` is ``(n, f + 1)`` in log-odds with the base value last (LightGBM's
    ``pred_contrib``, see ``riskstrat.explain.reasons.shap_contributions``); ``X`` holds the
    same ``f`` feature columns in the same order. Each point is one person at their SHAP
    value, coloured by the rank of their feature value within that feature (missing values
    grey). Feature importance is measured on every row; at most 5,000 rows, chosen with a fixed
    seed, are drawn.
    """
    contrib = np.asarray(contributions, dtype=np.float64)
    if contrib.ndim != 2 or contrib.shape[1] != X.shape[1] + 1:
        raise ValueError("contributions must be (rows, features + 1) with the base value last")
    if contrib.shape[0] != len(X):
        raise ValueError("contributions and X must have the same rows")
    if contrib.shape[0] == 0:
        raise ValueError("need at least one row")
    shap = contrib[:, :-1]
    importance = np.abs(shap).mean(axis=0)
    ranked = [j for j in np.argsort(-importance, kind="stable") if importance[j] > 0]
    top = ranked[: max(1, max_features)] or [int(np.argmax(importance))]

    rng = np.random.default_rng(_SHAP_SEED)
    n = shap.shape[0]
    rows = np.sort(rng.choice(n, _SHAP_MAX_ROWS, replace=False)) if n > _SHAP_MAX_ROWS else None
    sample = X.iloc[rows] if rows is not None else X
    shap_rows = shap[rows] if rows is not None else shap

    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    cmap = _colormap()
    k = len(top)
    fig = new_figure(9.0, 1.6 + 0.42 * k)
    ax = fig.add_subplot()
    missing_drawn = False
    scatter = None
    for pos, j in enumerate(top):
        y0 = k - 1 - pos
        x = shap_rows[:, j]
        colour = _feature_ranks(sample.iloc[:, j])
        yy = y0 + _swarm_offsets(x, rng)
        missing = np.isnan(colour)
        if missing.any():
            missing_drawn = True
            ax.scatter(
                x[missing], yy[missing], s=7, color=GREY, alpha=0.6, linewidths=0, rasterized=True
            )
        scatter = ax.scatter(
            x[~missing],
            yy[~missing],
            c=colour[~missing],
            cmap=cmap,
            norm=Normalize(0.0, 1.0),
            s=7,
            alpha=0.85,
            linewidths=0,
            rasterized=True,
        )
    ax.axvline(0.0, color=REFERENCE, linewidth=0.9)
    ax.set_yticks(range(k))
    ax.set_yticklabels([str(X.columns[j]) for j in reversed(top)], fontsize=9)
    ax.set_ylim(-0.7, k - 0.3)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=9))
    ax.grid(True, axis="x", color="#E8E8E8", linewidth=0.8)
    ax.set_xlabel("SHAP value (contribution to the log-odds of admission)", fontsize=11)
    drawn = len(sample)
    sampled = f"{drawn:,} people sampled from {n:,}" if rows is not None else f"{drawn:,} people"
    ax.set_title(
        f"SHAP summary: top {k} features by mean |SHAP|\n{sampled}, one point per person",
        fontsize=12,
        loc="left",
    )
    if scatter is not None:
        bar = fig.colorbar(scatter, ax=ax, ticks=[0.0, 1.0], aspect=40, pad=0.01)
        bar.set_ticklabels(["Low", "High"])
        bar.set_label("Feature value (rank within feature)", fontsize=10)
    if missing_drawn:
        ax.scatter([], [], s=20, color=GREY, label="Value missing")
        ax.legend(loc="lower right", fontsize=9)
    return save_png(fig, path)


def _colormap() -> Colormap:
    """viridis without its palest yellow end, which vanishes on a white page."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    return ListedColormap(colormaps["viridis"](np.linspace(0.0, 0.88, 256)), name="viridis_trimmed")


def reason_importance_png(
    contributions: npt.ArrayLike, feature_names: Sequence[str], path: PathLike
) -> Path:
    """Mean absolute contribution of each reason group (SHAP summed within the group).

    Groups come from ``riskstrat.explain.reasons.group_matrix``, exactly as reasons are built for a
    patient, so the bars show which reasons carry the most weight across the population.
    """
    from riskstrat.explain.reasons import group_matrix

    contrib = np.asarray(contributions, dtype=np.float64)
    if contrib.ndim != 2 or contrib.shape[1] != len(feature_names) + 1:
        raise ValueError("contributions must be (rows, features + 1) with the base value last")
    groups, matrix = group_matrix(list(feature_names))
    grouped = np.abs(contrib[:, :-1] @ matrix).mean(axis=0)
    order = np.argsort(grouped, kind="stable")  # ascending: the largest bar ends up on top
    labels = [
        _REASON_LABELS.get(groups[j].key, groups[j].key.replace("_", " ").capitalize())
        for j in order
    ]
    fig = new_figure(8.0, 1.4 + 0.38 * len(groups))
    ax = fig.add_subplot()
    bars = ax.barh(range(len(order)), grouped[order], color=PALETTE[0], height=0.65)
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in grouped[order]], padding=3, fontsize=9)
    ax.set_yticks(range(len(order)))
    ax.set_yticklabels(labels, fontsize=10)
    ax.set_xlim(0, float(grouped.max(initial=0.0)) * 1.18 or 1.0)
    ax.set_xlabel("Mean |contribution| (log-odds), features summed within each reason", fontsize=10)
    ax.set_title("What drives the risk: reasons by mean absolute contribution", fontsize=12)
    ax.grid(True, axis="x", color="#E8E8E8", linewidth=0.8)
    ax.set_axisbelow(True)
    return save_png(fig, path)
