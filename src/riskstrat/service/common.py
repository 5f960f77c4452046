"""What the API routers (and the pages) share: query parameters, run lookup, PCN scope,
the audit of patient-level reads, and the building blocks of their answers."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Annotated, Any

from fastapi import Header, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from riskstrat.calendar import parse_month
from riskstrat.cohorts.select import capacity_summary
from riskstrat.cohorts.words import intervention_label
from riskstrat.data.contract import PSEUDONYM_PATTERN, IdentifierKind
from riskstrat.errors import NotFoundError, StoreError
from riskstrat.nhs_number import normalise_nhs_number
from riskstrat.service.auth import Caller
from riskstrat.service.schemas import (
    Criterion,
    InterventionInfo,
    PatientRiskPublic,
    RankingModel,
    Reason,
    RunSummary,
)
from riskstrat.store import Store
from riskstrat.store.audit import access_record
from riskstrat.store.records import AccessRecord, PatientScore, RunInfo

#: The error answers every data route can give, so the OpenAPI schema documents them (as
#: problem+json under /api/, see ``riskstrat.service.problems``).
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid API key or access token."},
    403: {"description": "The caller's role cannot use this route."},
    404: {"description": "Not found, or outside the caller's PCNs (the two look the same)."},
}
API_PREFIX = "/api/v1"

PurposeHeader = Annotated[
    str | None,
    Header(alias="X-Purpose", max_length=200, description="Why the data is needed (audited)."),
]
NO_RUN = "no scoring run has been published yet: run `riskstrat score`"
NO_RUN_HINT = "score a month with `riskstrat score`: it publishes the run this API serves"
NO_MONTH_HINT = (
    "GET /api/v1/runs lists the months with a published run; leave out `month` for the latest"
)
NHS_NUMBER_PATTERN = r"^[0-9]{10}$"
#: An NHS number as people write it: 3, 3 and 4 digits, apart or joined by a space or a dash
#: ("999 725 7952", "999-725-7952"), with spaces around it: what
#: :func:`riskstrat.nhs_number.normalise_nhs_number` turns into ten digits.
WRITTEN_NHS_NUMBER_PATTERN = r"\s*[0-9]{3}[ -]?[0-9]{3}[ -]?[0-9]{4}\s*"
#: What a patient parameter may look like before the run is known: a pseudonym's shape, of
#: which ten digits are one case, or an NHS number as written. A run of NHS numbers then
#: takes the written form as its ten digits, asks for ten digits (422 as before) and the
#: Modulus 11 check; a pseudonymous run takes any pseudonym and never checks one as an NHS
#: number (nor turns one into digits: a pseudonym may hold dashes).
IDENTIFIER_PATTERN = f"^({PSEUDONYM_PATTERN}|{WRITTEN_NHS_NUMBER_PATTERN})$"
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
PageQuery = Annotated[int, Query(ge=1, le=100_000)]
PageSizeQuery = Annotated[int, Query(ge=1, le=500)]


def run_for(store: Store, month: str | None) -> RunInfo:
    """The published run of ``month`` (the latest when None); 404 with a hint if none."""
    if month is None:
        run = store.runs.latest()
        if run is None:
            raise NotFoundError(NO_RUN, hint=NO_RUN_HINT)
        return run
    run = store.runs.for_month(parse_month(month))
    if run is None:
        raise NotFoundError(f"no published run for {month}", hint=NO_MONTH_HINT)
    return run


def served_kind(run: RunInfo | None) -> IdentifierKind:
    """What the served run identifies people by (NHS numbers when none is published)."""
    return run.identifier_kind if run is not None else "nhs_number"


def as_typed(value: str, kind: IdentifierKind) -> str:
    """A patient parameter as the served run stores it: in a run of NHS numbers, an NHS
    number written with spaces or dashes ("999 725 7952") as its ten digits; anything else,
    and every value in a pseudonymous run, unchanged (then judged as before)."""
    return normalise_nhs_number(value) if kind == "nhs_number" else value


def require_shape(value: str, pattern: str, loc: tuple[str, str]) -> None:
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


def interventions_of(run: RunInfo) -> dict[str, dict[str, Any]]:
    """The run's interventions as recorded at publication, by key."""
    return run.interventions


def intervention_info(run: RunInfo, key: str) -> InterventionInfo:
    record = interventions_of(run)[key]
    counts = run.cohort_count(key)
    return InterventionInfo(
        key=key,
        title=record["title"],
        source=record["source"],
        effect=record["effect"],
        ranked_by=record["ranked_by"],
        ranking=record.get("ranking"),
        bed_days=record.get("bed_days"),
        lookback_days=record["lookback_days"],
        note=record.get("note"),
        eligible=int(counts.get("eligible", 0)),
        served_within_lookback=int(counts.get("served_within_lookback", 0)),
    )


def ranked_by_model(ranking: RankingModel | None) -> bool:
    """The list was ranked by another model: the run recorded which version ranked it (and
    did not fall back to admission risk for want of a champion)."""
    return ranking is not None and not ranking.fell_back and ranking.version is not None


def capacity_yields(
    store: Store, run: RunInfo, info: InterventionInfo, *, capacity: int, **where: Any
) -> dict[str, Any]:
    """What the top ``capacity`` people of a cohort (narrowed by ``where``: the keywords of
    ``store.cohorts.risks``) and the next ``capacity`` are expected to yield
    (``select.capacity_summary``): for a list ranked by another model that claims bed days,
    the bed days saved (that model's risks x the days per outcome) with their source."""
    risks = store.cohorts.risks(run.id, info.key, limit=2 * capacity, **where)
    ranking, bed_days = info.ranking, info.bed_days
    by_days = bed_days is not None and ranked_by_model(ranking)
    ranking_risks = (
        store.cohorts.ranking_risks(run.id, info.key, limit=2 * capacity, **where)
        if by_days
        else None
    )
    yields = capacity_summary(
        risks,
        capacity=capacity,
        effect=info.effect,
        intervention_label=intervention_label(info.title),
        served_by=interventions_of(run)[info.key].get("served_by"),
        ranking_risks=ranking_risks,
        bed_days_per_event=bed_days.per_event if by_days and bed_days is not None else None,
        ranking_label=ranking.label if ranking is not None else "ranking risk",
    )
    if bed_days is not None and "expected_bed_days_saved" in yields["listed"]:
        yields["bed_days_source"] = bed_days.source
    return yields


def criteria(run: RunInfo, key: str, keys: list[str]) -> list[Criterion]:
    texts = interventions_of(run).get(key, {}).get("criteria", {})
    return [Criterion(key=k, text=texts.get(k, k)) for k in keys]


def json_response(model: BaseModel) -> Response:
    """A validated response model as JSON. Returning a ``Response`` stops FastAPI from
    validating the model a second time against ``response_model``, which for a 100-row page
    cost more than building it; the OpenAPI schema still comes from ``response_model``."""
    return Response(model.model_dump_json(), media_type="application/json")


def pcn_scope(store: Store, run: RunInfo, caller: Caller, pcn: str | None) -> list[str] | None:
    """The PCN codes a list may show; a PCN outside the caller's scope is answered exactly
    as one that is not in the run (404)."""
    known = run.pcns  # recorded at publication; older runs ask the store
    in_run = (
        (pcn in known)
        if known is not None
        else pcn is not None and store.scores.pcn_in_run(run.id, pcn)
    )
    if pcn is not None and (not caller.sees_pcn(pcn) or not in_run):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no PCN {pcn} in this run")
    return None if caller.all_pcns else list(caller.pcns)


def run_summary(run: RunInfo) -> RunSummary:
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


def public_risk(score: PatientScore, identifier_kind: IdentifierKind) -> PatientRiskPublic:
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


AUDIT_FAILED = "the read could not be recorded in the audit trail, so no data was returned"
AUDIT_FAILED_HINT = "try again shortly; if it persists, check the serving database"
_log = logging.getLogger("riskstrat.api")


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
    """Record a patient-level read before the response is built. If the record is not
    committed within ``settings.audit_timeout_seconds`` (or cannot be written) this raises a
    :class:`StoreError`: the caller gets a 503 with no data. ``identifier_kind`` is what the
    served run identifies people by, recorded with the read."""
    record = _access_record(request, settings, caller, route, nhs_numbers, purpose, identifier_kind)
    future = store.audit.submit(record)
    try:
        future.result(timeout=settings.audit_timeout_seconds)
    except Exception as exc:  # the database's error, or TimeoutError
        future.cancel()  # not written if its batch has not started: no data is returned
        raise _audit_failed(route, exc) from None


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
    waits for its batch to commit; nothing is returned until it has (the same bounded wait
    and the same 503)."""
    record = _access_record(request, settings, caller, route, nhs_numbers, purpose, identifier_kind)
    future = store.audit.submit(record)
    try:
        # On timeout, wait_for cancels the wrapper, which cancels ``future`` too.
        await asyncio.wait_for(asyncio.wrap_future(future), settings.audit_timeout_seconds)
    except Exception as exc:  # the database's error, or TimeoutError
        future.cancel()
        raise _audit_failed(route, exc) from None


def _audit_failed(route: str, exc: BaseException) -> StoreError:
    """The refusal of a read whose audit record was not committed, logged as one line: the
    error's type and the route template only. Never the error's text, which for a database
    error can hold the statement and its values (an NHS number among them)."""
    _log.error("audit write failed", extra={"error": type(exc).__name__, "route": route})
    return StoreError(AUDIT_FAILED, hint=AUDIT_FAILED_HINT)
