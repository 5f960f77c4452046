"""``/api/v1/patients``: one person's risk, reasons, cohorts and what changed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response, status

from riskstrat.cohorts.select import what_changed
from riskstrat.explain.reasons import REASON_LABELS
from riskstrat.nhs_number import is_valid_nhs_number
from riskstrat.service.common import (
    API_PREFIX,
    ERRORS,
    IDENTIFIER_PATTERN,
    NHS_NUMBER_PATTERN,
    PurposeHeader,
    as_typed,
    audit_async,
    criteria,
    interventions_of,
    json_response,
    public_risk,
    require_shape,
    run_summary,
    served_kind,
)
from riskstrat.service.deps import CareCoordinator, SettingsDep, StoreDep
from riskstrat.service.schemas import (
    EligibleIntervention,
    PatientRiskResponse,
    RankedBy,
    WhatChanged,
)

router = APIRouter(prefix=API_PREFIX, responses=ERRORS)

BAD_CHECK_DIGIT = "no risk published for this patient: not a valid NHS number (Modulus 11)"


@router.get("/patients/{nhs_number}/risk", response_model=PatientRiskResponse, tags=["patients"])
async def patient_risk(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: CareCoordinator,
    nhs_number: Annotated[
        str,
        Path(
            pattern=IDENTIFIER_PATTERN,
            description="NHS number: ten digits, or as written (999 725 7952, 999-725-7952); "
            "or, when the latest run is pseudonymous, the person's pseudonym (1-64 letters, "
            "digits, '.', '_' or '-').",
        ),
    ],
    purpose: PurposeHeader = None,
) -> Response:
    """One person's risk, percentile and reasons from the latest run, the interventions they
    are eligible for, and what changed since the previous month. Role: care_coordinator, for
    patients registered in its PCNs."""
    run, previous = store.runs.latest_two()
    kind = served_kind(run)
    nhs_number = as_typed(nhs_number, kind)  # found, and audited, as its ten digits
    if kind == "nhs_number":
        require_shape(nhs_number, NHS_NUMBER_PATTERN, ("path", "nhs_number"))
        if not is_valid_nhs_number(nhs_number):
            # Ten digits but a wrong check digit: no such person can exist.
            raise HTTPException(status.HTTP_404_NOT_FOUND, BAD_CHECK_DIGIT)
    if previous is not None and previous.identifier_kind != kind:
        # The same text names different people in a run of NHS numbers and in a
        # pseudonymous one: there is nothing to compare with.
        previous = None
    found = (
        store.scores.in_runs([r.id for r in (run, previous) if r is not None], nhs_number)
        if run is not None
        else {}
    )
    score = found.get(run.id) if run is not None else None
    if run is None or score is None or not caller.sees_pcn(score.pcn_code):
        # Out of scope reads exactly like not there: nothing to tell them apart.
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no risk published for this patient")
    await audit_async(
        request, store, settings, caller, "GET /api/v1/patients/{nhs_number}/risk",
        [nhs_number], purpose, identifier_kind=kind,
    )  # fmt: skip
    memberships = [
        EligibleIntervention(
            intervention=m.intervention,
            title=interventions_of(run).get(m.intervention, {}).get("title", m.intervention),
            cohort_rank=m.rank,
            expected_admissions_avoided=m.expected_benefit,
            ranking=None if m.ranking is None else RankedBy.model_validate(m.ranking),
            eligible_because=criteria(run, m.intervention, m.criteria),
        )
        for m in store.cohorts.memberships(run.id, nhs_number)
    ]
    changed = None
    before = found.get(previous.id) if previous is not None else None
    if previous is not None and before is not None:
        change = what_changed(
            risk_now=score.risk,
            contributions_now=score.contributions,
            risk_then=before.risk,
            contributions_then=before.contributions,
        )
        texts = {r["group"]: r["text"] for r in score.reasons}
        for moved in change["reasons_moved"]:
            moved["label"] = REASON_LABELS.get(moved["group"], moved["group"].replace("_", " "))
            moved["text_now"] = texts.get(moved["group"])
        changed = WhatChanged(
            previous_month=previous.month, previous_model_version=previous.model_version, **change
        )
    return json_response(
        PatientRiskResponse(
            **public_risk(score, kind).model_dump(),
            run=run_summary(run),
            eligible_interventions=memberships,
            what_changed=changed,
        )
    )
