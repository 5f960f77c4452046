"""The benchmark command: each stage timed in its own process, with peak memory."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from riskstrat.cli.common import console, library_errors, out, setup
from riskstrat.errors import UsageError


def bench(
    patients: Annotated[
        int | None,
        typer.Option(min=100, help="Population size; default the whole synthetic 999 range."),
    ] = None,
    scaling: Annotated[
        bool, typer.Option(help="Also run at 100,000 and 300,000 people to show growth.")
    ] = True,
    stages: Annotated[
        str,
        typer.Option(
            help="Comma-separated stages to run (also: sampling, which needs about 17 GB at "
            "909,091 people)."
        ),
    ] = "generate,train,features,explain,score,api,generate-omop,import-omop",
    months: Annotated[int, typer.Option(min=13, max=240)] = 48,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "parquet",
    results_dir: Annotated[
        Path, typer.Option(help="Where the JSON results go (git-ignored).")
    ] = Path("bench-results"),
    keep: Annotated[
        bool,
        typer.Option(
            help="Keep the generated files; a later run without the generate stage reuses them."
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the generated population.")] = 1,
    report: Annotated[
        Path | None,
        typer.Option(
            help="Also write this run's results as Markdown to this file (see bench-report)."
        ),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="duckdb, or spark: the features and score stages also run on Spark "
            "(features-spark, score-spark), each in its own process, beside DuckDB's."
        ),
    ] = "duckdb",
    spark_driver_memory: Annotated[
        str, typer.Option(help="Spark's driver memory in local mode (the Spark stages).")
    ] = "8g",
    postgres_url: Annotated[
        str | None,
        typer.Option(
            help="The PostgreSQL server the score-postgres stage publishes to (a new schema, "
            "dropped after); default this machine's, database test."
        ),
    ] = None,
) -> None:
    """Time each stage in its own process at one or more sizes, with peak memory."""
    from riskstrat.bench.stages import (
        STAGES,
        growth,
        machine_info,
        run_benchmarks,
        step_growth,
        with_engine,
        write_results,
    )
    from riskstrat.config import get_settings
    from riskstrat.nhs_number import SYNTHETIC_NHS_CAPACITY

    setup()
    chosen = [s.strip() for s in stages.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STAGES]
    if unknown or fmt not in ("csv", "parquet"):
        raise UsageError(f"stages must be among {', '.join(STAGES)}; format csv or parquet")
    chosen = with_engine(chosen, engine)
    n = patients or SYNTHETIC_NHS_CAPACITY
    sizes = sorted({n, *([s for s in (100_000, 300_000) if s < n] if scaling else [])})
    machine = machine_info()
    console.print(
        f"riskstrat bench on {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['memory_gb']} GB, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    table = Table(
        "stage", "people", "seconds", "rows/s", "peak RSS (MB)", "peak tree RSS (MB)",
        title="Benchmark",
    )  # fmt: skip

    done: list[object] = []

    def show(result: object) -> None:
        from riskstrat.bench.stages import StageResult

        assert isinstance(result, StageResult)
        done.append(result)
        console.print(
            f"{result.stage} at {result.patients:,} people: {result.seconds:.1f} s, "
            f"{result.rows_per_second:,.0f} rows/s, peak {result.peak_rss_mb:,.0f} MB"
            + _tree(result.peak_tree_rss_mb, ", with what it started {} MB")
        )

    try:
        with library_errors():  # e.g. a stage run without the one it needs
            results = run_benchmarks(
                sizes=sizes,
                stages=chosen,
                workdir=get_settings().home / "bench",
                months=months,
                fmt=fmt,
                seed=seed,
                keep=keep,
                on_result=show,
                stage_args={
                    "spark_driver_memory": spark_driver_memory,
                    **({"postgres_url": postgres_url} if postgres_url else {}),
                },
            )
    except BaseException:
        # A long run that fails at its last stage keeps the stages it measured.
        if done:
            from riskstrat.bench.stages import StageResult

            kept = [r for r in done if isinstance(r, StageResult)]
            written = write_results(kept, results_dir)
            out.print(f"partial results (up to the failed stage): {written}")
            if report is not None:
                out.print(f"report: {_write_report(written, report)}")
        raise
    for r in results:
        table.add_row(
            r.stage,
            f"{r.patients:,}",
            f"{r.seconds:.1f}",
            f"{r.rows_per_second:,.0f}",
            f"{r.peak_rss_mb:,.0f}",
            _tree(r.peak_tree_rss_mb, "{}") or "n/a",
        )
    out.print(table)
    for stage, exponent in growth(results).items():
        out.print(f"{stage}: time grows as N^{exponent:.2f} from {sizes[0]:,} to {sizes[-1]:,}")
    for step, exponent in step_growth(results).items():
        out.print(f"{step}: grows as N^{exponent:.2f} from {sizes[0]:,} to {sizes[-1]:,}")
    for r in results:  # each size against its own first people, timed in turn in one process
        d = r.detail
        if "same_extract_growth_exponent" in d:
            wall, cpu = (
                "n/a" if v is None else f"N^{v:.2f}"
                for v in (d["same_extract_growth_exponent"], d["same_extract_cpu_growth_exponent"])
            )
            out.print(
                f"{r.stage} at {r.patients:,}: one month against the first "
                f"{d['same_extract_base_patients']:,} people in the same process: {wall} "
                f"(CPU {cpu})"
            )
        if "same_model_growth_exponent" in d:
            out.print(
                f"{r.stage} at {r.patients:,}: the same model on {d['same_model_base_rows']:,} "
                f"rows and on all: N^{d['same_model_growth_exponent']:.2f}"
            )
    for r in results:
        for target in r.detail.get("targets", []):
            mark = {True: "[green]met[/]", False: "[red]not met[/]", None: "n/a"}[target["met"]]
            value = _figure(target["value"])
            out.print(
                f"{r.stage} at {r.patients:,}: {target['name']} = {value} "
                f"(target {target['target']}): {mark}"
            )
    written = write_results(results, results_dir)
    out.print(f"results: {written}")
    if report is not None:
        out.print(f"report: {_write_report(written, report)}")


def _figure(value: float | None) -> str:
    """A target's value as read beside its target: 45.2, 312,000, 3.1e-15."""
    if value is None:
        return "n/a"
    size = abs(float(value))
    if size >= 100:
        return f"{value:,.0f}"
    return f"{value:.3f}" if size >= 0.01 or size == 0 else f"{value:.2e}"


def _tree(value: float | None, template: str) -> str:
    return "" if value is None else template.format(f"{value:,.0f}")


def bench_report(
    results: Annotated[
        Path, typer.Argument(help="A results JSON file that riskstrat bench wrote.")
    ],
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="Write the Markdown to this file instead of stdout."),
    ] = None,
) -> None:
    """Render a riskstrat bench results file as Markdown: date, machine, stages, growth."""
    setup()
    if out_path is None:
        typer.echo(_render(results), nl=False)
    else:
        out.print(f"report: {_write_report(results, out_path)}")


def _render(results: Path) -> str:
    import json

    from riskstrat.bench.report import render_report

    try:
        run = json.loads(results.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"no results file {results}", hint="give a JSON file that riskstrat bench wrote"
        ) from None
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot read {results} as bench results: {exc}",
            hint="give a JSON file that riskstrat bench wrote",
        ) from None
    if not isinstance(run, dict) or not isinstance(run.get("results"), list):
        raise UsageError(
            f"{results} is not a riskstrat bench results file (no list of results)",
            hint="give a JSON file that riskstrat bench wrote",
        )
    return render_report(run)


def _write_report(results: Path, path: Path) -> Path:
    """The Markdown of a results file, written to ``path``; returns ``path``."""
    text = _render(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
