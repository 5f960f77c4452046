"""A ``riskstrat bench`` results file as Markdown: date, machine, every stage and size."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from riskstrat.bench.report import render_report
from riskstrat.bench.stages import StageResult
from riskstrat.cli import app


def _run() -> dict[str, Any]:
    """A results dict as ``write_results`` writes it, built by hand at two sizes."""
    features = [
        StageResult(
            "features",
            n,
            seconds,
            n,
            812.25,
            {
                "validate_seconds": 1.5,
                "features_seconds": seconds - 1.5,
                "features_cpu_seconds": 3.25,
                "step_seconds": {"validate": 1.5, "one month": seconds - 1.5},
                "same_extract_growth_exponent": None,
            },
        )
        for n, seconds in ((20_000, 4.0), (100_000, 15.5))
    ]
    train = StageResult(
        "train",
        100_000,
        61.234,
        1_634_753,
        5_939.7,
        {
            "measured": {"auroc": 0.82157},
            "oracle_dates": ["2026-01-01", "2026-02-01"],
            "targets": [
                {"name": "auroc", "value": 0.82157, "target": ">= 0.8", "met": True},
                {"name": "model / oracle AUROC", "value": 0.9471, "target": ">= 0.95",
                 "met": False},
                {"name": "share flagged", "value": None, "target": "<= 1.3", "met": None},
            ],
        },
    )  # fmt: skip
    api = StageResult(
        "api",
        100_000,
        120.0,
        24_000,
        4_200.0,
        {
            "load": [
                {"name": "patient risk", "p99_ms": 6.8},
                {"name": "cohort | page", "p99_ms": 9.7},
            ]
        },
    )
    return {
        "at": "2026-12-07T14:03:27+00:00",
        "machine": {
            "cpu": "AMD EPYC 7B13",
            "cores": 2,
            "memory_gb": 23.5,
            "python": "3.11.9",
            "system": "Linux 6.8.0",
            "packages": {"riskstrat": "0.1.0", "duckdb": "1.1.3"},
            "hostname": "ward-7-laptop",  # a later machine_info might add these: never shown
            "user": "dr.jones",
        },
        "results": [r.as_dict() for r in (*features, train, api)],
        "growth_exponent": {"features": 0.843},
        "step_growth_exponent": {"features.features_seconds": 1.021},
    }


def test_report_has_the_date_machine_every_stage_and_size_and_formats_figures():
    text = render_report(_run())
    heading = text.splitlines()[0]
    assert heading.startswith("## ") and "2026-12-07 14:03 UTC" in heading
    assert "AMD EPYC 7B13, 2 cores, 23.5 GB" in heading
    assert "Python 3.11.9" in text and "Linux 6.8.0" in text and "duckdb 1.1.3" in text
    for stage in ("features", "train", "api"):
        assert f"| `{stage}` |" in text
    assert "People: 20,000, 100,000." in text
    # Figures: thousands separators, seconds and megabytes rounded, exponents as N^b.
    assert "| `train` | 100,000 | 61.2 | 1,634,753 | 26,697 | 5,940 |" in text
    assert "| `features` | 20,000 | 4.00 | 20,000 | 5,000 | 812 |" in text
    assert "| stage `features` | N^0.84 |" in text
    assert "| step `features.features_seconds` | N^1.02 |" in text
    assert "from 20,000 to 100,000 people" in text
    # Targets, met or not or unknown; the detail figures, a column per size.
    assert "| `train` | 100,000 | auroc | 0.822 | >= 0.8 | **met** |" in text
    assert "| model / oracle AUROC | 0.947 | >= 0.95 | not met |" in text
    assert "| share flagged | n/a | <= 1.3 | n/a |" in text
    assert "| figure | 20,000 people | 100,000 people |" in text
    assert "| `step_seconds.one month` | 2.50 | 14.00 |" in text
    assert "| `same_extract_growth_exponent` | n/a | n/a |" in text
    assert "| `load[patient risk].p99_ms` | 6.80 |" in text
    assert "| `load[cohort \\| page].p99_ms` | 9.70 |" in text  # a pipe does not split a cell
    assert ".name`" not in text  # the entry's name labels it; not a figure of its own
    assert "| `oracle_dates` | 2026-01-01, 2026-02-01 |" in text
    assert "| `measured.auroc` | 0.822 |" in text
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_no_host_or_user_name_reaches_the_report():
    run = _run()
    run["results"][0]["detail"]["hostname"] = "ward-7-laptop"
    run["results"][0]["detail"]["workdir"] = "/home/dr.jones/bench/n20000"
    text = render_report(run)
    assert "ward-7-laptop" not in text and "dr.jones" not in text
    assert "hostname" not in text and "workdir" not in text


def test_missing_optional_fields_do_not_break_the_report():
    run = _run()
    for key in ("growth_exponent", "step_growth_exponent"):
        del run[key]
    del run["machine"]["packages"], run["machine"]["memory_gb"]
    first = run["results"][0]
    for key in ("rows_per_second", "peak_rss_mb", "detail"):
        del first[key]
    text = render_report(run)
    assert "### Growth with N" not in text
    assert text.splitlines()[0].endswith("AMD EPYC 7B13, 2 cores")
    assert "| `features` | 20,000 | 4.00 | 20,000 | 5,000 | n/a |" in text  # rows/s computed

    bare = render_report({"results": [{"stage": "generate"}]})
    assert "date unknown" in bare and "machine unknown" in bare
    assert "| `generate` | n/a | n/a | n/a | n/a | n/a |" in bare
    assert "No stage results." in render_report({})


def test_cpu_time_column_only_when_a_stage_records_it():
    run = _run()
    assert "CPU time" not in render_report(run)
    run["results"][0]["detail"]["cpu_seconds"] = 7.125
    assert "| `features` | 20,000 | 4.00 | 20,000 | 5,000 | 812 | 7.12 |" in render_report(run)


def test_bench_report_command_prints_or_writes_the_markdown(tmp_path):
    results = tmp_path / "bench-20261207T140327Z.json"
    results.write_text(json.dumps(_run()))
    runner = CliRunner()
    printed = runner.invoke(app, ["bench-report", str(results)])
    assert printed.exit_code == 0, printed.output
    assert printed.output == render_report(_run())
    out = tmp_path / "docs" / "latest.md"
    written = runner.invoke(app, ["bench-report", str(results), "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert out.read_text() == render_report(_run())

    (tmp_path / "bad.json").write_text("[1, 2]")
    for path in (tmp_path / "missing.json", tmp_path / "bad.json"):
        failed = runner.invoke(app, ["bench-report", str(path)])
        assert failed.exit_code == 2, failed.output


def test_bench_with_report_writes_the_markdown_of_its_results_file(tmp_path, monkeypatch):
    """``riskstrat bench --report PATH``: the JSON as before, and its Markdown at PATH."""
    import riskstrat.bench.stages
    from riskstrat.config import get_settings

    def results(**kwargs: Any) -> list[StageResult]:
        return [StageResult("generate", 300, 1.25, 30_000, 400.0, {"months": 13})]

    monkeypatch.setattr(riskstrat.bench.stages, "run_benchmarks", results)
    monkeypatch.setenv("RISKSTRAT_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    report = tmp_path / "docs" / "latest.md"
    try:
        result = CliRunner().invoke(
            app,
            ["bench", "--patients", "300", "--no-scaling", "--stages", "generate",
             "--results-dir", str(tmp_path / "r"), "--report", str(report)],
        )  # fmt: skip
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    [path] = list((tmp_path / "r").glob("bench-*.json"))
    assert report.read_text() == render_report(json.loads(path.read_text()))
    assert "| `generate` | 300 | 1.25 | 30,000 | 24,000 | 400 |" in report.read_text()
