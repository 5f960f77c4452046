"""Extracts at a URI (issue 26): read through the Spark session's own Hadoop file system, so
that whatever Spark reads (s3a://, abfss://, gs://, hdfs://) riskstrat validates and scores.

``file://`` URIs go through Hadoop's local file system: the same code path as an object
store's connector, without one. The equality of what is read (summaries, rejects files,
errors) with a local folder is in test_spark_validate.py; the commands at a URI in
test_spark_equality.py.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from riskstrat.data.errors import ExtractError
from riskstrat.data.spark_extract import validate_extract_spark
from riskstrat.engines.hadoop_fs import hadoop_files
from riskstrat.engines.spark import spark_scratch
from riskstrat.errors import UsageError
from tests.support.extracts import write_extract

pytestmark = pytest.mark.spark


def test_the_hadoop_file_system_lists_reads_ranges_and_copies(spark, tmp_path):
    data = bytes(range(256)) * 70_000  # 17.9 MB: more than two 8 MB blocks
    (tmp_path / "blob.bin").write_bytes(data)
    (tmp_path / "sub").mkdir()
    uri = tmp_path.as_uri()
    fs = hadoop_files(spark, uri)
    assert sorted(fs.ls(uri, detail=False)) == [f"{uri}/blob.bin", f"{uri}/sub"]
    assert fs.info(f"{uri}/blob.bin")["size"] == len(data)
    assert fs.isdir(f"{uri}/sub") and not fs.isfile(f"{uri}/sub")
    assert not fs.exists(f"{uri}/nothing")
    with pytest.raises(FileNotFoundError):
        fs.info(f"{uri}/nothing")
    with fs.open(f"{uri}/blob.bin", "rb") as fh:
        fh.seek(9_000_000)
        assert fh.read(5) == data[9_000_000:9_000_005]
        fh.seek(len(data) - 3)
        assert fh.read() == data[-3:]
    assert fs.cat_file(f"{uri}/blob.bin") == data
    copy = tmp_path / "copy.bin"
    fs.get_file(f"{uri}/blob.bin", str(copy))
    assert copy.read_bytes() == data
    with pytest.raises(UsageError, match="never written"):
        fs.open(f"{uri}/new.bin", "wb")


def test_errors_at_a_uri_name_the_uri_and_never_the_scratch_copy(spark, tmp_path):
    uri = (tmp_path / "none").as_uri()
    with pytest.raises(ExtractError, match="extract folder does not exist") as missing:
        validate_extract_spark(spark, uri)
    assert uri in str(missing.value)

    # A table written as a folder of parts is not the contract's one file.
    folder = write_extract(tmp_path / "parts", fmt="parquet")
    (folder / "activity.parquet").unlink()
    (folder / "activity.parquet").mkdir()
    with pytest.raises(ExtractError, match="is a folder, not a file") as parts:
        validate_extract_spark(spark, folder.as_uri())
    assert f"{folder.as_uri()}/activity.parquet" in str(parts.value)

    # A CSV holding a NUL byte: named by its URI and line, though it was scanned as a copy.
    bad = write_extract(tmp_path / "nul")
    path = bad / "conditions.csv"
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2][:4] + b"\x00" + lines[2][4:]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(ExtractError, match="NUL byte") as nul:
        validate_extract_spark(spark, bad.as_uri())
    assert str(nul.value).startswith(f"file {bad.as_uri()}/conditions.csv, line 3:")
    assert "csv-scan-" not in str(nul.value)
    assert not any(spark_scratch(spark).glob("csv-scan-*"))

    manifest = write_extract(tmp_path / "manifest")
    (manifest / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ExtractError, match="manifest is not valid JSON") as broken:
        validate_extract_spark(spark, manifest.as_uri())
    assert f"{manifest.as_uri()}/manifest.json" in str(broken.value)


def test_a_source_file_at_a_uri_is_never_changed(spark, tmp_path):
    root = write_extract(tmp_path / "x")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.iterdir()}
    with validate_extract_spark(spark, root.as_uri(), rejects_path=tmp_path / "r.csv"):
        pass
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.iterdir()} == before
    assert not list(Path(root).glob(".*"))  # no hidden copies or Hadoop checksum files


def test_validate_on_spark_takes_a_uri_from_the_command_line(spark, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from riskstrat.cli import app
    from riskstrat.config import get_settings

    monkeypatch.setenv("RISKSTRAT_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    root = write_extract(tmp_path / "2026-11")
    try:
        result = CliRunner().invoke(app, ["validate", root.as_uri(), "--engine", "spark"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    rejects = tmp_path / "home" / "rejects" / "2026-11.rejects.csv"
    assert "valid" in result.output and rejects.is_file()


def test_a_large_result_comes_to_the_driver_a_slice_at_a_time(spark):
    """Every row once, whatever the slicing; the driver's JVM holds one slice's results
    at a time (a 3.6-million-person collect in one piece ran it out of memory)."""
    from riskstrat.engines.spark import to_pandas_in_slices

    frame = (
        spark.range(1_000)
        .selectExpr(
            "concat('999', lpad(CAST(id AS STRING), 7, '0')) AS nhs_number", "id * 0.5 AS risk"
        )
        .persist()
    )
    try:
        whole = frame.toPandas().sort_values("nhs_number").reset_index(drop=True)
        for max_rows in (150, 999, 1_000, 5_000):
            got = to_pandas_in_slices(frame, key="nhs_number", max_rows=max_rows)
            got = got.sort_values("nhs_number").reset_index(drop=True)
            pd.testing.assert_frame_equal(got, whole)
        empty = to_pandas_in_slices(frame.where("id < 0"), key="nhs_number", max_rows=150)
        assert empty.empty and list(empty.columns) == ["nhs_number", "risk"]
    finally:
        frame.unpersist()


def test_spark_exits_when_out_of_memory_rather_than_waiting_for_ever(tmp_path):
    from riskstrat.config import Settings
    from riskstrat.engines.spark import spark_conf

    options = spark_conf(Settings(home=tmp_path), tmp_path)["spark.driver.extraJavaOptions"]
    assert "-XX:+ExitOnOutOfMemoryError" in options.split()
