"""``/api/v1/patients/{nhs_number}/marks``: what a team did about a listed person
(contacted, reviewed, declined, not appropriate), with who and when; audited like every
patient-level read."""

from __future__ import annotations

import json
from typing import Annotated

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, status

from riskstrat.data.contract import PSEUDONYM_PATTERN, IdentifierKind
from riskstrat.nhs_number import is_valid_nhs_number, normalise_nhs_number
from riskstrat.service.auth import Caller
from riskstrat.service.common import (
    API_PREFIX,
    ERRORS,
    NHS_NUMBER_PATTERN,
    PurposeHeader,
    audit,
    interventions_of,
    require_shape,
    served_kind,
)
from riskstrat.service.deps import SettingsDep, StoreDep, require
from riskstrat.service.schemas import MarkHistory, MarkIn, MarkPublic
from riskstrat.store import Store
from riskstrat.store.marks import Mark
from riskstrat.store.records import RunInfo

router = APIRouter(prefix=API_PREFIX, responses=ERRORS)

#: The teams that act on lists mark them: PCN teams and care coordinators.
Marker = Annotated[Caller, Depends(require("pcn_team", "care_coordinator"))]
#: A pseudonym's shape (ten digits among them), or an NHS number as people write it
#: (``999 725 7952``; with dashes it is already a pseudonym's shape).
WRITTEN_PATTERN = rf"^(?:{PSEUDONYM_PATTERN}|[0-9]{{3}} ?[0-9]{{3}} ?[0-9]{{4}})$"
PersonPath = Annotated[
    str,
    Path(
        pattern=WRITTEN_PATTERN,
        description="NHS number (10 digits, or as written: '999 725 7952', '999-725-7952'); "
        "or, when the latest run is pseudonymous, the person's pseudonym.",
    ),
]
NOT_HERE = "no such patient in the latest published run"
POST_ROUTE = "POST /api/v1/patients/{nhs_number}/marks"
GET_ROUTE = "GET /api/v1/patients/{nhs_number}/marks"


def _person(store: Store, caller: Caller, written: str) -> tuple[RunInfo, str, str]:
    """The latest run, the person as it stores them, and their PCN; 404 for anyone not in
    it or outside the caller's PCNs (the two look the same)."""
    run = store.runs.latest()
    person = written
    if served_kind(run) == "nhs_number":
        person = normalise_nhs_number(written)
        require_shape(person, NHS_NUMBER_PATTERN, ("path", "nhs_number"))
        if not is_valid_nhs_number(person):
            raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_HERE)
    score = store.scores.patient(run.id, person) if run is not None else None
    if run is None or score is None or not caller.sees_pcn(score.pcn_code):
        # Out of scope reads exactly like not there: nothing to tell them apart.
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_HERE)
    return run, person, score.pcn_code


def _public(mark: Mark) -> MarkPublic:
    kind: IdentifierKind = "pseudonym" if mark.identifier_kind == "pseudonym" else "nhs_number"
    return MarkPublic(
        person=mark.person, identifier_kind=kind, intervention=mark.intervention,
        status=mark.status, by=mark.by, at=mark.at, note=mark.note,  # type: ignore[arg-type]
    )  # fmt: skip


@router.post(
    "/patients/{nhs_number}/marks",
    status_code=status.HTTP_201_CREATED,
    response_model=MarkPublic,
    tags=["marks"],
)
def add_mark(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: Marker,
    nhs_number: PersonPath,
    body: MarkIn,
    purpose: PurposeHeader = None,
) -> Response:
    """Mark a person in the caller's PCNs as contacted, reviewed, declined or not
    appropriate for one of the latest run's interventions. The mark keeps who made it and
    when, holds across months (a person reviewed in November is still reviewed on December's
    list) and is audited. Roles: pcn_team, care_coordinator."""
    run, person, pcn_code = _person(store, caller, nhs_number)
    if body.intervention not in interventions_of(run):
        known = ", ".join(interventions_of(run)) or "none"
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"no cohort {body.intervention!r} in the latest run; known: {known}",
        )
    kind = run.identifier_kind
    # The write is audited first: if the record cannot be kept, nothing is marked.
    audit(request, store, settings, caller, POST_ROUTE, [person], purpose, identifier_kind=kind)
    mark = store.marks.record(
        person=person, intervention=body.intervention, status=body.status, by=caller.name,
        pcn_code=pcn_code, identifier_kind=kind, note=body.note,
    )  # fmt: skip
    return Response(
        _public(mark).model_dump_json(),
        status_code=status.HTTP_201_CREATED,
        media_type="application/json",
    )


@router.get("/patients/{nhs_number}/marks", response_model=MarkHistory, tags=["marks"])
def marks_of(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: Marker,
    nhs_number: PersonPath,
    purpose: PurposeHeader = None,
) -> Response:
    """Every mark of a person in the caller's PCNs, for every intervention, newest first.
    Roles: pcn_team, care_coordinator."""
    run, person, _ = _person(store, caller, nhs_number)
    kind = run.identifier_kind
    audit(request, store, settings, caller, GET_ROUTE, [person], purpose, identifier_kind=kind)
    history = MarkHistory(
        person=person,
        identifier_kind=kind,
        marks=[_public(m) for m in store.marks.history(person, identifier_kind=kind)],
    )
    return Response(history.model_dump_json(), media_type="application/json")


# ---- the status on cohort lists ------------------------------------------------------------


def status_json(mark: Mark | None) -> str:
    """A cohort item's ``status``, ``status_by`` and ``status_at`` members as JSON text (to
    splice into the item written at publication)."""
    if mark is None:
        return '"status":null,"status_by":null,"status_at":null'
    return (
        f'"status":{json.dumps(mark.status)},"status_by":{json.dumps(mark.by)},'
        f'"status_at":{json.dumps(mark.at.isoformat())}'
    )


def with_status(items: list[str], people: list[str], marks: dict[tuple[str, str], Mark],
                intervention: str) -> list[str]:  # fmt: skip
    """Cohort items (JSON objects as text, in the order of ``people``) with each person's
    latest mark for ``intervention`` added."""
    return [
        f"{item[:-1]},{status_json(marks.get((person, intervention)))}}}"
        for item, person in zip(items, people, strict=True)
    ]


def status_columns(frame: pd.DataFrame, people: list[str], marks: dict[tuple[str, str], Mark],
                   intervention: str) -> pd.DataFrame:  # fmt: skip
    """A cohort page's table (rows in the order of ``people``) with ``status``,
    ``status_by`` and ``status_at`` columns (empty where nobody has marked the person)."""
    found = [marks.get((person, intervention)) for person in people]
    out = frame.copy()
    out["status"] = [m.status if m else None for m in found]
    out["status_by"] = [m.by if m else None for m in found]
    out["status_at"] = [m.at.isoformat() if m else None for m in found]
    return out
