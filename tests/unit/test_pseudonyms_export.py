"""Exports of a pseudonymous run, and re-identification for direct care from a practice's
linkage file: allowed only for a pseudonymous run and only for direct care, audited as an
event of its own, and the linkage never reaches the store, the output or an error."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from riskstrat.cli import app as cli
from riskstrat.cohorts.listing import LISTING_COLUMNS
from riskstrat.config import Settings, get_settings
from riskstrat.data.linkage import LinkageError, parse_linkage, read_linkage, reidentify
from riskstrat.nhs_number import synthetic_nhs_numbers
from riskstrat.pipelines.export import run_export
from riskstrat.store import Store
from riskstrat.store.audit import pseudonymise
from tests.support.world import MONTH, PCNS, publish_world

PCN = PCNS[0]


def _text(result) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def _records(settings: Settings) -> list[dict]:
    store = Store(settings.serving_database_url)
    try:
        return store.audit.records(limit=10_000)
    finally:
        store.dispose()


def _stored_bytes(settings: Settings) -> bytes:
    """Everything the SQLite serving store holds on disk (database and write-ahead log)."""
    return b"".join(p.read_bytes() for p in sorted(settings.home.glob("serving.db*")))


def _linkage_rows(people: list[str]) -> list[tuple[str, str]]:
    numbers = synthetic_nhs_numbers(np.random.default_rng(21), len(people))
    return list(zip(people, (str(n) for n in numbers), strict=True))


def _write_linkage(path: Path, rows: list[tuple[str, str]], header="pseudonym,nhs_number") -> Path:
    path.write_text("\n".join([header, *(f"{p},{n}" for p, n in rows)]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A published pseudonymous run, the CLI pointed at it, and the practice's linkage file."""
    settings = Settings(home=tmp_path / "home")
    made = publish_world(settings, identifier_kind="pseudonym")
    monkeypatch.setenv("RISKSTRAT_HOME", str(settings.home))
    monkeypatch.setenv("RISKSTRAT_ACTOR", "practice-manager")
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    folder = tmp_path / "practice"
    folder.mkdir()
    rows = _linkage_rows(list(made["scores"].nhs_number))
    linkage = _write_linkage(folder / "linkage.csv", rows)
    yield {**made, "settings": settings, "linkage": linkage, "rows": rows, "root": tmp_path}
    get_settings.cache_clear()


def _export(world, *extra: str, fmt: str = "csv"):
    out = world["root"] / f"list.{fmt}"
    result = CliRunner().invoke(
        cli,
        ["export", "--month", f"{MONTH:%Y-%m}", "--cohort", "falls_review", "--pcn", PCN,
         "--format", fmt, "--out", str(out), *extra],
    )  # fmt: skip
    return result, out


def _mine(world) -> pd.DataFrame:
    scores = world["scores"]
    return scores[scores.pcn_code == PCN].sort_values("rank")


# ---- exports of a pseudonymous run -----------------------------------------------------------


def test_a_pseudonymous_export_lists_pseudonyms_and_says_so(world):
    result, out = _export(world)
    assert result.exit_code == 0, result.output
    assert "identified by pseudonym" in _text(result)
    frame = pd.read_csv(out, dtype=str, encoding="utf-8-sig")
    assert list(frame.columns) == ["pseudonym" if c == "nhs_number" else c for c in LISTING_COLUMNS]
    assert list(frame.pseudonym) == list(_mine(world).nhs_number)  # as they are, unformatted
    assert "9998336376" in set(frame.pseudonym)
    xlsx, path = _export(world, fmt="xlsx")
    assert xlsx.exit_code == 0, xlsx.output
    sheets = pd.read_excel(path, sheet_name=None, dtype=str)
    assert "pseudonym" in sheets["cohort"].columns and "nhs_number" not in sheets["cohort"].columns
    about = dict(zip(sheets["about"]["item"], sheets["about"]["value"], strict=True))
    assert "pseudonyms" in about["identifiers"] and "not NHS numbers" in about["identifiers"]
    assert "re-identified" not in about
    records = _records(world["settings"])
    assert [(r["route"], r["purpose"], r["identifier_kind"]) for r in records] == [
        ("riskstrat export falls_review", "export csv", "pseudonym"),
        ("riskstrat export falls_review", "export xlsx", "pseudonym"),
    ]


def test_an_nhs_number_export_is_as_before(tmp_path):
    settings = Settings(home=tmp_path / "home")
    made = publish_world(settings)
    result = run_export(
        month=MONTH, cohort="falls_review", fmt="xlsx", pcn=PCN, out=tmp_path / "l.xlsx",
        settings=settings,
    )  # fmt: skip
    assert result.identifier_kind == "nhs_number" and result.reidentified == 0
    sheets = pd.read_excel(tmp_path / "l.xlsx", sheet_name=None, dtype=str)
    assert tuple(sheets["cohort"].columns) == LISTING_COLUMNS
    mine = made["scores"][made["scores"].pcn_code == PCN].sort_values("rank")
    assert list(sheets["cohort"].nhs_number.str.replace(" ", "")) == list(mine.nhs_number)
    assert sheets["cohort"].nhs_number[0].count(" ") == 2  # "999 123 4567"
    # every about sheet says what identifies the people (issue 24): here, NHS numbers
    about = dict(zip(sheets["about"]["item"], sheets["about"]["value"], strict=True))
    assert (
        about["identifiers"].startswith("NHS numbers") and "pseudonym" not in about["identifiers"]
    )
    [record] = _records(settings)
    assert (record["purpose"], record["request_id"], record["identifier_kind"]) == (
        "export xlsx",
        None,
        "nhs_number",
    )


# ---- re-identification for direct care -------------------------------------------------------


def test_direct_care_reidentification_adds_nhs_numbers_and_is_audited(world):
    before = world["linkage"].read_bytes()
    result, out = _export(world, "--linkage", str(world["linkage"]), "--purpose", "Direct care")
    assert result.exit_code == 0, result.output
    mine = _mine(world)
    assert f"re-identified {len(mine)} people" in _text(result)
    frame = pd.read_csv(out, dtype=str, encoding="utf-8-sig")
    assert list(frame.columns[:3]) == ["rank", "pseudonym", "nhs_number"]
    linked = dict(world["rows"])
    assert list(frame.pseudonym) == list(mine.nhs_number)
    assert list(frame.nhs_number) == [
        f"{n[:3]} {n[3:6]} {n[6:]}" for n in (linked[p] for p in mine.nhs_number)
    ]
    # One record of the re-identification, before the export's own read, tied to it.
    key = world["settings"].pseudonym_key.get_secret_value()
    reid, read = _records(world["settings"])
    assert reid["route"] == "riskstrat export falls_review --linkage (re-identification)"
    assert reid["purpose"] == f"direct care: re-identified {len(mine)} people"
    assert reid["n_patients"] == len(mine) and reid["actor"] == "practice-manager"
    assert reid["identifier_kind"] == read["identifier_kind"] == "pseudonym"
    assert reid["request_id"] and reid["request_id"] == read["request_id"]
    assert reid["patients"] == sorted(pseudonymise(p, key) for p in mine.nhs_number)
    assert (read["route"], read["purpose"]) == (
        "riskstrat export falls_review",
        "export csv: Direct care",
    )
    # The linkage is read only: not changed, and none of it in the store or the output.
    assert world["linkage"].read_bytes() == before
    stored = _stored_bytes(world["settings"])
    assert stored and not any(n.encode() in stored for n in linked.values())
    assert not any(n in result.output for n in linked.values())


def test_reidentified_excel_says_so_and_keeps_numbers_as_text(world):
    result, out = _export(
        world, "--linkage", str(world["linkage"]), "--purpose", "direct care", fmt="xlsx"
    )
    assert result.exit_code == 0, result.output
    from openpyxl import load_workbook

    sheet = load_workbook(out)["cohort"]
    headings = [c.value for c in sheet[1]]
    assert headings[1:3] == ["pseudonym", "nhs_number"]
    assert {sheet.cell(row=2, column=c).number_format for c in (2, 3)} == {"@"}
    about = pd.read_excel(out, sheet_name="about", dtype=str)
    notes = dict(zip(about["item"], about["value"], strict=True))
    assert "direct care" in notes["re-identified"] and "pseudonyms" in notes["identifiers"]


@pytest.mark.parametrize("purpose", [None, "research", "service planning", "direct care audit"])
def test_reidentification_is_refused_unless_for_direct_care(world, purpose):
    extra = ["--purpose", purpose] if purpose else []
    result, out = _export(world, "--linkage", str(world["linkage"]), *extra)
    assert result.exit_code == 1
    assert "allowed only for direct care" in _text(result)
    assert not out.exists() and _records(world["settings"]) == []


def test_reidentification_is_refused_for_a_run_of_nhs_numbers(tmp_path):
    settings = Settings(home=tmp_path / "home")
    made = publish_world(settings)
    linkage = _write_linkage(tmp_path / "linkage.csv", _linkage_rows(["104233"]))
    with pytest.raises(ValueError, match="identifies people by NHS number already") as e:
        run_export(
            month=MONTH, cohort="falls_review", fmt="csv", out=tmp_path / "l.csv",
            settings=settings, linkage=linkage, purpose="direct care",
        )  # fmt: skip
    assert "nothing to re-identify" in str(e.value)
    assert not (tmp_path / "l.csv").exists() and _records(settings) == []
    assert made["run_id"]


def _broken(rows: list[tuple[str, str]], case: str) -> tuple[list[tuple[str, str]], str, int]:
    """Rows with one fault, the value that must not be echoed, and the line it is on."""
    rows = list(rows)
    pseudonym, number = rows[1]  # line 3 (the header is line 1)
    bad = {
        "check digit": number[:9] + str((int(number[9]) + 1) % 10),
        "nine digits": number[:9],
        "letters": number[:9] + "X",
    }
    if case in bad:
        rows[1] = (pseudonym, bad[case])
        return rows, bad[case], 3
    if case == "pseudonym":
        rows[1] = ("-" + pseudonym, number)
        return rows, number, 3
    if case == "same pseudonym twice":
        rows.append((pseudonym, "9990000018"))
        return rows, number, len(rows) + 1
    if case == "same NHS number twice":
        rows.append(("another-person", number))
        return rows, number, len(rows) + 1
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("check digit", "not a valid NHS number (10 digits, Modulus 11)"),
        ("nine digits", "not a valid NHS number"),
        ("letters", "not a valid NHS number"),
        ("pseudonym", "the pseudonym is not 1-64 letters"),
        ("same pseudonym twice", "the pseudonym is also on line 3"),
        ("same NHS number twice", "the NHS number is also on line 3, for another pseudonym"),
    ],
)
def test_bad_linkage_rows_name_the_file_and_line_never_the_value(world, case, says):
    rows, value, line = _broken(world["rows"], case)
    linkage = _write_linkage(world["linkage"], rows)
    result, out = _export(world, "--linkage", str(linkage), "--purpose", "direct care")
    assert result.exit_code == 1, result.output
    text = _text(result)
    assert f"linkage file {linkage}, line {line}: " in text and says in text
    assert value not in result.output and rows[1][0] not in result.output
    assert not out.exists() and _records(world["settings"]) == []


def test_someone_missing_from_the_linkage_is_an_error_without_the_pseudonym(world):
    mine = _mine(world)
    missing = mine.nhs_number.iloc[3]
    rows = [r for r in world["rows"] if r[0] != missing]
    linkage = _write_linkage(world["linkage"], rows)
    result, out = _export(world, "--linkage", str(linkage), "--purpose", "direct care")
    assert result.exit_code == 1
    text = _text(result)
    assert f"linkage file {linkage}: has no NHS number for 1 of the {len(mine)} people" in text
    assert "row 4 of the export" in text and "nobody was re-identified" in text
    assert missing not in result.output
    assert not out.exists() and _records(world["settings"]) == []


@pytest.mark.parametrize("header", ["nhs_number,pseudonym", "person_id,nhs_number", ""])
def test_a_linkage_file_needs_its_header(world, header):
    linkage = _write_linkage(world["linkage"], world["rows"], header=header)
    with pytest.raises(LinkageError, match=r"line 1: the header must be exactly"):
        read_linkage(linkage)


def test_a_linkage_file_must_be_a_plain_file(world, tmp_path):
    folder = world["linkage"].parent
    fifo = folder / "pipe.csv"
    os.mkfifo(fifo)  # would block a reader that opened it
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    target = _write_linkage(outside / "real.csv", world["rows"])
    link = folder / "link.csv"
    link.symlink_to(target)
    for bad, says in ((fifo, "FIFO"), (link, "outside"), (folder, "folder")):
        result, out = _export(world, "--linkage", str(bad), "--purpose", "direct care")
        assert result.exit_code == 1, result.output
        assert "must be a plain file" in _text(result) and says in _text(result)
        assert not out.exists()
    missing, out = _export(world, "--linkage", str(folder / "nope.csv"), "--purpose", "direct care")
    assert missing.exit_code == 1 and "cannot be read" in _text(missing)
    assert _records(world["settings"]) == []
    # A link inside the practice's own folder is a file like any other.
    (folder / "alias.csv").symlink_to(world["linkage"])
    assert len(read_linkage(folder / "alias.csv")) == len(world["rows"])


# ---- parsing ---------------------------------------------------------------------------------


def test_parse_linkage_takes_what_practices_write():
    text = '\ufeffpseudonym , nhs_number\r\n104233,999 833 6376\r\n\r\n"p.2_x-3", 9999126146 \r\n'
    assert parse_linkage(text, file=Path("l.csv")) == {
        "104233": "9998336376",
        "p.2_x-3": "9999126146",
    }


def test_parse_linkage_refuses_broken_csv_with_the_line():
    with pytest.raises(LinkageError, match="line 3: has 3 fields"):
        parse_linkage("pseudonym,nhs_number\na,9998336376\nb,9999126146,x\n", file=Path("l.csv"))
    with pytest.raises(LinkageError, match=r"line 2: is not valid CSV") as e:
        parse_linkage('pseudonym,nhs_number\n"a"b,9998336376\n', file=Path("l.csv"))
    assert "9998336376" not in str(e.value)


def test_reidentify_keeps_the_order_and_counts_who_is_missing():
    linkage = {"a": "9998336376", "b": "9999126146"}
    assert reidentify(["b", "a"], linkage, file=Path("l.csv")) == ["9999126146", "9998336376"]
    with pytest.raises(LinkageError, match="no NHS number for 2 of the 3 people") as e:
        reidentify(["a", "secret-1", "secret-2"], linkage, file=Path("l.csv"))
    assert "secret" not in str(e.value) and "row 2 of the export" in str(e.value)


def test_non_utf8_linkage_names_the_line(tmp_path):
    path = tmp_path / "l.csv"
    path.write_bytes(b"pseudonym,nhs_number\na,9998336376\nb\xff,9999126146\n")
    with pytest.raises(LinkageError, match="line 3: is not UTF-8"):
        read_linkage(path)
