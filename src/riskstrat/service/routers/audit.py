"""``/api/v1/audit``: the audit trail of patient-level reads, for admins."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BeforeValidator, WithJsonSchema

from riskstrat.data.contract import IdentifierKind
from riskstrat.service.common import (
    API_PREFIX,
    ERRORS,
    IDENTIFIER_PATTERN,
    NHS_NUMBER_PATTERN,
    as_typed,
    require_shape,
    served_kind,
)
from riskstrat.service.deps import Admin, SettingsDep, StoreDep
from riskstrat.service.schemas import AuditPage, AuditRecord
from riskstrat.store.audit import pseudonymise

router = APIRouter(prefix=API_PREFIX, responses=ERRORS)

#: A date, or a date and time, as ISO 8601 writes them; nothing else (a bare number such as
#: ``0.5`` would otherwise be taken for seconds since 1970).
TIME_PATTERN = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?([Zz]|[+-][0-9]{2}:[0-9]{2})?)?"
)


def _moment(value: object) -> datetime:
    """A ``since``/``until`` value as an aware UTC time: a date is its midnight (UTC), a time
    without an offset is UTC. Anything but a real date or date and time is refused (422)."""
    if not isinstance(value, str) or re.fullmatch(TIME_PATTERN, value) is None:
        raise ValueError("give a date (YYYY-MM-DD) or an ISO 8601 date and time")
    moment = datetime.fromisoformat(value.upper())  # a ValueError for 2026-02-30
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 pushed past the calendar by its offset
        return (datetime.min if moment.year == 1 else datetime.max).replace(tzinfo=UTC)


#: A date or a date and time, parsed by ``_moment`` and documented as exactly that.
Moment = Annotated[
    datetime,
    BeforeValidator(_moment),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "format": "date"},
                   {"type": "string", "format": "date-time"}]}
    ),
]  # fmt: skip


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
    since: Annotated[
        Moment | None,
        Query(
            description="From (inclusive): a date (YYYY-MM-DD), or an ISO 8601 date and "
            "time (UTC unless it has an offset)"
        ),
    ] = None,
    until: Annotated[
        Moment | None,
        Query(
            description="To (exclusive): a date (YYYY-MM-DD), or an ISO 8601 date and "
            "time (UTC unless it has an offset)"
        ),
    ] = None,
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
        patient = as_typed(patient, kind)  # "999 725 7952" as its ten digits
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
