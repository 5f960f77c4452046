"""PNG plots of a model's evaluation, for MLflow artefacts and the model card.

Every function draws on its own ``matplotlib.figure.Figure`` with an Agg canvas (no pyplot, no
global state), so it is safe in any process or thread, and writes one PNG at ``path``, which
it returns. Colours come from the Okabe-Ito palette, which stays distinguishable with the
common colour-vision deficiencies; lines also differ in style, so a plot still reads in
greyscale. matplotlib is imported inside the functions: importing this module does no work.

Shapes of the inputs are those of ``riskstrat.modelling.evaluation`` and ``riskstrat.fairness.subgroups``: a CI is
``{"value": float, "lo": float | None, "hi": float | None}``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure

PathLike = str | os.PathLike[str]
FloatArray = npt.NDArray[np.float64]

#: Resolution of every PNG (dots per inch).
DPI = 110
#: Okabe-Ito colours without yellow (too pale on white): blue, orange, bluish green,
#: vermillion, reddish purple, sky blue, black. The model is always drawn first, in blue.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (1, 1)), (0, (8, 2)))
GREY = "#8C8C8C"
REFERENCE = "#404040"
#: The acceptable band for observed / expected (the fairness gate's default).
OE_BAND = (0.8, 1.25)

#: The file name of each plot, by the key used in the model card's ``plots`` mapping.
PLOT_FILES: dict[str, str] = {
    "roc": "roc.png",
    "precision_recall": "precision_recall.png",
    "calibration": "calibration.png",
    "shap_summary": "shap_summary.png",
    "reasons": "reasons.png",
    "subgroups": "subgroups.png",
    "stability": "stability.png",
    "net_benefit": "net_benefit.png",
}

_MAX_CURVE_POINTS = 4000
_SHAP_MAX_ROWS = 5000
_SHAP_SEED = 20261101

_METRIC_LABELS = {
    "auroc": "AUROC",
    "oe": "Observed / expected",
    "selection_rate": "Selection rate",
    "fpr": "False positive rate",
    "fnr": "False negative rate",
    "false_omission_rate": "False omission rate",
    "false_discovery_rate": "False discovery rate",
    "brier": "Brier score",
}
_ATTRIBUTE_LABELS = {
    "sex": "Sex",
    "age_band": "Age band",
    "imd_quintile": "IMD quintile",
    "ethnic_group": "Ethnic group",
}
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


# --------------------------------------------------------------------------------------------
# Shared helpers


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: PathLike) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=DPI, facecolor="white")
    return out


def _style(i: int) -> dict[str, Any]:
    return {
        "color": PALETTE[i % len(PALETTE)],
        "linestyle": LINESTYLES[i % len(LINESTYLES)],
        "linewidth": 2.2 if i == 0 else 1.6,
    }


def _percent_axis(axis: Axis) -> None:
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{100 * v:g}%"))


def _ci(value: Mapping[str, Any] | None) -> tuple[float, float, float]:
    """(value, lo, hi) as floats, NaN where missing."""

    def f(x: Any) -> float:
        return float("nan") if x is None else float(x)

    if value is None:
        return (float("nan"),) * 3
    return f(value.get("value")), f(value.get("lo")), f(value.get("hi"))


def _binary_and_risk(y_true: npt.ArrayLike, risk: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(risk, dtype=np.float64)
    if y.ndim != 1 or y.shape != p.shape:
        raise ValueError("y_true and each risk must be 1-D and the same length")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must be 0/1")
    if y.min(initial=0) == y.max(initial=0):
        raise ValueError("need both outcomes among the rows to draw a curve")
    if np.isnan(p).any():
        raise ValueError("risks must not contain NaN")
    return y, p


def _counts_by_threshold(y: FloatArray, p: FloatArray) -> tuple[FloatArray, FloatArray]:
    """True and false positives when flagging at each distinct risk, highest first."""
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(p_sorted)), len(p_sorted) - 1]
    tps = np.cumsum(y_sorted)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    return tps, fps


def roc_curve(y_true: npt.ArrayLike, risk: npt.ArrayLike) -> tuple[FloatArray, FloatArray, float]:
    """False and true positive rates at every distinct threshold, and the AUROC (ties halved)."""
    y, p = _binary_and_risk(y_true, risk)
    tps, fps = _counts_by_threshold(y, p)
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return fpr, tpr, float(np.trapezoid(tpr, fpr))


def precision_recall_curve(
    y_true: npt.ArrayLike, risk: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, float]:
    """Recall and precision at every distinct threshold, and the average precision (AUPRC)."""
    y, p = _binary_and_risk(y_true, risk)
    tps, fps = _counts_by_threshold(y, p)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    average_precision = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return recall, precision, average_precision


def _thin(*arrays: FloatArray, limit: int = _MAX_CURVE_POINTS) -> tuple[FloatArray, ...]:
    n = len(arrays[0])
    if n <= limit:
        return arrays
    keep = np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))
    return tuple(a[keep] for a in arrays)


# --------------------------------------------------------------------------------------------
# Discrimination


def roc_png(y_true: npt.ArrayLike, risks: Mapping[str, npt.ArrayLike], path: PathLike) -> Path:
    """ROC curves of the model and its baselines on the same rows, AUROC in the legend.

    ``risks`` maps a label to each row's risk, the model first. The diagonal is a random
    ranking.
    """
    if not risks:
        raise ValueError("need at least one set of risks")
    fig = _figure(6.4, 6.0)
    ax = fig.add_subplot()
    for i, (name, risk) in enumerate(risks.items()):
        fpr, tpr, auroc = roc_curve(y_true, risk)
        fpr, tpr = _thin(fpr, tpr)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auroc:.3f})", **_style(i))
    ax.plot([0, 1], [0, 1], color=GREY, linestyle=":", linewidth=1.2, label="Random (0.500)")
    ax.set(xlim=(0, 1), ylim=(0, 1.005), aspect="equal")
    ax.set_xlabel("False positive rate (1 - specificity)", fontsize=11)
    ax.set_ylabel("True positive rate (sensitivity)", fontsize=11)
    ax.set_title("ROC curve", fontsize=13)
    ax.grid(True, color="#E0E0E0", linewidth=0.8)
    ax.legend(loc="lower right", fontsize=9, frameon=True)
    return _save(fig, path)


def precision_recall_png(
    y_true: npt.ArrayLike, risks: Mapping[str, npt.ArrayLike], path: PathLike
) -> Path:
    """Precision-recall curves with the average precision (AUPRC) and the prevalence line.

    The prevalence is the precision of a list drawn at random.
    """
    if not risks:
        raise ValueError("need at least one set of risks")
    prevalence = float(np.mean(np.asarray(y_true, dtype=np.float64)))
    fig = _figure(6.8, 5.6)
    ax = fig.add_subplot()
    top = prevalence
    for i, (name, risk) in enumerate(risks.items()):
        recall, precision, ap = precision_recall_curve(y_true, risk)
        recall, precision = _thin(recall, precision)
        top = max(top, float(precision.max()))
        ax.plot(recall, precision, label=f"{name} (AUPRC {ap:.3f})", **_style(i))
    ax.axhline(
        prevalence,
        color=GREY,
        linestyle=":",
        linewidth=1.4,
        label=f"Prevalence {100 * prevalence:.1f}% (a random list)",
    )
    ax.set(xlim=(0, 1), ylim=(0, min(1.0, top * 1.08) or 1.0))
    _percent_axis(ax.xaxis)
    _percent_axis(ax.yaxis)
    ax.set_xlabel("Recall (share of admitted people on the list)", fontsize=11)
    ax.set_ylabel("Precision (share of the list admitted)", fontsize=11)
    ax.set_title("Precision-recall curve", fontsize=13)
    ax.grid(True, color="#E0E0E0", linewidth=0.8)
    ax.legend(loc="upper right", fontsize=9, frameon=True)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# Calibration


def calibration_png(
    bins_by_model: Mapping[str, Sequence[Mapping[str, Any]]],
    path: PathLike,
    *,
    ci_level: float = 0.95,
) -> Path:
    """Observed against mean predicted risk by bin, with Wilson intervals and y = x.

    Each bin needs ``mean_risk``, ``observed_rate``, ``observed_lo`` and ``observed_hi``.
    When the risks span more than a factor of 20 (typical: 0.1% to 60%) both axes are
    logarithmic, so the low-risk deciles, where most people are, do not collapse into a corner;
    a bin with no observed events is then drawn as an open down-pointing triangle on the axis
    floor.
    """
    if not bins_by_model:
        raise ValueError("need at least one model's calibration bins")
    rows = [
        (i, name, _calibration_arrays(bins)) for i, (name, bins) in enumerate(bins_by_model.items())
    ]
    values = np.concatenate([np.concatenate([a[0], a[1], a[2], a[3]]) for _, _, a in rows])
    values = values[np.isfinite(values)]
    positive = values[values > 0]
    if positive.size == 0:
        raise ValueError("calibration bins have no positive risks")
    low, high = float(positive.min()), float(values.max())
    log_axes = high / low > 20
    if log_axes:
        lim = (low / 1.6, min(1.0, high * 1.6))
    else:
        lim = (0.0, min(1.0, high * 1.1))

    fig = _figure(6.6, 6.2)
    ax = fig.add_subplot()
    if log_axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.plot(lim, lim, color=GREY, linestyle=":", linewidth=1.4, label="Perfect calibration (y = x)")
    floor = lim[0] * 1.05
    zero_drawn = False
    for i, name, (pred, obs, lo, hi) in rows:
        style = _style(i)
        shown = np.where(obs > 0, obs, floor) if log_axes else obs
        lo_shown = np.maximum(np.nan_to_num(lo, nan=0.0), floor if log_axes else 0.0)
        hi_shown = np.nan_to_num(hi, nan=1.0)
        yerr = np.vstack([np.clip(shown - lo_shown, 0, None), np.clip(hi_shown - shown, 0, None)])
        ax.errorbar(
            pred,
            shown,
            yerr=yerr,
            color=style["color"],
            linestyle=style["linestyle"],
            linewidth=style["linewidth"] * 0.7,
            marker="o",
            markersize=6 if i == 0 else 5,
            capsize=3,
            elinewidth=1.1,
            label=name,
        )
        zero = obs <= 0
        if log_axes and zero.any():
            zero_drawn = True
            ax.plot(
                pred[zero],
                np.full(int(zero.sum()), floor),
                linestyle="none",
                marker="v",
                markersize=9,
                markerfacecolor="white",
                markeredgecolor=style["color"],
            )
    ax.set(xlim=lim, ylim=lim, aspect="equal")
    if log_axes:
        from matplotlib.ticker import LogLocator, NullFormatter

        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_minor_formatter(NullFormatter())
    _percent_axis(ax.xaxis)
    _percent_axis(ax.yaxis)
    ax.tick_params(axis="x", labelrotation=45 if log_axes else 0)
    scale = " (log scale)" if log_axes else ""
    ax.set_xlabel(f"Mean predicted risk in bin{scale}", fontsize=11)
    ax.set_ylabel(f"Observed admission rate{scale}", fontsize=11)
    ax.set_title(f"Calibration by risk bin ({100 * ci_level:g}% Wilson intervals)", fontsize=13)
    ax.grid(True, which="major", color="#E0E0E0", linewidth=0.8)
    if zero_drawn:
        ax.plot(
            [],
            [],
            linestyle="none",
            marker="v",
            markerfacecolor="white",
            markeredgecolor=REFERENCE,
            label="No events observed in bin",
        )
    ax.legend(loc="upper left", fontsize=9, frameon=True)
    return _save(fig, path)


def _calibration_arrays(
    bins: Sequence[Mapping[str, Any]],
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    def column(key: str) -> FloatArray:
        return np.array(
            [np.nan if b.get(key) is None else float(b[key]) for b in bins], dtype=np.float64
        )

    return (
        column("mean_risk"),
        column("observed_rate"),
        column("observed_lo"),
        column("observed_hi"),
    )


# --------------------------------------------------------------------------------------------
# Explanations


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
    ``pred_contrib``, see ``riskstrat.explain.reasons.shap_contributions``); ``X`` holds the same ``f``
    feature columns in the same order. Each point is one person at their SHAP value, coloured
    by the rank of their feature value within that feature (missing values grey). Feature
    importance is measured on every row; at most 5,000 rows, chosen with a fixed seed, are
    drawn.
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
    fig = _figure(9.0, 1.6 + 0.42 * k)
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
    return _save(fig, path)


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
    fig = _figure(8.0, 1.4 + 0.38 * len(groups))
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
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# Subgroups, stability and clinical utility


def subgroup_png(
    audit: Mapping[str, Any],
    path: PathLike,
    *,
    metrics: Sequence[str] = ("auroc", "oe"),
) -> Path:
    """One row of panels per attribute, one column per metric: each group's value and CI.

    AUROC panels have a reference line at the overall AUROC; O/E panels the acceptable band
    0.8-1.25 and a line at 1; any other metric (``selection_rate``, ``fpr``, ...) a line at the
    overall value. Groups the audit marks not estimable are hatched, greyed and labelled
    "too small"; a missing value is written in the panel instead of drawn. A CI running off
    the axis ends in an arrowhead.
    """
    groups = list(audit.get("groups", []))
    if not groups:
        raise ValueError("the audit has no groups")
    if not metrics:
        raise ValueError("need at least one metric")
    attributes = list(dict.fromkeys(str(g["attribute"]) for g in groups))
    by_attribute = {a: [g for g in groups if str(g["attribute"]) == a] for a in attributes}
    overall = audit.get("overall", {})
    limits = {m: _metric_limits(m, groups, overall) for m in metrics}

    heights = [len(by_attribute[a]) + 1.4 for a in attributes]
    fig = _figure(2.6 + 4.0 * len(metrics), 0.9 + 0.36 * sum(heights))
    axes = fig.subplots(
        len(attributes), len(metrics), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    legend: dict[str, Any] = {}
    for r, attribute in enumerate(attributes):
        members = by_attribute[attribute]
        ys = np.arange(len(members))[::-1].astype(float)
        for c, metric in enumerate(metrics):
            ax = axes[r][c]
            _subgroup_panel(ax, members, ys, metric, overall, limits[metric])
            ax.set_title(
                f"{_ATTRIBUTE_LABELS.get(attribute, attribute)}: "
                f"{_METRIC_LABELS.get(metric, metric)}",
                fontsize=10.5,
                loc="left",
            )
            ax.set_yticks(ys)
            if c == 0:
                labels = ax.set_yticklabels([_group_label(g) for g in members], fontsize=9)
                for label, g in zip(labels, members, strict=True):
                    if not g.get("estimable", True):
                        label.set_color(GREY)
            else:
                ax.set_yticklabels([])
            if r == 0:
                for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                    legend.setdefault(label, handle)
    if any(not g.get("estimable", True) for g in groups):
        from matplotlib.patches import Patch

        legend["Too small to estimate"] = Patch(
            facecolor="#F0F0F0", edgecolor="#C8C8C8", hatch="///", linewidth=0
        )
    if legend:
        fig.legend(
            list(legend.values()),
            list(legend.keys()),
            loc="outside lower center",
            ncols=min(len(legend), 4),
            fontsize=9,
            frameon=False,
        )
    share = audit.get("list_share")
    note = f" (rates at the top-{100 * float(share):g}% list threshold)" if share else ""
    level = 100 * float(audit.get("ci_level", 0.95))
    fig.suptitle(f"Results by subgroup, {level:g}% CIs{note}", fontsize=13)
    return _save(fig, path)


def _group_label(g: Mapping[str, Any]) -> str:
    text = f"{g['group']} (n={int(g.get('rows', 0)):,})"
    return text if g.get("estimable", True) else f"{text} - too small"


def _metric_limits(
    metric: str, groups: Sequence[Mapping[str, Any]], overall: Mapping[str, Any]
) -> tuple[float, float]:
    # Axis range from the groups large enough to estimate; a wide CI of a group too small
    # to estimate runs off the axis (with an arrowhead) rather than squashing the others.
    shown = [g for g in groups if g.get("estimable", True)] or list(groups)
    vals = [v for g in shown for v in _ci(g.get(metric)) if np.isfinite(v)]
    vals += [v for v in _ci(overall.get(metric))[:1] if np.isfinite(v)]
    if metric == "auroc":
        low = min([0.5, *vals])
        return max(0.0, low - 0.03), 1.0
    if metric == "oe":
        low = min([OE_BAND[0] - 0.15, *vals])
        high = max([OE_BAND[1] + 0.15, *vals])
        return max(0.0, low - 0.05), min(high + 0.05, 2.5)
    high = max([0.0, *vals])
    return 0.0, min(1.0, high * 1.12) or 1.0


def _lower_first(label: str) -> str:
    """ "False negative rate" -> "false negative rate"; acronyms such as "AUROC" unchanged."""
    return label[0].lower() + label[1:] if label[1:2].islower() else label


def _metric_text(metric: str, value: float) -> str:
    if metric == "auroc":
        return f"{value:.3f}"
    if metric == "oe":
        return f"{value:.2f}"
    if metric == "brier":
        return f"{value:.4f}"
    return f"{100 * value:.1f}%"


def _subgroup_panel(
    ax: Axes,
    members: Sequence[Mapping[str, Any]],
    ys: FloatArray,
    metric: str,
    overall: Mapping[str, Any],
    limits: tuple[float, float],
) -> None:
    left, right = limits
    overall_value = _ci(overall.get(metric))[0]
    if metric == "oe":
        ax.axvspan(
            *OE_BAND,
            color=PALETTE[2],
            alpha=0.13,
            linewidth=0,
            label=f"Acceptable {OE_BAND[0]}-{OE_BAND[1]}",
        )
        ax.axvline(1.0, color=REFERENCE, linewidth=1.1, label="O/E = 1")
    elif np.isfinite(overall_value):
        ax.axvline(
            overall_value,
            color=REFERENCE,
            linestyle="--",
            linewidth=1.1,
            label=f"Overall {_lower_first(_METRIC_LABELS.get(metric, metric))}: "
            f"{_metric_text(metric, overall_value)}",
        )
    for y, g in zip(ys, members, strict=True):
        estimable = bool(g.get("estimable", True))
        value, lo, hi = _ci(g.get(metric))
        if not estimable:
            ax.axhspan(
                y - 0.45,
                y + 0.45,
                facecolor="#F0F0F0",
                edgecolor="#C8C8C8",
                hatch="///",
                linewidth=0,
                zorder=0,
            )
        colour = PALETTE[0] if estimable else GREY
        if not np.isfinite(value):
            text = "too small to estimate" if not estimable else "not available"
            ax.text(
                (left + right) / 2,
                y,
                text,
                ha="center",
                va="center",
                fontsize=8.5,
                color=REFERENCE,
                style="italic",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.5},
            )
            continue
        lo_c = max(lo, left) if np.isfinite(lo) else value
        hi_c = min(hi, right) if np.isfinite(hi) else value
        if not left <= value <= right:  # the point itself is off the axis: say where it is
            at_left = value < left
            ax.plot(
                [left if at_left else right],
                [y],
                marker="<" if at_left else ">",
                color=colour,
                markersize=7,
                clip_on=False,
                linestyle="none",
            )
            ax.annotate(
                f"{_metric_text(metric, value)} (off scale)",
                (left if at_left else right, y),
                xytext=(8 if at_left else -8, 0),
                textcoords="offset points",
                ha="left" if at_left else "right",
                va="center",
                fontsize=8.5,
                color=REFERENCE,
                style="italic",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0},
            )
            continue
        ax.errorbar(
            [value],
            [y],
            xerr=[[max(value - lo_c, 0.0)], [max(hi_c - value, 0.0)]],
            fmt="o",
            color=colour,
            markerfacecolor=colour if estimable else "white",
            markersize=6,
            capsize=3,
            elinewidth=1.3,
        )
        if np.isfinite(hi) and hi > right:
            ax.plot([right], [y], marker=">", color=colour, markersize=6, clip_on=False)
        if np.isfinite(lo) and lo < left:
            ax.plot([left], [y], marker="<", color=colour, markersize=6, clip_on=False)
    ax.set_xlim(left, right)
    ax.set_ylim(-0.6, len(members) - 0.4)
    if metric not in ("auroc", "oe", "brier"):
        _percent_axis(ax.xaxis)
    ax.grid(True, axis="x", color="#E8E8E8", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(axis="x", labelsize=9)


def stability_png(
    months: Sequence[Mapping[str, Any]], path: PathLike, *, ci_level: float = 0.95
) -> Path:
    """AUROC and O/E with CIs for each held-out index month, oldest first."""
    if not months:
        raise ValueError("need at least one month")
    labels = [str(m["month"]) for m in months]
    x = np.arange(len(months), dtype=np.float64)
    fig = _figure(max(6.5, 1.2 + 0.7 * len(months)), 6.4)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for ax, metric, colour in ((top, "auroc", PALETTE[0]), (bottom, "oe", PALETTE[3])):
        cis = np.array([_ci(m.get(metric)) for m in months], dtype=np.float64).reshape(-1, 3)
        value, lo, hi = cis[:, 0], cis[:, 1], cis[:, 2]
        lo = np.where(np.isfinite(lo), lo, value)
        hi = np.where(np.isfinite(hi), hi, value)
        if metric == "oe":
            ax.axhspan(
                *OE_BAND,
                color=PALETTE[2],
                alpha=0.13,
                linewidth=0,
                label=f"Acceptable {OE_BAND[0]}-{OE_BAND[1]}",
            )
            ax.axhline(1.0, color=REFERENCE, linewidth=1.0, label="O/E = 1")
        ax.errorbar(
            x,
            value,
            yerr=[np.clip(value - lo, 0, None), np.clip(hi - value, 0, None)],
            fmt="o-",
            color=colour,
            capsize=4,
            linewidth=1.6,
            markersize=6,
            label=_METRIC_LABELS[metric],
        )
        finite = np.concatenate([v[np.isfinite(v)] for v in (value, lo, hi)])
        if metric == "oe":
            finite = np.r_[finite, OE_BAND[0], OE_BAND[1]]
        if finite.size:
            pad = max(0.01, 0.15 * float(finite.max() - finite.min()))
            ax.set_ylim(float(finite.min()) - pad, float(finite.max()) + pad)
        ax.set_ylabel(f"{_METRIC_LABELS[metric]} ({100 * ci_level:g}% CI)", fontsize=10.5)
        ax.grid(True, color="#E8E8E8", linewidth=0.8)
        ax.legend(loc="best", fontsize=8.5)
    bottom.set_xticks(x)
    bottom.set_xticklabels(
        labels,
        rotation=45 if len(labels) > 6 else 0,
        ha="right" if len(labels) > 6 else "center",
        fontsize=9.5,
    )
    bottom.set_xlabel("Held-out index month", fontsize=10.5)
    top.set_title("Temporal stability on held-out months", fontsize=13)
    return _save(fig, path)


def net_benefit_png(
    net_benefit_by_model: Mapping[str, Sequence[Mapping[str, Any]]], path: PathLike
) -> Path:
    """Decision curve: net benefit against the risk threshold for each model.

    "Treat all" (take the first model's) and "treat none" (zero) are the references. Net
    benefit counts true positives per person, less false positives weighted by the odds of
    the threshold.
    """
    if not net_benefit_by_model:
        raise ValueError("need at least one model's net benefit")
    fig = _figure(7.2, 5.4)
    ax = fig.add_subplot()
    peak = 0.0
    treat_all: tuple[FloatArray, FloatArray] | None = None
    x_max = 0.0
    for i, (name, points) in enumerate(net_benefit_by_model.items()):
        ordered = sorted(points, key=lambda p: float(p["threshold"]))
        t = np.array([float(p["threshold"]) for p in ordered])
        nb = np.array([np.nan if p.get("model") is None else float(p["model"]) for p in ordered])
        ax.plot(t, nb, label=name, **_style(i))
        peak = max(peak, float(np.nanmax(nb, initial=0.0)))
        x_max = max(x_max, float(t.max(initial=0.0)))
        if treat_all is None:
            ta = np.array(
                [np.nan if p.get("treat_all") is None else float(p["treat_all"]) for p in ordered]
            )
            treat_all = (t, ta)
            peak = max(peak, float(np.nanmax(ta, initial=0.0)))
    if treat_all is not None:
        ax.plot(*treat_all, color=GREY, linestyle="--", linewidth=1.4, label="Treat all")
    ax.axhline(0.0, color=REFERENCE, linewidth=1.1, label="Treat none")
    top = peak * 1.12 if peak > 0 else 0.01
    ax.set_ylim(-0.25 * top, top)
    ax.set_xlim(0.0, x_max or 1.0)
    _percent_axis(ax.xaxis)
    ax.set_xlabel("Risk threshold for offering a review", fontsize=11)
    ax.set_ylabel("Net benefit (true positives per person, net of harms)", fontsize=10.5)
    ax.set_title("Decision curve", fontsize=13)
    ax.grid(True, color="#E8E8E8", linewidth=0.8)
    ax.legend(loc="upper right", fontsize=9)
    return _save(fig, path)
