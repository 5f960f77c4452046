"""One person: finding them (the care coordinator's home), their page, and marking them.

The search takes an NHS number as people write it ("999 725 7952", "999-725-7952") in a run
of NHS numbers, or a pseudonym as it is in a pseudonymous run. A person outside the caller's
PCNs is answered exactly like one who is not there. Below the search, "recently viewed by
you" comes from the caller's own patient-page reads in the audit trail. Every page that shows
a patient is audited, and so is every mark.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from riskstrat.cohorts.listing import IDENTIFIER_LABELS, display_identifier
from riskstrat.cohorts.select import what_changed
from riskstrat.cohorts.words import intervention_label
from riskstrat.data.contract import PSEUDONYM_PATTERN, IdentifierKind
from riskstrat.explain.reasons import REASON_LABELS
from riskstrat.nhs_number import is_valid_nhs_number, normalise_nhs_number
from riskstrat.service.auth import Caller
from riskstrat.service.common import audit, interventions_of
from riskstrat.service.deps import SettingsDep, StoreDep
from riskstrat.service.pages.cohorts import LIST_ROLES, STATUS_LABELS, ranking_view
from riskstrat.service.pages.session import (
    PageCaller,
    check_csrf,
    csrf_token,
    html,
    require_role,
    router,
)
from riskstrat.store import Store
from riskstrat.store.audit import pseudonymise
from riskstrat.store.marks import DONE_STATUSES, MARK_STATUSES, MAX_NOTE, Mark
from riskstrat.store.paging import Scope, fetch_page
from riskstrat.store.records import PatientScore, RunInfo

PATIENT_ROUTE = "GET /patients/{nhs_number} (page)"
SEARCH_ROUTE = "GET /patients (page)"
MARK_ROUTE = "POST /patients/{nhs_number}/marks (page)"
#: "Recently viewed by you": the caller's patient-page reads of the last RECENT_DAYS days,
#: newest first, at most RECENT_MAX people.
RECENT_DAYS = 30
RECENT_MAX = 20
#: Where the audit trail holds keyed hashes, the people of the caller's scope are hashed to
#: find the ones they viewed: at most this many, highest risk first (a PCN is far fewer).
RECENT_SCAN = 300_000
NOT_FOUND = "No published risk was found for that {label} in your PCNs."
#: The identifier's name in a sentence.
_IN_TEXT = {"nhs_number": "NHS number", "pseudonym": "pseudonym"}
#: Where a mark form may send the browser back to: a list or a patient page of this site.
_BACK = re.compile(r"^/(cohorts|patients)(/[A-Za-z0-9._%-]{1,200})?(\?[A-Za-z0-9=&_%.+-]*)?$")


def _well_formed(identifier: str, kind: IdentifierKind) -> bool:
    """A run of NHS numbers is looked up by valid NHS numbers only; a pseudonymous run by
    pseudonyms, never checked as NHS numbers."""
    if kind == "nhs_number":
        return identifier.isdigit() and is_valid_nhs_number(identifier)
    return re.fullmatch(PSEUDONYM_PATTERN, identifier) is not None


def _kind(run: RunInfo | None) -> IdentifierKind:
    return run.identifier_kind if run is not None else "nhs_number"


def find_patient(store: Store, run: RunInfo | None, caller: Caller, identifier: str) -> Any:
    """The person's score in the latest run if they are in the caller's PCNs, else None:
    unknown and out of scope are the same answer."""
    if run is None or not _well_formed(identifier, run.identifier_kind):
        return None
    score = store.scores.patient(run.id, identifier)
    return score if score is not None and caller.sees_pcn(score.pcn_code) else None


def _viewed(store: Store, caller: Caller, kind: IdentifierKind) -> dict[str, datetime]:
    """The patients (as the audit trail stores them) of the caller's patient-page reads of
    the last RECENT_DAYS days, with when each was last read."""
    after = datetime.now(UTC) - timedelta(days=RECENT_DAYS)
    seen: dict[str, datetime] = {}
    done: set[int] = set()
    for _ in range(100):  # pages of 1000 records: far more than a month of anyone's reads
        batch = store.audit.records(actor=caller.name, since=after, identifier_kind=kind)
        fresh = [r for r in batch if r["id"] not in done]
        for record in fresh:
            done.add(record["id"])
            if record["route"] == PATIENT_ROUTE:
                for patient in record["patients"]:
                    seen[patient] = max(record["at"], seen.get(patient, record["at"]))
        if not fresh or len(batch) < 1000:
            break
        after = batch[-1]["at"]
    return seen


def recently_viewed(
    store: Store, settings: Any, caller: Caller, run: RunInfo
) -> list[tuple[datetime, PatientScore]]:
    """The people in the caller's PCNs they opened in the last RECENT_DAYS days, newest
    first, with when."""
    seen = _viewed(store, caller, run.identifier_kind)
    if not seen:
        return []
    found: dict[str, datetime] = {}
    if settings.audit_identify_patients:
        found = dict(seen)
    else:
        key = settings.pseudonym_key.get_secret_value()
        scope = Scope(run.id, pcn_codes=None if caller.all_pcns else list(caller.pcns))
        _, rows = fetch_page(
            store.engine, scope, ["nhs_number"], offset=0, limit=RECENT_SCAN, plain_sql=True
        )
        for (identifier,) in rows:
            when = seen.get(pseudonymise(str(identifier), key))
            if when is not None:
                found[str(identifier)] = when
                if len(found) == len(seen):
                    break
    out = []
    for identifier, when in sorted(found.items(), key=lambda kv: kv[1], reverse=True):
        score = find_patient(store, run, caller, identifier)
        if score is not None:
            out.append((when, score))
        if len(out) == RECENT_MAX:
            break
    return out


@router.get("/patients", response_class=HTMLResponse)
def patient_search(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: PageCaller,
    q: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    require_role(caller, *LIST_ROLES)
    run = store.runs.latest()
    kind = _kind(run)
    label = IDENTIFIER_LABELS[kind]
    typed = (q or "").strip()
    message, status_code = None, 200
    if typed and run is not None:
        identifier = normalise_nhs_number(typed) if kind == "nhs_number" else typed
        if kind == "nhs_number" and not re.fullmatch(r"[0-9]{10}", identifier):
            message, status_code = (
                "An NHS number is ten digits, such as 999 123 4567 (spaces or dashes between "
                "the groups are fine).", 422,
            )  # fmt: skip
        elif kind == "nhs_number" and not is_valid_nhs_number(identifier):
            message, status_code = (
                "That is not a valid NHS number: its last digit (the check digit) does not "
                "match. Check the number and try again.", 422,
            )  # fmt: skip
        elif kind == "pseudonym" and not _well_formed(identifier, kind):
            message, status_code = (
                "A pseudonym is 1 to 64 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit.", 422,
            )  # fmt: skip
        elif find_patient(store, run, caller, identifier) is not None:
            return RedirectResponse(
                f"/patients/{quote(identifier, safe='')}", status.HTTP_303_SEE_OTHER
            )
        else:
            message, status_code = NOT_FOUND.format(label=_IN_TEXT[kind]), 404
    recent = recently_viewed(store, settings, caller, run) if run is not None else []
    if recent:
        audit(
            request, store, settings, caller, SEARCH_ROUTE, [s.nhs_number for _, s in recent],
            None, identifier_kind=kind,
        )  # fmt: skip
    return html(
        "search.html", status_code, title="Find a patient", caller=caller, run=run,
        identifier_label=label, typed=typed, message=message, days=RECENT_DAYS,
        recent=[
            {"when": when, "score": s, "display": display_identifier(s.nhs_number, kind)}
            for when, s in recent
        ],
    )  # fmt: skip


def _not_found(kind: IdentifierKind) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND.format(label=_IN_TEXT[kind]))


@router.get("/patients/{nhs_number}", response_class=HTMLResponse)
def patient_page(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: PageCaller,
    nhs_number: str,
) -> Response:
    require_role(caller, *LIST_ROLES)
    run = store.runs.latest()
    kind = _kind(run)
    if kind == "nhs_number":
        written = normalise_nhs_number(nhs_number)
        if written != nhs_number:  # "999 725 7952" in the address: the ten digits' page
            return RedirectResponse(f"/patients/{written}", status.HTTP_303_SEE_OTHER)
    score = find_patient(store, run, caller, nhs_number)
    if run is None or score is None:
        raise _not_found(kind)
    audit(request, store, settings, caller, PATIENT_ROUTE, [nhs_number], None,
          identifier_kind=kind)  # fmt: skip
    interventions = interventions_of(run)
    history = store.marks.history(nhs_number, identifier_kind=kind)
    latest: dict[str, Mark] = {}
    for mark in history:  # newest first
        latest.setdefault(mark.intervention, mark)
    memberships = [
        {
            "key": m.intervention,
            "title": interventions.get(m.intervention, {}).get("title", m.intervention),
            "label": intervention_label(
                str(interventions.get(m.intervention, {}).get("title", m.intervention))
            ),
            "rank": m.rank, "benefit": m.expected_benefit,
            "because": "; ".join(
                interventions.get(m.intervention, {}).get("criteria", {}).get(k, k)
                for k in m.criteria
            ),
            "mark": latest.get(m.intervention),
            "ranking": ranking_view(m.ranking),
        }
        for m in store.cohorts.memberships(run.id, nhs_number)
    ]  # fmt: skip
    changed = None
    previous = store.runs.previous(run.month)
    if previous is not None and previous.identifier_kind != kind:
        previous = None  # the same text names different people: nothing to compare with
    before = store.scores.patient(previous.id, nhs_number) if previous else None
    if previous is not None and before is not None:
        changed = what_changed(
            risk_now=score.risk, contributions_now=score.contributions,
            risk_then=before.risk, contributions_then=before.contributions,
        )  # fmt: skip
        texts = {r["group"]: r["text"] for r in score.reasons}
        for m in changed["reasons_moved"]:
            m["label"] = REASON_LABELS.get(m["group"], m["group"])
            m["text_now"] = texts.get(m["group"])
        changed["previous_month"] = previous.month
    biggest = max([abs(float(r["percentage_points"])) for r in score.reasons] or [1.0])
    titles = {k: v.get("title", k) for k, v in interventions.items()}
    return html(
        "patient.html", title="Patient", caller=caller, run=run, score=score,
        nhs_number=nhs_number, nhs_display=display_identifier(nhs_number, kind),
        memberships=memberships, changed=changed, identifier_label=IDENTIFIER_LABELS[kind],
        any_ranking=any(m["ranking"] for m in memberships),
        bar_scale=200.0 / max(biggest, 1e-9), history=history, titles=titles,
        statuses=STATUS_LABELS, done=DONE_STATUSES, csrf=csrf_token(request),
        here=f"/patients/{quote(nhs_number, safe='')}", max_note=MAX_NOTE,
    )  # fmt: skip


def _unprocessable(text: str) -> HTTPException:
    return HTTPException(422, text)


@router.post("/patients/{nhs_number}/marks")
async def mark_patient(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: PageCaller,
    nhs_number: str,
) -> Response:
    """Record what was done for a listed person (from the list or the patient page), audited,
    then back to the page the form was on."""
    require_role(caller, *LIST_ROLES)
    form = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)

    def field(name: str) -> str:
        return (form.get(name) or [""])[0]

    check_csrf(request, field("csrf"))
    run = store.runs.latest()
    kind = _kind(run)
    score = find_patient(store, run, caller, nhs_number)
    if run is None or score is None:
        raise _not_found(kind)
    intervention, mark_status = field("intervention"), field("status")
    note = field("note").strip() or None
    if intervention not in interventions_of(run):
        raise _unprocessable("The form named an intervention this month's run does not have.")
    if mark_status not in MARK_STATUSES:
        raise _unprocessable(
            "Choose what was done: "
            + ", ".join(STATUS_LABELS[s].lower() for s in MARK_STATUSES) + "."
        )  # fmt: skip
    if note is not None and len(note) > MAX_NOTE:
        raise _unprocessable(
            f"The note is {len(note)} characters long: a mark keeps at most {MAX_NOTE}. "
            "The clinical record is the place for more."
        )
    audit(request, store, settings, caller, MARK_ROUTE, [nhs_number], None,
          identifier_kind=kind)  # fmt: skip
    store.marks.record(
        person=nhs_number, intervention=intervention, status=mark_status, by=caller.name,
        pcn_code=score.pcn_code, identifier_kind=kind, note=note,
    )  # fmt: skip
    back = field("next")
    if not _BACK.fullmatch(back):
        back = f"/patients/{quote(nhs_number, safe='')}"
    return RedirectResponse(back, status.HTTP_303_SEE_OTHER)
