"""Promotion gates: an estimate with its interval checked against an allowed range.

Each gate gives a :class:`GateResult` with the numbers in plain English, for the promotion
decision, the MLflow tags and the model card. The overall calibration gates are here; the
fairness audit builds its subgroup gates from :func:`range_gate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class GateResult:
    """One promotion gate checked on one subject.

    Attributes:
        name: the gate, e.g. "calibration O/E", "subgroup O/E", "subgroup AUROC gap".
        subject: what it was checked on, e.g. "overall", "ethnic_group=Black".
        passed: whether the gate passed.
        detail: plain English with the numbers, e.g. "O/E 0.62 (95% CI 0.55-0.70) is outside
            0.8-1.25".
    """

    name: str
    subject: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """The result as a plain dict (for JSON, MLflow tags and the card)."""
        return {
            "name": self.name,
            "subject": self.subject,
            "passed": self.passed,
            "detail": self.detail,
        }


def _fmt_ci(label: str, ci: Mapping[str, Any], level: float, digits: int) -> str:
    text = f"{label} {ci['value']:.{digits}f}"
    if ci.get("lo") is not None and ci.get("hi") is not None:
        text += f" ({level * 100:g}% CI {ci['lo']:.{digits}f}-{ci['hi']:.{digits}f})"
    return text


def range_gate(
    name: str,
    subject: str,
    label: str,
    ci: Mapping[str, Any] | None,
    allowed: tuple[float, float],
    *,
    rule: Literal["ci", "point"],
    level: float,
    digits: int = 2,
) -> GateResult:
    """Check that an estimate lies in ``allowed``.

    Under ``rule="ci"`` the gate fails only when the whole interval lies outside the range
    (evidence, not noise); under ``rule="point"`` the point estimate must lie inside. Without
    an interval, the "ci" rule falls back to the point estimate. A missing estimate fails.
    """
    low, high = allowed
    bounds = f"{low:g}-{high:g}"
    if ci is None or ci.get("value") is None:
        return GateResult(name, subject, False, f"{label} could not be estimated")
    value = float(ci["value"])
    text = _fmt_ci(label, ci, level, digits)
    inside = low <= value <= high
    has_ci = ci.get("lo") is not None and ci.get("hi") is not None
    if rule == "point" or not has_ci:
        if inside:
            return GateResult(name, subject, True, f"{text} is within {bounds}")
        return GateResult(name, subject, False, f"{text} is outside {bounds}")
    lo, hi = float(ci["lo"]), float(ci["hi"])
    if hi < low or lo > high:
        return GateResult(
            name, subject, False, f"{text} is outside {bounds}: the whole interval lies outside"
        )
    if inside:
        return GateResult(name, subject, True, f"{text} is within {bounds}")
    return GateResult(
        name,
        subject,
        True,
        f"{text}: the estimate is outside {bounds} but the interval overlaps it, "
        "so this is not evidence of miscalibration",
    )


def calibration_gate_results(
    evaluation: Mapping[str, Any],
    *,
    oe_range: tuple[float, float] = (0.9, 1.1),
    slope_range: tuple[float, float] = (0.8, 1.25),
    rule: Literal["ci", "point"] = "ci",
) -> list[GateResult]:
    """The overall calibration gates (O/E and slope) on an :func:`evaluate_predictions` result.

    Under ``rule="ci"`` a gate fails only when the whole confidence interval lies outside the
    allowed range: that is evidence of miscalibration, not noise. Under ``rule="point"`` the
    point estimate must lie inside the range. Point-estimate gates fail by chance on small
    samples (a well-calibrated model's O/E in a group with 30 events swings by +-35%), so a
    strict point rule blocks good models and teaches people to force promotions; the CI rule
    fails only what the data can show. Use "point" where the sample is large and the range
    already allows for noise.

    Args:
        evaluation: the dict from :func:`evaluate_predictions` (or the same read back from
            JSON).
        oe_range: allowed observed/expected ratio.
        slope_range: allowed calibration slope.
        rule: "ci" or "point".

    Returns:
        ``[GateResult("calibration O/E", "overall", ...),
        GateResult("calibration slope", "overall", ...)]``.
    """
    if rule not in ("ci", "point"):
        raise ValueError(f"rule must be 'ci' or 'point', got {rule!r}")
    level = float(evaluation.get("ci_level", 0.95))
    cal = evaluation["calibration"]
    return [
        range_gate(
            "calibration O/E", "overall", "O/E", cal["oe"], oe_range, rule=rule, level=level
        ),
        range_gate(
            "calibration slope",
            "overall",
            "slope",
            cal["slope"],
            slope_range,
            rule=rule,
            level=level,
        ),
    ]
