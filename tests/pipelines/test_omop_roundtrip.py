"""The round trip: the generator's population written as an OMOP CDM and imported gives the same
features and labels as the same population written directly, and the same model scores both
identically; the CSV layout, CDM 5.3 names and an empty concept_ancestor change nothing.

Also the commands a user runs: ``generate --format omop`` and ``import omop`` from the CLI.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from riskstrat.data.extract import validate_extract
from riskstrat.data.omop import import_omop
from riskstrat.features.build import KEY_COLUMNS, build_features, feature_columns
from riskstrat.features.labels import build_labels
from riskstrat.synth import generate_extract
from tests.support.omop_cdm import extract_rows

pytestmark = pytest.mark.slow

N, SEED = 1500, 7
EXTRACT_DATE = dt.date(2026, 11, 1)
INDEX_DATES = [dt.date(2024, 6, 1), dt.date(2025, 3, 1), dt.date(2025, 12, 1), dt.date(2026, 8, 1)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("omop")
    common = {"n_patients": N, "seed": SEED, "extract_date": EXTRACT_DATE}
    generate_extract(root / "direct", fmt="parquet", **common)  # type: ignore[arg-type]
    generate_extract(root / "omop", fmt="omop", **common)  # type: ignore[arg-type]
    generate_extract(root / "omop-csv", fmt="omop", omop_layout="csv", **common)  # type: ignore[arg-type]
    imported = import_omop(
        root / "omop" / "cdm.duckdb",
        root / "imported",
        sites=root / "omop" / "site_map.csv",
        imd=root / "omop" / "imd_lookup.csv",
        scratch_dir=root / "scratch",
    )
    assert imported.out_dir == root / "imported"
    return {"root": root, "direct": root / "direct", "imported": root / "imported",
            "omop": root / "omop", "omop_csv": root / "omop-csv"}  # fmt: skip


def _linkage(omop: Path) -> dict[str, str]:
    frame = pd.read_csv(omop / "linkage.csv", dtype=str)
    return dict(zip(frame["pseudonym"], frame["nhs_number"], strict=True))


def _features(extract: Path, link: dict[str, str] | None = None) -> pd.DataFrame:
    with validate_extract(extract) as ex:
        frame = build_features(ex.con, index_dates=INDEX_DATES)
        labels = build_labels(ex.con, index_dates=INDEX_DATES, horizon_days=90)
    frame["index_date"] = pd.to_datetime(frame["index_date"]).dt.date
    frame = frame.merge(labels, on=list(KEY_COLUMNS), validate="one_to_one")
    if link is not None:
        frame["nhs_number"] = frame["nhs_number"].map(link)
        assert frame["nhs_number"].notna().all()
    return frame.sort_values(["index_date", "nhs_number"]).reset_index(drop=True)


def test_every_feature_and_label_survives_the_round_trip(world):
    direct = _features(world["direct"])
    imported = _features(world["imported"], _linkage(world["omop"]))
    assert len(direct) > N  # several index months of people
    assert list(direct.columns) == list(imported.columns)
    for column in direct.columns:
        a, b = direct[column], imported[column]
        if a.dtype.kind == "f":
            assert np.allclose(a.to_numpy(float), b.to_numpy(float), equal_nan=True,
                               rtol=0, atol=1e-9), column  # fmt: skip
        else:
            assert (a.astype(str) == b.astype(str)).all(), column
    # The comparison is not empty: people have conditions, medicines, admissions, outcomes.
    assert direct["ltc_count"].sum() > 0 and direct["distinct_medicines_90d"].sum() > 0
    assert direct["emergency_admissions_365d"].sum() > 0
    assert direct["label"].sum() > 0


def test_the_same_model_scores_both_identically(world):
    direct = _features(world["direct"])
    imported = _features(world["imported"], _linkage(world["omop"]))
    label = "label"
    x = direct[feature_columns()].astype(float)
    model = lgb.train(
        {"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 20, "verbose": -1,
         "deterministic": True, "num_threads": 1, "seed": 1},
        lgb.Dataset(x, label=direct[label].astype(float)),
        num_boost_round=40,
    )  # fmt: skip
    a = model.predict(x)
    b = model.predict(imported[feature_columns()].astype(float))
    assert np.array_equal(a, b)
    assert a.std() > 0  # the model ranks people


def test_the_extract_is_pseudonymous_and_its_report_accounts_for_everything(world):
    manifest = json.loads((world["imported"] / "manifest.json").read_text())
    assert manifest["identifier_kind"] == "pseudonym"
    report = json.loads((world["imported"] / "mapping-report.json").read_text())
    assert report["persons"]["read"] == report["persons"]["kept"] == N
    for table, info in report["source_tables"].items():
        if "mapped" in info:
            assert info["rows_read"] == info["mapped"] + info["unmapped"], table
    assert report["source_tables"]["drug_exposure"]["unmapped"] == 0
    assert report["source_tables"]["visit_occurrence"]["unmapped"] == 0
    with duckdb.connect() as con:
        direct = con.execute(
            f"SELECT count(*) FROM read_parquet('{world['direct'] / 'medications.parquet'}')"
        ).fetchall()[0][0]
    assert report["contract_tables"]["medications"]["written"] == direct


def test_csv_layout_cdm_53_and_an_empty_concept_ancestor_give_the_same_extract(world):
    root, omop_csv = world["root"], world["omop_csv"] / "cdm"
    expected = extract_rows(world["imported"])
    kw = {"sites": world["omop_csv"] / "site_map.csv", "imd": world["omop_csv"] / "imd_lookup.csv",
          "scratch_dir": root / "scratch"}  # fmt: skip
    assert (omop_csv / "PERSON.csv").is_file()
    assert extract_rows(import_omop(omop_csv, root / "from-csv", **kw).out_dir) == expected
    # CDM 5.3: the visit columns by their old names, and cdm_source saying so
    v53 = root / "cdm53"
    v53.mkdir()
    for path in omop_csv.iterdir():
        text = path.read_text()
        if path.name == "VISIT_OCCURRENCE.csv":
            header, rest = text.split("\n", 1)
            header = (
                header.replace("admitted_from_", "admitting_source_")
                .replace("admitting_source_source_value", "admitting_source_value")
                .replace("discharged_to_", "discharge_to_")
            )
            text = header + "\n" + rest
        if path.name == "CDM_SOURCE.csv":
            text = text.replace("v5.4", "v5.3.1")
        if path.name == "CONCEPT_ANCESTOR.csv":
            text = text.split("\n", 1)[0] + "\n"  # empty, as in some sample datasets
        (v53 / path.name).write_text(text)
    result = import_omop(v53, root / "from-53", **kw)
    assert result.report["source"]["cdm_version"] == "5.3"
    assert result.report["vocabulary"]["descendants_from"] == "concept_relationship"
    assert extract_rows(result.out_dir) == expected


def test_generating_the_cdm_twice_gives_the_same_tables(world, tmp_path):
    generate_extract(tmp_path / "again", fmt="omop", n_patients=N, seed=SEED,
                     extract_date=EXTRACT_DATE)  # fmt: skip
    with duckdb.connect() as con:
        con.execute(f"ATTACH '{world['omop'] / 'cdm.duckdb'}' AS a (READ_ONLY)")
        con.execute(f"ATTACH '{tmp_path / 'again' / 'cdm.duckdb'}' AS b (READ_ONLY)")
        for table in ("person", "visit_occurrence", "drug_exposure", "observation", "concept"):
            diff = con.execute(
                f"SELECT count(*) FROM ((SELECT * FROM a.{table} EXCEPT ALL SELECT * FROM "
                f"b.{table}) UNION ALL (SELECT * FROM b.{table} EXCEPT ALL SELECT * FROM "
                f"a.{table}))"
            ).fetchall()[0][0]
            assert diff == 0, table
    for name in ("site_map.csv", "imd_lookup.csv", "linkage.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (world["omop"] / name).read_bytes()


def test_the_commands_a_user_runs(tmp_path, monkeypatch):
    from riskstrat.cli import app
    from riskstrat.config import get_settings

    monkeypatch.setenv("RISKSTRAT_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        made = runner.invoke(app, ["generate", "--out", str(tmp_path / "cdm"), "--patients", "400",
                                   "--format", "omop", "--omop-layout", "csv",
                                   "--extract-date", "2026-11-01"])  # fmt: skip
        assert made.exit_code == 0, made.output
        assert "OMOP CDM 5.4" in made.output and (tmp_path / "cdm" / "cdm" / "PERSON.csv").is_file()
        imported = runner.invoke(
            app,
            ["import", "omop", "--source", str(tmp_path / "cdm" / "cdm"), "--out",
             str(tmp_path / "x"), "--practice", "A81001", "--pcn", "U12345"],
        )  # fmt: skip
        assert imported.exit_code == 0, imported.output
        assert "400 of 400 persons imported" in imported.output
        assert "no site map" in imported.output and "mapping-report.md" in imported.output
        valid = runner.invoke(app, ["validate", str(tmp_path / "x")])
        assert valid.exit_code == 0 and "pseudonym" in valid.output
        again = runner.invoke(
            app,
            ["import", "omop", "--source", str(tmp_path / "cdm" / "cdm"), "--out",
             str(tmp_path / "x"), "--practice", "A81001", "--pcn", "U12345"],
        )  # fmt: skip
        assert again.exit_code == 1 and "--overwrite" in again.output
        missing = runner.invoke(
            app, ["import", "omop", "--source", str(tmp_path / "cdm" / "cdm"), "--out",
                  str(tmp_path / "y")],
        )  # fmt: skip
        assert missing.exit_code == 1 and "--sites" in missing.output
    finally:
        get_settings.cache_clear()
