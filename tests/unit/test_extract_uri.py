"""Extracts at a URI, without Spark: DuckDB refuses them with a way forward, a URI keeps its
``//`` from the command line to the reader, rejects go under the home named after the
extract, and the CSV scan at a URI (a copy scanned and deleted) counts what ``scan_csv`` does
and names the URI, never the copy. Spark's reading at a URI: tests/engines/test_spark_uri.py.
"""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest
from typer.testing import CliRunner

from riskstrat.cli import app
from riskstrat.cli.common import extract_location
from riskstrat.config import Settings, get_settings
from riskstrat.data.errors import ExtractError
from riskstrat.data.extract import validate_extract
from riskstrat.data.files import file_name, scan_csv, scan_csv_at
from riskstrat.errors import UsageError
from riskstrat.pipelines.common import read_extract_manifest, rejects_path_for

runner = CliRunner()
URI = "s3a://ics-extracts/monthly/2026-11/"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RISKSTRAT_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


@pytest.mark.parametrize(
    "args",
    [
        ["validate", URI, "--engine", "duckdb"],
        ["score", "--data", URI, "--month", "latest", "--engine", "duckdb"],
        ["predict", "--data", URI, "--as-of", "2026-11-01", "--out", "x.csv", "--engine", "duckdb"],
        ["sample", "--data", URI, "--out", "s", "--people", "10", "--engine", "duckdb"],
    ],
)
def test_the_duckdb_engine_refuses_a_uri_and_says_to_use_spark(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"{URI} is a URI: extracts in an object store are read by the Spark engine" in text
    assert "hint: pass --engine spark" in text


def test_a_uri_keeps_its_double_slash_and_a_path_becomes_a_path(tmp_path):
    assert extract_location(URI) == URI
    assert extract_location("file:///data/x") == "file:///data/x"
    assert extract_location(str(tmp_path)) == tmp_path
    with pytest.raises(UsageError, match="read by the Spark engine"):
        validate_extract(URI)
    with pytest.raises(UsageError, match="read by the Spark engine"):
        read_extract_manifest(Settings(home=tmp_path, engine="duckdb"), URI)


def test_rejects_of_a_uri_go_under_the_home_named_after_its_folder(tmp_path):
    settings = Settings(home=tmp_path)
    assert rejects_path_for(settings, URI) == settings.rejects_dir / "2026-11.rejects.csv"
    assert rejects_path_for(settings, tmp_path / "nov") == settings.rejects_dir / "nov.rejects.csv"
    assert file_name(URI) == "2026-11" and file_name(tmp_path / "a.csv") == "a.csv"


def _csv(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def test_the_scan_at_a_uri_counts_as_scan_csv_and_leaves_no_copy(tmp_path):
    fs = fsspec.filesystem("file")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    path = _csv(tmp_path / "t.csv", 'a,b\n1,"x\ny"\n\n2,z\n\n3,w')
    at_uri = scan_csv_at(fs, str(path), scratch)
    plain, counted = scan_csv(path), scan_csv(path, count_blank=True)
    assert at_uri.header == plain.header == ["a", "b"]
    assert at_uri.rows == plain.rows == 5  # blank lines counted as records, as readers may
    assert at_uri.blank_lines == counted.blank_lines == 2
    assert at_uri.rows - at_uri.blank_lines == counted.rows == 3
    assert at_uri.unterminated_last_row_fields == plain.unterminated_last_row_fields == 2
    assert list(scratch.iterdir()) == []


def test_an_error_in_a_scan_at_a_uri_names_the_file_not_the_copy(tmp_path):
    fs = fsspec.filesystem("file")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    path = _csv(tmp_path / "t.csv", 'a,b\n1,2\n3,"open\n')
    with pytest.raises(ExtractError, match="never closed") as exc:
        scan_csv_at(fs, str(path), scratch)
    assert exc.value.file == str(path) and exc.value.line == 3
    twice = _csv(tmp_path / "h.csv", "a,a\n1,2\n")
    with pytest.raises(ExtractError, match="names this column twice") as dup:
        scan_csv_at(fs, str(twice), scratch)
    assert dup.value.file == str(twice)
    with pytest.raises(ExtractError, match="cannot be read") as gone:
        scan_csv_at(fs, str(tmp_path / "gone.csv"), scratch)
    assert gone.value.file == str(tmp_path / "gone.csv")
    assert list(scratch.iterdir()) == []
