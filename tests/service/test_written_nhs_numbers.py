"""NHS numbers typed as letters and exports write them ("999 725 7952", "999-725-7952") find
the same person wherever the API takes one: the patient's risk, the FHIR search and the audit
trail. The read is recorded under the ten digits; malformed input is still refused with the
same 422; a pseudonymous run never turns a pseudonym into digits."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from riskstrat.config import Settings
from riskstrat.nhs_number import normalise_nhs_number
from riskstrat.service.app import create_app
from riskstrat.service.common import IDENTIFIER_PATTERN, WRITTEN_NHS_NUMBER_PATTERN
from riskstrat.store import Store
from riskstrat.store.audit import pseudonymise
from tests.support.auth import bearer
from tests.support.world import PCNS, key_for, publish_world

NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
PATIENT_ROUTE = "GET /api/v1/patients/{nhs_number}/risk"


def _written(number: str) -> list[str]:
    """The ways people write ``number``: spaced, dashed, and spaced with blanks around."""
    a, b, c = number[:3], number[3:6], number[6:]
    return [f"{a} {b} {c}", f"{a}-{b}-{c}", f" {a} {b} {c} "]


def _person(world) -> str:
    scores = world["scores"]
    number = str(scores[scores.pcn_code == PCNS[0]].iloc[0].nhs_number)
    assert number.startswith("999")  # synthetic
    return number


def _records(settings: Settings) -> list[dict]:
    store = Store(settings.serving_database_url)
    try:
        return store.audit.records(limit=1000)
    finally:
        store.dispose()


COORD = bearer(key_for("care_coordinator", PCNS[0]))
ADMIN = bearer(key_for("admin", PCNS[0]))


def test_the_patient_route_takes_a_written_nhs_number(served):
    client, person = served["client"], _person(served)
    expected = client.get(f"/api/v1/patients/{person}/risk", headers=COORD)
    assert expected.status_code == 200
    for typed in _written(person):
        response = client.get(f"/api/v1/patients/{typed}/risk", headers=COORD)
        assert response.status_code == 200, (typed, response.text)
        assert response.json() == expected.json()
        assert response.json()["nhs_number"] == person


def test_the_fhir_search_takes_a_written_nhs_number(served):
    client, person = served["client"], _person(served)
    for typed in _written(person):
        for patient in (typed, f"{NHS_SYSTEM}|{typed}"):
            response = client.get("/fhir/RiskAssessment", params={"patient": patient},
                                  headers=COORD)  # fmt: skip
            assert response.status_code == 200, (patient, response.text)
            body = response.json()
            assert body["total"] == 1, patient
            identifier = body["entry"][0]["resource"]["subject"]["identifier"]
            assert identifier == {"system": NHS_SYSTEM, "value": person}


def test_reads_by_a_written_number_are_recorded_under_its_ten_digits(served):
    client, settings, person = served["client"], served["settings"], _person(served)
    spaced, dashed, _ = _written(person)
    client.get(f"/api/v1/patients/{spaced}/risk", headers=COORD)
    client.get("/fhir/RiskAssessment", params={"patient": dashed}, headers=COORD)
    key = settings.pseudonym_key.get_secret_value()
    records = _records(settings)
    assert [r["route"] for r in records] == [PATIENT_ROUTE, "GET /fhir/RiskAssessment"]
    assert all(r["patients"] == [pseudonymise(person, key)] for r in records)
    # ... and the audit trail finds them by the number as written, too.
    for typed in (person, *_written(person)):
        trail = client.get("/api/v1/audit", params={"patient": typed}, headers=ADMIN)
        assert trail.status_code == 200, (typed, trail.text)
        assert [r["route"] for r in trail.json()["records"]] == [
            PATIENT_ROUTE,
            "GET /fhir/RiskAssessment",
        ], typed


def test_an_identifying_trail_records_the_ten_digits(tmp_path):
    settings = Settings(home=tmp_path / "home", audit_identify_patients=True)
    world = publish_world(settings)
    person = _person(world)
    with TestClient(create_app(settings)) as client:
        assert client.get(f"/api/v1/patients/{_written(person)[0]}/risk",
                          headers=COORD).status_code == 200  # fmt: skip
        trail = client.get("/api/v1/audit", params={"patient": _written(person)[1]},
                           headers=ADMIN).json()  # fmt: skip
        client.app.state.store.dispose()  # type: ignore[attr-defined]
    assert [r["patients"] for r in _records(settings)] == [[person]]
    assert [r["patients"] for r in trail["records"]] == [[person]]


#: Not an NHS number as anyone writes one: a digit short or over, groups of the wrong size,
#: two separators, or another separator. Each is refused with the 422 it always had.
MALFORMED = [
    "999 725 795",
    "999 725 79521",
    "9997 25 7952",
    "999  725 7952",
    "999 - 725 7952",
    "999_725_7952",
    "999.725.7952",
    "999-725-795X",
]


@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_numbers_are_still_422(served, bad):
    client = served["client"]
    for response in (
        client.get(f"/api/v1/patients/{bad}/risk", headers=COORD),
        client.get("/fhir/RiskAssessment", params={"patient": bad}, headers=COORD),
        client.get("/api/v1/audit", params={"patient": bad}, headers=ADMIN),
    ):
        assert response.status_code == 422, (bad, response.request.url)
        [issue] = response.json()["detail"]
        assert issue["type"] == "string_pattern_mismatch" and issue["input"] == bad
    assert _records(served["settings"]) == []


def test_the_422_for_a_malformed_number_is_as_it_was(served):
    """A value the declared pattern admits but a run of NHS numbers cannot take is refused
    exactly as FastAPI refused it when ten digits were the declared pattern."""
    response = served["client"].get("/api/v1/patients/999_725_7952/risk", headers=COORD)
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "type": "string_pattern_mismatch",
            "loc": ["path", "nhs_number"],
            "msg": "String should match pattern '^[0-9]{10}$'",
            "input": "999_725_7952",
            "ctx": {"pattern": "^[0-9]{10}$"},
        }
    ]


def test_a_pseudonymous_run_never_reads_a_pseudonym_as_digits(served_pseudonymous_on_each_store):
    """``9998336376`` is a pseudonym there; written with dashes it is another pseudonym, of
    nobody, and a spaced one names nobody either: 404, never that person."""
    world = served_pseudonymous_on_each_store
    client, scores = world["client"], world["scores"]
    pcn = scores.set_index("nhs_number").pcn_code["9998336376"]
    coord = bearer(key_for("care_coordinator", pcn))
    assert client.get("/api/v1/patients/9998336376/risk", headers=coord).status_code == 200
    for typed in _written("9998336376"):
        assert client.get(f"/api/v1/patients/{typed}/risk", headers=coord).status_code == 404
        fhir = client.get("/fhir/RiskAssessment", params={"patient": typed}, headers=coord)
        assert fhir.status_code == 200 and fhir.json()["total"] == 0


@pytest.mark.parametrize(
    "text",
    ["9997257952", "999 725 7952", "999-725-7952", " 999 725 7952\t", "999725-7952",
     "999 725 795", "999  725 7952", "abc", "999_725_7952", "99972579521"],
)  # fmt: skip
def test_the_declared_pattern_admits_what_normalisation_takes(text):
    written = re.fullmatch(WRITTEN_NHS_NUMBER_PATTERN, text) is not None
    becomes_ten_digits = re.fullmatch(r"[0-9]{10}", normalise_nhs_number(text)) is not None
    assert written == becomes_ten_digits
    if written:
        assert re.fullmatch(IDENTIFIER_PATTERN, text)
