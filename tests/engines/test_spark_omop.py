"""``riskstrat import omop --engine spark`` against DuckDB's import of the same CDM (issue 26):
the same five extract tables (every row and value, and the Parquet column types), the same
manifest, the same mapping report (apart from when and where it was written), and the same
error for a CDM that cannot be used.

One generated CDM (600 people, every table the importer reads) is imported from a folder of
typed Parquet tables (through the library), and from its CSV folder rewritten as CDM 5.3 with
an empty concept_ancestor (through the command a user runs; descendants and drug ingredients
then come from walking concept_relationship). A Spark import costs about a minute on a small
machine, so there are two.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from riskstrat.data.contract import TABLE_ORDER
from riskstrat.data.errors import ExtractError
from riskstrat.data.omop import import_omop
from riskstrat.data.omop.spark_con import SparkSqlError, bind_parameters
from riskstrat.synth import generate_extract
from tests.support.omop_cdm import extract_rows

pytestmark = pytest.mark.spark

N, SEED = 600, 11
EXTRACT_DATE = dt.date(2026, 11, 1)


@pytest.fixture(scope="module")
def cdm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The generator's CDM as CSV (``PERSON.csv``, ...) and the same tables as typed Parquet
    files (``person.parquet``, ...), with its site map and IMD lookup."""
    root = tmp_path_factory.mktemp("spark-omop")
    generate_extract(root / "gen", fmt="omop", omop_layout="csv", n_patients=N, seed=SEED,
                     extract_date=EXTRACT_DATE)  # fmt: skip
    csv = root / "gen" / "cdm"
    parquet = root / "parquet"
    parquet.mkdir()
    with duckdb.connect() as con:
        for path in csv.iterdir():
            target = parquet / f"{path.stem.lower()}.parquet"
            con.execute(
                f"COPY (SELECT * FROM read_csv('{path}', header = true)) TO '{target}' "
                "(FORMAT parquet)"
            )
    # The CSV layout as CDM 5.3 (the visit columns by their old names) with an empty
    # concept_ancestor, as some sample datasets come: descendants and drug ingredients are
    # then walked through concept_relationship.
    v53 = root / "csv53"
    v53.mkdir()
    for path in csv.iterdir():
        text = path.read_text()
        if path.name == "VISIT_OCCURRENCE.csv":
            header, rest = text.split("\n", 1)
            header = header.replace("admitted_from_source_value", "admitting_source_value")
            text = header.replace("admitted_from_", "admitting_source_") + "\n" + rest
        if path.name == "CDM_SOURCE.csv":
            text = text.replace("v5.4", "v5.3.1")
        if path.name == "CONCEPT_ANCESTOR.csv":
            text = text.split("\n", 1)[0] + "\n"
        (v53 / path.name).write_text(text)
    return {"root": root, "csv": v53, "parquet": parquet,
            "sites": root / "gen" / "site_map.csv", "imd": root / "gen" / "imd_lookup.csv"}  # fmt: skip


def _report(folder: Path) -> dict[str, Any]:
    report = json.loads((folder / "mapping-report.json").read_text("utf-8"))
    report.pop("created_at")
    report["extract"].pop("path")
    report["codelists"].pop("changed_since_previous_import")
    return report


def _assert_same_import(duck: Path, spark: Path) -> None:
    assert extract_rows(spark) == extract_rows(duck)
    for table in TABLE_ORDER:
        a, b = pq.read_schema(duck / f"{table}.parquet"), pq.read_schema(spark / f"{table}.parquet")
        assert [(f.name, f.type) for f in b] == [(f.name, f.type) for f in a], table
        assert pq.ParquetFile(spark / f"{table}.parquet").metadata.num_rows > 0, table
    assert json.loads((spark / "manifest.json").read_text()) == json.loads(
        (duck / "manifest.json").read_text()
    )
    assert _report(spark) == _report(duck)
    assert sorted(p.name for p in spark.iterdir()) == sorted(p.name for p in duck.iterdir())


def test_a_parquet_cdm_imports_on_spark_as_on_duckdb(cdm, spark):
    kw = {"sites": cdm["sites"], "imd": cdm["imd"], "scratch_dir": cdm["root"] / "scratch"}
    duck = import_omop(cdm["parquet"], cdm["root"] / "duck-parquet", **kw)
    on_spark = import_omop(cdm["parquet"], cdm["root"] / "spark-parquet", engine="spark",
                           spark=spark, **kw)  # fmt: skip
    _assert_same_import(duck.out_dir, on_spark.out_dir)
    report = on_spark.report
    assert report["persons"]["kept"] == N and report["source"]["kind"] == "folder"
    # Every table of the contract has rows, and every CDM table was read.
    assert all(n > 0 for n in on_spark.rows.values())
    assert all(info["present"] for info in report["source_tables"].values())
    assert report["validation"]["rows_rejected"] == dict.fromkeys(TABLE_ORDER, 0)
    assert not [p for p in on_spark.out_dir.parent.iterdir() if ".tmp-" in p.name]


def test_a_csv_cdm_53_without_ancestors_imports_through_the_command_as_on_duckdb(cdm, spark, tmp_path,
                                                               monkeypatch):  # fmt: skip
    from riskstrat.cli import app
    from riskstrat.config import get_settings

    kw = {"sites": cdm["sites"], "imd": cdm["imd"], "scratch_dir": cdm["root"] / "scratch"}
    duck = import_omop(cdm["csv"], tmp_path / "duck-csv", **kw)
    monkeypatch.setenv("RISKSTRAT_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    result = CliRunner().invoke(
        app,
        ["import", "omop", "--source", str(cdm["csv"]), "--out", str(tmp_path / "spark-csv"),
         "--sites", str(cdm["sites"]), "--imd", str(cdm["imd"]), "--engine", "spark"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"{N:,} of {N:,} persons imported" in result.output
    _assert_same_import(duck.out_dir, tmp_path / "spark-csv")
    report = json.loads((tmp_path / "spark-csv" / "mapping-report.json").read_text())
    assert report["source"]["cdm_version"] == "5.3"
    assert report["vocabulary"]["descendants_from"] == "concept_relationship"
    assert report["vocabulary"]["drug_ingredients_from"] == "concept_relationship"
    assert report["persons"]["kept"] == N


def test_a_cdm_spark_cannot_use_stops_as_on_duckdb(cdm, spark, tmp_path):
    """A missing required table: the same error in both engines, nothing written. Sources
    Spark does not read are refused before any work, naming what it reads."""
    broken = tmp_path / "broken"
    shutil.copytree(cdm["parquet"], broken)
    (broken / "observation_period.parquet").unlink()
    kw = {"practice_code": "A81001", "pcn_code": "U12345", "scratch_dir": tmp_path / "s"}
    errors = []
    for engine in ("duckdb", "spark"):
        with pytest.raises(ExtractError) as info:
            import_omop(broken, tmp_path / engine, engine=engine, spark=spark, **kw)
        errors.append(str(info.value))
        assert not (tmp_path / engine).exists()
    assert errors[0] == errors[1] and "no observation_period table" in errors[0]
    database = tmp_path / "cdm.duckdb"
    duckdb.connect(str(database)).close()
    for source in (str(database), "postgresql://user@host/db?schema=cdm"):
        with pytest.raises(ExtractError, match="Spark engine reads a folder of CDM tables"):
            import_omop(source, tmp_path / "x", engine="spark", spark=spark, **kw)
    from riskstrat.cli import app

    refused = CliRunner().invoke(
        app, ["import", "omop", "--source", str(database), "--out", str(tmp_path / "y"),
              "--practice", "A81001", "--pcn", "U12345", "--engine", "spark"],
    )  # fmt: skip
    assert refused.exit_code == 1 and "--engine duckdb" in refused.output


def test_parameters_are_written_as_literals():
    assert bind_parameters(
        "SELECT ? AS a, '?' AS b, ? AS c, ? AS d", [dt.date(2026, 1, 2), "it's", 3]
    ) == ("SELECT DATE '2026-01-02' AS a, '?' AS b, 'it''s' AS c, 3 AS d")
    with pytest.raises(SparkSqlError, match="fewer parameters"):
        bind_parameters("SELECT ?, ?", [1])
    with pytest.raises(SparkSqlError, match="more parameters"):
        bind_parameters("SELECT ?", [1, 2])


def test_a_folder_at_a_uri_opens_as_the_local_folder(cdm, spark, tmp_path):
    """A URI goes through Hadoop's file systems (as s3a:// would): the same tables and
    columns as the local path; a URI with nothing there is named."""
    from riskstrat.data.omop.spark_con import SparkConnection
    from riskstrat.data.omop.spark_source import open_on_spark

    con = SparkConnection(spark)
    try:
        local = open_on_spark(con, str(cdm["parquet"]))
        uri = open_on_spark(con, cdm["parquet"].resolve().as_uri())
        assert uri[2] == local[2] and {"person", "observation_period", "concept"} <= set(uri[2])
        assert uri[1].startswith("folder file:")
        with pytest.raises(ExtractError, match="not found"):
            open_on_spark(con, (tmp_path / "nowhere").as_uri())
    finally:
        con.close()
