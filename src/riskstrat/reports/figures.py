"""The look every riskstrat plot shares: colours, line styles, labels and a safe figure.

Every plot draws on its own ``matplotlib.figure.Figure`` with an Agg canvas (no pyplot, no
global state), so it is safe in any process or thread, and writes one PNG. Colours come from
the Okabe-Ito palette, which stays distinguishable with the common colour-vision
deficiencies; lines also differ in style, so a plot still reads in greyscale. matplotlib is
imported inside the functions: importing this module does no work.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from matplotlib.axis import Axis
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

METRIC_LABELS = {
    "auroc": "AUROC",
    "oe": "Observed / expected",
    "selection_rate": "Selection rate",
    "fpr": "False positive rate",
    "fnr": "False negative rate",
    "false_omission_rate": "False omission rate",
    "false_discovery_rate": "False discovery rate",
    "brier": "Brier score",
}


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches on its own Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: PathLike) -> Path:
    """Write ``fig`` as a PNG at ``path`` (making its folder), on white; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=DPI, facecolor="white")
    return out


def line_style(i: int) -> dict[str, Any]:
    """Colour, dash and width of the ``i``-th line of a plot (the model first, thicker)."""
    return {
        "color": PALETTE[i % len(PALETTE)],
        "linestyle": LINESTYLES[i % len(LINESTYLES)],
        "linewidth": 2.2 if i == 0 else 1.6,
    }


def percent_axis(axis: Axis) -> None:
    """Label ``axis`` in percent (0.05 reads 5%)."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{100 * v:g}%"))


def ci_values(value: Mapping[str, Any] | None) -> tuple[float, float, float]:
    """(value, lo, hi) as floats, NaN where missing."""

    def f(x: Any) -> float:
        return float("nan") if x is None else float(x)

    if value is None:
        return (float("nan"),) * 3
    return f(value.get("value")), f(value.get("lo")), f(value.get("hi"))
