"""A pseudonymous run through every surface: JSON API, FHIR, pages, downloads and the audit
trail say "pseudonym" and never label one an NHS number; runs of NHS numbers are unchanged.

The pseudonyms come in every shape the contract allows, among them ten digits that pass
Modulus 11 (so a slip that formatted or labelled them as NHS numbers would show) and ten
that fail it (so a slip that checked them would show).
"""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from riskstrat.cohorts.listing import cohort_items_json
from riskstrat.cohorts.select import load_cohort_config
from riskstrat.config import Settings
from riskstrat.pipelines.score import cohort_config_record
from riskstrat.service.app import create_app
from riskstrat.store import Store
from riskstrat.store.audit import access_record, pseudonymise
from tests.support.auth import bearer
from tests.support.world import MONTH, PCNS, key_for, pseudonyms, publish_world, sign_in

NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
LOOKS_LIKE_NHS = "9998336376"  # a pseudonym that passes Modulus 11
FAILS_MOD11 = "9998336377"  # a pseudonym that fails it
LONGEST = "p" * 63 + "1"  # 64 characters
DOTTED = "person.2_b-3"


def _coordinator(pseudonym: str, scores: pd.DataFrame) -> dict[str, str]:
    pcn = scores.set_index("nhs_number").pcn_code[pseudonym]
    return bearer(key_for("care_coordinator", pcn))


def _records(settings: Settings, **filters) -> list[dict]:
    store = Store(settings.serving_database_url)
    try:
        return store.audit.records(limit=10_000, **filters)
    finally:
        store.dispose()


@pytest.fixture
def pseudonymous(served_pseudonymous_on_each_store):
    """A published pseudonymous run (on SQLite, and on PostgreSQL where 64-character
    identifiers need revision 0004)."""
    return served_pseudonymous_on_each_store


@pytest.fixture
def nhs(served):
    return served


# ---- JSON API --------------------------------------------------------------------------------


def test_every_pseudonym_shape_is_served_by_path_and_labelled(pseudonymous):
    client, scores = pseudonymous["client"], pseudonymous["scores"]
    assert set(pseudonyms(5)) <= set(scores.nhs_number)
    for person in (LOOKS_LIKE_NHS, FAILS_MOD11, LONGEST, DOTTED, "7"):
        response = client.get(
            f"/api/v1/patients/{person}/risk", headers=_coordinator(person, scores)
        )
        assert response.status_code == 200, (person, response.text)
        body = response.json()
        assert body["nhs_number"] == person and body["identifier_kind"] == "pseudonym"
        assert body["run"]["identifier_kind"] == "pseudonym"
        row = scores.set_index("nhs_number").loc[person]
        assert body["risk"] == pytest.approx(row.risk) and body["rank"] == row["rank"]


def test_pseudonyms_are_never_checked_as_nhs_numbers(pseudonymous):
    client = pseudonymous["client"]
    headers = bearer(key_for("care_coordinator", PCNS[0]))
    # Ten digits failing Modulus 11 is a pseudonym like any other: found, or simply not there.
    absent = client.get("/api/v1/patients/1234567890/risk", headers=headers)
    assert absent.status_code == 404
    assert "Modulus 11" not in absent.text and "NHS number" not in absent.text
    for bad in ("p" * 65, "-starts-with-a-dash", ".hidden"):
        assert client.get(f"/api/v1/patients/{bad}/risk", headers=headers).status_code == 422


def test_lists_and_cohorts_say_pseudonym(pseudonymous):
    client, scores = pseudonymous["client"], pseudonymous["scores"]
    team = bearer(key_for("pcn_team", PCNS[0]))
    mine = scores[scores.pcn_code == PCNS[0]].sort_values("rank")
    page = client.get("/api/v1/risk-list", params={"page_size": 500}, headers=team).json()
    assert page["run"]["identifier_kind"] == "pseudonym"
    assert [i["nhs_number"] for i in page["items"]] == list(mine.nhs_number)
    assert {i["identifier_kind"] for i in page["items"]} == {"pseudonym"}
    cohort = client.get(
        "/api/v1/cohorts/falls_review", params={"page_size": 500}, headers=team
    ).json()
    assert [i["nhs_number"] for i in cohort["items"]] == list(mine.nhs_number)
    assert {i["identifier_kind"] for i in cohort["items"]} == {"pseudonym"}
    csv = client.get(
        "/api/v1/cohorts/falls_review", params={"page_size": 500, "format": "csv"}, headers=team
    )
    frame = pd.read_csv(io.StringIO(csv.text), dtype=str)
    assert "pseudonym" in frame.columns and "nhs_number" not in frame.columns
    assert list(frame.pseudonym) == list(mine.nhs_number)  # as they are: no "999 833 6376"
    assert "999 833 6376" not in csv.text


def test_items_stored_at_publication_say_pseudonym(tmp_path):
    """Cohort items written at publication carry the run's kind, and read exactly as items
    built at request time."""
    settings = Settings(home=tmp_path / "home")
    people = pseudonyms(12)
    scores = pd.DataFrame(
        {
            "nhs_number": people, "practice_code": "A11111", "pcn_code": PCNS[0],
            "risk": np.linspace(0.4, 0.05, 12), "percentile": np.linspace(100, 8, 12),
            "rank": np.arange(1, 13),
            "reasons": [[{"group": "age", "text": "aged 80", "direction": "raises",
                          "log_odds": 0.2, "percentage_points": 1.0}]] * 12,
            "contributions": [{"age": 1.0}] * 12,
        }
    )  # fmt: skip
    members = scores[["nhs_number", "practice_code", "pcn_code", "risk"]].copy()
    members.insert(0, "intervention", "falls_review")
    members["expected_benefit"] = members["risk"] * 0.35
    members["rank"] = np.arange(1, 13)
    members["criteria"] = [["aged_65_plus"]] * 12
    record = cohort_config_record(load_cohort_config())
    texts = {k: i["criteria"] for k, i in record["interventions"].items()}
    members = members.assign(
        item_json=cohort_items_json(members, scores, texts, identifier_kind="pseudonym")
    )
    publish_world(settings)  # the keys (and an older run of NHS numbers, replaced below)
    store = Store(settings.serving_database_url)
    store.runs.publish_run(
        month=MONTH, extract_date=MONTH, model_name="m", model_version="2", scores=scores,
        cohorts=members, n_type1_opt_outs_excluded=0, started_at=datetime.now(UTC),
        details={"cohort_config": record}, identifier_kind="pseudonym",
    )  # fmt: skip
    store.dispose()
    team = bearer(key_for("pcn_team", PCNS[0]))
    with TestClient(create_app(settings)) as client:
        stored = client.get("/api/v1/cohorts/falls_review", headers=team)
        store = Store(settings.serving_database_url)
        with store.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE cohort_members SET item_json = NULL")
        store.dispose()
        built = client.get("/api/v1/cohorts/falls_review", headers=team)
    assert stored.status_code == built.status_code == 200
    assert [i["identifier_kind"] for i in stored.json()["items"]] == ["pseudonym"] * 12
    assert stored.text == built.text


def test_runs_list_says_which_kind(pseudonymous):
    client = pseudonymous["client"]
    runs = client.get("/api/v1/runs", headers=bearer(key_for("analyst", PCNS[0]))).json()
    assert [r["identifier_kind"] for r in runs] == ["pseudonym"]


# ---- FHIR ------------------------------------------------------------------------------------


def test_fhir_labels_a_pseudonym_as_a_pseudonym(pseudonymous):
    from fhir.resources.R4B.bundle import Bundle
    from fhir.resources.R4B.riskassessment import RiskAssessment

    client, scores = pseudonymous["client"], pseudonymous["scores"]
    headers = _coordinator(LOOKS_LIKE_NHS, scores)
    for query in (LOOKS_LIKE_NHS, f"urn:riskstrat:pseudonym|{LOOKS_LIKE_NHS}"):
        response = client.get("/fhir/RiskAssessment", params={"patient": query}, headers=headers)
        assert response.status_code == 200
        assert NHS_SYSTEM not in response.text and "nhs-number" not in response.text
        bundle = Bundle.model_validate(response.json())
        assert bundle.total == 1
        resource = response.json()["entry"][0]["resource"]
        ra = RiskAssessment.model_validate(resource)
        assert ra.subject.identifier.system == "urn:riskstrat:pseudonym"
        assert ra.subject.identifier.value == LOOKS_LIKE_NHS
        assert ra.subject.identifier.type.text == "pseudonym"
        read = client.get(f"/fhir/RiskAssessment/{resource['id']}", headers=headers)
        assert read.status_code == 200 and NHS_SYSTEM not in read.text
        assert read.json()["subject"]["identifier"]["type"] == {"text": "pseudonym"}
    # The same digits as an NHS number name nobody here.
    as_nhs = client.get(
        "/fhir/RiskAssessment", params={"patient": f"{NHS_SYSTEM}|{LOOKS_LIKE_NHS}"},
        headers=headers,
    )  # fmt: skip
    assert as_nhs.status_code == 200 and as_nhs.json()["total"] == 0
    longest = client.get(
        "/fhir/RiskAssessment", params={"patient": LONGEST}, headers=_coordinator(LONGEST, scores)
    )
    assert longest.json()["total"] == 1


# ---- pages -----------------------------------------------------------------------------------


def test_pages_say_pseudonym_and_never_format_one(pseudonymous):
    client = pseudonymous["client"]
    sign_in(client, key_for("pcn_team", PCNS[0]))
    page = client.get("/cohorts", params={"capacity": 50})
    assert page.status_code == 200
    assert '<th scope="col">Pseudonym</th>' in page.text
    assert "NHS number</th>" not in page.text and "999 833 6376" not in page.text
    assert "This run is pseudonymous" in page.text
    for person in (LOOKS_LIKE_NHS, LONGEST, "7"):
        assert f'<a href="/patients/{person}">{person}</a>' in page.text
    download = client.get("/cohorts/download", params={"capacity": 50, "format": "csv"})
    frame = pd.read_csv(io.BytesIO(download.content), dtype=str, encoding="utf-8-sig")
    assert list(frame.columns[:2]) == ["rank", "pseudonym"]
    assert LOOKS_LIKE_NHS in set(frame.pseudonym)
    xlsx = client.get("/cohorts/download", params={"capacity": 50, "format": "xlsx"})
    sheet = pd.read_excel(io.BytesIO(xlsx.content), sheet_name="cohort", dtype=str)
    assert "pseudonym" in sheet.columns and "nhs_number" not in sheet.columns
    client.post("/logout")
    sign_in(client, key_for("care_coordinator", PCNS[0]))
    for person in (LOOKS_LIKE_NHS, LONGEST):
        patient = client.get(f"/patients/{person}")
        assert patient.status_code == 200
        assert f"Patient with pseudonym {person}</h1>" in patient.text
        assert "is not an NHS number" in patient.text and "999 833 6376" not in patient.text
    theirs = client.get(f"/patients/{FAILS_MOD11}")  # another PCN's: not found, not "invalid"
    assert theirs.status_code == 404 and FAILS_MOD11 not in theirs.text
    kinds = {(r["route"], r["identifier_kind"]) for r in _records(pseudonymous["settings"])}
    assert kinds == {
        ("GET /cohorts (page)", "pseudonym"),
        ("GET /cohorts/download (csv)", "pseudonym"),
        ("GET /cohorts/download (xlsx)", "pseudonym"),
        ("GET /patients/{nhs_number} (page)", "pseudonym"),
    }


# ---- audit trail -----------------------------------------------------------------------------


def test_reads_record_the_kind_and_the_trail_keeps_kinds_apart(pseudonymous):
    client, scores, settings = (
        pseudonymous["client"], pseudonymous["scores"], pseudonymous["settings"]
    )  # fmt: skip
    headers = _coordinator(LOOKS_LIKE_NHS, scores)
    client.get(f"/api/v1/patients/{LOOKS_LIKE_NHS}/risk", headers=headers)
    client.get("/fhir/RiskAssessment", params={"patient": LOOKS_LIKE_NHS}, headers=headers)
    key = settings.pseudonym_key.get_secret_value()
    # A read of the NHS number with the same digits, from an earlier run of NHS numbers.
    store = Store(settings.serving_database_url)
    store.audit.record(
        access_record(actor="earlier", route="GET /old", nhs_numbers=[LOOKS_LIKE_NHS], key=key)
    )
    store.dispose()
    admin = bearer(key_for("admin", PCNS[0]))
    mine = client.get("/api/v1/audit", params={"patient": LOOKS_LIKE_NHS}, headers=admin).json()
    assert [(r["route"], r["identifier_kind"]) for r in mine["records"]] == [
        ("GET /api/v1/patients/{nhs_number}/risk", "pseudonym"),
        ("GET /fhir/RiskAssessment", "pseudonym"),
    ]
    assert mine["records"][0]["patients"] == [pseudonymise(LOOKS_LIKE_NHS, key)]
    as_nhs = client.get(
        "/api/v1/audit", params={"patient": LOOKS_LIKE_NHS, "identifier_kind": "nhs_number"},
        headers=admin,
    ).json()  # fmt: skip
    assert [r["actor"] for r in as_nhs["records"]] == ["earlier"]
    assert as_nhs["records"][0]["identifier_kind"] == "nhs_number"
    dotted = client.get("/api/v1/audit", params={"patient": DOTTED}, headers=admin)
    assert dotted.status_code == 200 and dotted.json()["records"] == []
    refused = client.get(
        "/api/v1/audit", params={"patient": DOTTED, "identifier_kind": "nhs_number"},
        headers=admin,
    )  # fmt: skip
    assert refused.status_code == 422


# ---- runs of NHS numbers: as before ----------------------------------------------------------


def test_nhs_number_runs_keep_their_labels_and_checks(nhs):
    client, scores, settings = nhs["client"], nhs["scores"], nhs["settings"]
    person = scores[scores.pcn_code == PCNS[0]].iloc[0].nhs_number
    coord = bearer(key_for("care_coordinator", PCNS[0]))
    body = client.get(f"/api/v1/patients/{person}/risk", headers=coord).json()
    assert body["identifier_kind"] == "nhs_number" == body["run"]["identifier_kind"]
    fhir = client.get("/fhir/RiskAssessment", params={"patient": person}, headers=coord).json()
    identifier = fhir["entry"][0]["resource"]["subject"]["identifier"]
    assert identifier == {"system": NHS_SYSTEM, "value": person}  # exactly as before
    # What a pseudonymous run takes is refused here, as NHS numbers always were.
    for bad in (DOTTED, "7", LONGEST, "99983363760"):
        assert client.get(f"/api/v1/patients/{bad}/risk", headers=coord).status_code == 422
        fhir_bad = client.get("/fhir/RiskAssessment", params={"patient": bad}, headers=coord)
        assert fhir_bad.status_code == 422
    wrong_check = client.get(f"/api/v1/patients/{FAILS_MOD11}/risk", headers=coord)
    assert wrong_check.status_code == 404 and "Modulus 11" in wrong_check.json()["detail"]
    as_pseudonym = client.get(
        "/fhir/RiskAssessment", params={"patient": f"urn:riskstrat:pseudonym|{person}"},
        headers=coord,
    )  # fmt: skip
    assert as_pseudonym.status_code == 200 and as_pseudonym.json()["total"] == 0
    admin = bearer(key_for("admin", PCNS[0]))
    assert client.get("/api/v1/audit", params={"patient": DOTTED}, headers=admin).status_code == 422
    trail = client.get("/api/v1/audit", params={"patient": person}, headers=admin).json()
    assert {r["identifier_kind"] for r in trail["records"]} == {"nhs_number"}
    assert len(trail["records"]) == 2
    sign_in(client, key_for("pcn_team", PCNS[0]))
    page = client.get("/cohorts", params={"capacity": 5})
    assert '<th scope="col">NHS number</th>' in page.text and "Pseudonym" not in page.text
    shown = f"{person[:3]} {person[3:6]} {person[6:]}"
    assert f'<a href="/patients/{person}">{shown}</a>' in page.text
    assert "pseudonymous" not in page.text
    client.post("/logout")
    sign_in(client, key_for("care_coordinator", PCNS[0]))
    assert f"<h1>Patient {shown}</h1>" in client.get(f"/patients/{person}").text
    assert client.get(f"/patients/{DOTTED}").status_code == 404
    assert {r["identifier_kind"] for r in _records(settings)} == {"nhs_number"}


def test_what_changed_never_compares_an_nhs_number_with_a_pseudonym(tmp_path):
    """October holds NHS numbers, November pseudonyms; one pseudonym has the digits of an
    October NHS number. They are different people: nothing is compared."""
    settings = Settings(home=tmp_path / "home")
    made = publish_world(settings, identifier_kind="pseudonym")
    october = made["scores"].assign(risk=0.01, contributions=[{"age": 9.0}] * 40)
    store = Store(settings.serving_database_url)
    store.runs.publish_run(
        month=date(2026, 10, 1), extract_date=MONTH, model_name="m", model_version="0",
        scores=october, n_type1_opt_outs_excluded=0, started_at=datetime.now(UTC), details={},
    )  # fmt: skip
    store.dispose()
    headers = _coordinator(LOOKS_LIKE_NHS, made["scores"])
    with TestClient(create_app(settings)) as client:
        body = client.get(f"/api/v1/patients/{LOOKS_LIKE_NHS}/risk", headers=headers).json()
        assert body["identifier_kind"] == "pseudonym" and body["what_changed"] is None
        sign_in(client, key_for("care_coordinator", PCNS[0]))
        page = client.get(f"/patients/{LOOKS_LIKE_NHS}")
        assert page.status_code == 200 and "No earlier month to compare with." in page.text
    assert json.dumps(body).count("2026-10") == 0
