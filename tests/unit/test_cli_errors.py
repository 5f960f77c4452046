"""The one error handler of the command line: ``error:`` and ``hint:`` lines and the error's
exit code; never a class name or a traceback unless ``--debug`` asks for it."""

from __future__ import annotations

import inspect
import re

import pytest
from typer.testing import CliRunner

import riskstrat.errors
from riskstrat.cli import app
from riskstrat.config import get_settings
from riskstrat.errors import RiskstratError
from tests.support.home import initialised_home

runner = CliRunner()

CLASS_NAMES = ("Error", "Refused", "Exception", "Traceback")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RISKSTRAT_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def _says_no_class_name(output: str) -> bool:
    return not any(name in output for name in CLASS_NAMES)


def test_a_malformed_month_exits_2_with_message_and_hint():
    result = runner.invoke(app, ["score", "--data", "x", "--month", "2026-13"])
    assert result.exit_code == 2
    lines = _lines(result.output)
    assert lines[-2] == "error: month must look like YYYY-MM, got '2026-13'"
    assert lines[-1].startswith("hint: ") and "YYYY-MM" in lines[-1]
    assert _says_no_class_name(result.output)


def test_promote_without_versions_exits_1_saying_what_to_do(home):
    initialised_home(home)  # a home with an empty registry
    result = runner.invoke(app, ["promote"])
    assert result.exit_code == 1
    lines = _lines(result.output)
    assert lines[-2].startswith("error: no version 'challenger' of model")
    assert lines[-1] == (
        "hint: train a model (`riskstrat train`) and promote it (`riskstrat promote`)"
    )
    assert _says_no_class_name(result.output)


def test_validate_of_a_missing_folder_exits_1_with_a_hint(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    lines = _lines(result.output)
    assert lines[-2] == f"error: file {tmp_path / 'nowhere'}: extract folder does not exist"
    assert lines[-1].startswith("hint: check the path")
    assert _says_no_class_name(result.output)


def test_an_existing_output_folder_says_pass_overwrite(tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = runner.invoke(
        app, ["generate", "--out", str(out), "--patients", "50", "--months", "13"]
    )
    assert result.exit_code == 1
    assert "hint: pass --overwrite" in result.output
    assert _says_no_class_name(result.output)


def test_debug_adds_the_traceback_and_keeps_the_exit_code():
    result = runner.invoke(app, ["--debug", "score", "--data", "x", "--month", "2026-13"])
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.output
    assert "UsageError" in result.output
    assert "error: month must look like YYYY-MM" in result.output


def _explode(*args, **kwargs):
    raise RuntimeError("the flux capacitor is empty")


def test_an_unexpected_failure_exits_1_and_asks_for_a_report(monkeypatch, tmp_path, home):
    import riskstrat.pipelines.score

    initialised_home(home)
    monkeypatch.setattr(riskstrat.pipelines.score, "run_scoring", _explode)
    result = runner.invoke(app, ["score", "--data", str(tmp_path), "--month", "2026-10"])
    assert result.exit_code == 1
    lines = _lines(result.output)
    assert lines[-2] == "error: unexpected failure: the flux capacitor is empty"
    assert lines[-1].startswith("hint: ") and "--debug" in lines[-1]
    assert "report it" in lines[-1]
    assert _says_no_class_name(result.output)

    debug = runner.invoke(app, ["--debug", "score", "--data", str(tmp_path), "--month", "2026-10"])
    assert debug.exit_code == 1
    assert "Traceback (most recent call last)" in debug.output
    assert "RuntimeError: the flux capacitor is empty" in debug.output


class UniqueViolation(Exception):
    """Shaped as psycopg's: PostgreSQL's DETAIL line quotes the duplicate key."""


UniqueViolation.__module__ = "psycopg.errors"


def _duplicate(*args, **kwargs):
    raise UniqueViolation(
        'duplicate key value violates unique constraint "patient_scores_pkey"\n'
        "DETAIL:  Key (run_id, nhs_number)=(2, 9990000018) already exists.\n"
        "CONTEXT:  COPY patient_scores, line 21"
    )


def test_a_database_error_is_told_without_the_values_it_quotes(monkeypatch, tmp_path, home):
    import riskstrat.pipelines.score

    initialised_home(home)
    monkeypatch.setattr(riskstrat.pipelines.score, "run_scoring", _duplicate)
    result = runner.invoke(app, ["score", "--data", str(tmp_path), "--month", "2026-10"])
    assert result.exit_code == 1
    assert "error: unexpected failure: duplicate key value violates unique constraint" in (
        result.output
    )
    assert "9990000018" not in result.output and "DETAIL" not in result.output


def test_clicks_own_usage_errors_stay_as_they_were():
    result = runner.invoke(app, ["generate"])
    assert result.exit_code == 2
    assert "Missing option" in result.output and "--out" in result.output
    assert "error: unexpected failure" not in result.output


def test_a_pipelines_own_hint_is_printed(tmp_path, monkeypatch, home):
    import riskstrat.pipelines.score
    from riskstrat.errors import ConflictError

    initialised_home(home)

    def busy(*args, **kwargs):
        raise ConflictError("another process is scoring 2026-10", hint="wait for it to finish")

    monkeypatch.setattr(riskstrat.pipelines.score, "run_scoring", busy)
    result = runner.invoke(app, ["score", "--data", str(tmp_path), "--month", "2026-10"])
    assert result.exit_code == 1
    assert _lines(result.output)[-2:] == [
        "error: another process is scoring 2026-10",
        "hint: wait for it to finish",
    ]


def _error_classes() -> list[type[RiskstratError]]:
    return [
        c
        for _, c in inspect.getmembers(riskstrat.errors, inspect.isclass)
        if issubclass(c, RiskstratError) and c.__module__ == riskstrat.errors.__name__
    ]


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_every_error_class_has_a_title_slug_exit_code_and_http_status(cls):
    assert cls.title and cls.slug and re.fullmatch(r"[a-z]+(-[a-z]+)*", cls.slug)
    assert cls.exit_code in {1, 2}
    assert cls.http_status >= 400
    error = cls("something went wrong", hint="do this")
    assert str(error) == "something went wrong" and error.hint == "do this"
    problem = error.problem(instance="/x")
    assert problem["status"] == cls.http_status and problem["detail"] == "something went wrong"


def test_the_table_in_the_error_model_docstring_is_true():
    doc = riskstrat.errors.__doc__ or ""
    rows = {
        m.group(1): (int(m.group(2)), int(m.group(3)))
        for m in re.finditer(r"^``(\w+)``\s+(\d)\s+(\d{3})\s", doc, re.MULTILINE)
    }
    classes = {c.__name__: c for c in _error_classes() if c is not RiskstratError}
    assert set(rows) == set(classes)
    for name, (exit_code, status) in rows.items():
        assert (classes[name].exit_code, classes[name].http_status) == (exit_code, status)


def test_slugs_are_unique():
    slugs = [c.slug for c in _error_classes()]
    assert len(slugs) == len(set(slugs))
