"""The ``riskstrat`` command. Thin: parse options, call a pipeline, print the outcome."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(
    help="riskstrat: 90-day emergency admission risk, cohorts and explanations for PCNs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _date(text: str, option: str) -> date:
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise _fail(f"{option} must be a date like 2026-11-01, got {text!r}", 2) from None


@contextmanager
def _progress(title: str) -> Iterator[Callable[[str, float], None]]:
    """A rich progress bar driven by the pipelines' (stage, fraction) callbacks."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(title, total=1.0)

        def update(stage: str, fraction: float) -> None:
            bar.update(task, completed=fraction, description=f"{title}: {stage}")

        yield update


def _setup() -> None:
    from riskstrat.logs import configure_logging

    configure_logging()
    for console_ in (out, console):
        if not console_.is_terminal:  # piped or captured: keep tables whole, not cut at 80
            console_.width = 160


@app.command()
def generate(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to create (must not exist).")],
    patients: Annotated[int, typer.Option(min=1, help="People ever registered.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 1,
    months: Annotated[int, typer.Option(min=13, max=240, help="Months of history.")] = 48,
    extract_date: Annotated[
        str | None,
        typer.Option(help="First day not covered (YYYY-MM-DD); default 1st of this month."),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="csv or parquet (a contract extract), or omop: the same people as an OMOP "
            "CDM 5.4 with its site map, IMD lookup and linkage files.",
        ),
    ] = "csv",
    omop_layout: Annotated[
        str, typer.Option(help="With --format omop: duckdb (cdm.duckdb) or csv (cdm/*.csv).")
    ] = "duckdb",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing folder.")] = False,
    oracle: Annotated[
        bool,
        typer.Option(help="Also write each person's true 90-day risk (outside the extract)."),
    ] = False,
    oracle_date: Annotated[
        list[str] | None,
        typer.Option(
            help="Index date for the true risk (repeatable); default the latest complete month."
        ),
    ] = None,
    oracle_out: Annotated[
        Path | None, typer.Option(help="True-risk file; default OUT.oracle.parquet beside OUT.")
    ] = None,
) -> None:
    """Generate a synthetic extract (999-prefixed NHS numbers) that passes validation, or the
    same population as an OMOP CDM."""
    from riskstrat.synth import generate_extract

    _setup()
    if fmt not in ("csv", "parquet", "omop"):
        raise _fail("--format must be csv, parquet or omop", 2)
    if omop_layout not in ("duckdb", "csv"):
        raise _fail("--omop-layout must be duckdb or csv", 2)
    when = _date(extract_date, "--extract-date") if extract_date else date.today().replace(day=1)
    fmt_literal: Literal["csv", "parquet", "omop"] = (
        "csv" if fmt == "csv" else "parquet" if fmt == "parquet" else "omop"
    )
    layout: Literal["duckdb", "csv"] = "csv" if omop_layout == "csv" else "duckdb"
    dates = [_date(d, "--oracle-date") for d in oracle_date or []]
    try:
        with _progress("generate") as progress:
            summary = generate_extract(
                out_dir,
                n_patients=patients,
                seed=seed,
                months=months,
                extract_date=when,
                fmt=fmt_literal,
                overwrite=overwrite,
                progress=progress,
                oracle=oracle or bool(dates) or oracle_out is not None,
                oracle_dates=dates or None,
                oracle_path=oracle_out,
                omop_layout=layout,
            )
    except (FileExistsError, ValueError) as exc:
        raise _fail(str(exc)) from None
    what = "OMOP CDM 5.4" if fmt == "omop" else "Synthetic extract"
    table = Table("table", "rows", title=f"{what} in {summary.out_dir}")
    for name, n in summary.rows.items():
        table.add_row(name, f"{n:,}")
    out.print(table)
    out.print(
        f"{summary.n_patients:,} people, history {summary.history_start} to {summary.extract_date} "
        f"(extract date), {summary.seconds:.1f} s"
    )
    if summary.oracle_path is not None:
        out.print(
            f"true risk at {', '.join(str(d) for d in summary.oracle_dates)} written to "
            f"{summary.oracle_path} (outside the extract)"
        )


@app.command()
def validate(
    data: Annotated[Path, typer.Argument(help="Extract folder.")],
    rejects: Annotated[
        Path | None, typer.Option(help="Rejects CSV to write; default under RISKSTRAT_HOME.")
    ] = None,
    max_reject_share: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Stop above this share per table.")
    ] = None,
) -> None:
    """Check an extract against the data contract and write its rejects file."""
    from riskstrat.config import get_settings
    from riskstrat.data.extract import ExtractError, TooManyRejectsError, validate_extract
    from riskstrat.pipelines.common import rejects_path_for

    _setup()
    settings = get_settings()
    rejects_path = rejects or rejects_path_for(settings, data)
    share = settings.max_reject_share if max_reject_share is None else max_reject_share
    try:
        with validate_extract(data, max_reject_share=share, rejects_path=rejects_path) as extract:
            summary = extract.summary
    except TooManyRejectsError as exc:
        _print_validation(exc.summary)
        raise _fail(str(exc)) from None
    except ExtractError as exc:
        raise _fail(str(exc)) from None
    _print_validation(summary)
    out.print(f"[green]valid[/]: rejects listed in {rejects_path}")


import_app = typer.Typer(help="Bring data from other models in as a riskstrat extract.")
app.add_typer(import_app, name="import")


@import_app.command("omop")
def import_omop_command(
    source: Annotated[
        str,
        typer.Option(
            help="The CDM: a DuckDB file, a folder of CDM tables as CSV or Parquet (e.g. "
            "OHDSI Eunomia's PERSON.csv, ...), or postgresql://user@host/db?schema=cdm."
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Extract folder to create.")],
    extract_date: Annotated[
        str | None,
        typer.Option(
            help="First day not covered (YYYY-MM-DD); default the day after the "
            "latest observation period ends."
        ),
    ] = None,
    sites: Annotated[
        Path | None,
        typer.Option(
            help="Site map CSV: care_site_id (or care_site_source_value), practice_code, pcn_code."
        ),
    ] = None,
    practice: Annotated[
        str | None, typer.Option(help="Without --sites: everyone's practice (ODS code).")
    ] = None,
    pcn: Annotated[str | None, typer.Option(help="Without --sites: everyone's PCN.")] = None,
    imd: Annotated[Path | None, typer.Option(help="IMD lookup CSV: lsoa_code, imd_decile.")] = None,
    schema: Annotated[
        str | None, typer.Option(help="The CDM schema (DuckDB file or PostgreSQL).")
    ] = None,
    cdm_version: Annotated[
        str | None, typer.Option(help="5.3 or 5.4; default from cdm_source.")
    ] = None,
    codelists: Annotated[
        Path | None, typer.Option(help="A folder of codelists to use instead of the shipped.")
    ] = None,
    hospital_records: Annotated[
        str,
        typer.Option(
            help="Records linked to a hospital visit: exclude (they are that "
            "visit's activity, not GP conditions or observations) or include."
        ),
    ] = "exclude",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing extract.")] = False,
) -> None:
    """Import an OMOP CDM (v5.3 or v5.4) as a pseudonymous extract, with a mapping report."""
    from riskstrat.config import get_settings
    from riskstrat.data.errors import ExtractError
    from riskstrat.data.omop import import_omop

    _setup()
    if hospital_records not in ("exclude", "include"):
        raise _fail("--hospital-records must be exclude or include", 2)
    settings = get_settings()
    when = _date(extract_date, "--extract-date") if extract_date else None
    try:
        with _progress("import") as progress:
            result = import_omop(
                source,
                out_dir,
                extract_date=when,
                sites=sites,
                practice_code=practice,
                pcn_code=pcn,
                imd=imd,
                schema=schema,
                cdm_version=cdm_version,
                codelists=codelists,
                hospital_records="include" if hospital_records == "include" else "exclude",
                overwrite=overwrite,
                scratch_dir=settings.home / "duckdb-tmp",
                memory_limit=settings.duckdb_memory_limit,
                threads=settings.duckdb_threads,
                progress=progress,
            )
    except (ExtractError, FileExistsError) as exc:
        raise _fail(str(exc)) from None
    report = result.report
    persons = report["persons"]
    table = Table("table", "candidates", "written", "left out", title=f"Extract in {out_dir}")
    for name, info in report["contract_tables"].items():
        left = sum(info["dropped"].values())
        table.add_row(name, f"{info['candidates']:,}", f"{info['written']:,}", f"{left:,}")
    out.print(table)
    out.print(
        f"{persons['kept']:,} of {persons['read']:,} persons imported; identifiers are "
        f"pseudonyms (person_id); extract date {result.extract_date} "
        f"({report['extract']['extract_date_from']}); CDM {report['source']['cdm_version']}; "
        f"{result.seconds:.1f} s"
    )
    for warning in report["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")
    json_path, md_path = result.report_paths
    out.print(f"mapping report: {md_path} (and {json_path.name}); next: riskstrat validate "
              f"{out_dir}")  # fmt: skip


def _print_validation(summary: object) -> None:
    from riskstrat.data.extract import ValidationSummary

    assert isinstance(summary, ValidationSummary)
    table = Table("table", "rows read", "accepted", "rejected", "share", title="Validation")
    for name, read in summary.rows_read.items():
        rejected = summary.rows_rejected[name]
        table.add_row(
            name,
            f"{read:,}",
            f"{read - rejected:,}",
            f"{rejected:,}",
            f"{summary.reject_share(name):.2%}",
        )
    out.print(table)
    if summary.rule_counts:
        rules = Table("table", "column", "rule", "rows", title="Rejects by rule")
        for r in summary.rule_counts:
            rules.add_row(r.table, r.column, r.rule, f"{r.rows:,}")
        out.print(rules)
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    manifest = summary.manifest
    if manifest.identifier_kind == "pseudonym":
        out.print(
            f"identifiers: pseudonyms (contract version {manifest.contract_version}); "
            "they are not checked as NHS numbers"
        )


@app.command()
def profile(
    data: Annotated[Path, typer.Argument(help="Extract folder (real or synthetic).")],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the profile as JSON here.")
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="Exit 1 if any measure is outside its reference range.")
    ] = False,
) -> None:
    """Print the realism profile of an extract beside England's reference ranges."""
    import json

    from riskstrat.config import get_settings
    from riskstrat.data.extract import ExtractError, validate_extract
    from riskstrat.features.profile import profile_extract

    _setup()
    try:
        with validate_extract(data, max_reject_share=get_settings().max_reject_share) as extract:
            result = profile_extract(extract.con, extract_date=extract.extract_date)
    except ExtractError as exc:
        raise _fail(str(exc)) from None
    table = Table(
        "section",
        "measure",
        "value",
        "reference",
        "",
        title=f"Profile: index date {result.index_date}, year from {result.year_start}",
    )
    marks = {True: "[green]ok[/]", False: "[red]outside[/]", None: ""}
    for m in result.measures:
        table.add_row(m.section, m.name, m.shown, m.reference, marks[m.ok])
    out.print(table)
    out.print(
        f"{len(result.checked) - len(result.failures)} of {len(result.checked)} "
        "checked measures within their reference ranges"
    )
    if json_out is not None:
        json_out.write_text(
            json.dumps(
                {
                    "extract_date": result.extract_date.isoformat(),
                    "index_date": result.index_date.isoformat(),
                    "measures": [m.as_dict() for m in result.measures],
                },
                indent=2,
            )
        )
    if strict and result.failures:
        raise typer.Exit(1)


def _ci(ci: dict[str, float | None], digits: int = 3) -> str:
    value = f"{ci['value']:.{digits}f}"
    if ci.get("lo") is None or ci.get("hi") is None:
        return value
    return f"{value} ({ci['lo']:.{digits}f}-{ci['hi']:.{digits}f})"


@app.command()
def train(
    data: Annotated[Path, typer.Option("--data", help="Extract folder.")],
    spec: Annotated[
        Path | None, typer.Option(help="Model folder with spec.yaml; default the 90-day model.")
    ] = None,
    oracle: Annotated[
        Path | None,
        typer.Option(help="True-risk file of a synthetic extract; default DIR.oracle.parquet."),
    ] = None,
) -> None:
    """Train, evaluate on held-out months, audit fairness, and register a challenger."""
    from riskstrat.data.extract import ExtractError
    from riskstrat.pipelines.train import run_training

    _setup()
    try:
        with _progress("train") as progress:
            result = run_training(data, spec_dir=spec, oracle_path=oracle, progress=progress)
    except (ExtractError, ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    r = result.report
    p = r.primary
    table = Table(
        "measure",
        "value (95% CI)",
        title=f"Held-out month {result.plan.validation_month} ({p['rows']:,} people)",
    )
    table.add_row("AUROC", _ci(p["auroc"]))
    table.add_row("AUPRC", _ci(p["auprc"]))
    table.add_row("Brier", _ci(p["brier"], 4))
    table.add_row("observed / expected", _ci(p["calibration"]["oe"]))
    table.add_row("calibration slope", _ci(p["calibration"]["slope"]))
    table.add_row("share flagged to catch 70%", _ci(p["share_flagged_for_recall"]))
    for row in p["lists"]:
        table.add_row(
            f"top {row['share']:.0%}: sensitivity / PPV",
            f"{row['sensitivity']['value']:.3f} / {row['ppv']['value']:.3f}",
        )
    for b in r.baselines[1:]:
        table.add_row(
            f"baseline: {b['name']}",
            f"AUROC {b['auroc']['value']:.3f} (model better by {_ci(b['auroc_difference'])})",
        )
    if r.oracle:
        table.add_row("oracle AUROC (true risk)", f"{r.oracle['auroc']:.3f}")
        table.add_row("model / oracle AUROC", f"{r.oracle['ratio']:.3f}")
    if r.champion_comparison:
        c = r.champion_comparison
        table.add_row(
            f"champion v{c['champion_version']} on the same rows",
            f"AUROC {c['champion_auroc']['value']:.3f}; difference {_ci(c['difference'])}",
        )
    out.print(table)
    failed = [g for g in r.gates if not g.passed]
    out.print(f"gates: {len(r.gates) - len(failed)} of {len(r.gates)} passed")
    for g in failed:
        out.print(f"  [red]failed[/] {g.name} ({g.subject}): {g.detail}")
    out.print(
        f"validation AUROC {p['auroc']['value']:.3f}; trained on {result.train_rows:,} rows from "
        f"{len(result.plan.train_months)} index months "
        f"({result.plan.train_months[0]} to {result.plan.train_months[-1]}); registered "
        f"{result.model.name} version {result.model.version} as challenger in "
        f"{result.seconds:.0f} s. Next: riskstrat promote {result.model.version}"
    )


@app.command()
def promote(
    version: Annotated[
        str | None, typer.Argument(help="Version to promote; default the challenger.")
    ] = None,
    spec: Annotated[
        Path | None, typer.Option(help="Model folder; default the 90-day model.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Promote even though a check failed.")] = False,
    reason: Annotated[str | None, typer.Option(help="Why (required with --force).")] = None,
) -> None:
    """Make a version the champion if it passed its gates and is not worse than the champion."""
    from riskstrat.modelling.registry import ModelNotFoundError
    from riskstrat.modelling.spec import default_spec_dir, load_spec
    from riskstrat.pipelines.promote import PromotionRefused, run_promotion

    _setup()
    model_spec = load_spec(spec or default_spec_dir())
    try:
        decision = run_promotion(model_spec, version=version, force=force, reason=reason)
    except PromotionRefused as exc:
        raise _fail(f"version {exc.decision.version} not promoted: {exc}") from None
    except (ModelNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if not decision.promoted:
        out.print(f"version {decision.version}: {'; '.join(decision.reasons)}")
        return
    how = (
        "forced; overriding: " + "; ".join(decision.reasons) if decision.forced else "gates passed"
    )
    out.print(
        f"version {decision.version} is now the champion ({how}); previous champion: "
        f"{decision.previous_champion or 'none'}"
    )


@app.command()
def models(
    spec: Annotated[
        Path | None, typer.Option(help="Model folder; default the 90-day model.")
    ] = None,
) -> None:
    """List registered versions with aliases, key metrics, gates and promotion decisions."""
    from riskstrat.config import get_settings
    from riskstrat.modelling.registry import registry_for
    from riskstrat.modelling.spec import default_spec_dir, load_spec

    _setup()
    model_spec = load_spec(spec or default_spec_dir())
    versions = registry_for(get_settings()).versions(model_spec.name)
    if not versions:
        raise _fail(f"no versions of {model_spec.name} yet: run riskstrat train")
    table = Table(
        "version",
        "aliases",
        "trained",
        "held-out month",
        "AUROC",
        "O/E",
        "slope",
        "oracle ratio",
        "gates",
        "promotion",
        title=model_spec.name,
    )
    for v in versions:
        m, t = v.metrics, v.tags
        gates = (
            "passed"
            if t.get("riskstrat.gates_passed") == "true"
            else (f"[red]failed[/] ({int(m.get('gates_failed', 0))})")
        )
        table.add_row(
            v.version,
            ", ".join(v.aliases),
            v.created_at.strftime("%Y-%m-%d %H:%M"),
            t.get("riskstrat.validation_month", ""),
            _metric_ci(m, "validation_auroc"),
            _metric_ci(m, "validation_oe"),
            f"{m['validation_calibration_slope']:.2f}"
            if "validation_calibration_slope" in m
            else "",
            f"{m['validation_auroc_ratio_to_oracle']:.3f}"
            if "validation_auroc_ratio_to_oracle" in m
            else "",
            gates,
            t.get("riskstrat.promotion.decision", "")
            + (" (forced)" if t.get("riskstrat.promotion.forced") == "true" else ""),
        )
    out.print(table)


def _metric_ci(metrics: dict[str, float], name: str) -> str:
    if name not in metrics:
        return ""
    if f"{name}_lo" in metrics:
        return f"{metrics[name]:.3f} ({metrics[name + '_lo']:.3f}-{metrics[name + '_hi']:.3f})"
    return f"{metrics[name]:.3f}"


@app.command()
def card(
    version: Annotated[str, typer.Argument(help="Version number or alias (champion, challenger).")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder to write; default ./model-card-vN.")
    ] = None,
    spec: Annotated[
        Path | None, typer.Option(help="Model folder; default the 90-day model.")
    ] = None,
) -> None:
    """Write a version's model card (Markdown and HTML, with its plots)."""
    from riskstrat.config import get_settings
    from riskstrat.modelling.registry import ModelNotFoundError, registry_for
    from riskstrat.modelling.spec import default_spec_dir, load_spec

    _setup()
    model_spec = load_spec(spec or default_spec_dir())
    registry = registry_for(get_settings())
    try:
        info = registry.describe(model_spec.name, version)
    except ModelNotFoundError as exc:
        raise _fail(str(exc)) from None
    target = out_dir or Path(f"model-card-v{info.version}")
    if info.run_id is None:
        raise _fail(f"version {info.version} has no training run to take the card from")
    folder = registry.download_artifacts(info.run_id, "card", target.parent / f".{target.name}.tmp")
    if target.exists():
        import shutil

        shutil.rmtree(target)
    folder.rename(target)
    folder.parent.rmdir()
    out.print(
        f"model card of version {info.version}: {target / 'card.md'} and {target / 'card.html'}"
    )


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Open MLflow's own UI on the local store (loopback only)."""
    import subprocess

    from riskstrat.config import get_settings
    from riskstrat.modelling.registry import registry_for

    command = registry_for(get_settings()).ui_command(host="127.0.0.1", port=port)
    console.print(f"MLflow UI on http://127.0.0.1:{port} (Ctrl-C to stop)")
    raise typer.Exit(subprocess.call(command))  # noqa: S603 - the venv's own mlflow


@app.command()
def predict(
    data: Annotated[Path, typer.Option("--data", help="Extract folder.")],
    as_of: Annotated[str, typer.Option("--as-of", help="Date to predict from (YYYY-MM-DD).")],
    out_file: Annotated[Path, typer.Option("--out", help="CSV to write (nhs_number, risk).")],
    model: Annotated[
        str, typer.Option(help="champion, another alias, or a version number.")
    ] = "champion",
) -> None:
    """Write each eligible person's 90-day risk at a date (type 1 opt-outs left out)."""
    from riskstrat.data.extract import ExtractError
    from riskstrat.modelling.registry import ModelNotFoundError
    from riskstrat.pipelines.predict import run_predict

    _setup()
    when = _date(as_of, "--as-of")
    try:
        with _progress("predict") as progress:
            n = run_predict(data, as_of=when, out=out_file, model_ref=model, progress=progress)
    except (ExtractError, ValueError, ModelNotFoundError) as exc:
        raise _fail(str(exc)) from None
    out.print(f"wrote {n:,} risks to {out_file}")


@app.command()
def score(
    data: Annotated[Path, typer.Option("--data", help="Extract folder.")],
    month: Annotated[
        str, typer.Option(help="Month to score (YYYY-MM, or 'latest'); index date is its 1st.")
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
) -> None:
    """Score everyone eligible on the month's first day, explain, build the intervention
    cohorts, and publish the run (staged, then switched in one transaction)."""
    from riskstrat.calendar import parse_month
    from riskstrat.data.extract import ExtractError, read_manifest
    from riskstrat.modelling.registry import ModelNotFoundError
    from riskstrat.pipelines.score import run_scoring
    from riskstrat.store.core import RunInProgressError, StoreSchemaError

    _setup()
    try:
        if month == "latest":
            # The latest month whose first day has complete data before it.
            index_date = read_manifest(data).extract_date.replace(day=1)
        else:
            index_date = parse_month(month)
    except ExtractError as exc:
        raise _fail(str(exc)) from None
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    try:
        with _progress("score") as progress:
            result = run_scoring(
                data, month=index_date, model_ref=model, cohorts_file=cohorts, progress=progress
            )
    except (
        ExtractError,
        ValueError,
        ModelNotFoundError,
        RunInProgressError,
        StoreSchemaError,
        OSError,
    ) as exc:
        raise _fail(str(exc)) from None
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
    if result.pruned_runs:
        out.print(f"retention: removed {len(result.pruned_runs)} old run(s)")
    if result.prune_error:
        out.print(
            f"[yellow]warning:[/] removing months older than the retention window failed "
            f"({result.prune_error}); the month is published, and the next run removes them"
        )


def _month(text: str) -> date:
    from riskstrat.calendar import parse_month

    try:
        return parse_month(text)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


@app.command()
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
    from riskstrat.data.extract import ExtractError
    from riskstrat.pipelines.outcomes import run_outcomes

    _setup()
    when = _month(month)
    try:
        with _progress("outcomes") as progress:
            result = run_outcomes(data, month=when, progress=progress)
    except (ExtractError, ValueError) as exc:
        raise _fail(str(exc)) from None
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
    if csv_out is not None:
        result.by_practice.to_csv(csv_out, index=False)
        out.print(f"wrote {csv_out}")
    out.print(
        "reached = the intervention was recorded in the 90 days after the index date. Who is "
        "reached is not random, so these are estimates, not a trial."
    )


@app.command()
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

    _setup()
    if fmt not in ("csv", "xlsx"):
        raise _fail("--format must be csv or xlsx", 2)
    when = _month(month)
    try:
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
    except (ValueError, OSError) as exc:
        raise _fail(str(exc)) from None
    out.print(f"wrote {result.rows:,} people to {result.path} (from run {result.run_id})")
    if result.identifier_kind == "pseudonym" and not result.reidentified:
        out.print("people are identified by pseudonym (the run is pseudonymous)")
    if result.reidentified:
        out.print(
            f"re-identified {result.reidentified:,} people from the linkage file for direct "
            "care; recorded in the access log. The file identifies people: keep it safe."
        )


@app.command()
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
) -> None:
    """Time each stage in its own process at one or more sizes, with peak memory."""
    from riskstrat.bench.stages import STAGES, growth, run_benchmarks, step_growth, write_results
    from riskstrat.config import get_settings
    from riskstrat.nhs_number import SYNTHETIC_NHS_CAPACITY

    _setup()
    chosen = [s.strip() for s in stages.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STAGES]
    if unknown or fmt not in ("csv", "parquet"):
        raise _fail(f"stages must be among {', '.join(STAGES)}; format csv or parquet", 2)
    n = patients or SYNTHETIC_NHS_CAPACITY
    sizes = sorted({n, *([s for s in (100_000, 300_000) if s < n] if scaling else [])})
    table = Table("stage", "people", "seconds", "rows/s", "peak RSS (MB)", title="Benchmark")

    def show(result: object) -> None:
        from riskstrat.bench.stages import StageResult

        assert isinstance(result, StageResult)
        console.print(
            f"{result.stage} at {result.patients:,} people: {result.seconds:.1f} s, "
            f"{result.rows_per_second:,.0f} rows/s, peak {result.peak_rss_mb:,.0f} MB"
        )

    results = run_benchmarks(
        sizes=sizes,
        stages=chosen,
        workdir=get_settings().home / "bench",
        months=months,
        fmt=fmt,
        seed=seed,
        keep=keep,
        on_result=show,
    )
    for r in results:
        table.add_row(
            r.stage,
            f"{r.patients:,}",
            f"{r.seconds:.1f}",
            f"{r.rows_per_second:,.0f}",
            f"{r.peak_rss_mb:,.0f}",
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
            value = "n/a" if target["value"] is None else f"{target['value']:.3f}"
            out.print(
                f"{r.stage} at {r.patients:,}: {target['name']} = {value} "
                f"(target {target['target']}): {mark}"
            )
    out.print(f"results: {write_results(results, results_dir)}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface; default 127.0.0.1.")] = None,
    port: Annotated[int | None, typer.Option(help="Port; default 8000.")] = None,
) -> None:
    """Run the API (credentials: `riskstrat users add`, or OIDC tokens)."""
    import uvicorn

    from riskstrat.config import get_settings
    from riskstrat.service.app import create_app

    _setup()
    settings = get_settings()
    bind_host, bind_port = host or settings.host, port or settings.port
    base = f"http://{bind_host}:{bind_port}"
    console.print(
        f"\n[bold]riskstrat API[/] on {base}\n"
        f"  docs:     {base}/docs\n"
        f"  health:   {base}/health\n"
        f"  keys:     riskstrat users add --name NAME --role pcn_team --pcn U12345\n"
        f'  example:  curl -H "Authorization: Bearer $KEY" '
        f"'{base}/api/v1/cohorts/falls_review?capacity=5'\n",
        highlight=False,
    )
    uvicorn.run(
        create_app(settings),
        host=bind_host,
        port=bind_port,
        access_log=False,
        log_level=os.environ.get("RISKSTRAT_LOG_LEVEL", "info").lower(),
    )


users_app = typer.Typer(help="API users: keys with one role and the PCNs they may see.")
app.add_typer(users_app, name="users")


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Option(help="Who holds the key (unique).")],
    role: Annotated[str, typer.Option(help="pcn_team, care_coordinator, analyst or admin.")],
    pcn: Annotated[
        list[str] | None,
        typer.Option(help="A PCN in scope (repeat for more); '*' for every PCN."),
    ] = None,
    days: Annotated[
        int | None, typer.Option(min=1, max=730, help="Days until the key expires.")
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option(help="Write the key to this file (mode 600) instead of printing it."),
    ] = None,
) -> None:
    """Create a user and print their API key once (only its hash is stored)."""
    from datetime import UTC, datetime, timedelta

    from riskstrat.config import acting_user, get_settings
    from riskstrat.service.auth import ROLES, check_pcns, new_api_key
    from riskstrat.store.core import Store, StoreSchemaError

    _setup()
    if role not in ROLES:
        raise _fail(f"--role must be one of {', '.join(ROLES)}", 2)
    try:
        pcns = check_pcns(pcn or ([] if role in ("pcn_team", "care_coordinator") else ["*"]))
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    settings = get_settings()
    new = new_api_key()
    expires = datetime.now(UTC) + timedelta(days=days or settings.api_key_days)
    store = Store(settings.serving_database_url)
    try:
        store.create_schema()
        store.add_user(
            name=name, role=role, pcns=pcns, key_prefix=new.prefix, key_hash=new.hash,
            expires_at=expires, created_by=acting_user(),
        )  # fmt: skip
    except (ValueError, StoreSchemaError) as exc:
        raise _fail(str(exc)) from None
    finally:
        store.dispose()
    console.print(
        f"added {name} ({role}, PCNs {', '.join(pcns)}), key expires {expires:%Y-%m-%d}",
        highlight=False,
    )
    if key_file is not None:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(new.key + "\n")
        console.print(f"key written to {key_file}", highlight=False)
    else:
        console.print("the key is shown once; store it safely:", highlight=False)
        out.print(new.key, highlight=False)


@users_app.command("list")
def users_list() -> None:
    """List users with role, PCNs, expiry and whether revoked (never keys)."""
    from datetime import UTC, datetime

    from riskstrat.config import get_settings
    from riskstrat.store.core import Store

    _setup()
    store = Store(get_settings().serving_database_url)
    store.create_schema()
    users = store.users()
    store.dispose()
    table = Table(title="API users")
    for col in ("name", "role", "PCNs", "created", "expires", "state"):
        table.add_column(col)
    now = datetime.now(UTC)
    for u in users:
        state = (
            "revoked" if u["revoked_at"] else ("expired" if u["expires_at"] <= now else "active")
        )
        table.add_row(
            u["name"], u["role"], ", ".join(u["pcns"]), f"{u['created_at']:%Y-%m-%d}",
            f"{u['expires_at']:%Y-%m-%d}", state,
        )  # fmt: skip
    out.print(table)


@users_app.command("revoke")
def users_revoke(name: Annotated[str, typer.Argument(help="The user to revoke.")]) -> None:
    """Revoke a user's key at once."""
    from riskstrat.config import get_settings
    from riskstrat.store.core import Store

    _setup()
    store = Store(get_settings().serving_database_url)
    store.create_schema()
    done = store.revoke_user(name)
    store.dispose()
    if not done:
        raise _fail(f"no active user called {name!r}")
    out.print(f"revoked {name}")


@app.command("audit")
def audit_report(
    patient: Annotated[
        str | None, typer.Option(help="NHS number: who has looked at this record?")
    ] = None,
    user: Annotated[str | None, typer.Option(help="What has this user looked at?")] = None,
    since: Annotated[str | None, typer.Option(help="From this date (YYYY-MM-DD).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
    index: Annotated[
        bool,
        typer.Option(
            "--index",
            help="Only bring the per-patient index up to date, and say how many reads it took "
            "in. Run it nightly, so that a patient query does not wait for the backlog.",
        ),
    ] = False,
) -> None:
    """Report the audit trail: who read which patients' data, when, by which route, and why."""
    from datetime import UTC, datetime

    from riskstrat.config import get_settings
    from riskstrat.nhs_number import is_valid_nhs_number
    from riskstrat.store.core import Store, pseudonymise

    _setup()
    settings = get_settings()
    stored = None
    if patient is not None:
        if not is_valid_nhs_number(patient):
            raise _fail("--patient must be a valid NHS number", 2)
        stored = (
            patient
            if settings.audit_identify_patients
            else pseudonymise(patient, settings.pseudonym_key.get_secret_value())
        )
    start = datetime.combine(_date(since, "--since"), datetime.min.time(), UTC) if since else None
    store = Store(settings.serving_database_url)
    store.create_schema()
    if index:
        done = store.index_access()
        store.dispose()
        out.print(f"reads newly indexed by patient: {done:,}")
        return
    records = store.access_records(actor=user, patient=stored, since=start, limit=limit)
    store.dispose()
    title = "Who has looked at this record" if patient else "Audit trail"
    table = Table(title=f"{title} ({len(records)} reads)")
    for col in ("when (UTC)", "who", "role", "organisations", "route", "patients", "purpose"):
        table.add_column(col)
    for r in records:
        table.add_row(
            f"{r['at']:%Y-%m-%d %H:%M:%S}", r["actor"], r["role"] or "-",
            ", ".join(r["organisations"] or []) or "-", r["route"], str(r["n_patients"]),
            r["purpose"] or "-",
        )  # fmt: skip
    out.print(table)


if __name__ == "__main__":
    app()
