"""PNG plots of a model's evaluation, for MLflow artefacts and the model card.

Each function draws on its own figure (no pyplot, no global state; see
:mod:`riskstrat.reports.figures`), so it is safe in any process or thread, and writes one PNG
at ``path``, which it returns. matplotlib is imported inside the functions: importing this
module does no work. Here are the model's curves (ROC, precision-recall, calibration,
temporal stability, decision curve); the explanation plots are in
:mod:`riskstrat.reports.explanation_plots` and the subgroup plot in
:mod:`riskstrat.reports.subgroup_plots`. :data:`PLOT_FILES` names every plot's file.

Shapes of the inputs are those of ``riskstrat.modelling.evaluation`` and
``riskstrat.fairness.subgroups``: a CI is
``{"value": float, "lo": float | None, "hi": float | None}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from riskstrat.reports.figures import (
    GREY,
    METRIC_LABELS,
    OE_BAND,
    PALETTE,
    REFERENCE,
    FloatArray,
    PathLike,
    ci_values,
    line_style,
    new_figure,
    percent_axis,
    save_png,
)

if TYPE_CHECKING:
    pass

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
    fig = new_figure(6.4, 6.0)
    ax = fig.add_subplot()
    for i, (name, risk) in enumerate(risks.items()):
        fpr, tpr, auroc = roc_curve(y_true, risk)
        fpr, tpr = _thin(fpr, tpr)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auroc:.3f})", **line_style(i))
    ax.plot([0, 1], [0, 1], color=GREY, linestyle=":", linewidth=1.2, label="Random (0.500)")
    ax.set(xlim=(0, 1), ylim=(0, 1.005), aspect="equal")
    ax.set_xlabel("False positive rate (1 - specificity)", fontsize=11)
    ax.set_ylabel("True positive rate (sensitivity)", fontsize=11)
    ax.set_title("ROC curve", fontsize=13)
    ax.grid(True, color="#E0E0E0", linewidth=0.8)
    ax.legend(loc="lower right", fontsize=9, frameon=True)
    return save_png(fig, path)


def precision_recall_png(
    y_true: npt.ArrayLike, risks: Mapping[str, npt.ArrayLike], path: PathLike
) -> Path:
    """Precision-recall curves with the average precision (AUPRC) and the prevalence line.

    The prevalence is the precision of a list drawn at random.
    """
    if not risks:
        raise ValueError("need at least one set of risks")
    prevalence = float(np.mean(np.asarray(y_true, dtype=np.float64)))
    fig = new_figure(6.8, 5.6)
    ax = fig.add_subplot()
    top = prevalence
    for i, (name, risk) in enumerate(risks.items()):
        recall, precision, ap = precision_recall_curve(y_true, risk)
        recall, precision = _thin(recall, precision)
        top = max(top, float(precision.max()))
        ax.plot(recall, precision, label=f"{name} (AUPRC {ap:.3f})", **line_style(i))
    ax.axhline(
        prevalence,
        color=GREY,
        linestyle=":",
        linewidth=1.4,
        label=f"Prevalence {100 * prevalence:.1f}% (a random list)",
    )
    ax.set(xlim=(0, 1), ylim=(0, min(1.0, top * 1.08) or 1.0))
    percent_axis(ax.xaxis)
    percent_axis(ax.yaxis)
    ax.set_xlabel("Recall (share of admitted people on the list)", fontsize=11)
    ax.set_ylabel("Precision (share of the list admitted)", fontsize=11)
    ax.set_title("Precision-recall curve", fontsize=13)
    ax.grid(True, color="#E0E0E0", linewidth=0.8)
    ax.legend(loc="upper right", fontsize=9, frameon=True)
    return save_png(fig, path)


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

    fig = new_figure(6.6, 6.2)
    ax = fig.add_subplot()
    if log_axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.plot(lim, lim, color=GREY, linestyle=":", linewidth=1.4, label="Perfect calibration (y = x)")
    floor = lim[0] * 1.05
    zero_drawn = False
    for i, name, (pred, obs, lo, hi) in rows:
        style = line_style(i)
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
    percent_axis(ax.xaxis)
    percent_axis(ax.yaxis)
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
    return save_png(fig, path)


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
# Stability and clinical utility


def stability_png(
    months: Sequence[Mapping[str, Any]], path: PathLike, *, ci_level: float = 0.95
) -> Path:
    """AUROC and O/E with CIs for each held-out index month, oldest first."""
    if not months:
        raise ValueError("need at least one month")
    labels = [str(m["month"]) for m in months]
    x = np.arange(len(months), dtype=np.float64)
    fig = new_figure(max(6.5, 1.2 + 0.7 * len(months)), 6.4)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for ax, metric, colour in ((top, "auroc", PALETTE[0]), (bottom, "oe", PALETTE[3])):
        cis = np.array([ci_values(m.get(metric)) for m in months], dtype=np.float64).reshape(-1, 3)
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
            label=METRIC_LABELS[metric],
        )
        finite = np.concatenate([v[np.isfinite(v)] for v in (value, lo, hi)])
        if metric == "oe":
            finite = np.r_[finite, OE_BAND[0], OE_BAND[1]]
        if finite.size:
            pad = max(0.01, 0.15 * float(finite.max() - finite.min()))
            ax.set_ylim(float(finite.min()) - pad, float(finite.max()) + pad)
        ax.set_ylabel(f"{METRIC_LABELS[metric]} ({100 * ci_level:g}% CI)", fontsize=10.5)
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
    return save_png(fig, path)


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
    fig = new_figure(7.2, 5.4)
    ax = fig.add_subplot()
    peak = 0.0
    treat_all: tuple[FloatArray, FloatArray] | None = None
    x_max = 0.0
    for i, (name, points) in enumerate(net_benefit_by_model.items()):
        ordered = sorted(points, key=lambda p: float(p["threshold"]))
        t = np.array([float(p["threshold"]) for p in ordered])
        nb = np.array([np.nan if p.get("model") is None else float(p["model"]) for p in ordered])
        ax.plot(t, nb, label=name, **line_style(i))
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
    percent_axis(ax.xaxis)
    ax.set_xlabel("Risk threshold for offering a review", fontsize=11)
    ax.set_ylabel("Net benefit (true positives per person, net of harms)", fontsize=10.5)
    ax.set_title("Decision curve", fontsize=13)
    ax.grid(True, color="#E8E8E8", linewidth=0.8)
    ax.legend(loc="upper right", fontsize=9)
    return save_png(fig, path)
