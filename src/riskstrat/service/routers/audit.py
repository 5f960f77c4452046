"""``/api/v1/audit``: the audit trail of patient-level reads, for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from riskstrat.data.contract import IdentifierKind
from riskstrat.service.common import (
    API_PREFIX,
    ERRORS,
    IDENTIFIER_PATTERN,
    NHS_NUMBER_PATTERN,
    require_shape,
    served_kind,
)
from riskstrat.service.deps import Admin, SettingsDep, StoreDep
from riskstrat.service.schemas import AuditPage, AuditRecord
from riskstrat.store.audit import pseudonymise

router = APIRouter(prefix=API_PREFIX, responses=ERRORS)


@router.get("/audit", response_model=AuditPage, tags=["admin"])
def audit_trail(
    store: StoreDep,
    settings: SettingsDep,
    caller: Admin,
    user: Annotated[str | None, Query(max_length=200, description="Who read")] = None,
    patient: Annotated[
        str | None,
        Query(
            pattern=IDENTIFIER_PATTERN,
            description="NHS number, or pseudonym (see identifier_kind): who has looked at it?",
        ),
    ] = None,
    identifier_kind: Annotated[
        IdentifierKind | None,
        Query(
            description="Only reads by NHS number, or only reads by pseudonym. With `patient`, "
            "default: what the latest published run identifies people by."
        ),
    ] = None,
    since: Annotated[datetime | None, Query(description="From (inclusive), ISO 8601")] = None,
    until: Annotated[datetime | None, Query(description="To (exclusive), ISO 8601")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> AuditPage:
    """The audit trail of patient-level reads, filtered by user, patient, kind of identifier
    and time. Role: admin."""
    stored_patient = None
    kind = identifier_kind
    if patient is not None:
        # An NHS number and a pseudonym with the same digits are different people: a patient
        # is looked for among reads by one kind of identifier only.
        kind = kind or served_kind(store.runs.latest())
        if kind == "nhs_number":
            require_shape(patient, NHS_NUMBER_PATTERN, ("query", "patient"))
        stored_patient = (
            patient
            if settings.audit_identify_patients
            else pseudonymise(patient, settings.pseudonym_key.get_secret_value())
        )
    records = store.audit.records(
        actor=user, patient=stored_patient, since=since, until=until, limit=limit + 1,
        identifier_kind=kind,
    )  # fmt: skip
    return AuditPage(
        records=[AuditRecord(**r) for r in records[:limit]], truncated=len(records) > limit
    )
