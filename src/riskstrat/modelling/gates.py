"""Promotion gates: an estimate with its interval checked against an allowed range.

Each gate gives a :class:`GateResult` with the numbers in plain English, for the promotion
decision, the MLflow tags and the model card. The overall calibration gates are here; the
fairness audit builds its subgroup gates from :func:`range_gate`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def non_inferiority_gate(
    name: str,
    subject: str,
    difference: Mapping[str, Any] | None,
    margin: float,
    *,
    rule: Literal["ci", "point"],
    level: float,
) -> GateResult:
    """Check that a difference (this model minus another, e.g. a paired-bootstrap AUROC
    difference) is not below ``-margin``.

    Under ``rule="ci"`` the gate fails only when the whole interval lies below ``-margin``;
    under ``rule="point"`` (or without an interval) the point estimate must not.
    """
    if difference is None or difference.get("value") is None:
        return GateResult(name, subject, False, "the difference could not be estimated")
    value = float(difference["value"])
    text = _fmt_ci("difference", difference, level, 3)
    allowed = f"not below -{margin:g}"
    has_ci = difference.get("lo") is not None and difference.get("hi") is not None
    if rule == "point" or not has_ci:
        passed = value >= -margin
        return GateResult(name, subject, passed, f"{text} is {'' if passed else 'not '}{allowed}")
    if float(difference["hi"]) < -margin:
        return GateResult(
            name, subject, False, f"{text}: the whole interval lies below -{margin:g}"
        )
    return GateResult(name, subject, True, f"{text} is {allowed} on the evidence")


def logistic_gate_results(
    baselines: Sequence[Mapping[str, Any]],
    *,
    margin: float | None,
    rule: Literal["ci", "point"] = "ci",
    level: float = 0.95,
) -> list[GateResult]:
    """The non-inferiority gate against logistic regression (``key == "logistic_regression"``
    in the baseline rows of ``evaluate_version``); none when not gated or not fitted."""
    if margin is None:
        return []
    for row in baselines:
        if row.get("key") == "logistic_regression":
            return [
                non_inferiority_gate(
                    "AUROC vs logistic regression",
                    "overall",
                    row.get("auroc_difference"),
                    margin,
                    rule=rule,
                    level=level,
                )
            ]
    return []


def target_results(
    *,
    primary: Mapping[str, Any],
    baselines: Sequence[Mapping[str, Any]],
    stability: Sequence[Mapping[str, Any]],
    oracle: Mapping[str, Any] | None,
    max_auroc_below_logistic: float,
    min_auroc_ratio_to_oracle: float,
    max_share_flagged_ratio_to_oracle: float,
    oe_range: tuple[float, float],
    slope_range: tuple[float, float],
) -> list[GateResult]:
    """The model-quality targets (``ModelSpec.targets``) on point estimates, for the card and
    the benchmark. A target that cannot be measured here (no oracle on real data, no
    logistic regression fitted) is left out."""
    out: list[GateResult] = []
    level = float(primary.get("ci_level", 0.95))
    for row in baselines:
        if row.get("key") == "logistic_regression" and row.get("auroc_difference"):
            out.append(
                non_inferiority_gate(
                    "AUROC vs logistic regression",
                    "primary month",
                    row["auroc_difference"],
                    max_auroc_below_logistic,
                    rule="point",
                    level=level,
                )
            )
    if oracle:
        ratio = float(oracle["ratio"])
        out.append(
            GateResult(
                "model / oracle AUROC",
                "primary month",
                ratio >= min_auroc_ratio_to_oracle,
                f"{ratio:.3f} (model {float(oracle['model_auroc']):.3f}, oracle "
                f"{float(oracle['auroc']):.3f}: the ceiling the unobservable individual effect "
                f"sets); target at least {min_auroc_ratio_to_oracle:g}",
            )
        )
        model_share = oracle.get("model_share_flagged_for_recall")
        oracle_share = float(oracle["share_flagged_for_recall"])
        if model_share is not None and oracle_share > 0:
            times = float(model_share) / oracle_share
            out.append(
                GateResult(
                    "share flagged vs oracle",
                    "primary month",
                    times <= max_share_flagged_ratio_to_oracle,
                    f"{float(model_share):.1%} against the oracle's {oracle_share:.1%}: "
                    f"{times:.2f} x; target at most {max_share_flagged_ratio_to_oracle:g} x",
                )
            )
    cal = primary["calibration"]
    checks: list[tuple[str, str, Mapping[str, Any] | None, tuple[float, float]]] = [
        ("calibration O/E", "overall", cal["oe"], oe_range),
        ("calibration slope", "overall", cal["slope"], slope_range),
    ]
    for month in stability:
        checks.append(("calibration O/E", f"month {month['month']}", month.get("oe"), oe_range))
        if month.get("slope") is not None:
            checks.append(
                ("calibration slope", f"month {month['month']}", month["slope"], slope_range)
            )
    for name, subject, ci, allowed in checks:
        label = "O/E" if "O/E" in name else "slope"
        out.append(range_gate(name, subject, label, ci, allowed, rule="point", level=level))
    return out
