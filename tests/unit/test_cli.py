"""The command line: exit codes and messages for the failures users will meet."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from riskstrat.cli import app
from riskstrat.config import get_settings
from tests.support.extracts import base_tables, write_extract
from tests.support.home import initialised_home


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RISKSTRAT_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


runner = CliRunner()


def test_validate_a_clean_extract_exits_0_and_writes_rejects_in_home(tmp_path, home):
    root = write_extract(tmp_path / "x")
    result = runner.invoke(app, ["validate", str(root)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output
    assert (home / "rejects" / "x.rejects.csv").is_file()


def test_validate_missing_column_exits_1_naming_file_and_column(tmp_path):
    root = write_extract(tmp_path / "x", drop_columns={"medications": ["drug_class"]})
    result = runner.invoke(app, ["validate", str(root)])
    assert result.exit_code == 1
    assert "medications.csv" in result.output and "drug_class" in result.output


def test_validate_too_many_rejects_exits_1_with_counts(tmp_path):
    tables = base_tables()
    tables["conditions"][0]["condition"] = "GOUT"
    root = write_extract(tmp_path / "x", tables)
    rejects = tmp_path / "r.csv"
    result = runner.invoke(app, ["validate", str(root), "--rejects", str(rejects)])
    assert result.exit_code == 1
    assert "too many rejected rows" in result.output and "conditions: 1 of 2" in result.output
    assert "invalid_code" in rejects.read_text()
    ok = runner.invoke(app, ["validate", str(root), "--max-reject-share", "0.6"])
    assert ok.exit_code == 0, ok.output


def test_generate_refuses_an_existing_folder(tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = runner.invoke(
        app,
        [
            "generate",
            "--out",
            str(out),
            "--patients",
            "50",
            "--months",
            "13",
            "--extract-date",
            "2026-11-01",
        ],
    )
    assert result.exit_code == 1
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["score", "--data", "x", "--month", "2026-13"], 2),
        (["score", "--data", "x", "--month", "Nov 2026"], 2),
        (["predict", "--data", "x", "--as-of", "2026-11", "--out", "p.csv"], 2),
        (["generate", "--out", "x", "--format", "xlsx"], 2),
    ],
)
def test_bad_options_exit_2(args, code):
    assert runner.invoke(app, args).exit_code == code


def test_train_without_an_extract_exits_1(tmp_path):
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_score_without_a_model_exits_1(tmp_path, home):
    initialised_home(home)  # a home, but no model trained in it
    root = write_extract(tmp_path / "x")
    result = runner.invoke(app, ["score", "--data", str(root), "--month", "2026-10"])
    assert result.exit_code == 1 and "no version 'champion'" in result.output


def test_score_whose_pruning_failed_says_so_and_exits_0(tmp_path, monkeypatch, home):
    """The month was published; only the retention pruning after it failed."""
    from datetime import date

    import riskstrat.pipelines.score
    from riskstrat.pipelines.score import ScoreResult

    initialised_home(home)

    root = write_extract(tmp_path / "x")
    published = ScoreResult(
        run_id=7, month=date(2026, 10, 1), model_name="emergency_admission_90d",
        model_version="3", n_scored=120, n_type1_opt_outs_excluded=2, seconds=1.5,
        cohort_sizes={"falls_review": 4}, replaced_runs=[], pruned_runs=[],
        prune_error="OperationalError",
    )  # fmt: skip
    monkeypatch.setattr(riskstrat.pipelines.score, "run_scoring", lambda *a, **k: published)
    result = runner.invoke(app, ["score", "--data", str(root), "--month", "2026-10"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # as wrapped to the terminal's width
    assert "published run 7" in said
    assert "(OperationalError); the month is published, and the next run removes them" in said


@pytest.mark.parametrize(
    ("month", "index_date"),
    [("latest", "2026-11-01"), ("latest-1", "2026-10-01"), ("latest-12", "2025-11-01")],
)
def test_score_latest_and_months_before_it(tmp_path, monkeypatch, home, month, index_date):
    from datetime import date

    import riskstrat.pipelines.score
    from riskstrat.pipelines.score import ScoreResult

    initialised_home(home)
    root = write_extract(tmp_path / "x")  # extract date 2026-11-01
    asked: list[date] = []

    def scored(*args, month, **kwargs):
        asked.append(month)
        return ScoreResult(
            run_id=1, month=month, model_name="m", model_version="1", n_scored=1,
            n_type1_opt_outs_excluded=0, seconds=0.1, cohort_sizes={}, replaced_runs=[],
            pruned_runs=[],
        )  # fmt: skip

    monkeypatch.setattr(riskstrat.pipelines.score, "run_scoring", scored)
    result = runner.invoke(app, ["score", "--data", str(root), "--month", month])
    assert result.exit_code == 0, result.output
    assert asked == [date.fromisoformat(index_date)]


@pytest.mark.parametrize("month", ["latest-", "latest-x", "latest+1", "latest-999"])
def test_score_refuses_what_is_not_a_month(tmp_path, home, month):
    initialised_home(home)
    root = write_extract(tmp_path / "x")
    result = runner.invoke(app, ["score", "--data", str(root), "--month", month])
    assert result.exit_code == 2 and "latest-N" in " ".join(result.output.split())


_HUGEPAGES_AFTER_THE_COMMAND = """
import sys
import riskstrat.cli
from riskstrat.cli import entry

assert "numpy" not in sys.modules, "importing the command line imported numpy"
sys.argv = ["riskstrat", "--help"]
try:
    entry.main()
except SystemExit as stop:
    assert stop.code == 0, stop.code
from numpy._core.multiarray import _get_madvise_hugepage

print("hugepages", _get_madvise_hugepage())
"""


@pytest.mark.parametrize(("setting", "want"), [(None, "False"), ("0", "False"), ("1", "True")])
def test_the_command_turns_numpys_huge_page_requests_off_unless_told(setting, want):
    # numpy reads its switch when first imported, so the command sets it before then;
    # an operator's own setting wins.
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    if setting is not None:
        env["NUMPY_MADVISE_HUGEPAGE"] = setting
    done = subprocess.run(
        [sys.executable, "-c", _HUGEPAGES_AFTER_THE_COMMAND],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == f"hugepages {want}"
