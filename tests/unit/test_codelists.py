"""Codelists: complete, well-formed, versioned; a change shows in the next import's report;
and every code the generator writes comes back as the contract code it stands for."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import duckdb
import pytest

from riskstrat.data.codelist import TABLE_CODES, load_codelists, shipped_codelists
from riskstrat.data.contract import CONDITIONS, DRUG_CLASSES, ETHNIC_CATEGORIES, OBSERVATION_CODES
from riskstrat.data.errors import ExtractError
from riskstrat.data.omop import import_omop
from riskstrat.synth.catalogue import ANTIBIOTIC_COURSES, REGIMEN_GROUPS
from riskstrat.synth.omop import load_vocabulary
from tests.support.omop_cdm import Cdm

D = dt.date


def _copy_shipped(tmp_path: Path) -> Path:
    folder = tmp_path / "codelists"
    shutil.copytree(str(shipped_codelists()), folder)
    return folder


def test_every_contract_code_has_one_list_and_the_set_has_a_stable_digest():
    lists = load_codelists()
    assert {c for (t, c) in lists.lists if t == "conditions"} == set(CONDITIONS)
    assert {c for (t, c) in lists.lists if t == "observations"} == set(OBSERVATION_CODES)
    assert {c for (t, c) in lists.lists if t == "medications"} == set(DRUG_CLASSES)
    assert {c for (t, c) in lists.lists if t == "ethnicity"} == set(ETHNIC_CATEGORIES)
    assert len(lists.lists) == sum(len(v) for v in TABLE_CODES.values())
    assert all(cl.codes for (t, c), cl in lists.lists.items() if c != "OTHER")
    assert all(cl.sources for cl in lists.lists.values())
    assert len(lists.digest) == 64 and load_codelists().digest == lists.digest
    assert lists.versions["medicines"] == lists.medicines.version


def test_a_changed_code_changes_the_digest_and_the_version_shows(tmp_path):
    folder = _copy_shipped(tmp_path)
    path = folder / "conditions" / "HEART_FAILURE.yaml"
    text = path.read_text()
    path.write_text(
        text.replace("version: 1.0.0", "version: 1.1.0")
        + '  - {vocabulary: SNOMED, code: "10335000", description: "Chronic right-sided '
        'heart failure", descendants: true}\n'
    )
    changed = load_codelists(folder)
    assert changed.digest != load_codelists().digest
    assert changed.versions["conditions/HEART_FAILURE"] == "1.1.0"


@pytest.mark.parametrize(
    ("edit", "words", "column"),
    [
        (lambda t: t.replace("vocabulary: SNOMED", "vocabulary: SNOWMED", 1), "vocabulary",
         "codes.0.vocabulary"),
        (lambda t: t.replace("version: 1.0.0", "version: one"), "pattern", "version"),
        (lambda t: t.replace("code: HEART_FAILURE", "code: AF"), "not HEART_FAILURE", "code"),
        (lambda t: t + "unexpected: true\n", "Extra inputs", "unexpected"),
        (lambda t: t.replace("codes:", "codes: [", 1), "not valid YAML", None),
    ],
)  # fmt: skip
def test_a_malformed_list_is_named_with_the_field(tmp_path, edit, words, column):
    folder = _copy_shipped(tmp_path)
    path = folder / "conditions" / "HEART_FAILURE.yaml"
    path.write_text(edit(path.read_text()))
    with pytest.raises(ExtractError) as info:
        load_codelists(folder)
    assert "HEART_FAILURE.yaml" in str(info.value) and words in str(info.value)
    assert info.value.column == column


def test_a_missing_or_unknown_list_is_named(tmp_path):
    folder = _copy_shipped(tmp_path)
    (folder / "observations" / "FALL.yaml").unlink()
    with pytest.raises(ExtractError, match="no codelist for observations code FALL"):
        load_codelists(folder)
    folder = _copy_shipped(tmp_path / "b")
    (folder / "conditions" / "GOUT.yaml").write_text("code: GOUT\n")
    with pytest.raises(ExtractError, match="unknown conditions code 'GOUT'"):
        load_codelists(folder)


@pytest.mark.slow  # two OMOP imports
def test_a_codelist_change_shows_in_the_next_import_report(tmp_path):
    cdm = Cdm()
    cdm.person(1)
    db = cdm.write_duckdb(tmp_path / "cdm.duckdb")
    kw = {"practice_code": "A81001", "pcn_code": "U12345", "scratch_dir": tmp_path / "s"}
    first = import_omop(str(db), tmp_path / "x", **kw)
    assert first.report["codelists"]["changed_since_previous_import"] is None
    folder = _copy_shipped(tmp_path)
    path = folder / "observations" / "SMOKER.yaml"
    path.write_text(path.read_text().replace("version: 1.0.0", "version: 1.0.1"))
    second = import_omop(str(db), tmp_path / "x", codelists=folder, overwrite=True, **kw)
    assert second.report["codelists"]["changed_since_previous_import"] == [
        "observations/SMOKER: 1.0.0 -> 1.0.1"
    ]
    assert (
        "observations/SMOKER: 1.0.0 -> 1.0.1" in (second.out_dir / "mapping-report.md").read_text()
    )


# ---------------------------------------------------------------- the generator's codes


def _extract(result, table: str) -> list[tuple]:
    con = duckdb.connect()
    try:
        path = result.out_dir / f"{table}.parquet"
        return con.execute(f"SELECT * FROM read_parquet('{path}')").fetchall()
    finally:
        con.close()


@pytest.mark.slow  # generates and imports a CDM
def test_every_condition_and_observation_code_the_generator_writes_comes_back_as_itself(
    tmp_path,
):
    vocab = load_vocabulary()
    cdm = Cdm()
    emitted = vocab.concepts[vocab.concepts["emit_for"].isin(CONDITIONS + OBSERVATION_CODES)]
    domain_table = {"Condition": "condition_occurrence", "Observation": "observation",
                    "Measurement": "measurement", "Procedure": "procedure_occurrence"}  # fmt: skip
    expected = {}
    for pid, row in enumerate(emitted.itertuples(), start=1):
        cdm.person(pid)
        value = {"BMI": 25.0, "CFS": 4.0}.get(row.emit_for)
        cdm.event(domain_table[row.domain_id], pid, int(row.concept_id), D(2025, 1, 1),
                  value=value)  # fmt: skip
        expected[str(pid)] = row.emit_for
    assert set(expected.values()) == set(CONDITIONS + OBSERVATION_CODES)
    result = import_omop(
        str(cdm.write_duckdb(tmp_path / "cdm.duckdb")), tmp_path / "x",
        practice_code="A81001", pcn_code="U12345", scratch_dir=tmp_path / "s",
    )  # fmt: skip
    got = {(r[0], r[1]) for r in _extract(result, "conditions")}
    got |= {(r[0], r[2]) for r in _extract(result, "observations")}
    assert got == set(expected.items())  # each code once, and nothing else


@pytest.mark.slow  # generates and imports a CDM
def test_every_medicine_the_generator_prescribes_comes_back_with_its_name_and_class(tmp_path):
    medicines = {m.name: m.drug_class for g in REGIMEN_GROUPS for m, _ in g.options}
    medicines |= {m.name: m.drug_class for m, _ in ANTIBIOTIC_COURSES}
    vocab = load_vocabulary().concepts
    drug_ids = dict(zip(vocab["emit_for"], vocab["concept_id"], strict=False))
    cdm = Cdm()
    cdm.person(1)
    for i, name in enumerate(sorted(medicines)):
        cdm.drug(1, int(drug_ids[name]), D(2025, 1, 1) + dt.timedelta(days=i))
    result = import_omop(
        str(cdm.write_duckdb(tmp_path / "cdm.duckdb")), tmp_path / "x",
        practice_code="A81001", pcn_code="U12345", scratch_dir=tmp_path / "s",
    )  # fmt: skip
    got = {r[2]: r[3] for r in _extract(result, "medications")}
    assert got == medicines
