"""Green / amber / red for each monitoring check, against the model spec's thresholds.

A range check (O/E, calibration slope) is amber when its point estimate is outside the
band and red when its confidence interval lies wholly outside it, as the promotion gates
judge evidence. AUROC is amber when the point estimate is more than ``max_auroc_drop`` below
the version's validation AUROC and red when the interval's upper end is. PSI and the
data-quality increases compare a value with an amber and a red threshold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from riskstrat.modelling.spec import MonitoringConfig

Status = Literal["green", "amber", "red", "unknown"]
ORDER: dict[str, int] = {"unknown": 0, "green": 1, "amber": 2, "red": 3}


def worst(statuses: Iterable[str]) -> Status:
    """The worst status ("unknown" only when nothing was judged)."""
    found = max(statuses, key=lambda s: ORDER[s], default="unknown")
    return found  # type: ignore[return-value]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def threshold_status(value: float | None, amber: float, red: float) -> Status:
    """green below ``amber``, amber from it up to ``red``, red above ``red``."""
    if value is None or not _finite(value):
        return "unknown"
    if value > red:
        return "red"
    return "amber" if value >= amber else "green"


def range_status(ci: Mapping[str, Any] | None, band: tuple[float, float]) -> Status:
    """A CI (``value``, ``lo``, ``hi``) against an allowed band."""
    if not ci or not _finite(ci.get("value")):
        return "unknown"
    low, high = band
    lo, hi = ci.get("lo"), ci.get("hi")
    if (hi is not None and _finite(hi) and hi < low) or (
        lo is not None and _finite(lo) and lo > high
    ):
        return "red"
    return "green" if low <= ci["value"] <= high else "amber"


def auroc_status(ci: Mapping[str, Any] | None, reference: float | None, max_drop: float) -> Status:
    """AUROC against the version's validation AUROC (``reference``)."""
    if not ci or not _finite(ci.get("value")) or reference is None or not _finite(reference):
        return "unknown"
    floor = reference - max_drop
    if _finite(ci.get("hi")) and ci["hi"] < floor:
        return "red"
    return "amber" if ci["value"] < floor else "green"


def performance_status(
    perf: Mapping[str, Any], config: MonitoringConfig, *, reference_auroc: float | None
) -> dict[str, Status]:
    """Status of one month's performance block (``checks.performance``)."""
    if not perf.get("estimable", True):
        return {"auroc": "unknown", "oe": "unknown", "slope": "unknown"}
    return {
        "auroc": auroc_status(perf.get("auroc"), reference_auroc, config.max_auroc_drop),
        "oe": range_status(perf.get("oe"), config.oe_range),
        "slope": range_status(perf.get("slope"), config.slope_range),
    }
