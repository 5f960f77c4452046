"""``/fhir/RiskAssessment``: the latest published risks as FHIR R4 resources."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status

from riskstrat.data.contract import PSEUDONYM_PATTERN
from riskstrat.nhs_number import is_valid_nhs_number
from riskstrat.service.common import (
    ERRORS,
    WRITTEN_NHS_NUMBER_PATTERN,
    PurposeHeader,
    as_typed,
    audit,
    require_shape,
    served_kind,
)
from riskstrat.service.deps import CareCoordinator, SettingsDep, StoreDep
from riskstrat.service.fhir import NHS_NUMBER_SYSTEM, PSEUDONYM_SYSTEM, bundle, risk_assessment

router = APIRouter()

FhirJson = "application/fhir+json"
FHIR_NHS_PATTERN = r"^(https://fhir\.nhs\.uk/Id/nhs-number\|)?[0-9]{10}$"
FHIR_PATIENT_PATTERN = (
    r"^((https://fhir\.nhs\.uk/Id/nhs-number|urn:riskstrat:pseudonym)\|)?"
    f"({PSEUDONYM_PATTERN}|{WRITTEN_NHS_NUMBER_PATTERN})$"
)


def _fhir_response(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), media_type=FhirJson)


@router.get(
    "/fhir/RiskAssessment",
    tags=["fhir"],
    responses={200: {"content": {FhirJson: {}}, "description": "A searchset Bundle"}, **ERRORS},
)
def fhir_risk_assessment_search(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: CareCoordinator,
    patient: Annotated[
        str,
        Query(
            description="NHS number (ten digits, or as written: 999 725 7952), alone or as "
            "https://fhir.nhs.uk/Id/nhs-number|<number>; "
            "or, when the latest run is pseudonymous, the pseudonym, alone or as "
            "urn:riskstrat:pseudonym|<pseudonym>",
            pattern=FHIR_PATIENT_PATTERN,
        ),
    ],
    purpose: PurposeHeader = None,
) -> Response:
    """FHIR R4 RiskAssessment search by patient: the latest published risk, as a Bundle.
    Role: care_coordinator, for patients registered in its PCNs."""
    system, _, identifier = patient.rpartition("|")
    latest = store.runs.latest()
    kind = served_kind(latest)
    if kind == "nhs_number":
        if system != PSEUDONYM_SYSTEM:
            identifier = as_typed(identifier, kind)  # "999 725 7952" as its ten digits
            patient = f"{system}|{identifier}" if system else identifier
            require_shape(patient, FHIR_NHS_PATTERN, ("query", "patient"))
        # A pseudonym names nobody in a run of NHS numbers.
        wanted = system != PSEUDONYM_SYSTEM and is_valid_nhs_number(identifier)
    else:
        # An NHS number names nobody in a pseudonymous run, however its digits look.
        wanted = system != NHS_NUMBER_SYSTEM
    run = latest if wanted else None
    score = store.scores.patient(run.id, identifier) if run else None
    found = run is not None and score is not None and caller.sees_pcn(score.pcn_code)
    resources = [risk_assessment(run, score)] if found and run and score else []
    if resources:
        audit(
            request, store, settings, caller, "GET /fhir/RiskAssessment", [identifier], purpose,
            identifier_kind=kind,
        )  # fmt: skip
    # Absolute URLs come from configuration, never from the request's Host header.
    return _fhir_response(bundle(resources, settings.base_url))


@router.get(
    "/fhir/RiskAssessment/{resource_id}",
    tags=["fhir"],
    responses={200: {"content": {FhirJson: {}}, "description": "A RiskAssessment"}, **ERRORS},
)
def fhir_risk_assessment_read(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: CareCoordinator,
    resource_id: Annotated[str, Path(pattern=r"^[0-9]{1,9}-[0-9]{1,9}$")],
    purpose: PurposeHeader = None,
) -> Response:
    """One FHIR R4 RiskAssessment by id. Role: care_coordinator, within its PCNs."""
    run_id, rank = (int(x) for x in resource_id.split("-"))
    run = store.runs.get(run_id)
    if run is not None and run.status != "published":
        run = None  # a run being staged, or one retired whose rows are still being deleted
    score = store.scores.by_rank(run_id, rank) if run else None
    if run is None or score is None or not caller.sees_pcn(score.pcn_code):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such RiskAssessment")
    audit(
        request, store, settings, caller, "GET /fhir/RiskAssessment/{id}",
        [score.nhs_number], purpose, identifier_kind=run.identifier_kind,
    )  # fmt: skip
    return _fhir_response(risk_assessment(run, score))
