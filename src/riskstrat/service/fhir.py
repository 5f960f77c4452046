"""FHIR R4 ``RiskAssessment`` from a published score (built as plain JSON; tests validate it
with the fhir.resources models)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from riskstrat.data.contract import IdentifierKind
from riskstrat.store.records import PatientScore, RunInfo

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
#: The identifier system of a pseudonymous run's people. Local to this service: a pseudonym
#: (an OMOP person_id, say) means nothing outside the extract it came with, and must never
#: be labelled with the NHS number system, whatever its digits.
PSEUDONYM_SYSTEM = "urn:riskstrat:pseudonym"
SNOMED = "http://snomed.info/sct"
#: SNOMED CT 183452005 "Emergency hospital admission (procedure)".
EMERGENCY_ADMISSION = {
    "system": SNOMED,
    "code": "183452005",
    "display": "Emergency hospital admission",
}


def risk_assessment_id(run: RunInfo, score: PatientScore) -> str:
    """A stable id: the run and the person's rank in it (no NHS number in the id)."""
    return f"{run.id}-{score.rank}"


def subject_identifier(identifier: str, identifier_kind: IdentifierKind) -> dict[str, Any]:
    """The FHIR Identifier of a person: an NHS number in the NHS number system, or a
    pseudonym in the local pseudonym system, typed as such."""
    if identifier_kind == "pseudonym":
        return {"type": {"text": "pseudonym"}, "system": PSEUDONYM_SYSTEM, "value": identifier}
    return {"system": NHS_NUMBER_SYSTEM, "value": identifier}


def risk_assessment(run: RunInfo, score: PatientScore, *, horizon_days: int = 90) -> dict[str, Any]:
    """The FHIR R4 RiskAssessment for one published score (its subject identified as the run
    identifies its people: by NHS number or by pseudonym)."""
    start: date = run.month
    end = start + timedelta(days=horizon_days)
    occurrence = (run.published_at or datetime.combine(start, time(), UTC)).astimezone(UTC)
    rationale = "; ".join(
        f"{r['text']} ({float(r['percentage_points']):+.1f} percentage points)"
        for r in score.reasons
    )
    return {
        "resourceType": "RiskAssessment",
        "id": risk_assessment_id(run, score),
        "status": "final",
        "subject": {"identifier": subject_identifier(score.nhs_number, run.identifier_kind)},
        "occurrenceDateTime": occurrence.isoformat(timespec="seconds"),
        "method": {
            "coding": [
                {
                    "system": "https://github.com/riskstrat/riskstrat/model",
                    "code": f"{run.model_name}/{run.model_version}",
                    "display": f"{run.model_name} version {run.model_version}",
                }
            ],
            "text": f"riskstrat model {run.model_name} version {run.model_version}",
        },
        "prediction": [
            {
                "outcome": {
                    "coding": [EMERGENCY_ADMISSION],
                    "text": "emergency hospital admission",
                },
                "probabilityDecimal": round(score.risk, 6),
                "whenPeriod": {"start": start.isoformat(), "end": end.isoformat()},
                "rationale": rationale or "no single reason stands out",
            }
        ],
        "note": [
            {
                "text": "Risk of one or more emergency admissions in the 90 days from the index "
                "date. A prediction to prioritise proactive care, not a diagnosis."
            }
        ],
    }


def bundle(resources: list[dict[str, Any]], base: str) -> dict[str, Any]:
    """A searchset Bundle; ``base`` is the service's configured public address
    (``Settings.base_url``), never one taken from the request."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {"fullUrl": f"{base}/fhir/RiskAssessment/{r['id']}", "resource": r,
             "search": {"mode": "match"}}
            for r in resources
        ],
    }  # fmt: skip
