"""The file boundary: what is in a file is either read or stopped at, never lost quietly.

Each case here is one a user met: a stray quote that swallowed two thirds of a table, a file
cut off mid-row, a NUL byte, a link out of the extract folder. Each must stop with an error that
names the file and line (and never loads a partial table), or be read in full.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from riskstrat.config import get_settings
from riskstrat.data.extract import ExtractError, validate_extract
from riskstrat.data.files import scan_csv
from tests.support.extracts import P1, base_tables, write_extract

runner = CliRunner()


def _many_medications(n: int) -> list[dict[str, str]]:
    return [
        {"nhs_number": P1, "issued_on": f"2026-0{1 + i % 9}-1{i % 10}",
         "medicine": "amlodipine", "drug_class": "ANTIHYPERTENSIVE"}
        for i in range(n)
    ]  # fmt: skip


def _extract_with_lines(tmp_path: Path, n: int = 29_654) -> tuple[Path, list[bytes]]:
    tables = base_tables()
    tables["medications"] = _many_medications(n)
    root = write_extract(tmp_path / "x", tables)
    return root, (root / "medications.csv").read_bytes().splitlines(keepends=True)


def _error(root: Path, **kwargs: object) -> ExtractError:
    with pytest.raises(ExtractError) as info:
        validate_extract(root, **kwargs).close()  # type: ignore[arg-type]
    return info.value


@pytest.mark.parametrize(
    ("bad_field", "words"),
    [
        (b'"amlodipine', "never closed"),  # an opening quote never closed
        (b'amlo"dipine', "inside an unquoted field"),
        (b'"amlodipine"x', "followed by more text"),
    ],
)
def test_a_stray_quote_stops_validation_at_its_line(tmp_path, bad_field, words):
    # The reported case: one stray quote in row 9,885 of 29,654 rows; DuckDB alone read the
    # rows before it, rejected one "malformed" row and lost the rest, and validate said valid.
    root, lines = _extract_with_lines(tmp_path)
    lines[9_885] = lines[9_885].replace(b"amlodipine", bad_field)
    (root / "medications.csv").write_bytes(b"".join(lines))
    rejects = tmp_path / "rejects.csv"
    err = _error(root, rejects_path=rejects, max_reject_share=1.0)
    assert err.file and err.file.endswith("medications.csv")
    assert err.line == 9_886 and words in str(err)  # line 1 is the header
    assert not rejects.exists()


def test_the_cli_exits_non_zero_for_a_stray_quote(tmp_path, monkeypatch):
    from riskstrat.cli import app

    monkeypatch.setenv("RISKSTRAT_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    root, lines = _extract_with_lines(tmp_path, 2_000)
    lines[500] = lines[500].replace(b"amlodipine", b'"amlodipine')
    (root / "medications.csv").write_bytes(b"".join(lines))
    result = runner.invoke(app, ["validate", str(root), "--max-reject-share", "1"])
    get_settings.cache_clear()
    assert result.exit_code == 1
    assert "medications.csv" in result.output and "line 501" in result.output
    assert "valid" not in result.output.replace("invalid", "")


@pytest.mark.parametrize(
    ("tail", "line", "words"),
    [
        (b"9998336376,2026-09-0", 7, "ends in the middle of a row"),
        (b'9998336376,2026-09-01,"co-codamol', 7, "never closed"),
    ],
)
def test_a_file_cut_off_mid_row_stops(tmp_path, tail, line, words):
    tables = base_tables()
    tables["medications"] = _many_medications(5)
    root = write_extract(tmp_path / "x", tables)
    path = root / "medications.csv"
    path.write_bytes(path.read_bytes() + tail)
    err = _error(root, max_reject_share=1.0)
    assert err.line == line and words in str(err) and "medications.csv" in str(err)


def test_a_last_row_without_a_line_break_is_read_when_it_is_whole(tmp_path):
    root = write_extract(tmp_path / "x")
    path = root / "conditions.csv"
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    with validate_extract(root) as extract:
        assert extract.summary.rows_read["conditions"] == 2
        assert extract.con.execute("SELECT count(*) FROM conditions").fetchone()[0] == 2


def test_a_nul_byte_stops_with_its_line(tmp_path):
    root, lines = _extract_with_lines(tmp_path, 300)
    lines[120] = lines[120].replace(b"amlodipine", b"amlo\x00dipine")
    (root / "medications.csv").write_bytes(b"".join(lines))
    err = _error(root)
    assert err.line == 121 and "NUL byte" in str(err)


def test_text_that_is_not_utf8_stops_with_its_line(tmp_path):
    root, lines = _extract_with_lines(tmp_path, 300)
    lines[40] = lines[40].replace(b"amlodipine", "amlodipine café".encode("latin-1"))
    (root / "medications.csv").write_bytes(b"".join(lines))
    err = _error(root)
    assert err.line == 41 and "not UTF-8" in str(err)


def test_utf8_text_and_a_byte_order_mark_are_fine(tmp_path):
    root, lines = _extract_with_lines(tmp_path, 10)
    lines[3] = lines[3].replace(b"amlodipine", "amlodipine\u00e9".encode())
    (root / "medications.csv").write_bytes(b"\xef\xbb\xbf" + b"".join(lines))
    with validate_extract(root, max_reject_share=1.0, rejects_path=tmp_path / "r.csv") as ex:
        assert ex.summary.rows_read["medications"] == 10


def test_a_header_naming_a_column_twice_stops(tmp_path):
    root = write_extract(tmp_path / "x")
    path = root / "activity.csv"
    text = path.read_text().splitlines()
    text[0] = text[0].replace("attended", "setting")
    path.write_text("\n".join(text) + "\n")
    err = _error(root)
    assert err.line == 1 and err.column == "setting" and "twice" in str(err)


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_blank_lines_are_skipped_and_every_other_row_is_read(tmp_path, ending):
    root, lines = _extract_with_lines(tmp_path, 50)
    lines = [line.replace(b"\n", ending) for line in lines]
    lines.insert(20, ending)
    lines.insert(30, ending + ending)
    lines.append(ending)
    (root / "medications.csv").write_bytes(b"".join(lines))
    with validate_extract(root) as extract:
        assert extract.summary.rows_read["medications"] == 50
        assert extract.con.execute("SELECT count(*) FROM medications").fetchone()[0] == 50


def test_mixed_line_endings_stop_at_the_first_odd_one(tmp_path):
    root, lines = _extract_with_lines(tmp_path, 50)
    lines[30] = lines[30].replace(b"\n", b"\r\n")
    (root / "medications.csv").write_bytes(b"".join(lines))
    err = _error(root)
    assert err.line == 31 and "line endings" in str(err)


def test_quoted_fields_with_line_breaks_are_read_across_scan_chunks(tmp_path):
    # Small chunks put a quoted field's line break in one chunk and its close in the next.
    body = b"".join(b'9998336376,2026-09-01,"multi\nline ""%d""",OTHER\n' % i for i in range(200))
    path = tmp_path / "m.csv"
    path.write_bytes(b"nhs_number,issued_on,medicine,drug_class\n" + body)
    for chunk in (7, 64, 1000, 1 << 20):
        scan = scan_csv(path, chunk_bytes=chunk, count_blank=True)
        assert (scan.rows, scan.blank_lines) == (200, 0), chunk


def test_a_quote_never_closed_across_chunks_names_the_line_it_opened_on(tmp_path):
    path = tmp_path / "m.csv"
    good = b"9998336376,2026-09-01,x,OTHER\n" * 100
    path.write_bytes(b"a,b,c,d\n" + good + b'9998336376,"2026-09-01,x,OTHER\n' + good)
    for chunk in (16, 300, 1 << 20):
        with pytest.raises(ExtractError) as info:
            scan_csv(path, chunk_bytes=chunk)
        assert info.value.line == 102, chunk


def test_a_link_out_of_the_extract_folder_is_refused(tmp_path):
    root = write_extract(tmp_path / "x")
    outside = tmp_path / "elsewhere.csv"
    (root / "conditions.csv").rename(outside)
    (root / "conditions.csv").symlink_to(outside)
    err = _error(root)
    assert "outside the extract folder" in str(err) and "conditions.csv" in str(err)
    # a link to a system file is refused before anything is read from it
    (root / "conditions.csv").unlink()
    (root / "conditions.csv").symlink_to("/etc/passwd")
    assert "outside the extract folder" in str(_error(root))


def test_a_link_inside_the_extract_folder_is_followed(tmp_path):
    root = write_extract(tmp_path / "x")
    (root / "data").mkdir()
    (root / "conditions.csv").rename(root / "data" / "conditions.csv")
    (root / "conditions.csv").symlink_to(Path("data") / "conditions.csv")
    with validate_extract(root) as extract:
        assert extract.summary.rows_read["conditions"] == 2


def test_a_linked_manifest_outside_the_folder_is_refused(tmp_path):
    root = write_extract(tmp_path / "x")
    (root / "manifest.json").rename(tmp_path / "manifest.json")
    (root / "manifest.json").symlink_to(tmp_path / "manifest.json")
    assert "outside the extract folder" in str(_error(root))


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_fifo_or_folder_in_a_tables_place_is_named_and_never_opened(tmp_path, kind):
    root = write_extract(tmp_path / "x")
    (root / "observations.csv").unlink()
    if kind == "fifo":
        os.mkfifo(root / "observations.csv")  # opening it would block forever
    else:
        (root / "observations.csv").mkdir()
    err = _error(root)
    assert "observations.csv" in str(err)
    assert ("FIFO" if kind == "fifo" else "a folder") in str(err)


def _manifest(root: Path, **extra: object) -> None:
    data = json.loads((root / "manifest.json").read_text())
    data.update({"contract_version": 2, **extra})
    (root / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_row_counts_in_the_manifest_are_checked(tmp_path, fmt):
    root = write_extract(tmp_path / "x", fmt=fmt)
    counts = {t: len(rows) for t, rows in base_tables().items()}
    _manifest(root, row_counts=counts)
    validate_extract(root).close()
    _manifest(root, row_counts={**counts, "activity": counts["activity"] + 1})
    err = _error(root)
    assert f"activity.{fmt}" in str(err) and "row_counts says 7 rows" in str(err)
    assert "holds 6" in str(err)


def test_row_counts_count_rejected_rows_too(tmp_path):
    # A malformed row is still a row of the file: it is rejected, not missing.
    root = write_extract(tmp_path / "x")
    path = root / "conditions.csv"
    path.write_text(path.read_text() + f"{P1},COPD\n")
    _manifest(root, row_counts={"conditions": 3})
    with validate_extract(root, max_reject_share=1.0) as extract:
        assert extract.summary.rows_rejected["conditions"] == 1


def test_a_corrupt_parquet_file_stops_naming_it(tmp_path):
    root = write_extract(tmp_path / "x", fmt="parquet")
    path = root / "activity.parquet"
    data = bytearray(path.read_bytes())
    for i in range(8, len(data) - 16, 7):  # damage the pages, keep the footer
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    err = _error(root)
    assert "activity.parquet" in str(err) and "Parquet" in str(err)


def test_a_csv_file_named_parquet_stops(tmp_path):
    root = write_extract(tmp_path / "x", fmt="parquet")
    csv_root = write_extract(tmp_path / "y")
    (root / "patients.parquet").write_bytes((csv_root / "patients.csv").read_bytes())
    err = _error(root)
    assert "patients.parquet" in str(err) and "cannot be read as Parquet" in str(err)


def test_a_truncated_parquet_file_stops(tmp_path):
    root = write_extract(tmp_path / "x", fmt="parquet")
    path = root / "medications.parquet"
    path.write_bytes(path.read_bytes()[:-20])
    assert "medications.parquet" in str(_error(root))


def test_source_files_are_unchanged_after_a_boundary_error(tmp_path):
    root, lines = _extract_with_lines(tmp_path, 100)
    lines[50] = lines[50].replace(b"amlodipine", b'"amlodipine')
    (root / "medications.csv").write_bytes(b"".join(lines))
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    _error(root)
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before
