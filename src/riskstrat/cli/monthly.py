"""The monthly commands: score a month, follow up its outcomes, export its lists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from riskstrat.calendar import add_months
from riskstrat.cli.common import (
    DATA_HELP,
    ENGINE_HELP,
    extract_location,
    library_errors,
    out,
    parse_month_option,
    progress_bar,
    settings_for_engine,
    setup,
)
from riskstrat.cli.home import require_registry, require_store
from riskstrat.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd


def score(
    data: Annotated[str, typer.Option("--data", help=DATA_HELP, show_default=False)],
    month: Annotated[
        str,
        typer.Option(
            help="Month to score: YYYY-MM, 'latest' (the extract's month), or 'latest-N' "
            "(N months before it); the index date is its 1st."
        ),
    ],
    model: Annotated[
        str, typer.Option(help="champion, another alias, or a version number.")
    ] = "champion",
    cohorts: Annotated[
        Path | None,
        typer.Option(
            help="Cohort criteria and effects (versioned configuration); "
            "default: the cohorts.yaml shipped with the model."
        ),
    ] = None,
    engine: Annotated[str | None, typer.Option(help=ENGINE_HELP)] = None,
    icbs: Annotated[
        Path | None,
        typer.Option(
            help="An ICB plan (practices to ICBs, a store per ICB): score a multi-ICB "
            "extract once and publish each ICB's people to its own store (docs/scale.md)."
        ),
    ] = None,
) -> None:
    """Score everyone eligible on the month's first day, explain, build the intervention
    cohorts, and publish the run (staged, then switched in one transaction)."""
    from riskstrat.pipelines.common import engine_for, read_extract_manifest
    from riskstrat.pipelines.icbs import load_icb_plan, run_scoring_icbs
    from riskstrat.pipelines.score import run_scoring

    setup()
    settings = settings_for_engine(engine)
    location = extract_location(data)
    # A URI is read on Spark: one session serves the manifest ('latest') and the run.
    with engine_for(settings, location), library_errors():
        if month.startswith("latest"):
            # The latest month whose first day has complete data before it, or N before it.
            match = re.fullmatch(r"latest(?:-(\d{1,3}))?", month)
            if match is None or int(match.group(1) or 0) > 240:
                raise UsageError(
                    f"not a month: {month!r}",
                    hint="give YYYY-MM, 'latest' or 'latest-N' (N up to 240), e.g. latest-1",
                )
            back = int(match.group(1) or 0)
            extract_date = read_extract_manifest(settings, location).extract_date
            index_date = add_months(extract_date.replace(day=1), -back)
        else:
            index_date = parse_month_option(month)
        require_registry()
        if icbs is not None:
            plan = load_icb_plan(icbs)
            with progress_bar("score") as progress:
                results = run_scoring_icbs(
                    location,
                    month=index_date,
                    plan=plan,
                    model_ref=model,
                    cohorts_file=cohorts,
                    progress=progress,
                    settings=settings,
                )
            for icb, done in results.items():
                sizes = ", ".join(f"{k} {v:,}" for k, v in done.cohort_sizes.items())
                out.print(
                    f"{icb}: published run {done.run_id} for {done.month}: {done.n_scored:,} "
                    f"people ({done.n_type1_opt_outs_excluded:,} type 1 opt-outs left out); "
                    f"cohorts: {sizes}"
                )
            out.print(
                f"{len(results)} ICBs scored once with {settings.model_name} in "
                f"{max(r.seconds for r in results.values()):.1f} s; monitor each ICB's store "
                "with `riskstrat monitor` and that ICB's RISKSTRAT_DATABASE_URL"
            )
            return
        with progress_bar("score") as progress:
            result = run_scoring(
                location,
                month=index_date,
                model_ref=model,
                cohorts_file=cohorts,
                progress=progress,
                settings=settings,
            )
    sizes = ", ".join(f"{k} {v:,}" for k, v in result.cohort_sizes.items())
    replaced = (
        f"; it replaces run {', '.join(map(str, result.replaced_runs))} for the same month"
        if result.replaced_runs
        else ""
    )
    out.print(
        f"published run {result.run_id} for {result.month}: {result.n_scored:,} people scored with "
        f"{result.model_name} v{result.model_version} ({result.n_type1_opt_outs_excluded:,} type 1 "
        f"opt-outs left out) in {result.seconds:.1f} s{replaced}\ncohorts: {sizes}"
    )
    for name, version in (result.ranking_models or {}).items():
        out.print(f"ranked by {name}: {version.split()[-1]} (its champion) where a list names it")
    for name in result.ranking_missing or []:
        out.print(
            f"[yellow]warning:[/] {name} has no champion: the lists it ranks are ranked by "
            f"admission risk this month, and say so. Train and promote it: riskstrat train "
            f"--spec <its model folder>, then riskstrat promote --spec <its model folder>"
        )
    if result.pruned_runs:
        out.print(f"retention: removed {len(result.pruned_runs)} old run(s)")
    if result.prune_error:
        out.print(
            f"[yellow]warning:[/] removing months older than the retention window failed "
            f"({result.prune_error}); the month is published, and the next run removes them"
        )
    if isinstance(location, Path):
        _monitor_after(location)
    else:
        out.print(
            "monitoring reads a local extract (DuckDB): run `riskstrat monitor --data FOLDER` "
            "on a local copy of this month's extract"
        )


def _monitor_after(data: Path) -> None:
    """Monitoring, when this extract lets an earlier month's outcomes mature; its failure is
    reported by type and never fails the publish."""
    from riskstrat.pipelines.monitor import monitor_after_score

    report, error = monitor_after_score(data)
    if error is not None:
        out.print(
            f"[yellow]warning:[/] monitoring failed ({error}); the month is published. "
            "Run `riskstrat monitor --data EXTRACT` to see why"
        )
    elif report is not None:
        colour = {"green": "green", "amber": "yellow", "red": "bold red"}.get(report.overall, "")
        out.print(
            f"monitoring: [{colour or 'dim'}]{report.overall}[/] "
            f"({len(report.months)} matured month(s)); details: `riskstrat monitor --data EXTRACT`"
        )


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def _print_marks(by_mark: pd.DataFrame, *, title: str) -> None:
    """The people on each list by their latest mark, and O/E for the reviewed and the rest;
    nothing when nobody on any list was marked."""
    marked = ("reviewed", "declined", "not_appropriate", "contacted")
    if by_mark.empty or not by_mark[[f"{g}_people" for g in marked]].to_numpy().any():
        return
    table = Table(title=title)
    for col in ("intervention", "reviewed", "declined", "not appropriate", "contacted",
                "unmarked", "reviewed: O / E (95% CI)", "the rest: O / E (95% CI)"):  # fmt: skip
        table.add_column(col)
    for r in by_mark.to_dict(orient="records"):
        cells = [str(r["intervention"])]
        for group in ("reviewed", "declined", "not_appropriate", "contacted", "unmarked"):
            cells.append(f"{r[f'{group}_people']:,}")
        for g in ("reviewed", "rest"):
            cells.append(
                f"{r[f'{g}_observed']} / {r[f'{g}_expected']:.1f} = {_num(r[f'{g}_oe'], 2)} "
                f"({_num(r[f'{g}_oe_low'], 2)}-{_num(r[f'{g}_oe_high'], 2)})"
            )
        table.add_row(*cells)
    out.print(table)
    out.print(
        "marks = the latest mark a team made for that intervention before the 90 days ended. "
        "Who is reviewed is not random either."
    )


def outcomes(
    month: Annotated[str, typer.Option(help="Month of the published run to follow up (YYYY-MM).")],
    data: Annotated[Path, typer.Option("--data", help="A later extract covering 90 days after.")],
    by_practice: Annotated[bool, typer.Option(help="Also print one row per practice.")] = False,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Write the per-practice summary to this CSV.")
    ] = None,
) -> None:
    """Expected against observed admissions for a past month's cohorts, by whether the
    intervention was delivered, with O/E and admissions avoided. Aggregates only."""
    from riskstrat.pipelines.outcomes import run_outcomes

    setup()
    when = parse_month_option(month)
    require_store()
    with library_errors(), progress_bar("outcomes") as progress:
        result = run_outcomes(data, month=when, progress=progress)
    frames = [("intervention", result.by_intervention)]
    if by_practice:
        frames.append(("practice", result.by_practice))
    for title, frame in frames:
        table = Table(
            title=f"Outcomes of run {result.run_id} ({when:%Y-%m}) by {title}, "
            f"followed to {result.outcome_extract_date}"
        )
        keys = ["intervention"] + (["practice_code"] if title == "practice" else [])
        for col in keys + [
            "reached: people",
            "reached: O / E (95% CI)",
            "not reached: people",
            "not reached: O / E (95% CI)",
            "avoided vs expected (95% CI)",
            "avoided vs not reached",
        ]:
            table.add_column(col)
        for r in frame.to_dict(orient="records"):
            cells = [str(r[k]) for k in keys]
            for g in ("delivered", "not_delivered"):
                cells.append(f"{r[f'{g}_people']:,}")
                cells.append(
                    f"{r[f'{g}_observed']} / {r[f'{g}_expected']:.1f} = {_num(r[f'{g}_oe'], 2)} "
                    f"({_num(r[f'{g}_oe_low'], 2)}-{_num(r[f'{g}_oe_high'], 2)})"
                )
            cells.append(
                f"{_num(r['avoided_vs_expected'])} ({_num(r['avoided_vs_expected_low'])} to "
                f"{_num(r['avoided_vs_expected_high'])})"
            )
            cells.append(_num(r["avoided_vs_not_delivered"]))
            table.add_row(*cells)
        out.print(table)
    _print_marks(result.by_mark, title=f"Marks on run {result.run_id}'s lists ({when:%Y-%m})")
    if csv_out is not None:
        result.by_practice.to_csv(csv_out, index=False)
        out.print(f"wrote {csv_out}")
    out.print(
        "reached = the intervention was recorded in the 90 days after the index date. Who is "
        "reached is not random, so these are estimates, not a trial."
    )


def export(
    month: Annotated[str, typer.Option(help="Month of the published run (YYYY-MM).")],
    cohort: Annotated[
        str,
        typer.Option(help="falls_review, medication_review or advance_care_planning."),
    ],
    pcn: Annotated[str | None, typer.Option(help="PCN ODS code, e.g. U12345.")] = None,
    practice: Annotated[str | None, typer.Option(help="Practice ODS code.")] = None,
    capacity: Annotated[int | None, typer.Option(min=1, help="Only the top N.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or xlsx.")] = "csv",
    out_file: Annotated[Path | None, typer.Option("--out", help="Output file.")] = None,
    linkage: Annotated[
        Path | None,
        typer.Option(
            help="A pseudonymous run only: the practice's linkage file (CSV: pseudonym,"
            'nhs_number) to add NHS numbers for direct care; needs --purpose "direct care". '
            "Read only, never stored; the re-identification is recorded in the access log."
        ),
    ] = None,
    purpose: Annotated[
        str | None,
        typer.Option(help='Why the list is needed (audited); "direct care" for --linkage.'),
    ] = None,
) -> None:
    """Write a cohort list a practice team opens in Excel (recorded in the access log)."""
    from riskstrat.pipelines.export import run_export

    setup()
    if fmt not in ("csv", "xlsx"):
        raise UsageError("--format must be csv or xlsx")
    when = parse_month_option(month)
    require_store()
    with library_errors():
        result = run_export(
            month=when,
            cohort=cohort,
            fmt=fmt,  # type: ignore[arg-type]
            pcn=pcn,
            practice=practice,
            capacity=capacity,
            out=out_file,
            linkage=linkage,
            purpose=purpose,
        )
    out.print(f"wrote {result.rows:,} people to {result.path} (from run {result.run_id})")
    if result.identifier_kind == "pseudonym" and not result.reidentified:
        out.print("people are identified by pseudonym (the run is pseudonymous)")
    if result.reidentified:
        out.print(
            f"re-identified {result.reidentified:,} people from the linkage file for direct "
            "care; recorded in the access log. The file identifies people: keep it safe."
        )
