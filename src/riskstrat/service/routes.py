"""API routes. Each reads the store through ``StoreDep``; query logic lives in the store."""

from __future__ import annotations

import asyncio
import io
import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import (
    APIRouter,
    Depends,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    status,
)
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from riskstrat.calendar import parse_month
from riskstrat.cohorts.listing import cohort_item_json, criteria_json, listing_frame
from riskstrat.cohorts.select import capacity_summary, what_changed
from riskstrat.data.contract import PSEUDONYM_PATTERN, IdentifierKind
from riskstrat.explain.reasons import REASON_LABELS
from riskstrat.modelling.registry import CHAMPION, ModelNotFoundError
from riskstrat.nhs_number import is_valid_nhs_number
from riskstrat.service.auth import Caller
from riskstrat.service.deps import (
    Admin,
    Analyst,
    CareCoordinator,
    PcnTeam,
    RegistryDep,
    SettingsDep,
    StoreDep,
    require,
)
from riskstrat.service.fhir import NHS_NUMBER_SYSTEM, PSEUDONYM_SYSTEM, bundle, risk_assessment
from riskstrat.service.schemas import (
    AuditPage,
    AuditRecord,
    CapacitySummary,
    CohortIndex,
    CohortPage,
    Criterion,
    EligibleIntervention,
    Health,
    InterventionInfo,
    ModelInfo,
    OutcomeRow,
    PatientRiskPublic,
    PatientRiskResponse,
    Reason,
    RiskListPage,
    RunRecord,
    RunSummary,
    WhatChanged,
)
from riskstrat.store.core import (
    AccessRecord,
    PatientScore,
    RunInfo,
    Store,
    access_record,
    pseudonymise,
)

#: The error answers every data route can give, so the OpenAPI schema documents them.
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid API key or access token."},
    403: {"description": "The caller's role cannot use this route."},
    404: {"description": "Not found, or outside the caller's PCNs (the two look the same)."},
}
router = APIRouter()
api = APIRouter(prefix="/api/v1", responses=ERRORS)

PurposeHeader = Annotated[
    str | None,
    Header(alias="X-Purpose", max_length=200, description="Why the data is needed (audited)."),
]
NO_RUN = "no scoring run has been published yet: run `riskstrat score`"
NHS_NUMBER_PATTERN = r"^[0-9]{10}$"
#: What a patient parameter may look like before the run is known: a pseudonym's shape, of
#: which ten digits are one case. A run of NHS numbers then asks for ten digits (422 as
#: before) and the Modulus 11 check; a pseudonymous run takes any pseudonym and never checks
#: one as an NHS number.
IDENTIFIER_PATTERN = f"^{PSEUDONYM_PATTERN}$"
FHIR_NHS_PATTERN = r"^(https://fhir\.nhs\.uk/Id/nhs-number\|)?[0-9]{10}$"
FHIR_PATIENT_PATTERN = (
    r"^((https://fhir\.nhs\.uk/Id/nhs-number|urn:riskstrat:pseudonym)\|)?" + PSEUDONYM_PATTERN + "$"
)
BAD_CHECK_DIGIT = "no risk published for this patient: not a valid NHS number (Modulus 11)"
PcnQuery = Annotated[str | None, Query(pattern=r"^U[0-9]{5}$", description="PCN ODS code")]
PracticeQuery = Annotated[
    str | None, Query(pattern=r"^[A-Z][0-9]{5}$", description="Practice ODS code")
]
MonthQuery = Annotated[
    str | None,
    Query(
        pattern=r"^(19|20)[0-9]{2}-(0[1-9]|1[0-2])$", description="YYYY-MM; default the latest run"
    ),
]


def _run_for(store: Store, month: str | None) -> RunInfo:
    if month is None:
        run = store.latest_run()
        if run is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, NO_RUN)
        return run
    run = store.run_for_month(parse_month(month))
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no published run for {month}")
    return run


def _served_kind(run: RunInfo | None) -> IdentifierKind:
    """What the served run identifies people by (NHS numbers when none is published)."""
    return run.identifier_kind if run is not None else "nhs_number"


def _require_shape(value: str, pattern: str, loc: tuple[str, str]) -> None:
    """A 422 exactly like FastAPI's own for a parameter that breaks ``pattern``: what a run of
    NHS numbers answers for anything but ten digits, as it did when the pattern was declared."""
    if re.fullmatch(pattern, value) is None:
        raise RequestValidationError(
            [
                {
                    "type": "string_pattern_mismatch",
                    "loc": loc,
                    "msg": f"String should match pattern '{pattern}'",
                    "input": value,
                    "ctx": {"pattern": pattern},
                }
            ]
        )


def _interventions(run: RunInfo) -> dict[str, dict[str, Any]]:
    record: dict[str, dict[str, Any]] = run.details.get("cohort_config", {}).get(
        "interventions", {}
    )
    return record


def _intervention_info(run: RunInfo, key: str) -> InterventionInfo:
    record = _interventions(run)[key]
    counts = run.details.get("cohorts", {}).get(key, {})
    return InterventionInfo(
        key=key,
        title=record["title"],
        source=record["source"],
        effect=record["effect"],
        ranked_by=record["ranked_by"],
        lookback_days=record["lookback_days"],
        note=record.get("note"),
        eligible=int(counts.get("eligible", 0)),
        served_within_lookback=int(counts.get("served_within_lookback", 0)),
    )


def _json(model: BaseModel) -> Response:
    """A validated response model as JSON. Returning a ``Response`` stops FastAPI from
    validating the model a second time against ``response_model``, which for a 100-row page
    cost more than building it; the OpenAPI schema still comes from ``response_model``."""
    return Response(model.model_dump_json(), media_type="application/json")


def _scope(store: Store, run: RunInfo, caller: Caller, pcn: str | None) -> list[str] | None:
    """The PCN codes a list may show; a PCN outside the caller's scope is answered exactly
    as one that is not in the run (404)."""
    known = run.details.get("pcns")  # recorded at publication; older runs ask the store
    in_run = (
        (pcn in known)
        if isinstance(known, list)
        else pcn is not None and store.pcn_in_run(run.id, pcn)
    )
    if pcn is not None and (not caller.sees_pcn(pcn) or not in_run):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no PCN {pcn} in this run")
    return None if caller.all_pcns else list(caller.pcns)


def _access_record(
    request: Request,
    settings: Any,
    caller: Caller,
    route: str,
    nhs_numbers: list[str],
    purpose: str | None,
    identifier_kind: IdentifierKind,
) -> AccessRecord:
    return access_record(
        actor=caller.name,
        role=caller.role,
        organisations=list(caller.pcns),
        route=route,
        nhs_numbers=nhs_numbers,
        key=settings.pseudonym_key.get_secret_value(),
        request_id=getattr(request.state, "request_id", None),
        purpose=purpose,
        identify_patients=settings.audit_identify_patients,
        identifier_kind=identifier_kind,
    )


def audit(
    request: Request,
    store: Store,
    settings: Any,
    caller: Caller,
    route: str,
    nhs_numbers: list[str],
    purpose: str | None,
    *,
    identifier_kind: IdentifierKind,
) -> None:
    """Record a patient-level read before the response is built. If the record cannot be
    written this raises, and the caller gets a 500 with no data. ``identifier_kind`` is
    what the served run identifies people by, recorded with the read."""
    record = _access_record(request, settings, caller, route, nhs_numbers, purpose, identifier_kind)
    store.submit_access(record).result()


async def audit_async(
    request: Request,
    store: Store,
    settings: Any,
    caller: Caller,
    route: str,
    nhs_numbers: list[str],
    purpose: str | None,
    *,
    identifier_kind: IdentifierKind,
) -> None:
    """``audit`` for async routes: the event loop serves other requests while the record
    waits for its batch to commit; nothing is returned until it has."""
    record = _access_record(request, settings, caller, route, nhs_numbers, purpose, identifier_kind)
    await asyncio.wrap_future(store.submit_access(record))


def _criteria(run: RunInfo, key: str, keys: list[str]) -> list[Criterion]:
    texts = _interventions(run).get(key, {}).get("criteria", {})
    return [Criterion(key=k, text=texts.get(k, k)) for k in keys]


@router.get("/health", response_model=Health, tags=["service"])
def health(store: StoreDep) -> Health:
    """Liveness and database reachability; no data."""
    store.ping()
    return Health(status="ok", database="ok")


def _run_summary(run: RunInfo) -> RunSummary:
    return RunSummary(
        run_id=run.id,
        month=run.month,
        extract_date=run.extract_date,
        model_name=run.model_name,
        model_version=run.model_version,
        n_scored=run.n_scored,
        published_at=run.published_at,
        identifier_kind=run.identifier_kind,
    )


def _public(score: PatientScore, identifier_kind: IdentifierKind) -> PatientRiskPublic:
    return PatientRiskPublic(
        nhs_number=score.nhs_number,
        identifier_kind=identifier_kind,
        practice_code=score.practice_code,
        pcn_code=score.pcn_code,
        risk=score.risk,
        percentile=score.percentile,
        rank=score.rank,
        reasons=[Reason(**r) for r in score.reasons],
    )


@api.get("/risk-list", response_model=RiskListPage, tags=["cohorts"])
def risk_list(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: PcnTeam,
    purpose: PurposeHeader = None,
    pcn: PcnQuery = None,
    practice: PracticeQuery = None,
    month: MonthQuery = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> RiskListPage:
    """Everyone scored in a run in the caller's PCNs (or one PCN or practice), highest risk
    first, with reasons. Role: pcn_team."""
    run = _run_for(store, month)
    scope = _scope(store, run, caller, pcn)
    size = min(page_size, settings.max_page_size)
    total, rows = store.cohort_page(
        run.id,
        pcn_code=pcn,
        practice_code=practice,
        offset=(page - 1) * size,
        limit=size,
        pcn_codes=scope,
    )
    audit(
        request, store, settings, caller, "GET /api/v1/risk-list",
        [r.nhs_number for r in rows], purpose, identifier_kind=run.identifier_kind,
    )  # fmt: skip
    return RiskListPage(
        run=_run_summary(run),
        pcn_code=pcn,
        practice_code=practice,
        total=total,
        page=page,
        page_size=size,
        items=[_public(r, run.identifier_kind) for r in rows],
    )


@api.get("/cohorts", response_model=CohortIndex, tags=["cohorts"])
def cohort_index(
    store: StoreDep,
    caller: Annotated[Caller, Depends(require("pcn_team", "analyst"))],
    month: MonthQuery = None,
) -> CohortIndex:
    """The intervention cohorts of a run, with their criteria sources and sizes; no patients.
    Roles: pcn_team, analyst."""
    run = _run_for(store, month)
    return CohortIndex(
        run=_run_summary(run),
        cohort_config_version=str(run.details.get("cohort_config", {}).get("version", "")),
        interventions=[_intervention_info(run, k) for k in _interventions(run)],
    )


@api.get(
    "/cohorts/{intervention}",
    response_model=CohortPage,
    tags=["cohorts"],
    responses={200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with format=csv"}},
)
async def cohort(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: PcnTeam,
    intervention: Annotated[
        str, Path(pattern=r"^[a-z][a-z0-9_]{0,49}$", description="e.g. falls_review")
    ],
    purpose: PurposeHeader = None,
    pcn: PcnQuery = None,
    practice: PracticeQuery = None,
    month: MonthQuery = None,
    capacity: Annotated[
        int | None, Query(ge=1, le=100_000, description="List only the top N; adds a summary.")
    ] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
    format: Annotated[Literal["json", "csv"], Query(description="csv: the page as CSV")] = "json",
) -> Any:
    """An intervention's cohort for a PCN or practice, ranked by expected benefit, with why
    each person is eligible, their reasons, and (with `capacity`) what the top N and the next
    N are expected to yield. Role: pcn_team, for its own PCNs."""
    run = _run_for(store, month)
    if intervention not in _interventions(run):
        known = ", ".join(_interventions(run)) or "none"
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no cohort {intervention!r} in this run; known: {known}"
        )
    info = _intervention_info(run, intervention)
    scope = _scope(store, run, caller, pcn)
    size = min(page_size, settings.max_page_size)
    offset = (page - 1) * size
    limit = size if capacity is None else max(0, min(size, capacity - offset))
    items: tuple[int, list[tuple[str, str]]] | None = None
    if format == "csv":
        total, rows = store.intervention_page(
            run.id, intervention, pcn_code=pcn, practice_code=practice, offset=offset,
            limit=limit, pcn_codes=scope,
        )  # fmt: skip
        nhs_numbers = [m.nhs_number for m, _ in rows]
    else:
        items = store.intervention_page_items(
            run.id, intervention, pcn_code=pcn, practice_code=practice, offset=offset,
            limit=limit, pcn_codes=scope,
        )  # fmt: skip
        if items is None:  # a run published before items were stored
            total, raw = store.intervention_page_raw(
                run.id, intervention, pcn_code=pcn, practice_code=practice, offset=offset,
                limit=limit, pcn_codes=scope,
            )  # fmt: skip
            nhs_numbers = [r.nhs_number for r in raw]
        else:
            total, stored = items
            nhs_numbers = [n for n, _ in stored]
    summary = None
    if capacity is not None:
        risks = store.intervention_risks(
            run.id,
            intervention,
            pcn_code=pcn,
            practice_code=practice,
            limit=2 * capacity,
            pcn_codes=scope,
        )
        summary = CapacitySummary(
            **{**capacity_summary(risks, capacity=capacity, effect=info.effect), "eligible": total}
        )
        total = min(total, capacity)
    kind = run.identifier_kind
    await audit_async(
        request, store, settings, caller, "GET /api/v1/cohorts/{intervention}", nhs_numbers,
        purpose, identifier_kind=kind,
    )  # fmt: skip
    texts = _interventions(run)[intervention]["criteria"]
    if format == "csv":
        frame = listing_frame(rows, texts, identifier_kind=kind)
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        name = f"{run.month:%Y-%m}_{intervention}_{pcn or practice or 'all'}_p{page}.csv"
        return Response(
            buffer.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    # Written as JSON text: each item as stored at publication (already checked then), or
    # for older runs built here from the stored criteria and reasons. Decoding, modelling
    # and re-encoding a hundred people's reasons cost more than the rest of the request. The
    # OpenAPI schema is still CohortPage's, and schemathesis checks answers against it.
    if items is not None:
        parts = [item for _, item in stored]
        if parts and '"identifier_kind":' not in parts[0]:
            # Items stored before they said what the identifier is (runs of NHS numbers, all
            # written by one version): the field goes in after the identifier.
            field = f',"identifier_kind":"{kind}","practice_code":'
            parts = [p.replace(',"practice_code":', field, 1) for p in parts]
    else:
        because: dict[str, str] = {}
        parts = []
        for r in raw:
            if r.criteria_json not in because:
                because[r.criteria_json] = criteria_json(json.loads(r.criteria_json), texts)
            parts.append(
                cohort_item_json(
                    rank=r.rank, nhs_number=r.nhs_number, practice_code=r.practice_code,
                    pcn_code=r.pcn_code, risk=r.risk, percentile=r.percentile,
                    expected_benefit=r.expected_benefit, because_json=because[r.criteria_json],
                    reasons_json=r.reasons_json, identifier_kind=kind,
                )
            )  # fmt: skip
    head = json.dumps(
        {
            "run": _run_summary(run).model_dump(mode="json"),
            "intervention": info.model_dump(mode="json"),
            "pcn_code": pcn,
            "practice_code": practice,
            "capacity_summary": summary.model_dump(mode="json") if summary is not None else None,
            "total": total,
            "page": page,
            "page_size": size,
        }
    )
    body = f'{head[:-1]},"items":[{",".join(parts)}]}}'
    return Response(body, media_type="application/json")


@api.get("/patients/{nhs_number}/risk", response_model=PatientRiskResponse, tags=["patients"])
async def patient_risk(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: CareCoordinator,
    nhs_number: Annotated[
        str,
        Path(
            pattern=IDENTIFIER_PATTERN,
            description="10-digit NHS number; or, when the latest run is pseudonymous, the "
            "person's pseudonym (1-64 letters, digits, '.', '_' or '-').",
        ),
    ],
    purpose: PurposeHeader = None,
) -> Response:
    """One person's risk, percentile and reasons from the latest run, the interventions they
    are eligible for, and what changed since the previous month. Role: care_coordinator, for
    patients registered in its PCNs."""
    run, previous = store.latest_runs()
    kind = _served_kind(run)
    if kind == "nhs_number":
        _require_shape(nhs_number, NHS_NUMBER_PATTERN, ("path", "nhs_number"))
        if not is_valid_nhs_number(nhs_number):
            # Ten digits but a wrong check digit: no such person can exist.
            raise HTTPException(status.HTTP_404_NOT_FOUND, BAD_CHECK_DIGIT)
    if previous is not None and previous.identifier_kind != kind:
        # The same text names different people in a run of NHS numbers and in a
        # pseudonymous one: there is nothing to compare with.
        previous = None
    found = (
        store.patient_in_runs([r.id for r in (run, previous) if r is not None], nhs_number)
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
            title=_interventions(run).get(m.intervention, {}).get("title", m.intervention),
            cohort_rank=m.rank,
            expected_admissions_avoided=m.expected_benefit,
            eligible_because=_criteria(run, m.intervention, m.criteria),
        )
        for m in store.patient_memberships(run.id, nhs_number)
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
    return _json(
        PatientRiskResponse(
            **_public(score, kind).model_dump(),
            run=_run_summary(run),
            eligible_interventions=memberships,
            what_changed=changed,
        )
    )


@api.get("/models/current", response_model=ModelInfo, tags=["models"])
def current_model(
    store: StoreDep, registry: RegistryDep, settings: SettingsDep, caller: Analyst
) -> ModelInfo:
    """The champion model: version, when it was trained, and its held-out metrics. Role:
    analyst."""
    try:
        info = registry.describe(settings.model_name, CHAMPION)
    except ModelNotFoundError:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, "no champion model: run `riskstrat train`"
        ) from None
    run = store.latest_run()
    return ModelInfo(
        name=info.name,
        version=info.version,
        aliases=list(info.aliases),
        created_at=info.created_at,
        run_id=info.run_id,
        validation_month=info.tags.get("riskstrat.validation_month"),
        metrics={k: v for k, v in sorted(info.metrics.items())},
        serving_version=run.model_version if run else None,
    )


FhirJson = "application/fhir+json"


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
            description="NHS number, alone or as https://fhir.nhs.uk/Id/nhs-number|<number>; "
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
    latest = store.latest_run()
    kind = _served_kind(latest)
    if kind == "nhs_number":
        if system != PSEUDONYM_SYSTEM:
            _require_shape(patient, FHIR_NHS_PATTERN, ("query", "patient"))
        # A pseudonym names nobody in a run of NHS numbers.
        wanted = system != PSEUDONYM_SYSTEM and is_valid_nhs_number(identifier)
    else:
        # An NHS number names nobody in a pseudonymous run, however its digits look.
        wanted = system != NHS_NUMBER_SYSTEM
    run = latest if wanted else None
    score = store.patient_score(run.id, identifier) if run else None
    found = run is not None and score is not None and caller.sees_pcn(score.pcn_code)
    resources = [risk_assessment(run, score)] if found and run and score else []
    if resources:
        audit(
            request, store, settings, caller, "GET /fhir/RiskAssessment", [identifier], purpose,
            identifier_kind=kind,
        )  # fmt: skip
    return _fhir_response(bundle(resources, str(request.base_url).rstrip("/")))


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
    run = store.run(run_id)
    if run is not None and run.status != "published":
        run = None  # a run being staged, or one retired whose rows are still being deleted
    score = store.patient_score_by_rank(run_id, rank) if run else None
    if run is None or score is None or not caller.sees_pcn(score.pcn_code):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such RiskAssessment")
    audit(
        request, store, settings, caller, "GET /fhir/RiskAssessment/{id}",
        [score.nhs_number], purpose, identifier_kind=run.identifier_kind,
    )  # fmt: skip
    return _fhir_response(risk_assessment(run, score))


@api.get("/runs", response_model=list[RunRecord], tags=["analysts"])
def runs(store: StoreDep, caller: Analyst) -> list[RunRecord]:
    """Every monthly run, with status, model version and cohort counts; no identifiers.
    Role: analyst."""
    out = []
    for r in store.runs():
        cohorts = r.details.get("cohorts", {}) if r.status == "published" else {}
        out.append(
            RunRecord(
                run_id=r.id,
                month=r.month,
                status=r.status,
                model_name=r.model_name,
                model_version=r.model_version,
                n_scored=r.n_scored,
                n_type1_opt_outs_excluded=r.n_type1_opt_outs_excluded,
                created_at=r.created_at,
                published_at=r.published_at,
                duration_seconds=r.duration_seconds,
                identifier_kind=r.identifier_kind,
                cohorts=cohorts,
                error=r.details.get("error"),
            )
        )
    return out


@api.get("/runs/{run_id}/outcomes", response_model=list[OutcomeRow], tags=["analysts"])
def run_outcomes(
    store: StoreDep, caller: Analyst, run_id: Annotated[int, Path(ge=1, le=2**31 - 1)]
) -> list[OutcomeRow]:
    """A run's outcome summary per cohort, practice and delivered or not (aggregates, from
    `riskstrat outcomes`). Role: analyst."""
    if store.run(run_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such run")
    frame = store.outcomes(run_id)
    return [
        OutcomeRow(**{k: r[k] for k in OutcomeRow.model_fields})
        for r in frame.to_dict(orient="records")
    ]


@api.get("/audit", response_model=AuditPage, tags=["admin"])
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
        kind = kind or _served_kind(store.latest_run())
        if kind == "nhs_number":
            _require_shape(patient, NHS_NUMBER_PATTERN, ("query", "patient"))
        stored_patient = (
            patient
            if settings.audit_identify_patients
            else pseudonymise(patient, settings.pseudonym_key.get_secret_value())
        )
    records = store.access_records(
        actor=user, patient=stored_patient, since=since, until=until, limit=limit + 1,
        identifier_kind=kind,
    )  # fmt: skip
    return AuditPage(
        records=[AuditRecord(**r) for r in records[:limit]], truncated=len(records) > limit
    )
