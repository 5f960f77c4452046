"""PNG plot of a fairness audit: each subgroup's metrics with their intervals.

Drawn as every riskstrat plot is (see :mod:`riskstrat.reports.figures`): one figure of its own,
no pyplot, one PNG at ``path``, which the function returns. The audit is the dict of
:func:`riskstrat.fairness.subgroups.fairness_audit`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from riskstrat.reports.figures import (
    GREY,
    METRIC_LABELS,
    OE_BAND,
    PALETTE,
    REFERENCE,
    FloatArray,
    PathLike,
    ci_values,
    new_figure,
    percent_axis,
    save_png,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_ATTRIBUTE_LABELS = {
    "sex": "Sex",
    "age_band": "Age band",
    "imd_quintile": "IMD quintile",
    "ethnic_group": "Ethnic group",
}


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
    fig = new_figure(2.6 + 4.0 * len(metrics), 0.9 + 0.36 * sum(heights))
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
                f"{METRIC_LABELS.get(metric, metric)}",
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
    return save_png(fig, path)


def _group_label(g: Mapping[str, Any]) -> str:
    text = f"{g['group']} (n={int(g.get('rows', 0)):,})"
    return text if g.get("estimable", True) else f"{text} - too small"


def _metric_limits(
    metric: str, groups: Sequence[Mapping[str, Any]], overall: Mapping[str, Any]
) -> tuple[float, float]:
    # Axis range from the groups large enough to estimate; a wide CI of a group too small
    # to estimate runs off the axis (with an arrowhead) rather than squashing the others.
    shown = [g for g in groups if g.get("estimable", True)] or list(groups)
    vals = [v for g in shown for v in ci_values(g.get(metric)) if np.isfinite(v)]
    vals += [v for v in ci_values(overall.get(metric))[:1] if np.isfinite(v)]
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
    overall_value = ci_values(overall.get(metric))[0]
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
            label=f"Overall {_lower_first(METRIC_LABELS.get(metric, metric))}: "
            f"{_metric_text(metric, overall_value)}",
        )
    for y, g in zip(ys, members, strict=True):
        estimable = bool(g.get("estimable", True))
        value, lo, hi = ci_values(g.get(metric))
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
        percent_axis(ax.xaxis)
    ax.grid(True, axis="x", color="#E8E8E8", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(axis="x", labelsize=9)
