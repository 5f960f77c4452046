"""Tests of the synthetic population generator (riskstrat.synth)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from riskstrat.data import contract
from riskstrat.data.extract import validate_extract
from riskstrat.nhs_number import is_valid_nhs_number
from riskstrat.synth import (
    GenerationSummary,
    Simulation,
    emergency_admission_hazard,
    generate_extract,
    hazard_inputs,
    hazard_inputs_at,
    simulate,
)
from riskstrat.synth import generator as generator_module
from riskstrat.synth import simulation as simulation_module
from riskstrat.synth.catalogue import (
    AE_DIAGNOSES,
    CONDITION_SPECS,
    ELECTIVE_DIAGNOSES,
    EMERGENCY_DIAGNOSES,
    MATERNITY_DIAGNOSES,
    REGIMEN_GROUPS,
)
from riskstrat.synth.hazards import HazardInputs

EXTRACT_DATE = dt.date(2025, 4, 1)
N = 2000
MONTHS = 24
SEED = 11
ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _generate(out: Path, *, seed: int = SEED, fmt: str = "csv", **kw: object) -> GenerationSummary:
    args: dict[str, object] = {"n_patients": N, "months": MONTHS, "extract_date": EXTRACT_DATE}
    args.update(kw)
    return generate_extract(out, seed=seed, fmt=fmt, **args)  # type: ignore[arg-type]


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _read_csv_tables(folder: Path) -> dict[str, pd.DataFrame]:
    """Read every table as raw strings (empty field -> empty string)."""
    return {
        name: pd.read_csv(folder / f"{name}.csv", dtype=str, keep_default_na=False)
        for name in contract.TABLE_ORDER
    }


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(n_patients=N, seed=SEED, months=MONTHS, extract_date=EXTRACT_DATE)


@pytest.fixture(scope="module")
def csv_extract(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("csv") / "extract"
    _generate(out, fmt="csv")
    return out


@pytest.fixture(scope="module")
def parquet_extract(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("parquet") / "extract"
    _generate(out, fmt="parquet")
    return out


# ---------------------------------------------------------------------------- contract rules


def _dates(s: pd.Series) -> pd.Series:
    return pd.to_datetime(s.where(s != ""), format="%Y-%m-%d")


def assert_contract_rows(tables: dict[str, pd.DataFrame], extract_date: dt.date) -> None:
    """Every rule of the contract that a row can break, checked on raw CSV strings."""
    e = pd.Timestamp(extract_date)
    pat = tables["patients"]
    # Raw shapes first: ISO dates, lower-case booleans, nothing else.
    for name, table in tables.items():
        for col in contract.TABLES[name].columns:
            values = table[col.name]
            present = values[values != ""]
            if col.required:
                assert (values != "").all(), f"{name}.{col.name} has missing values"
            if col.kind == "date":
                assert present.str.fullmatch(ISO_DATE.pattern).all(), f"{name}.{col.name}"
            if col.kind == "boolean":
                assert present.isin(["true", "false"]).all(), f"{name}.{col.name}"
            if col.kind == "code":
                assert col.codes is not None
                assert present.isin(col.codes).all(), f"{name}.{col.name} outside vocabulary"
            if col.kind == "string" and col.pattern:
                assert present.str.fullmatch(col.pattern).all(), f"{name}.{col.name} shape"

    # patients
    assert pat.nhs_number.is_unique
    assert pat.nhs_number.str.startswith("999").all()
    assert all(is_valid_nhs_number(x) for x in pat.nhs_number)
    dob = _dates(pat.date_of_birth)
    assert (dob <= e).all()
    assert (dob > e - pd.DateOffset(years=115)).all()
    imd = pat.imd_decile[pat.imd_decile != ""]
    assert imd.str.fullmatch(r"[0-9]+").all()
    assert imd.astype(int).between(1, 10).all()
    reg_from, reg_to = _dates(pat.registered_from), _dates(pat.registered_to)
    assert (reg_to.isna() | (reg_to >= reg_from)).all()
    death = _dates(pat.date_of_death)
    assert (death.isna() | ((death >= dob) & (death < e))).all()

    by_nhs = pat.set_index("nhs_number")

    def child_dates(table: pd.DataFrame, col: str) -> tuple[pd.Series, pd.Series]:
        assert table.nhs_number.isin(by_nhs.index).all(), "unknown patient"
        d = _dates(table[col])
        born = _dates(by_nhs.date_of_birth.reindex(table.nhs_number)).to_numpy()
        assert (d < e).all(), f"{col} not before the extract date"
        return d, pd.Series(born, index=table.index)

    # activity
    act = tables["activity"]
    start, born = child_dates(act, "start_date")
    assert (start >= born).all()
    inpatient = act.setting == "inpatient"
    assert (act.admission_method[inpatient] != "").all()
    assert (act.admission_method[~inpatient] == "").all()
    end = _dates(act.end_date)
    assert (end[inpatient].isna() | (end[inpatient] >= start[inpatient])).all()
    assert (end[~inpatient].isna() | (end[~inpatient] == start[~inpatient])).all()

    # conditions, medications, observations
    on, born = child_dates(tables["conditions"], "diagnosed_on")
    assert (on >= born).all()
    med = tables["medications"]
    child_dates(med, "issued_on")
    assert (med.medicine == med.medicine.str.lower()).all()
    assert (med.medicine.str.strip() != "").all()
    obs = tables["observations"]
    child_dates(obs, "observed_on")
    measured = obs.code.isin(contract.MEASUREMENT_CODES)
    assert (obs.value[measured] != "").all()
    assert (obs.value[~measured] == "").all()
    value = pd.to_numeric(obs.value.where(measured))
    assert value[obs.code == "BMI"].between(10, 90).all()
    cfs = value[obs.code == "CFS"]
    assert cfs.between(1, 9).all() and (cfs == cfs.round()).all()


def test_csv_extract_satisfies_every_contract_rule(csv_extract: Path) -> None:
    assert_contract_rows(_read_csv_tables(csv_extract), EXTRACT_DATE)


def test_mid_month_extract_date_and_short_history(tmp_path: Path) -> None:
    extract_date = dt.date(2024, 2, 17)
    s = generate_extract(
        tmp_path / "x", n_patients=300, seed=3, months=3, extract_date=extract_date
    )
    assert s.history_start == dt.date(2023, 11, 1)
    assert_contract_rows(_read_csv_tables(tmp_path / "x"), extract_date)


@pytest.mark.parametrize("n", [1, 7])
def test_tiny_populations(tmp_path: Path, n: int) -> None:
    s = generate_extract(tmp_path / "x", n_patients=n, seed=5, months=2, extract_date=EXTRACT_DATE)
    assert s.rows["patients"] == n
    assert_contract_rows(_read_csv_tables(tmp_path / "x"), EXTRACT_DATE)


def test_events_fall_inside_registration_and_life(sim: Simulation) -> None:
    pat = sim.patients.set_index("nhs_number")
    for name, col in [
        ("activity", "start_date"),
        ("medications", "issued_on"),
        ("observations", "observed_on"),
    ]:
        t = sim.tables[name]
        nhs = t.nhs_number.astype(str)
        d = t[col].to_numpy()
        reg_from = pat.registered_from.reindex(nhs).to_numpy()
        reg_to = pat.registered_to.reindex(nhs).to_numpy()
        death = pat.date_of_death.reindex(nhs).to_numpy()
        hs = np.datetime64(sim.history_start)
        assert (d >= reg_from).all() and (d >= hs).all(), name
        # SUS-linked rows (emergency admissions and A&E) run on after deregistration.
        linked = np.zeros(len(t), dtype=bool)
        if name == "activity":
            em_or_ae = ((t.setting == "inpatient") & (t.admission_method == "emergency")) | (
                t.setting == "ae"
            )
            linked = em_or_ae.to_numpy()
        assert (pd.isna(reg_to) | (d < reg_to) | linked).all(), name
        assert (pd.isna(death) | (d <= death)).all(), name
    act = sim.activity
    em = act[(act.setting == "inpatient") & (act.admission_method == "emergency")]
    left = pat.registered_to.reindex(em.nhs_number.astype(str)).to_numpy()
    assert (em.start_date.to_numpy() >= left).any()  # some after leaving


def test_generated_extracts_validate_with_zero_rejects(
    csv_extract: Path, parquet_extract: Path, tmp_path: Path
) -> None:
    for folder in (csv_extract, parquet_extract):
        rejects = tmp_path / f"{folder.parent.name}-rejects.csv"
        with validate_extract(folder, max_reject_share=0.0, rejects_path=rejects) as ex:
            summary = ex.summary
        assert summary.rows_rejected == dict.fromkeys(contract.TABLE_ORDER, 0)
        assert summary.rule_counts == []
        assert summary.warnings == []
        assert summary.rows_read["patients"] == N


# ---------------------------------------------------------------------------- files


def test_files_and_columns_csv(csv_extract: Path) -> None:
    names = sorted(p.name for p in csv_extract.iterdir())
    assert names == sorted(["manifest.json", *(f"{t}.csv" for t in contract.TABLE_ORDER)])
    manifest = json.loads((csv_extract / "manifest.json").read_text())
    rows = {
        t: len((csv_extract / f"{t}.csv").read_text().splitlines()) - 1
        for t in contract.TABLE_ORDER
    }
    assert manifest == {
        "contract_version": 2,
        "extract_date": "2025-04-01",
        "source": f"riskstrat synthetic generator, seed {SEED}, {N} patients",
        "identifier_kind": "nhs_number",
        "row_counts": rows,
    }
    for t in contract.TABLE_ORDER:
        header = (csv_extract / f"{t}.csv").read_text().splitlines()[0]
        assert header.split(",") == [c.name for c in contract.TABLES[t].columns]
        assert len((csv_extract / f"{t}.csv").read_text().splitlines()) > 1


def test_files_and_types_parquet(parquet_extract: Path, csv_extract: Path) -> None:
    names = sorted(p.name for p in parquet_extract.iterdir())
    assert names == sorted(["manifest.json", *(f"{t}.parquet" for t in contract.TABLE_ORDER)])
    expected = {
        "nhs_number": pa.string(),
        "string": pa.string(),
        "code": pa.string(),
        "date": pa.date32(),
        "boolean": pa.bool_(),
        "number": pa.float64(),
    }
    for t in contract.TABLE_ORDER:
        table = pq.read_table(parquet_extract / f"{t}.parquet")
        assert table.column_names == [c.name for c in contract.TABLES[t].columns]
        for col in contract.TABLES[t].columns:
            typ = table.schema.field(col.name).type
            if col.kind == "integer":
                assert pa.types.is_integer(typ), (t, col.name)
            else:
                assert typ == expected[col.kind], (t, col.name, typ)
        # Same content as the CSV of the same seed.
        csv_rows = len((csv_extract / f"{t}.csv").read_text().splitlines()) - 1
        assert table.num_rows == csv_rows


def test_nhs_numbers_are_strings_with_leading_digits_kept(parquet_extract: Path) -> None:
    pat = pq.read_table(parquet_extract / "patients.parquet").to_pandas()
    assert pat.nhs_number.map(type).eq(str).all()
    assert pat.nhs_number.str.fullmatch(r"999[0-9]{7}").all()


def test_same_seed_gives_identical_files(
    tmp_path: Path, csv_extract: Path, parquet_extract: Path
) -> None:
    _generate(tmp_path / "a", fmt="csv")
    _generate(tmp_path / "b", fmt="parquet")
    assert _digests(tmp_path / "a") == _digests(csv_extract)
    assert _digests(tmp_path / "b") == _digests(parquet_extract)


@pytest.mark.slow  # generates in subprocesses
def test_output_does_not_depend_on_hash_seed_or_process(tmp_path: Path) -> None:
    code = (
        "import datetime as dt, sys\n"
        "from pathlib import Path\n"
        "from riskstrat.synth import generate_extract\n"
        "generate_extract(Path(sys.argv[1]), n_patients=300, seed=5, months=3,\n"
        "                 extract_date=dt.date(2025, 4, 1), fmt=sys.argv[2])\n"
    )
    for fmt in ("csv", "parquet"):
        for hash_seed in ("1", "12345"):
            env = {**os.environ, "PYTHONHASHSEED": hash_seed}
            out = tmp_path / f"{fmt}-{hash_seed}"
            subprocess.run([sys.executable, "-c", code, str(out), fmt], check=True, env=env)
        in_process = tmp_path / f"{fmt}-here"
        generate_extract(
            in_process, n_patients=300, seed=5, months=3, extract_date=dt.date(2025, 4, 1), fmt=fmt
        )
        assert _digests(tmp_path / f"{fmt}-1") == _digests(tmp_path / f"{fmt}-12345")
        assert _digests(tmp_path / f"{fmt}-1") == _digests(in_process)


def test_different_seed_gives_different_files(tmp_path: Path, csv_extract: Path) -> None:
    _generate(tmp_path / "c", seed=SEED + 1)
    a, b = _digests(csv_extract), _digests(tmp_path / "c")
    for t in contract.TABLE_ORDER:
        assert a[f"{t}.csv"] != b[f"{t}.csv"]


def test_rows_sorted_by_nhs_number_then_date(csv_extract: Path) -> None:
    tables = _read_csv_tables(csv_extract)
    for t, col in [
        ("patients", None),
        ("activity", "start_date"),
        ("conditions", "diagnosed_on"),
        ("medications", "issued_on"),
        ("observations", "observed_on"),
    ]:
        keys = [tables[t].nhs_number] + ([tables[t][col]] if col else [])
        frame = pd.concat(keys, axis=1)
        assert frame.equals(frame.sort_values(list(frame.columns)).reset_index(drop=True)), t


# ---------------------------------------------------------------------------- atomic writes


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith("."))


def test_no_temporary_folder_left_behind(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "extract"
    summary = _generate(out, n_patients=50, months=2)
    assert out.is_dir() and _siblings(out) == []
    assert summary.out_dir == out


def test_existing_non_empty_folder_refused_then_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "extract"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError):
        _generate(out, n_patients=50, months=2)
    assert (out / "keep.txt").read_text() == "precious"
    assert _siblings(out) == []
    _generate(out, n_patients=50, months=2, overwrite=True)
    assert not (out / "keep.txt").exists()
    assert (out / "patients.csv").exists()
    assert _siblings(out) == []


def test_existing_empty_folder_is_used(tmp_path: Path) -> None:
    out = tmp_path / "extract"
    out.mkdir()
    _generate(out, n_patients=50, months=2)
    assert (out / "manifest.json").exists()


def test_failure_removes_temporary_folder_and_keeps_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "extract"
    _generate(out, n_patients=50, months=2)
    before = _digests(out)

    original = generator_module._ExtractWriter.write_block

    def boom(self: object, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        raise RuntimeError("disk full")

    monkeypatch.setattr(generator_module._ExtractWriter, "write_block", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        _generate(out, n_patients=50, months=2, overwrite=True, seed=99)
    assert _digests(out) == before
    assert _siblings(out) == []
    # The same holds with the oracle: neither file is left behind or replaced.
    oracle = tmp_path / "extract.oracle.parquet"
    with pytest.raises(RuntimeError, match="disk full"):
        _generate(out, n_patients=50, months=14, overwrite=True, seed=99, oracle=True)
    assert _digests(out) == before and not oracle.exists()
    assert _siblings(out) == []


def test_summary_and_progress(tmp_path: Path) -> None:
    seen: list[tuple[str, float]] = []
    s = _generate(
        tmp_path / "x",
        n_patients=200,
        months=3,
        progress=lambda stage, frac: seen.append((stage, frac)),
    )
    assert s.n_patients == 200 and s.extract_date == EXTRACT_DATE
    assert s.history_start == dt.date(2025, 1, 1)
    assert set(s.rows) == set(contract.TABLE_ORDER) and s.rows["patients"] == 200
    assert s.seconds > 0
    stages = [st for st, _ in seen]
    assert {"simulate", "write"} <= set(stages)
    assert all(0.0 <= f <= 1.0 for _, f in seen)
    assert seen[-1] == ("write", 1.0)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        _generate(tmp_path / "x", fmt="xlsx")
    with pytest.raises(ValueError):
        simulate(n_patients=0, seed=1, extract_date=EXTRACT_DATE)
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------- population


def test_practices_pcns_and_deprivation(sim: Simulation) -> None:
    pat = sim.patients
    assert pat.practice_code.nunique() >= 4
    assert pat.pcn_code.nunique() >= 2
    # Each practice belongs to exactly one PCN.
    assert (pat.groupby("practice_code").pcn_code.nunique() == 1).all()
    # Deprivation is tied to the practice: practice means differ a lot, few are missing.
    assert 0.0 < pat.imd_decile.isna().mean() < 0.1
    means = pat.groupby("practice_code").imd_decile.mean()
    assert means.max() - means.min() > 1.5
    # An LSOA belongs to one practice and always has the same decile.
    lsoa = pat.dropna(subset=["lsoa_code", "imd_decile"])
    assert (lsoa.groupby("lsoa_code").imd_decile.nunique() == 1).all()
    assert (lsoa.groupby("lsoa_code").practice_code.nunique() == 1).all()


def test_demography_is_plausible(sim: Simulation) -> None:
    pat = sim.patients
    e = pd.Timestamp(EXTRACT_DATE)
    hs = pd.Timestamp(sim.history_start)
    age = (e - pat.date_of_birth).dt.days / 365.25
    assert 0.15 < (age >= 65).mean() < 0.30
    assert (age < 18).mean() > 0.15
    assert set(pat.sex.unique()) <= {"F", "M", "U"}
    assert 0.45 < (pat.sex == "F").mean() < 0.56
    eth = pat.ethnic_category.fillna("")
    assert 0.04 < eth.isin(["", "Z"]).mean() < 0.12
    assert 0.6 < eth.isin(["A", "B", "C"]).mean() < 0.95
    assert 0.01 < pat.type1_opt_out.fillna(False).mean() < 0.06
    before = (pat.registered_from < hs).mean()
    assert 0.75 < before < 0.97
    assert pat.registered_to.notna().any() and pat.date_of_death.notna().any()
    assert (pat.registered_from >= hs).any()


def test_conditions_medicines_and_observations_are_plausible(sim: Simulation) -> None:
    cond = sim.conditions
    counts = cond.condition.value_counts()
    assert counts.index[0] == "HYPERTENSION"
    hs = pd.Timestamp(sim.history_start)
    assert (cond.diagnosed_on < hs).mean() > 0.5  # most diagnosed before the history
    assert (cond.diagnosed_on >= hs).any()  # some during it
    assert not cond.duplicated(["nhs_number", "condition"]).any()
    med = sim.medications
    # Every medicine has one drug class.
    assert (med.groupby("medicine", observed=True).drug_class.nunique() == 1).all()
    assert len(med) / N < 150
    obs_codes = set(sim.observations.code.astype(str))
    for code in ["LIVES_ALONE", "FALL", "BMI", "CFS", "MEDICATION_REVIEW", "SMOKER"]:
        assert code in obs_codes


def test_oldest_and_frailest_have_polypharmacy() -> None:
    s = simulate(n_patients=6000, seed=2, months=6, extract_date=EXTRACT_DATE)
    e = pd.Timestamp(EXTRACT_DATE)
    recent = s.medications[s.medications.issued_on >= e - pd.Timedelta(days=90)]
    distinct = recent.groupby("nhs_number", observed=True).medicine.nunique()
    pat = s.patients
    old = pat[(e - pat.date_of_birth).dt.days / 365.25 >= 80].nhs_number
    n_med = distinct.reindex(old).fillna(0)
    assert n_med.mean() > 3.5
    assert (n_med >= 10).mean() > 0.03


def test_emergency_admissions_rise_with_age_and_conditions(sim: Simulation) -> None:
    e = pd.Timestamp(EXTRACT_DATE)
    d0 = e - pd.DateOffset(years=1)
    pat = sim.patients
    eligible = pat[
        (pat.registered_from <= d0)
        & (pat.registered_to.isna() | (pat.registered_to > d0))
        & (pat.date_of_death.isna() | (pat.date_of_death >= d0))
    ].copy()
    act = sim.activity
    em = act[(act.setting == "inpatient") & (act.admission_method == "emergency")]
    admitted = set(em[em.start_date >= d0].nhs_number.astype(str))
    eligible["admitted"] = eligible.nhs_number.isin(admitted)
    age = (d0 - eligible.date_of_birth).dt.days / 365.25
    band = pd.cut(age, [0, 45, 65, 75, 200], right=False)
    by_age = eligible.groupby(band, observed=True).admitted.mean()
    assert list(by_age) == sorted(by_age), by_age
    assert by_age.iloc[0] < 0.06 and by_age.iloc[-1] > 0.12
    cond = sim.conditions[sim.conditions.diagnosed_on < d0]
    n_cond = cond.groupby("nhs_number", observed=True).size()
    k = eligible.nhs_number.map(n_cond).fillna(0)
    groups = eligible.groupby(pd.cut(k, [0, 1, 3, 100], right=False), observed=True)
    by_cond = groups.admitted.mean()
    assert list(by_cond) == sorted(by_cond), by_cond
    # Most emergency admissions come through A&E on the same day.
    ae = act[act.setting == "ae"][["nhs_number", "start_date"]].drop_duplicates()
    via = em[["nhs_number", "start_date"]].merge(ae, how="left", indicator=True)
    assert (via["_merge"] == "both").mean() > 0.6


def test_ninety_day_emergency_rate_is_plausible() -> None:
    s = simulate(n_patients=6000, seed=4, months=15, extract_date=EXTRACT_DATE)
    pat = s.patients
    act = s.activity
    em = act[(act.setting == "inpatient") & (act.admission_method == "emergency")]
    rates = []
    for months_back in (4, 7, 10):
        d = pd.Timestamp(EXTRACT_DATE) - pd.DateOffset(months=months_back)
        ok = (
            (pat.registered_from <= d)
            & (pat.registered_to.isna() | (pat.registered_to > d))
            & (pat.date_of_death.isna() | (pat.date_of_death >= d))
        )
        window = em[(em.start_date >= d) & (em.start_date < d + pd.Timedelta(days=90))]
        rates.append(pat[ok].nhs_number.isin(set(window.nhs_number.astype(str))).mean())
    assert 0.01 < float(np.mean(rates)) < 0.035, rates


# ---------------------------------------------------------------------------- hidden truth


def test_hidden_state_is_kept(sim: Simulation) -> None:
    st = sim.state
    assert st.n == N == len(sim.nhs_numbers)
    assert st.onset.shape == (N, len(contract.CONDITIONS))
    assert np.isfinite(st.individual_effect).all() and st.individual_effect.std() > 0.3
    ev = sim.events["emergency_admissions"]
    recorded = ev[ev.recorded]
    em = sim.activity[(sim.activity.admission_method == "emergency")]
    # The log holds every written emergency admission, plus hidden ones (burn-in).
    assert len(recorded) >= len(em) and (~ev.recorded).any()


def _inputs(n: int, **overrides: object) -> HazardInputs:
    base = HazardInputs(
        age_years=np.full(n, 70.0),
        male=np.zeros(n, bool),
        deprivation=np.zeros(n),
        conditions=np.zeros((n, len(contract.CONDITIONS)), bool),
        frailty=np.full(n, 0.1),
        emergency_admissions_90d=np.zeros(n, np.int64),
        emergency_admissions_365d=np.zeros(n, np.int64),
        fall_180d=np.zeros(n, bool),
        lives_alone=np.zeros(n, bool),
        care_home=np.zeros(n, bool),
        smoker=np.zeros(n, bool),
        alcohol_misuse=np.zeros(n, bool),
        homeless=np.zeros(n, bool),
        falls_assessment_365d=np.zeros(n, bool),
        medication_review_365d=np.zeros(n, bool),
        individual_effect=np.zeros(n),
        month_of_year=6,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def test_hazard_is_monotone_in_its_risk_factors() -> None:
    ages = np.array([20.0, 45.0, 65.0, 75.0, 85.0, 95.0])
    h = emergency_admission_hazard(_inputs(6, age_years=ages))
    assert np.all(np.diff(h[1:]) > 0)
    conds = np.zeros((4, len(contract.CONDITIONS)), bool)
    for i, c in enumerate(["COPD", "HEART_FAILURE", "CKD"]):
        conds[i + 1 :, contract.CONDITIONS.index(c)] = True
    h = emergency_admission_hazard(_inputs(4, conditions=conds))
    assert np.all(np.diff(h) > 0)
    prior = np.array([0, 1, 2, 3])
    h = emergency_admission_hazard(
        _inputs(4, emergency_admissions_90d=prior, emergency_admissions_365d=prior)
    )
    assert np.all(np.diff(h) > 0)
    h = emergency_admission_hazard(_inputs(3, frailty=np.array([0.05, 0.2, 0.4])))
    assert np.all(np.diff(h) > 0)
    winter = emergency_admission_hazard(_inputs(1, month_of_year=1))
    summer = emergency_admission_hazard(_inputs(1, month_of_year=7))
    assert winter[0] > summer[0]


def test_hazard_inputs_from_state(sim: Simulation) -> None:
    day = sim.day(dt.date(2024, 6, 1))
    idx = np.arange(sim.state.n)
    x, age = hazard_inputs(sim.state, idx, day, 6)
    h = emergency_admission_hazard(x)
    assert h.shape == (N,) and np.all(h > 0) and np.isfinite(h).all()
    assert np.corrcoef(age, np.log(h))[0, 1] > 0.2


def test_hidden_truth_can_be_rebuilt_at_any_month_start(monkeypatch: pytest.MonkeyPatch) -> None:
    # Capture what the monthly loop fed to the hazards, then rebuild it from the final state
    # and the event log (what an oracle will do at an index date).
    seen: list[tuple[np.ndarray, int, HazardInputs]] = []
    original = simulation_module.hazard_inputs

    def spy(state, idx, day, month_of_year):
        x, age = original(state, idx, day, month_of_year)
        seen.append((idx.copy(), day, x))
        return x, age

    monkeypatch.setattr(simulation_module, "hazard_inputs", spy)
    s = simulate(n_patients=3000, seed=8, months=24, extract_date=EXTRACT_DATE)
    loop = seen[1:]  # the first call sets up care homes before the burn-in
    assert len(loop) == 24 + 12
    for idx, day, x in loop:
        y = hazard_inputs_at(s, idx, day)
        for name in HazardInputs.__dataclass_fields__:
            a, b = getattr(x, name), getattr(y, name)
            if isinstance(a, np.ndarray) and a.dtype.kind == "f":
                np.testing.assert_allclose(a, b, atol=1e-12, err_msg=name)
            else:
                np.testing.assert_array_equal(a, b, err_msg=name)
        np.testing.assert_allclose(emergency_admission_hazard(x), emergency_admission_hazard(y))
    # Repeat admitters exist, so the counts were really exercised.
    assert max(int(x.emergency_admissions_365d.max()) for _, _, x in loop) >= 3


def test_catalogue_uses_contract_vocabularies() -> None:
    assert {s.code for s in CONDITION_SPECS} | {"PALLIATIVE"} == set(contract.CONDITIONS)
    for g in REGIMEN_GROUPS:
        assert g.trigger == "" or g.trigger in contract.CONDITIONS
        for medicine, share in g.options:
            assert medicine.drug_class in contract.DRUG_CLASSES
            assert medicine.name == medicine.name.lower() and "," not in medicine.name
            assert 0 < share <= 1
    for code in (*EMERGENCY_DIAGNOSES, *AE_DIAGNOSES, *ELECTIVE_DIAGNOSES, *MATERNITY_DIAGNOSES):
        assert re.fullmatch(contract.ICD10_PATTERN, code), code
