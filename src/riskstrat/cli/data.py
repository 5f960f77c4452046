"""Commands on extracts: generate, validate, profile, and import omop."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from riskstrat.cli.common import (
    DATA_HELP,
    ENGINE_HELP,
    console,
    extract_location,
    library_errors,
    out,
    parse_date,
    progress_bar,
    settings_for_engine,
    setup,
)
from riskstrat.errors import UsageError

if TYPE_CHECKING:
    from riskstrat.config import Settings
    from riskstrat.data.extract import ValidationSummary


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

    setup()
    if fmt not in ("csv", "parquet", "omop"):
        raise UsageError("--format must be csv, parquet or omop")
    if omop_layout not in ("duckdb", "csv"):
        raise UsageError("--omop-layout must be duckdb or csv")
    when = (
        parse_date(extract_date, "--extract-date") if extract_date else date.today().replace(day=1)
    )
    fmt_literal: Literal["csv", "parquet", "omop"] = (
        "csv" if fmt == "csv" else "parquet" if fmt == "parquet" else "omop"
    )
    layout: Literal["duckdb", "csv"] = "csv" if omop_layout == "csv" else "duckdb"
    dates = [parse_date(d, "--oracle-date") for d in oracle_date or []]
    with library_errors(), progress_bar("generate") as progress:
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


def validate(
    data: Annotated[str, typer.Argument(help=DATA_HELP, show_default=False)],
    rejects: Annotated[
        Path | None, typer.Option(help="Rejects CSV to write; default under RISKSTRAT_HOME.")
    ] = None,
    max_reject_share: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Stop above this share per table.")
    ] = None,
    engine: Annotated[str | None, typer.Option(help=ENGINE_HELP)] = None,
) -> None:
    """Check an extract against the data contract and write its rejects file."""
    from riskstrat.data.extract import TooManyRejectsError
    from riskstrat.pipelines.common import rejects_path_for

    setup()
    settings = settings_for_engine(engine)
    location = extract_location(data)
    rejects_path = rejects or rejects_path_for(settings, location)
    share = settings.max_reject_share if max_reject_share is None else max_reject_share
    summary: ValidationSummary
    try:
        if settings.engine == "spark":
            from riskstrat.data.spark_extract import validate_extract_spark
            from riskstrat.engines.spark import spark_session

            with (
                spark_session(settings) as spark,
                validate_extract_spark(
                    spark, location, max_reject_share=share, rejects_path=rejects_path
                ) as checked,
            ):
                summary = checked.summary
        else:
            summary = _check_duckdb(settings, location, share, rejects_path)
    except TooManyRejectsError as exc:
        _print_validation(exc.summary)  # the counts, then the error and its hint
        raise
    _print_validation(summary)
    out.print(f"[green]valid[/]: rejects listed in {rejects_path}")


def _check_duckdb(
    settings: Settings, location: Path | str, share: float, rejects_path: Path
) -> ValidationSummary:
    """The rules on DuckDB, always run (the clean tables are not built: nothing here reads
    them), refreshing the extract's validation record for the commands that follow."""
    from riskstrat.data.extract import check_extract, connect
    from riskstrat.data.validated import check_and_record

    scratch = settings.home / "duckdb-tmp"
    con = connect(
        memory_limit=settings.duckdb_memory_limit,
        threads=settings.duckdb_threads,
        temp_directory=scratch,
    )
    try:
        if settings.reuse_validation:
            return check_and_record(
                location,
                con,
                records_dir=settings.validation_records_dir,
                max_reject_share=share,
                rejects_path=rejects_path,
            )
        return check_extract(location, max_reject_share=share, rejects_path=rejects_path, con=con)
    finally:
        con.close()


import_app = typer.Typer(help="Bring data from other models in as a riskstrat extract.")


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
    engine: Annotated[
        str | None,
        typer.Option(
            help=ENGINE_HELP + " With spark the source is a folder of CDM tables (Parquet or "
            "CSV), local or an object-store URI such as s3a://bucket/cdm/."
        ),
    ] = None,
) -> None:
    """Import an OMOP CDM (v5.3 or v5.4) as a pseudonymous extract, with a mapping report."""
    from contextlib import ExitStack

    from riskstrat.data.omop import check_spark_source, import_omop

    setup()
    if hospital_records not in ("exclude", "include"):
        raise UsageError("--hospital-records must be exclude or include")
    settings = settings_for_engine(engine)
    when = parse_date(extract_date, "--extract-date") if extract_date else None
    with ExitStack() as stack:
        spark = None
        if settings.engine == "spark":
            from riskstrat.engines.spark import spark_session

            check_spark_source(source)  # before Spark takes seconds to start
            spark = stack.enter_context(spark_session(settings))
        progress = stack.enter_context(progress_bar("import"))
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
            engine="spark" if settings.engine == "spark" else "duckdb",
            spark=spark,
        )
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
    from riskstrat.data.extract import validate_extract
    from riskstrat.features.profile import profile_extract

    setup()
    with validate_extract(data, max_reject_share=get_settings().max_reject_share) as extract:
        result = profile_extract(extract.con, extract_date=extract.extract_date)
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
