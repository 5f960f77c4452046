"""The OMOP importer's rules, one small hand-built CDM at a time (tests/omop_cdm.py).

Each rule in docs/omop.md has a case here: what becomes each contract field, what is left out
and that the report says so. Concepts are named by vocabulary and code from the generator's
vocabulary (real codes).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from riskstrat.data.errors import ExtractError
from riskstrat.data.extract import validate_extract
from riskstrat.data.omop import concepts as C
from riskstrat.data.omop import import_omop
from tests.support.omop_cdm import EXTRACT_DATE, Cdm, extract_rows

D = dt.date
HF, COPD = ("SNOMED", "84114007"), ("SNOMED", "13645005")

# Slow: each test builds a CDM and imports it (about a second each).
pytestmark = pytest.mark.slow


def _import(cdm: Cdm, tmp_path: Path, *, fmt: str = "duckdb", **kwargs: object):
    tmp_path.mkdir(parents=True, exist_ok=True)
    source = (
        cdm.write_duckdb(tmp_path / "cdm.duckdb")
        if fmt == "duckdb"
        else cdm.write_csv(tmp_path / "cdm")
    )
    options: dict[str, object] = {
        "practice_code": "A81001",
        "pcn_code": "U12345",
        "extract_date": EXTRACT_DATE,
        "scratch_dir": tmp_path / "s",
    }
    options.update(kwargs)  # fmt: skip
    return import_omop(str(source), tmp_path / "extract", **options)  # type: ignore[arg-type]


def _table(result, name: str) -> pd.DataFrame:
    con = duckdb.connect()
    try:
        return con.execute(
            f"SELECT * FROM read_parquet('{result.out_dir / (name + '.parquet')}')"
        ).df()
    finally:
        con.close()


def _patient(result, pid: int) -> dict:
    frame = _table(result, "patients")
    rows = frame[frame["nhs_number"] == str(pid)].to_dict("records")
    assert len(rows) == 1, rows
    return {k: None if pd.isna(v) else v for k, v in rows[0].items()}


# ---------------------------------------------------------------------------- persons


def test_date_of_birth_rules(tmp_path):
    cdm = Cdm()
    cdm.person(1, born=D(1950, 3, 9))
    cdm.person(2, born=None, year=1951, month=4, day=2)
    cdm.person(3, born=None, year=1952, month=5)
    cdm.person(4, born=None, year=1953)
    cdm.person(5, born=None)
    result = _import(cdm, tmp_path)
    births = {p: _patient(result, p)["date_of_birth"].date() for p in (1, 2, 3, 4)}
    assert births == {1: D(1950, 3, 9), 2: D(1951, 4, 2), 3: D(1952, 5, 15), 4: D(1953, 7, 1)}
    persons = result.report["persons"]
    assert persons["dropped"] == {"no usable date of birth": 1}
    assert persons["date_of_birth_from"] == {
        "birth_datetime": 1, "year, month and day": 1, "year and month: the 15th": 1,
        "year only: 1 July": 1,
    }  # fmt: skip


def test_sex_ethnicity_and_us_race(tmp_path):
    cdm = Cdm()
    a, h = cdm.cid("SNOMED", "494131000000105"), cdm.cid("SNOMED", "110751000000108")
    cdm.person(1, gender=C.MALE, race=a)
    cdm.person(2, gender=C.FEMALE, race=8527, ethnicity=38003564)  # US White, not Hispanic
    cdm.person(3, gender=8551, race=8527)
    cdm.event("observation", 3, h, D(2020, 1, 1))  # a UK ethnic-category record wins
    cdm.person(4, gender=0)
    result = _import(cdm, tmp_path)
    got = {p: (_patient(result, p)["sex"], _patient(result, p)["ethnic_category"]) for p in
           (1, 2, 3, 4)}  # fmt: skip
    assert got == {1: ("M", "A"), 2: ("F", "Z"), 3: ("U", "H"), 4: ("U", None)}
    assert result.report["persons"]["ethnicity_from"] == {
        "UK ethnic-category concept on the person": 1,
        "US race/ethnicity concept only: not stated": 1,
        "latest UK ethnic-category record": 1,
        "not recorded": 1,
    }


def test_registration_from_the_latest_observation_period(tmp_path):
    cdm = Cdm()
    cdm.person(1, period=(D(2000, 1, 1), D(2026, 10, 31)))  # to the extract date: still here
    cdm.person(2, period=(D(2000, 1, 1), D(2019, 12, 31)))
    cdm.period(2, D(2021, 3, 1), D(2024, 6, 30))  # the latest period is the registration
    cdm.person(3, period=None)
    cdm.person(4, period=(D(2027, 1, 1), D(2027, 6, 1)))  # starts after the extract date
    result = _import(cdm, tmp_path)
    one, two = _patient(result, 1), _patient(result, 2)
    assert (one["registered_from"].date(), one["registered_to"]) == (D(2000, 1, 1), None)
    assert two["registered_from"].date() == D(2021, 3, 1)
    assert two["registered_to"].date() == D(2024, 7, 1)  # the day after the period ends
    assert result.report["persons"]["dropped"] == {
        "no observation period starting before the extract date": 2
    }
    assert result.report["persons"]["more_than_one_observation_period"] == 1


def test_deaths_and_people_the_contract_would_reject(tmp_path):
    cdm = Cdm()
    cdm.person(1)
    cdm.death(1, D(2025, 2, 3))
    cdm.person(2)
    cdm.death(2, D(2026, 11, 20))  # after the extract date: alive at it
    cdm.person(3, born=D(1900, 1, 1))
    cdm.person(4)
    cdm.person(4)  # the same person_id twice
    result = _import(cdm, tmp_path)
    assert _patient(result, 1)["date_of_death"].date() == D(2025, 2, 3)
    assert pd.isna(_patient(result, 2)["date_of_death"])
    assert result.report["persons"]["dropped"] == {
        "person_id appears more than once": 2,
        "aged 115 or more at the extract date": 1,
    }
    assert result.report["source_tables"]["death"]["after_extract_date"] == 1


def test_practice_from_the_site_map_and_lsoa_and_imd(tmp_path):
    cdm = Cdm()
    cdm.rows["care_site"] += [
        {"care_site_id": 7, "care_site_source_value": "B82005"},
        {"care_site_id": 8, "care_site_source_value": "C83001"},
    ]
    cdm.rows["location"] += [
        {"location_id": 1, "location_source_value": "E01000123"},
        {"location_id": 2, "county": "W01000999", "location_source_value": "somewhere"},
        {"location_id": 3, "location_source_value": "SW1A 1AA"},
    ]
    cdm.person(1, care_site=7, location=1)
    cdm.person(2, care_site=8, location=2)
    cdm.person(3, care_site=None, location=3)
    cdm.visit(3, C.OFFICE_VISIT, D(2025, 1, 1))
    cdm.rows["visit_occurrence"][-1]["care_site_id"] = 7  # the latest visit's site
    cdm.person(4, care_site=99)
    sites = tmp_path / "sites.csv"
    sites.write_text(
        "care_site_source_value,practice_code,pcn_code\nB82005,B82005,U11111\n"
        "C83001,C83001,U22222\n"
    )
    imd = tmp_path / "imd.csv"
    imd.write_text("lsoa_code,imd_decile\nE01000123,2\nW01000999,9\n")
    result = _import(cdm, tmp_path, sites=sites, imd=imd, practice_code=None, pcn_code=None)
    got = {p: (_patient(result, p)["practice_code"], _patient(result, p)["pcn_code"],
               _patient(result, p)["lsoa_code"], _patient(result, p)["imd_decile"])
           for p in (1, 2, 3)}  # fmt: skip
    assert got[1] == ("B82005", "U11111", "E01000123", 2)
    assert got[2] == ("C83001", "U22222", "W01000999", 9)
    assert got[3][:3] == ("B82005", "U11111", None) and pd.isna(got[3][3])
    assert result.report["persons"]["dropped"] == {"care site not in the site map": 1}


def test_without_a_site_map_everyone_is_in_the_named_practice_and_the_report_says_so(tmp_path):
    cdm = Cdm()
    cdm.person(1, care_site=3)
    cdm.person(2, care_site=None)
    result = _import(cdm, tmp_path)
    assert set(_table(result, "patients")["practice_code"]) == {"A81001"}
    assert any("no site map" in w for w in result.report["warnings"])
    assert any("no IMD lookup" in w for w in result.report["warnings"])


def test_type1_opt_out_from_the_latest_dissent_record(tmp_path):
    cdm = Cdm()
    dissent = cdm.cid("SNOMED", "827241000000103")
    withdrawn = cdm.concept(2_100_000_001, "Dissent withdrawn", "SNOMED", "827261000000102",
                            domain="Observation")  # fmt: skip
    cdm.person(1)
    cdm.event("observation", 1, dissent, D(2020, 1, 1))
    cdm.person(2)
    cdm.event("observation", 2, dissent, D(2020, 1, 1))
    cdm.event("observation", 2, withdrawn, D(2022, 1, 1))
    cdm.person(3)
    result = _import(cdm, tmp_path)
    assert [_patient(result, p)["type1_opt_out"] for p in (1, 2)] == [True, False]
    assert pd.isna(_patient(result, 3)["type1_opt_out"])


# ---------------------------------------------------------------------------- activity


def test_visit_settings_and_admission_methods(tmp_path):
    cdm = Cdm()
    cdm.person(1)
    day = D(2025, 5, 10)
    visits = {
        "erip": cdm.visit(1, C.EMERGENCY_ROOM_AND_INPATIENT_VISIT, day, D(2025, 5, 14)),
        "hes21": cdm.visit(1, C.INPATIENT_VISIT, day, day, hes="21"),
        "hes11": cdm.visit(1, C.INPATIENT_VISIT, day, day, hes="11"),
        "hes31": cdm.visit(1, C.INPATIENT_VISIT, day, day, hes="31"),
        "hes81": cdm.visit(1, C.INPATIENT_VISIT, day, day, hes="81"),
        "er_place": cdm.visit(1, C.INPATIENT_VISIT, D(2025, 6, 1), admitted_from=8870),
        "hospital": cdm.visit(1, C.INPATIENT_VISIT, D(2025, 6, 2), admitted_from=8717),
        "bare": cdm.visit(1, C.INPATIENT_VISIT, D(2025, 8, 1)),
        "ae": cdm.visit(1, C.EMERGENCY_ROOM_VISIT, D(2025, 9, 1)),
        "after_ae": cdm.visit(1, C.INPATIENT_VISIT, D(2025, 9, 2)),
        "op": cdm.visit(1, C.OUTPATIENT_VISIT, D(2025, 10, 1)),
        "gp": cdm.visit(1, C.OFFICE_VISIT, D(2025, 10, 2)),
        "phone": cdm.visit(1, C.TELEHEALTH, D(2025, 10, 3)),
        "home": cdm.visit(1, C.HOME_VISIT, D(2025, 10, 4)),
        "lab": cdm.visit(1, 32036, D(2025, 10, 5)),  # a laboratory visit: not activity
        "still_in": cdm.visit(1, C.INPATIENT_VISIT, D(2026, 10, 20), D(2026, 11, 3), hes="21"),
    }
    cdm.concept(32036, "Laboratory Visit", "Visit", "LAB", domain="Visit", cls="Visit")
    result = _import(cdm, tmp_path)
    act = _table(result, "activity")
    assert len(act) == len(visits) - 1
    inpatient = act[act["setting"] == "inpatient"].sort_values(["start_date", "admission_method"])
    methods = sorted(inpatient["admission_method"])
    assert methods == sorted(["emergency"] * 5 + ["elective"] * 2 + ["maternity", "transfer"]
                             + ["transfer"])  # fmt: skip
    assert sorted(act["setting"].unique()) == ["ae", "community", "gp", "inpatient", "outpatient"]
    assert (act["setting"] == "gp").sum() == 2
    still = act[act["start_date"] == pd.Timestamp(2026, 10, 20)]
    assert still["end_date"].isna().all()  # still in hospital at the extract date
    erip = act[(act["start_date"] == pd.Timestamp(day)) & act["end_date"].notna()
               & (act["end_date"] == pd.Timestamp(2025, 5, 14))]  # fmt: skip
    assert list(erip["admission_method"]) == ["emergency"]
    assert act.loc[act["setting"] != "inpatient", "end_date"].isna().all()
    rules = result.report["activity"]["admission_method_from"]
    assert rules["emergency (A&E visit that day or the day before)"] == 1
    assert rules["elective (no admission source: elective)"] == 1
    assert rules["emergency (HES admission method code)"] == 2
    unmapped = result.report["source_tables"]["visit_occurrence"]["top_unmapped_concepts"]
    assert [(u["concept_id"], u["concept_name"], u["rows"]) for u in unmapped] == [
        (32036, "Laboratory Visit", 1)
    ]
    assert result.report["contract_tables"]["activity"]["dropped"] == {
        "visit concept not mapped to a setting": 1
    }


def test_primary_diagnosis_and_did_not_attend(tmp_path):
    cdm = Cdm()
    cdm.person(1)
    stay = cdm.visit(1, C.INPATIENT_VISIT, D(2025, 3, 1), D(2025, 3, 4), hes="21")
    cdm.event("condition_occurrence", 1, 257004, D(2025, 3, 1), visit=stay, source_value="J44.1",
              status=C.PRIMARY_DIAGNOSIS)  # fmt: skip
    cdm.event(
        "condition_occurrence", 1, 316139, D(2025, 3, 1), visit=stay, source_value="I50.9"
    )  # fmt: skip  (secondary: not the primary diagnosis)
    ae = cdm.visit(1, C.EMERGENCY_ROOM_VISIT, D(2025, 4, 1))
    cdm.event("condition_occurrence", 1, 316139, D(2025, 4, 1), visit=ae,
              source_value="84114007", status=C.PRIMARY_DIAGNOSIS)  # fmt: skip
    dna = cdm.cid("SNOMED", "281399006")
    missed = cdm.visit(1, C.OUTPATIENT_VISIT, D(2025, 5, 1))
    cdm.event("observation", 1, dna, D(2025, 5, 1), visit=missed)
    cdm.visit(1, C.OFFICE_VISIT, D(2025, 6, 1))
    cdm.visit(1, C.OFFICE_VISIT, D(2025, 6, 1))  # two GP visits that day, one missed:
    cdm.event("observation", 1, dna, D(2025, 7, 1))  # unlinked, on a day with no visit
    cdm.visit(1, C.OFFICE_VISIT, D(2025, 8, 1))
    cdm.event("observation", 1, dna, D(2025, 8, 1))  # unlinked, on a GP visit's day
    result = _import(cdm, tmp_path)
    act = _table(result, "activity").sort_values("start_date")
    assert list(act["primary_diagnosis"].fillna("")) == ["J44.1", "", "", "", "", ""]
    assert result.report["activity"]["primary_diagnosis_not_icd10"] == 1
    assert act.loc[act["start_date"] == pd.Timestamp(2025, 5, 1), "attended"].tolist() == [False]
    assert act.loc[act["start_date"] == pd.Timestamp(2025, 8, 1), "attended"].tolist() == [False]
    assert act.loc[act["start_date"] == pd.Timestamp(2025, 6, 1), "attended"].isna().all()
    assert result.report["activity"]["did_not_attend"] == 2


# ---------------------------------------------------------------------------- clinical codes


def test_conditions_from_the_gp_record_earliest_date_and_hospital_records(tmp_path):
    cdm = Cdm()
    cdm.person(1)
    hf = cdm.cid(*HF)
    cdm.event("condition_occurrence", 1, hf, D(2019, 4, 1))
    cdm.event("condition_occurrence", 1, hf, D(2017, 2, 1))  # the earliest counts
    stay = cdm.visit(1, C.INPATIENT_VISIT, D(2015, 1, 1), hes="21")
    cdm.event("condition_occurrence", 1, cdm.cid(*COPD), D(2015, 1, 1), visit=stay)
    cdm.event("condition_occurrence", 1, hf, D(2026, 11, 2))  # after the extract date
    result = _import(cdm, tmp_path)
    cond = _table(result, "conditions")
    assert cond[["condition", "diagnosed_on"]].values.tolist() == [
        ["HEART_FAILURE", pd.Timestamp(2017, 2, 1)]
    ]
    dropped = result.report["contract_tables"]["conditions"]["dropped"]
    assert dropped == {
        "recorded at a hospital visit (the visit's activity, not the GP record)": 1,
        "dated on or after the extract date": 1,
    }
    included = _import(cdm, tmp_path / "b", hospital_records="include", overwrite=True)
    assert set(_table(included, "conditions")["condition"]) == {"HEART_FAILURE", "COPD"}


def test_icd10_source_values_match_by_prefix_in_conditions_only(tmp_path):
    cdm = Cdm()
    cdm.person(1)
    cdm.event("condition_occurrence", 1, 0, D(2018, 1, 1), source_value="I50.0")
    cdm.event("condition_occurrence", 1, 0, D(2018, 1, 1), source_value="I509")
    cdm.event("procedure_occurrence", 1, 0, D(2018, 1, 1), source_value="I50.1")  # OPCS-shaped
    result = _import(cdm, tmp_path)
    assert _table(result, "conditions")["condition"].tolist() == ["HEART_FAILURE"]
    assert result.report["codes"]["conditions/HEART_FAILURE"]["records"] == 2
    assert result.report["source_tables"]["procedure_occurrence"]["unmapped"] == 1


def test_observations_values_and_codes_that_carry_a_value(tmp_path):
    cdm = Cdm()
    cdm.person(1)
    bmi, cfs = cdm.cid("LOINC", "39156-5"), cdm.cid("SNOMED", "763264000")
    rockwood6 = cdm.concept(2_100_000_010, "Rockwood level 6", "SNOMED", "1129381000000102",
                            domain="Observation")  # fmt: skip
    cdm.event("measurement", 1, bmi, D(2025, 1, 1), value=27.5)
    cdm.event("measurement", 1, bmi, D(2025, 2, 1), value=250.0)  # out of range
    cdm.event("measurement", 1, cfs, D(2025, 3, 1), value=5.5)  # not a whole number
    cdm.event("observation", 1, rockwood6, D(2025, 4, 1))  # the code is the value
    cdm.event("observation", 1, cdm.cid("SNOMED", "105529008"), D(2025, 5, 1), value=3.0)
    result = _import(cdm, tmp_path)
    obs = _table(result, "observations").sort_values("observed_on")
    assert obs[["code", "value"]].values.tolist()[:2] == [["BMI", 27.5], ["CFS", 6.0]]
    lives_alone = obs[obs["code"] == "LIVES_ALONE"]
    assert lives_alone["value"].isna().all()  # only BMI and CFS carry values
    assert result.report["contract_tables"]["observations"]["dropped"] == {
        "BMI value missing or outside 10-90": 1,
        "CFS value missing or not a whole number from 1 to 9": 1,
    }


def test_medicines_ingredients_combinations_and_unmapped_drugs(tmp_path):
    cdm = Cdm()
    cdm.person(1)
    combo = cdm.cid("riskstrat", "riskstrat:co-codamol")
    cdm.drug(1, cdm.cid("RxNorm", "17767"), D(2026, 9, 1))  # amlodipine
    cdm.drug(1, cdm.cid("RxNorm", "161"), D(2026, 9, 2))  # acetaminophen -> paracetamol
    cdm.drug(1, combo, D(2026, 9, 3))
    cdm.drug(1, 0, D(2026, 9, 4))  # no concept
    result = _import(cdm, tmp_path)
    meds = _table(result, "medications").sort_values("issued_on")
    assert meds[["medicine", "drug_class"]].values.tolist() == [
        ["amlodipine", "ANTIHYPERTENSIVE"], ["paracetamol", "OTHER"], ["co-codamol", "OPIOID"],
    ]  # fmt: skip
    drugs = result.report["source_tables"]["drug_exposure"]
    assert (drugs["mapped"], drugs["unmapped"]) == (3, 1)
    assert drugs["top_unmapped_concepts"][0]["concept_name"] == "no matching concept"


def test_everything_after_the_extract_date_is_left_out_and_counted(tmp_path):
    cdm = Cdm()
    cdm.person(1, period=(D(2000, 1, 1), D(2026, 12, 31)))
    cdm.visit(1, C.OFFICE_VISIT, D(2026, 10, 31))
    cdm.visit(1, C.OFFICE_VISIT, D(2026, 11, 1))
    cdm.drug(1, cdm.cid("RxNorm", "17767"), D(2026, 11, 5))
    result = _import(cdm, tmp_path)
    assert len(_table(result, "activity")) == 1 and len(_table(result, "medications")) == 0
    tables = result.report["contract_tables"]
    assert tables["activity"]["dropped"] == {"dated on or after the extract date": 1}
    assert tables["medications"]["dropped"] == {"dated on or after the extract date": 1}
    assert _patient(result, 1)["registered_to"] is None or pd.isna(
        _patient(result, 1)["registered_to"]
    )


def test_default_extract_date_is_the_day_after_the_last_observation_period(tmp_path):
    cdm = Cdm()
    cdm.person(1, period=(D(2000, 1, 1), D(2025, 3, 31)))
    result = _import(cdm, tmp_path, extract_date=None)
    assert result.extract_date == D(2025, 4, 1)
    assert "latest observation period" in result.report["extract"]["extract_date_from"]


# ---------------------------------------------------------------------------- the report


def test_the_report_accounts_for_every_row(tmp_path):
    cdm = Cdm()
    for pid in range(1, 6):
        cdm.person(pid)
        cdm.visit(pid, C.OFFICE_VISIT, D(2025, 1, pid))
        cdm.visit(pid, 32036, D(2025, 2, pid))
        cdm.drug(pid, cdm.cid("RxNorm", "17767"), D(2025, 3, pid))
        cdm.event("condition_occurrence", pid, cdm.cid(*HF), D(2020, 1, pid))
        cdm.event("observation", pid, 4_000_000, D(2021, 1, pid))  # an unlisted concept
    cdm.person(9, born=None)
    result = _import(cdm, tmp_path)
    for table, info in result.report["source_tables"].items():
        if "mapped" in info:
            assert info["rows_read"] == info["mapped"] + info["unmapped"], table
    for table, info in result.report["contract_tables"].items():
        left = sum(info["dropped"].values())
        if table == "conditions":
            assert info["written"] <= info["candidates"] - left
        else:
            assert info["written"] == info["candidates"] - left, table
    md = (result.out_dir / "mapping-report.md").read_text()
    data = json.loads((result.out_dir / "mapping-report.json").read_text())
    assert data["persons"]["dropped"] == {"no usable date of birth": 1}
    assert "no usable date of birth" in md and "| observation |" in md
    assert "pseudonym" in md


def test_the_report_holds_no_identifiers_or_source_values(tmp_path):
    cdm = Cdm()
    cdm.person(424242)
    cdm.event("condition_occurrence", 424242, 0, D(2018, 1, 1), source_value="free text 987654")
    result = _import(cdm, tmp_path)
    for name in ("mapping-report.md", "mapping-report.json"):
        text = (result.out_dir / name).read_text()
        assert "424242" not in text and "987654" not in text


def test_the_extract_is_pseudonymous_and_validates(tmp_path):
    cdm = Cdm()
    cdm.person(1)
    cdm.person(2)
    result = _import(cdm, tmp_path)
    manifest = json.loads((result.out_dir / "manifest.json").read_text())
    assert manifest["identifier_kind"] == "pseudonym" and manifest["contract_version"] == 2
    assert manifest["row_counts"]["patients"] == 2
    codelists = manifest["provenance"]["codelists"]
    assert len(codelists["digest"]) == 64 and codelists["versions"]["conditions/AF"] == "1.0.0"
    with validate_extract(result.out_dir) as ex:
        assert ex.summary.rows_rejected == dict.fromkeys(ex.summary.rows_read, 0)
        assert ex.summary.manifest.identifier_kind == "pseudonym"


# ---------------------------------------------------------------------------- sources


def _sha(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _small_cdm() -> Cdm:
    cdm = Cdm()
    for pid in (1, 2, 3):
        cdm.person(pid, race=cdm.cid("SNOMED", "494131000000105"))
        stay = cdm.visit(pid, C.INPATIENT_VISIT, D(2025, 1, pid), D(2025, 1, pid + 3), hes="21")
        cdm.event("condition_occurrence", pid, 257004, D(2025, 1, pid), visit=stay,
                  source_value="J44.1", status=C.PRIMARY_DIAGNOSIS)  # fmt: skip
        cdm.event("condition_occurrence", pid, cdm.cid(*COPD), D(2010, 1, pid))
        cdm.drug(pid, cdm.cid("riskstrat", "riskstrat:co-codamol"), D(2026, 9, pid))
        cdm.event("measurement", pid, cdm.cid("LOINC", "39156-5"), D(2024, 1, pid), value=30.0)
    return cdm


def test_the_source_is_only_read(tmp_path):
    cdm = _small_cdm()
    db = cdm.write_duckdb(tmp_path / "cdm.duckdb")
    folder = cdm.write_csv(tmp_path / "csv")
    before = (hashlib.sha256(db.read_bytes()).hexdigest(), _sha(folder))
    import_omop(str(db), tmp_path / "a", practice_code="A81001", pcn_code="U12345",
                scratch_dir=tmp_path / "s")  # fmt: skip
    import_omop(str(folder), tmp_path / "b", practice_code="A81001", pcn_code="U12345",
                scratch_dir=tmp_path / "s")  # fmt: skip
    assert (hashlib.sha256(db.read_bytes()).hexdigest(), _sha(folder)) == before
    assert not list((tmp_path / "s").glob("*"))  # no scratch left behind


def test_eunomia_csv_layout_and_tab_separated_vocabulary_read_as_duckdb(tmp_path):
    cdm = _small_cdm()
    db = cdm.write_duckdb(tmp_path / "cdm.duckdb")
    folder = cdm.write_csv(tmp_path / "csv", tab_vocabulary=True)
    assert (folder / "PERSON.csv").is_file() and (folder / "CONCEPT.csv").is_file()
    kw = {"practice_code": "A81001", "pcn_code": "U12345", "scratch_dir": tmp_path / "s"}
    a = import_omop(str(db), tmp_path / "a", **kw)
    b = import_omop(str(folder), tmp_path / "b", **kw)
    assert extract_rows(a.out_dir) == extract_rows(b.out_dir)
    assert b.report["source"]["kind"] == "folder"


def test_a_folder_of_parquet_tables_reads_as_the_duckdb_file(tmp_path):
    cdm = _small_cdm()
    kw = {"practice_code": "A81001", "pcn_code": "U12345", "scratch_dir": tmp_path / "s"}
    a = import_omop(str(cdm.write_duckdb(tmp_path / "cdm.duckdb")), tmp_path / "a", **kw)
    b = import_omop(str(cdm.write_parquet(tmp_path / "pq")), tmp_path / "b", **kw)
    assert extract_rows(a.out_dir) == extract_rows(b.out_dir)
    assert len(extract_rows(b.out_dir)["medications"]) == 3


def test_cdm_53_column_names_read_as_54(tmp_path):
    cdm = _small_cdm()
    a = import_omop(
        str(cdm.write_duckdb(tmp_path / "54.duckdb")),
        tmp_path / "a",
        practice_code="A81001",
        pcn_code="U12345",
        scratch_dir=tmp_path / "s",
    )
    b = import_omop(str(cdm.write_duckdb(tmp_path / "53.duckdb", version="5.3")), tmp_path / "b",
                    practice_code="A81001", pcn_code="U12345", scratch_dir=tmp_path / "s")  # fmt: skip
    assert extract_rows(a.out_dir) == extract_rows(b.out_dir)
    assert (a.report["source"]["cdm_version"], b.report["source"]["cdm_version"]) == ("5.4", "5.3")
    assert any(r == "emergency (HES admission method code)" for r in
               b.report["activity"]["admission_method_from"])  # fmt: skip
    c = import_omop(str(tmp_path / "53.duckdb"), tmp_path / "c", cdm_version="5.4",
                    practice_code="A81001", pcn_code="U12345", scratch_dir=tmp_path / "s")  # fmt: skip
    assert extract_rows(c.out_dir) == extract_rows(a.out_dir)
    assert any("other version's column name" in w for w in c.report["warnings"])


def test_empty_concept_ancestor_uses_relationships_and_says_so(tmp_path):
    cdm = _small_cdm()
    # A descendant of COPD known only through 'Is a', and the combination's ingredients
    # only through 'RxNorm has ing'.
    child = cdm.concept(2_100_000_020, "Chronic obstructive bronchitis", "SNOMED", "63480004")
    cdm.relationship(child, cdm.cid(*COPD), "Is a")
    cdm.person(4)
    cdm.event("condition_occurrence", 4, child, D(2011, 1, 1))
    with_ancestor = [dict(r) for r in cdm.rows["concept_ancestor"]]
    cdm.ancestor(cdm.cid(*COPD), child)
    a = import_omop(str(cdm.write_duckdb(tmp_path / "a.duckdb")), tmp_path / "a",
                    practice_code="A81001", pcn_code="U12345", scratch_dir=tmp_path / "s")  # fmt: skip
    cdm.rows["concept_ancestor"] = []
    b = import_omop(str(cdm.write_duckdb(tmp_path / "b.duckdb")), tmp_path / "b",
                    practice_code="A81001", pcn_code="U12345", scratch_dir=tmp_path / "s")  # fmt: skip
    assert extract_rows(a.out_dir) == extract_rows(b.out_dir)
    assert "COPD" in {r[1] for r in extract_rows(b.out_dir)["conditions"] if r[0] == "4"}
    assert b.report["vocabulary"]["descendants_from"] == "concept_relationship"
    assert any("concept_ancestor is empty" in w for w in b.report["warnings"])
    # with neither table, only listed codes match: the child concept is no longer COPD
    cdm.rows["concept_relationship"] = []
    c = import_omop(str(cdm.write_duckdb(tmp_path / "c.duckdb")), tmp_path / "c",
                    practice_code="A81001", pcn_code="U12345", scratch_dir=tmp_path / "s")  # fmt: skip
    assert "4" not in {r[0] for r in extract_rows(c.out_dir)["conditions"]}
    assert c.report["vocabulary"]["descendants_from"] == "listed codes only"
    assert with_ancestor  # the base CDM had ancestors


@pytest.mark.postgres
def test_a_postgresql_schema_imports_as_the_duckdb_file_does(tmp_path):
    import uuid

    from tests.support.postgres import SERVER, connect_or_skip

    pg = connect_or_skip()
    schema = f"omop_{uuid.uuid4().hex[:10]}"
    pg.execute(f'CREATE SCHEMA "{schema}"')
    try:
        cdm = _small_cdm()
        cdm.to_postgres(pg, schema, version="5.3")
        user_host, db = SERVER.rsplit("/", 1)
        url = f"postgresql://{user_host}/{db}?schema={schema}"
        kw = {"practice_code": "A81001", "pcn_code": "U12345", "scratch_dir": tmp_path / "s"}
        a = import_omop(url, tmp_path / "pg", **kw)
        b = import_omop(str(cdm.write_duckdb(tmp_path / "cdm.duckdb")), tmp_path / "dd", **kw)
        assert extract_rows(a.out_dir) == extract_rows(b.out_dir)
        assert a.report["source"]["kind"] == "postgresql"
        assert a.report["source"]["cdm_version"] == "5.3"
        assert "@" not in a.report["source"]["description"]  # no user or password
        assert not list((tmp_path / "s").glob("*"))  # the copies are deleted
        rows = pg.execute(f'SELECT count(*) FROM "{schema}".person').fetchone()
        assert rows == (3,)
    finally:
        pg.execute(f'DROP SCHEMA "{schema}" CASCADE')
        pg.close()


# ---------------------------------------------------------------------------- bad input


def test_bad_inputs_stop_with_file_line_and_column(tmp_path):
    cdm = _small_cdm()
    db = cdm.write_duckdb(tmp_path / "cdm.duckdb")
    sites = tmp_path / "sites.csv"
    sites.write_text("care_site_id,practice_code,pcn_code\n1,A81001,U12345\n2,X1,U12345\n")
    with pytest.raises(ExtractError) as info:
        import_omop(str(db), tmp_path / "x", sites=sites, scratch_dir=tmp_path / "s")
    assert (info.value.line, info.value.column) == (3, "practice_code")
    imd = tmp_path / "imd.csv"
    imd.write_text("lsoa_code,imd_decile\nE01000001,11\n")
    with pytest.raises(ExtractError) as info:
        import_omop(str(db), tmp_path / "x", imd=imd, practice_code="A81001", pcn_code="U12345",
                    scratch_dir=tmp_path / "s")  # fmt: skip
    assert (info.value.line, info.value.column) == (2, "imd_decile") and "imd.csv" in str(
        info.value
    )
    with pytest.raises(ExtractError, match=r"--sites MAP\.csv"):
        import_omop(str(db), tmp_path / "x", scratch_dir=tmp_path / "s")
    with pytest.raises(ExtractError, match="practice code must look like A81001"):
        import_omop(str(db), tmp_path / "x", practice_code="nope", pcn_code="U12345")
    with pytest.raises(ExtractError, match="not found"):
        import_omop(str(tmp_path / "nowhere"), tmp_path / "x", practice_code="A81001",
                    pcn_code="U12345")  # fmt: skip
    assert not (tmp_path / "x").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".x.tmp")]


def test_a_cdm_without_a_required_table_or_column_is_named(tmp_path):
    folder = _small_cdm().write_csv(tmp_path / "csv")
    kw = {"practice_code": "A81001", "pcn_code": "U12345", "scratch_dir": tmp_path / "s"}
    (folder / "OBSERVATION_PERIOD.csv").unlink()
    with pytest.raises(ExtractError, match="no observation_period table"):
        import_omop(str(folder), tmp_path / "x", **kw)
    folder = _small_cdm().write_csv(tmp_path / "csv2")
    text = (folder / "PERSON.csv").read_text().replace("year_of_birth", "birth_year")
    (folder / "PERSON.csv").write_text(text)
    with pytest.raises(ExtractError) as info:
        import_omop(str(folder), tmp_path / "x", **kw)
    assert info.value.column == "year_of_birth"


def test_a_broken_csv_table_in_the_cdm_stops_with_its_line(tmp_path):
    folder = _small_cdm().write_csv(tmp_path / "csv")
    lines = (folder / "DRUG_EXPOSURE.csv").read_text().splitlines()
    lines[2] = lines[2].replace(",", ',"', 1)
    (folder / "DRUG_EXPOSURE.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ExtractError) as info:
        import_omop(str(folder), tmp_path / "x", practice_code="A81001", pcn_code="U12345",
                    scratch_dir=tmp_path / "s")  # fmt: skip
    assert "DRUG_EXPOSURE.csv" in str(info.value) and info.value.line == 3


def test_an_existing_extract_is_kept_unless_overwritten_and_a_failure_leaves_it(tmp_path):
    cdm = _small_cdm()
    db = cdm.write_duckdb(tmp_path / "cdm.duckdb")
    kw = {"practice_code": "A81001", "pcn_code": "U12345", "scratch_dir": tmp_path / "s"}
    first = import_omop(str(db), tmp_path / "x", **kw)
    before = _sha(first.out_dir)
    with pytest.raises(FileExistsError):
        import_omop(str(db), tmp_path / "x", **kw)
    bad = tmp_path / "imd.csv"
    bad.write_text("lsoa_code,imd_decile\nE01000001,0\n")
    with pytest.raises(ExtractError):
        import_omop(str(db), tmp_path / "x", imd=bad, overwrite=True, **kw)
    assert _sha(first.out_dir) == before
