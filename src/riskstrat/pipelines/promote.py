"""Promotion: move the ``champion`` alias to a version only if it has earned it.

A version is promoted when it passed every gate at training time, and it is not worse than
the current champion on the same held-out rows by more than the spec's tolerance. The
comparison is the one made when the version was trained, so it must be against the version
that is champion now. ``force`` overrides a refusal, and the reason and the person are
recorded. Every decision, promoted or refused, is written on the version as tags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from riskstrat.config import Settings, acting_user, get_settings
from riskstrat.errors import InvalidValueError, RefusedError
from riskstrat.modelling.registry import CHALLENGER, CHAMPION, ModelNotFoundError, registry_for
from riskstrat.modelling.spec import ModelSpec

TAG = "riskstrat.promotion"


@dataclass(frozen=True)
class PromotionDecision:
    version: str
    promoted: bool
    forced: bool
    reasons: list[str] = field(default_factory=list)  # why refused (or what was overridden)
    previous_champion: str | None = None


class PromotionRefused(RefusedError):
    """The version did not pass; the decision (with reasons) is recorded on it."""

    default_hint = "see its gates in `riskstrat models`; to override, promote with --force --reason"

    def __init__(self, decision: PromotionDecision):
        super().__init__(f"version {decision.version} not promoted: {'; '.join(decision.reasons)}")
        self.decision = decision


def run_promotion(
    spec: ModelSpec,
    *,
    version: str | None = None,
    force: bool = False,
    reason: str | None = None,
    actor: str | None = None,
    settings: Settings | None = None,
) -> PromotionDecision:
    """Promote ``version`` (default: the ``challenger``) of the spec's model to champion.

    Raises:
        PromotionRefused: a gate failed or the version is worse than the champion, and
            ``force`` was not given. The refusal is recorded on the version first.
        InvalidValueError: ``force`` without a reason (a ``ValueError``).
    """
    settings = settings or get_settings()
    registry = registry_for(settings)
    actor = actor or acting_user()
    if force and not (reason and reason.strip()):
        raise InvalidValueError(
            "a forced promotion needs --reason: it is recorded on the version",
            hint='promote again with --force --reason "why the failed check is acceptable"',
        )
    info = registry.describe(spec.name, version or CHALLENGER)
    try:
        champion = registry.describe(spec.name, CHAMPION)
    except ModelNotFoundError:
        champion = None
    if champion is not None and champion.version == info.version:
        return PromotionDecision(
            info.version,
            promoted=False,
            forced=False,
            reasons=["already the champion"],
            previous_champion=champion.version,
        )

    problems: list[str] = []
    if info.tags.get("riskstrat.gates_passed") != "true":
        failures = info.tags.get("riskstrat.gate_failures", "not evaluated")
        problems.append(f"failed its gates: {failures}")
    if champion is not None:
        compared = info.tags.get("riskstrat.compared_with_champion", "none")
        if compared != champion.version:
            problems.append(
                f"was compared with version {compared}, but the champion is now version "
                f"{champion.version}: retrain so both are measured on the same rows"
            )
        else:
            difference = info.metrics.get("auroc_difference_vs_champion")
            tolerance = spec.promotion.max_auroc_drop
            if difference is None:
                problems.append("has no comparison with the champion on the same rows")
            elif difference < -tolerance:
                problems.append(
                    f"AUROC is {-difference:.4f} below the champion's on the same rows "
                    f"(tolerance {tolerance:.4f})"
                )

    now = datetime.now(UTC).isoformat(timespec="seconds")
    if problems and not force:
        decision = PromotionDecision(
            info.version,
            promoted=False,
            forced=False,
            reasons=problems,
            previous_champion=champion.version if champion else None,
        )
        registry.set_version_tags(
            spec.name,
            info.version,
            {
                f"{TAG}.decision": "refused",
                f"{TAG}.at": now,
                f"{TAG}.by": actor,
                f"{TAG}.reasons": "; ".join(problems)[:4000],
            },
        )
        raise PromotionRefused(decision)

    registry.set_alias(spec.name, CHAMPION, info.version)
    tags = {
        f"{TAG}.decision": "promoted",
        f"{TAG}.at": now,
        f"{TAG}.by": actor,
        f"{TAG}.forced": str(bool(problems) and force).lower(),
        f"{TAG}.previous_champion": champion.version if champion else "none",
    }
    if problems:
        tags[f"{TAG}.overridden"] = "; ".join(problems)[:4000]
        tags[f"{TAG}.reason"] = (reason or "").strip()[:2000]
    registry.set_version_tags(spec.name, info.version, tags)
    if champion is not None:
        registry.set_version_tags(
            spec.name,
            champion.version,
            {
                f"{TAG}.superseded_by": info.version,
                f"{TAG}.superseded_at": now,
            },
        )
    return PromotionDecision(
        info.version,
        promoted=True,
        forced=bool(problems) and force,
        reasons=problems,
        previous_champion=champion.version if champion else None,
    )
