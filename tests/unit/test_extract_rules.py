"""Every rule of the data contract, with a row that breaks it and one that sits on the edge."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import pytest

from riskstrat.data.contract import GENERIC_RULES, TABLES, all_rule_ids
from riskstrat.data.extract import validate_extract
from tests.support.extracts import (
    BAD_CHECK,
    CHECK_TEN,
    P1,
    P2,
    P3,
    P_UNKNOWN,
    base_tables,
    write_extract,
)

# (case id, table, row index to change or None to append a copy of row 0, changes,
#  expected column, expected rule)
CASES: list[tuple[str, str, int | None, dict[str, str], str, str]] = [
    # patients: kinds
    ("nhs missing", "patients", 0, {"nhs_number": ""}, "nhs_number", "required"),
    ("nhs 9 digits", "patients", 0, {"nhs_number": "999833637"}, "nhs_number", "invalid_nhs_number_format"),
    ("nhs letters", "patients", 0, {"nhs_number": "999833637X"}, "nhs_number", "invalid_nhs_number_format"),
    ("nhs spaced", "patients", 0, {"nhs_number": "999 833 6376"}, "nhs_number", "invalid_nhs_number_format"),
    ("nhs check digit", "patients", 0, {"nhs_number": BAD_CHECK}, "nhs_number", "nhs_number_check_digit"),
    ("nhs check digit 10", "patients", 0, {"nhs_number": CHECK_TEN}, "nhs_number", "nhs_number_check_digit"),
    ("dob missing", "patients", 0, {"date_of_birth": ""}, "date_of_birth", "required"),
    ("dob slashes", "patients", 0, {"date_of_birth": "1940/05/01"}, "date_of_birth", "invalid_date"),
    ("dob 30 Feb", "patients", 0, {"date_of_birth": "1940-02-30"}, "date_of_birth", "invalid_date"),
    ("dob short", "patients", 0, {"date_of_birth": "1940-5-1"}, "date_of_birth", "invalid_date"),
    ("sex missing", "patients", 0, {"sex": ""}, "sex", "required"),
    ("sex X", "patients", 0, {"sex": "X"}, "sex", "invalid_code"),
    ("sex lower", "patients", 0, {"sex": "f"}, "sex", "invalid_code"),
    ("ethnic I", "patients", 0, {"ethnic_category": "I"}, "ethnic_category", "invalid_code"),
    ("lsoa short", "patients", 0, {"lsoa_code": "E0100001"}, "lsoa_code", "invalid_format"),
    ("imd fraction", "patients", 0, {"imd_decile": "3.5"}, "imd_decile", "invalid_integer"),
    ("imd word", "patients", 0, {"imd_decile": "three"}, "imd_decile", "invalid_integer"),
    ("practice short", "patients", 0, {"practice_code": "A8100"}, "practice_code", "invalid_format"),
    ("practice missing", "patients", 0, {"practice_code": ""}, "practice_code", "required"),
    ("pcn not U", "patients", 0, {"pcn_code": "X12345"}, "pcn_code", "invalid_format"),
    ("pcn missing", "patients", 0, {"pcn_code": ""}, "pcn_code", "required"),
    ("registered_from missing", "patients", 0, {"registered_from": ""}, "registered_from", "required"),
    ("registered_to bad", "patients", 0, {"registered_to": "2020-13-01"}, "registered_to", "invalid_date"),
    ("opt out yes", "patients", 0, {"type1_opt_out": "yes"}, "type1_opt_out", "invalid_boolean"),
    ("opt out TRUE", "patients", 0, {"type1_opt_out": "TRUE"}, "type1_opt_out", "invalid_boolean"),
    # patients: table rules
    ("dob after extract", "patients", 0, {"date_of_birth": "2026-11-02"}, "date_of_birth", "date_of_birth_after_extract_date"),
    ("age 115", "patients", 0, {"date_of_birth": "1911-11-01"}, "date_of_birth", "age_115_or_over"),
    ("imd 0", "patients", 0, {"imd_decile": "0"}, "imd_decile", "imd_decile_out_of_range"),
    ("imd 11", "patients", 0, {"imd_decile": "11"}, "imd_decile", "imd_decile_out_of_range"),
    ("registered_to early", "patients", 0, {"registered_to": "1999-12-31"}, "registered_to", "registered_to_before_registered_from"),
    ("death before birth", "patients", 0, {"date_of_death": "1940-04-30"}, "date_of_death", "date_of_death_before_date_of_birth"),
    ("death on extract date", "patients", 0, {"date_of_death": "2026-11-01"}, "date_of_death", "date_of_death_not_before_extract_date"),
    ("duplicate", "patients", None, {}, "nhs_number", "duplicate_nhs_number"),
    # activity
    ("act nhs missing", "activity", 0, {"nhs_number": ""}, "nhs_number", "required"),
    ("act unknown patient", "activity", 0, {"nhs_number": P_UNKNOWN}, "nhs_number", "unknown_patient"),
    ("act malformed nhs", "activity", 0, {"nhs_number": "12"}, "nhs_number", "unknown_patient"),
    ("act setting missing", "activity", 0, {"setting": ""}, "setting", "required"),
    ("act setting A&E", "activity", 2, {"setting": "A&E"}, "setting", "invalid_code"),
    ("act method bad", "activity", 0, {"admission_method": "urgent"}, "admission_method", "invalid_code"),
    ("act method missing", "activity", 0, {"admission_method": ""}, "admission_method", "admission_method_required_for_inpatient"),
    ("act method outside inpatient", "activity", 2, {"admission_method": "emergency"}, "admission_method", "admission_method_only_for_inpatient"),
    ("act start missing", "activity", 0, {"start_date": ""}, "start_date", "required"),
    ("act start bad", "activity", 0, {"start_date": "10/01/2026"}, "start_date", "invalid_date"),
    ("act start on extract date", "activity", 0, {"start_date": "2026-11-01", "end_date": ""}, "start_date", "start_date_not_before_extract_date"),
    ("act before birth", "activity", 0, {"start_date": "1940-04-30", "end_date": "1940-05-02"}, "start_date", "start_date_before_date_of_birth"),
    ("act end before start", "activity", 0, {"end_date": "2026-01-09"}, "end_date", "end_date_before_start_date"),
    ("act end differs", "activity", 2, {"end_date": "2026-01-11"}, "end_date", "end_date_not_start_date"),
    ("act end bad", "activity", 0, {"end_date": "2026-01-32"}, "end_date", "invalid_date"),
    ("act diagnosis bad", "activity", 0, {"primary_diagnosis": "J44-1"}, "primary_diagnosis", "invalid_format"),
    ("act diagnosis lower", "activity", 0, {"primary_diagnosis": "j44.1"}, "primary_diagnosis", "invalid_format"),
    ("act attended no", "activity", 3, {"attended": "no"}, "attended", "invalid_boolean"),
    # conditions
    ("cond code", "conditions", 0, {"condition": "ACTIVE_CANCER"}, "condition", "invalid_code"),
    ("cond missing", "conditions", 0, {"condition": ""}, "condition", "required"),
    ("cond date missing", "conditions", 0, {"diagnosed_on": ""}, "diagnosed_on", "required"),
    ("cond date bad", "conditions", 0, {"diagnosed_on": "2015-04"}, "diagnosed_on", "invalid_date"),
    ("cond on extract date", "conditions", 0, {"diagnosed_on": "2026-11-01"}, "diagnosed_on", "diagnosed_on_not_before_extract_date"),
    ("cond nhs missing", "conditions", 0, {"nhs_number": ""}, "nhs_number", "required"),
    ("cond unknown patient", "conditions", 0, {"nhs_number": P_UNKNOWN}, "nhs_number", "unknown_patient"),
    # medications
    ("med upper", "medications", 0, {"medicine": "Amlodipine"}, "medicine", "medicine_not_lower_case"),
    ("med missing", "medications", 0, {"medicine": ""}, "medicine", "required"),
    ("med class", "medications", 0, {"drug_class": "CALCIUM_BLOCKER"}, "drug_class", "invalid_code"),
    ("med class missing", "medications", 0, {"drug_class": ""}, "drug_class", "required"),
    ("med date", "medications", 0, {"issued_on": "2026-11-01"}, "issued_on", "issued_on_not_before_extract_date"),
    ("med date bad", "medications", 0, {"issued_on": "yesterday"}, "issued_on", "invalid_date"),
    ("med nhs missing", "medications", 0, {"nhs_number": ""}, "nhs_number", "required"),
    ("med date missing", "medications", 0, {"issued_on": ""}, "issued_on", "required"),
    ("med unknown patient", "medications", 0, {"nhs_number": P_UNKNOWN}, "nhs_number", "unknown_patient"),
    # observations
    ("obs code", "observations", 2, {"code": "FALLEN"}, "code", "invalid_code"),
    ("obs code missing", "observations", 2, {"code": ""}, "code", "required"),
    ("obs date missing", "observations", 2, {"observed_on": ""}, "observed_on", "required"),
    ("obs date", "observations", 2, {"observed_on": "2026-12-01"}, "observed_on", "observed_on_not_before_extract_date"),
    ("obs bmi missing", "observations", 0, {"value": ""}, "value", "value_required"),
    ("obs cfs missing", "observations", 1, {"value": ""}, "value", "value_required"),
    ("obs value on fall", "observations", 2, {"value": "1"}, "value", "value_not_allowed"),
    ("obs bmi low", "observations", 0, {"value": "9.9"}, "value", "bmi_out_of_range"),
    ("obs bmi high", "observations", 0, {"value": "90.1"}, "value", "bmi_out_of_range"),
    ("obs cfs 0", "observations", 1, {"value": "0"}, "value", "cfs_out_of_range"),
    ("obs cfs 10", "observations", 1, {"value": "10"}, "value", "cfs_out_of_range"),
    ("obs cfs fraction", "observations", 1, {"value": "5.5"}, "value", "cfs_out_of_range"),
    ("obs value word", "observations", 0, {"value": "normal"}, "value", "invalid_number"),
    ("obs value nan", "observations", 0, {"value": "nan"}, "value", "invalid_number"),
    ("obs value inf", "observations", 0, {"value": "inf"}, "value", "invalid_number"),
    ("obs nhs missing", "observations", 0, {"nhs_number": ""}, "nhs_number", "required"),
    ("obs unknown patient", "observations", 0, {"nhs_number": P_UNKNOWN}, "nhs_number", "unknown_patient"),
]  # fmt: skip


def _rejects(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _run(tmp_path: Path, tables: dict, fmt: str = "csv"):
    root = write_extract(tmp_path / "extract", tables, fmt=fmt)
    rejects = tmp_path / "out" / "rejects.csv"
    extract = validate_extract(root, max_reject_share=1.0, rejects_path=rejects)
    return extract, _rejects(rejects)


def _typed_in_parquet(case) -> bool:
    """Parquet carries dates, booleans and numbers typed: a value of the wrong type fails the
    whole column instead (see test_extract_files). nan and inf still fit a DOUBLE column."""
    _, _, _, changes, column, rule = case
    value = changes.get(column, "")
    typed = {"invalid_date", "invalid_boolean", "invalid_integer", "invalid_number"}
    return rule in typed and value != "" and value not in {"nan", "inf"}


RULE_PARAMS = [
    # Every rule in the fast loop (CSV); the same rules read from Parquet are marked slow.
    pytest.param(
        fmt, *case[1:], id=f"{fmt}-{case[0]}", marks=[pytest.mark.slow] if fmt == "parquet" else []
    )
    for fmt in ("csv", "parquet")
    for case in CASES
    if fmt == "csv" or not _typed_in_parquet(case)
]


@pytest.mark.parametrize(("fmt", "table", "index", "changes", "column", "rule"), RULE_PARAMS)
def test_rule_rejects_the_row(tmp_path, fmt, table, index, changes, column, rule):
    tables = base_tables()
    if index is None:
        tables[table].append(dict(tables[table][1]))
        expected_rows = {"2", str(len(tables[table]))}
    else:
        tables[table][index].update(changes)
        expected_rows = {str(index + 1)}
    extract, rejects = _run(tmp_path, tables, fmt)
    hits = {
        r["row_number"]
        for r in rejects
        if (r["table"], r["column"], r["rule"]) == (table, column, rule)
    }
    assert hits == expected_rows, rejects
    # The rejected row is not in the clean table; the others are.
    clean = extract.con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    assert clean == len(tables[table]) - len(expected_rows) - _cascade(
        rejects, table, expected_rows
    )
    assert extract.summary.rows_rejected[table] >= len(expected_rows)
    extract.close()


def _cascade(rejects, table, expected_rows):
    """Other rows of the same table rejected as a side effect (none expected)."""
    return len({r["row_number"] for r in rejects if r["table"] == table} - expected_rows)


def test_every_contract_rule_has_a_case():
    covered = {(c[1], c[5]) for c in CASES}
    missing = all_rule_ids() - covered
    assert not missing, f"rules without a test case: {sorted(missing)}"
    generic = {c[5] for c in CASES} | {"patient_rejected", "malformed_row"}
    generic |= {"invalid_pseudonym_format"}  # test_a_pseudonymous_extract_checks_shape_not_digits
    assert set(GENERIC_RULES) <= generic, set(GENERIC_RULES) - generic
    # every required column of every table has a 'required' case
    required = {(t.name, c) for t in TABLES.values() for c in t.required_columns}
    required_cases = {(c[1], c[4]) for c in CASES if c[5] == "required"}
    assert required <= required_cases, required - required_cases


def test_base_extract_is_clean_in_both_formats(tmp_path):
    for fmt in ("csv", "parquet"):
        extract, rejects = _run(tmp_path / fmt, base_tables(), fmt)
        assert rejects == []
        assert extract.summary.rows_rejected == dict.fromkeys(TABLES, 0)
        assert extract.con.execute("SELECT count(*) FROM patients").fetchone()[0] == 3
        extract.close()


def _typed(kind: str, text: str) -> object:
    """What a contract value reads as, decoded in Python (independently of the SQL)."""
    if text == "":
        return None
    return {
        "date": date.fromisoformat,
        "integer": int,
        "number": float,
        "boolean": {"true": True, "false": False}.__getitem__,
    }.get(kind, str)(text)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_clean_tables_hold_every_accepted_value_typed(tmp_path, fmt):
    """The clean tables are built by a shorter road than the checks (no joins, no tests
    that the checks have passed): their values must still be exactly the source's, typed."""
    tables = base_tables()
    # A bad row in each event table, so the clean rows are picked out of a mix.
    tables["activity"].append(dict(tables["activity"][0], setting="clinic"))
    tables["observations"][0]["value"] = "2.45e1"
    extract, rejects = _run(tmp_path, tables, fmt)
    assert {(r["table"], r["row_number"]) for r in rejects} == {
        ("activity", str(len(tables["activity"])))
    }
    kept = {**tables, "activity": tables["activity"][:-1]}
    for name, rows in kept.items():
        columns = TABLES[name].columns
        got = extract.con.execute(
            f"SELECT {', '.join(c.name for c in columns)} FROM {name}"
        ).fetchall()
        expected = [tuple(_typed(c.kind, r.get(c.name, "")) for c in columns) for r in rows]
        assert sorted(got, key=repr) == sorted(expected, key=repr), name
    extract.close()


@pytest.mark.parametrize(
    ("table", "index", "changes"),
    [
        ("patients", 0, {"date_of_birth": "1911-11-02"}),  # 114 years old at the extract date
        ("patients", 0, {"date_of_death": "2026-10-31"}),  # day before the extract date
        ("patients", 0, {"date_of_death": "1940-05-01"}),  # died on the day of birth
        ("patients", 0, {"registered_to": "2000-01-01"}),  # left the day they joined
        ("patients", 0, {"imd_decile": "1"}),
        ("patients", 0, {"ethnic_category": "Z"}),
        ("activity", 0, {"end_date": "2026-01-10"}),  # discharged the day admitted
        ("activity", 0, {"end_date": ""}),  # still in hospital
        ("activity", 0, {"start_date": "1940-05-01", "end_date": ""}),  # day of birth
        ("activity", 0, {"admission_method": "maternity"}),
        ("activity", 0, {"primary_diagnosis": "I10"}),
        ("activity", 3, {"attended": ""}),
        ("observations", 0, {"value": "10"}),
        ("observations", 0, {"value": "90"}),
        ("observations", 0, {"value": "2.45e1"}),
        ("observations", 1, {"value": "1"}),
        ("observations", 1, {"value": "9.0"}),
        ("medications", 0, {"medicine": "co-amoxiclav 500/125"}),
        ("medications", 0, {"issued_on": "2026-10-31"}),
    ],
)
def test_values_on_the_edge_are_accepted(tmp_path, table, index, changes):
    tables = base_tables()
    tables[table][index].update(changes)
    extract, rejects = _run(tmp_path, tables)
    assert rejects == []
    extract.close()


def test_rows_of_a_rejected_patient_are_rejected_too(tmp_path):
    tables = base_tables()
    tables["patients"][1]["sex"] = "X"  # P2 rejected
    extract, rejects = _run(tmp_path, tables)
    found = {(r["table"], r["row_number"], r["rule"]) for r in rejects}
    assert ("patients", "2", "invalid_code") in found
    assert ("activity", "5", "patient_rejected") in found  # P2's GP contact
    extract.close()


def test_duplicate_patient_rows_are_all_rejected(tmp_path):
    tables = base_tables()
    tables["patients"].append(dict(tables["patients"][1]))
    extract, _ = _run(tmp_path, tables)
    left = [r[0] for r in extract.con.execute("SELECT nhs_number FROM patients").fetchall()]
    assert P2 not in left and len(left) == 2
    extract.close()


def test_a_person_born_on_the_extract_date_is_accepted(tmp_path):
    tables = base_tables()
    newborn = dict(
        tables["patients"][0],
        nhs_number=P_UNKNOWN,
        date_of_birth="2026-11-01",
        registered_from="2026-11-01",
    )
    tables["patients"].append(newborn)
    extract, rejects = _run(tmp_path, tables)
    assert rejects == []
    extract.close()


def test_a_pseudonymous_extract_checks_shape_not_digits(tmp_path):
    """identifier_kind pseudonym (contract version 2): any 1-64 character pseudonym of letters,
    digits, '.', '_' and '-' is accepted (no Modulus 11 check); other shapes and repeats are
    rejected; event rows follow their patient."""
    pseudonyms = {P1: "1042", P2: "person-7.b_9", P3: "9990000000"}
    tables = base_tables()
    for rows in tables.values():
        for row in rows:
            row["nhs_number"] = pseudonyms.get(row["nhs_number"], row["nhs_number"])
    bad = dict(tables["patients"][0], nhs_number="has space")
    long = dict(tables["patients"][0], nhs_number="x" * 65)
    dup = dict(tables["patients"][1])
    tables["patients"] += [bad, long, dup]
    root = write_extract(
        tmp_path / "x",
        tables,
        manifest={"contract_version": 2, "extract_date": "2026-11-01",
                  "identifier_kind": "pseudonym"},
    )  # fmt: skip
    with validate_extract(root, max_reject_share=1.0, rejects_path=tmp_path / "r.csv") as ex:
        kept = {r[0] for r in ex.con.execute("SELECT nhs_number FROM patients").fetchall()}
        events = ex.con.execute("SELECT count(*) FROM activity").fetchone()[0]
        assert ex.summary.manifest.identifier_kind == "pseudonym"
    # "9990000000" fails Modulus 11 but is a fine pseudonym; person-7.b_9 is repeated
    assert kept == {"1042", "9990000000"}
    rules = {(r["row_number"], r["rule"]) for r in _rejects(tmp_path / "r.csv")}
    assert {("4", "invalid_pseudonym_format"), ("5", "invalid_pseudonym_format"),
            ("2", "duplicate_nhs_number"), ("6", "duplicate_nhs_number")} <= rules  # fmt: skip
    assert not any(r == "nhs_number_check_digit" for _, r in rules)
    assert events == len(base_tables()["activity"]) - 1  # P2's row follows its rejected patient


@pytest.mark.parametrize(
    ("written", "digits"),
    [
        ("999 725 7952", "9997257952"),
        ("999-725-7952", "9997257952"),
        (" 9997257952 ", "9997257952"),
        ("999 725-7952", "9997257952"),
        # Not the 3-3-4 shape: left as typed, for the caller's own rules to refuse.
        ("99972 57952", "99972 57952"),
        ("999  725 7952", "999  725 7952"),
        ("999.725.7952", "999.725.7952"),
        ("person-1", "person-1"),
    ],
)
def test_nhs_numbers_as_people_write_them_read_as_ten_digits(written, digits):
    from riskstrat.nhs_number import normalise_nhs_number

    assert normalise_nhs_number(written) == digits
