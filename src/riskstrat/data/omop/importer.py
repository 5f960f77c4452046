"""``import_omop``: an OMOP CDM in, a validated pseudonymous extract and its mapping report out.

The work is DuckDB SQL over the CDM (never a Python loop over rows) in a scratch database that
is deleted afterwards. The extract is written as Parquet into a hidden sibling folder,
validated there, and only then renamed into place, so a failed import leaves nothing that
looks like an extract. The source is only ever read.

With ``engine="spark"`` the same SQL runs on Apache Spark (``spark_con.SparkConnection``, a
folder of CDM tables opened by ``spark_source``); the written extract is validated by DuckDB
either way.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import duckdb
import pyarrow.parquet as pq

from riskstrat.data.codelist import CodelistSet, load_codelists
from riskstrat.data.contract import (
    CONTRACT_VERSION,
    LSOA_PATTERN,
    ODS_PCN_PATTERN,
    ODS_PRACTICE_PATTERN,
    TABLE_ORDER,
)
from riskstrat.data.errors import ExtractError
from riskstrat.data.files import check_plain_file, replace_folder, scan_csv
from riskstrat.data.omop import mapping, report
from riskstrat.data.omop.source import CdmSource, open_source
from riskstrat.data.omop.spark_con import Connection, SparkConnection
from riskstrat.data.omop.spark_source import check_spark_source, open_on_spark
from riskstrat.data.omop.vocab import map_drugs, resolve_codelists
from riskstrat.errors import AlreadyExistsError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

Progress = Callable[[str, float], None]
Engine = Literal["duckdb", "spark"]
REPORT_JSON = "mapping-report.json"
REPORT_MD = "mapping-report.md"
#: The hint of a failure caused by the import's options rather than the CDM's data.
_OPTIONS_HINT = "see `riskstrat import omop --help` and docs/omop.md"

#: Stages of an import, for progress bars.
STAGES = ("open", "vocabulary", "persons", "events", "write", "validate", "report")


@dataclass(frozen=True)
class ImportResult:
    out_dir: Path
    extract_date: date
    rows: dict[str, int]
    report: dict[str, Any]
    seconds: float

    @property
    def report_paths(self) -> tuple[Path, Path]:
        return self.out_dir / REPORT_JSON, self.out_dir / REPORT_MD


def import_omop(
    source: str | Path,
    out: Path,
    *,
    extract_date: date | None = None,
    sites: Path | None = None,
    practice_code: str | None = None,
    pcn_code: str | None = None,
    imd: Path | None = None,
    schema: str | None = None,
    cdm_version: str | None = None,
    codelists: Path | None = None,
    hospital_records: mapping.HospitalRecords = "exclude",
    overwrite: bool = False,
    scratch_dir: Path | None = None,
    memory_limit: str | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    engine: Engine = "duckdb",
    spark: SparkSession | None = None,
) -> ImportResult:
    """Import an OMOP CDM into a contract extract (version 2, pseudonymous identifiers).

    Args:
        source: a DuckDB file, a folder of CDM tables (CSV or Parquet), or a
            ``postgresql://`` URL (its schema from ``schema`` or ``?schema=``).
        out: the extract folder to create (replaced only with ``overwrite``).
        extract_date: the first day the extract does not cover; by default the day after the
            latest observation period ends.
        sites: CSV mapping care sites to practices: ``care_site_id`` or
            ``care_site_source_value``, then ``practice_code`` and ``pcn_code``.
        practice_code, pcn_code: without ``sites``, the one practice and PCN everyone is in.
        imd: CSV of ``lsoa_code,imd_decile`` for deprivation.
        schema: the CDM schema in a DuckDB file or PostgreSQL database.
        cdm_version: ``5.3`` or ``5.4``, overriding ``cdm_source``.
        codelists: a folder of codelists to use instead of the shipped ones.
        hospital_records: ``exclude`` (default: records linked to a hospital visit are that
            visit's activity, not GP conditions or observations) or ``include``.
        overwrite: replace an existing extract at ``out``.
        scratch_dir: where the scratch database and any copies of a PostgreSQL source go.
        memory_limit, threads: DuckDB settings (also for validating the written extract,
            which DuckDB does on either engine).
        progress: ``callback(stage, fraction)``.
        engine: ``duckdb`` (embedded) or ``spark``: the same SQL run on Spark (a folder of
            CDM tables only, local or at a URI Spark reads; see docs/omop.md).
        spark: the session for ``engine="spark"``; by default one is started from the
            settings and stopped afterwards.

    Raises:
        ExtractError: anything about the source, the site map, the lookup or the codelists
            that stops the import (naming the file, line and column where it can).
        AlreadyExistsError: ``out`` exists and is not empty, without ``overwrite`` (a
            ``FileExistsError``).
    """
    t0 = time.perf_counter()
    report_progress = progress or (lambda stage, fraction: None)
    out = Path(out)
    _check_target(out, overwrite)
    if sites is None and (practice_code is None or pcn_code is None):
        raise ExtractError(
            "say which practice people belong to: --sites MAP.csv (care site to practice and "
            "PCN), or --practice CODE --pcn CODE to put everyone in one practice",
            hint=_OPTIONS_HINT,
        )
    if sites is None:
        _check_code(practice_code, ODS_PRACTICE_PATTERN, "practice code", "A81001")
        _check_code(pcn_code, ODS_PCN_PATTERN, "PCN code", "U12345")
    lists = load_codelists(codelists)
    previous = _previous_report(out)
    scratch = Path(scratch_dir) if scratch_dir is not None else Path.cwd()
    if engine not in ("duckdb", "spark"):
        raise ExtractError(f"not an engine: {engine!r} (duckdb or spark)", hint=_OPTIONS_HINT)
    from riskstrat.data.extract import connect, remove_database

    stack = ExitStack()
    database: Path | None = None
    con: Connection
    if engine == "spark":
        check_spark_source(str(source))
        if spark is None:
            from riskstrat.engines.spark import spark_session

            spark = stack.enter_context(spark_session())
        con = SparkConnection(spark)
    else:
        from riskstrat.data.extract import scratch_database

        database = scratch_database(scratch)
        con = connect(
            memory_limit=memory_limit, threads=threads, temp_directory=scratch, database=database
        )
    cdm: CdmSource | None = None
    tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(6)}"
    try:
        report_progress("open", 0.0)
        opened = open_on_spark(con, str(source)) if isinstance(con, SparkConnection) else None
        cdm = open_source(
            str(source), con=con, schema=schema, cdm_version=cdm_version, scratch_dir=scratch,
            opened=opened,
        )  # fmt: skip
        d, date_from = _extract_date(con, extract_date)
        if sites is not None:
            _load_site_map(con, sites)
        if imd is not None:
            _load_imd(con, imd)
        report_progress("vocabulary", 0.0)
        vocabulary = resolve_codelists(con, lists)
        report_progress("persons", 0.0)
        mapping.match_events(con)
        mapping.build_patients(
            con, d, sites="map" if sites is not None else "single",
            practice_code=practice_code, pcn_code=pcn_code, imd=imd is not None,
        )  # fmt: skip
        report_progress("events", 0.0)
        mapping.build_activity(con, d)
        drugs = map_drugs(con, lists)
        mapping.build_events(con, d, hospital_records=hospital_records)
        mapping.summarise(con)
        report_progress("write", 0.0)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        rows = _write_tables(con, tmp)
        source_info = {
            "kind": cdm.kind,
            "description": cdm.description,
            "cdm_version": cdm.cdm_version,
            "cdm_version_from": cdm.cdm_version_from,
        }
        manifest = {
            "contract_version": CONTRACT_VERSION,
            "extract_date": d.isoformat(),
            "source": f"OMOP CDM {cdm.cdm_version}: {cdm.description}",
            "identifier_kind": "pseudonym",
            "row_counts": rows,
            "provenance": {
                "adapter": "riskstrat import omop",
                "omop": source_info,
                "codelists": {"digest": lists.digest, "versions": lists.versions},
                "hospital_records": hospital_records,
            },
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", "utf-8")
        report_progress("validate", 0.0)
        validation = _validate(tmp, scratch, memory_limit=memory_limit, threads=threads)
        report_progress("report", 0.0)
        practices = (
            f"site map {sites}"
            if sites is not None
            else f"everyone in practice {practice_code}, PCN {pcn_code} (no site map)"
        )
        warnings = list(cdm.notes)
        if vocabulary.descendants_from != "concept_ancestor":
            warnings.append(
                "concept_ancestor is empty: descendants of listed concepts come from "
                + (
                    "concept_relationship (Subsumes / Is a)"
                    if vocabulary.descendants_from == "concept_relationship"
                    else "nowhere: only the listed codes and source values match"
                )
            )
        if sites is None:
            warnings.append(f"no site map: everyone is in practice {practice_code}, PCN {pcn_code}")
        if imd is None:
            warnings.append("no IMD lookup: imd_decile is missing for everyone")
        reasons = report.drop_reasons(con)
        full = {
            "riskstrat_version": _version(),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": source_info,
            "extract": {
                "path": str(out),
                "extract_date": d.isoformat(),
                "extract_date_from": date_from,
                "identifier_kind": "pseudonym",
            },
            "codelists": {
                "location": lists.location,
                "digest": lists.digest,
                "versions": lists.versions,
                "changed_since_previous_import": _changed(previous, lists),
            },
            "vocabulary": {
                "descendants_from": vocabulary.descendants_from,
                "listed_codes": vocabulary.listed_codes,
                "listed_codes_not_in_cdm": vocabulary.listed_codes_not_in_cdm,
                "drug_ingredients_from": drugs.ingredients_from,
                "drug_concepts": drugs.drug_concepts,
                "drug_concepts_with_ingredients": drugs.with_ingredients,
            },
            "persons": report.persons(con, sites=practices, imd=imd is not None, reasons=reasons),
            "source_tables": report.source_tables(con, cdm.present, reasons),
            "contract_tables": report.contract_tables(con, rows, reasons),
            "activity": report.activity_rules(con),
            "codes": report.codes(con),
            "rules": RULES + [f"records linked to hospital visits: {hospital_records}"],
            "validation": validation,
            "warnings": warnings,
        }
        (tmp / REPORT_JSON).write_text(json.dumps(full, indent=1) + "\n", "utf-8")
        (tmp / REPORT_MD).write_text(report.to_markdown(full), "utf-8")
        _check_target(out, overwrite)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if cdm is not None:
            cdm.close()
        else:
            con.close()
        if database is not None:
            remove_database(database)
        stack.close()
    return ImportResult(
        out_dir=out, extract_date=d, rows=rows, report=full, seconds=time.perf_counter() - t0
    )


RULES = [
    "patients: registration is the latest observation period starting before the extract "
    "date; registered_to is the day after it ends, empty when it reaches the extract date",
    "patients: date of birth from birth_datetime, else year/month/day; a missing day is the "
    "15th, a missing month 1 July",
    "patients: sex 8507 M, 8532 F, else U",
    "patients: ethnic category only from UK ethnic-category concepts (on the person, else the "
    "latest record); US race/ethnicity concepts alone mean Z (not stated)",
    "patients: LSOA from the location's source value, county or zip (the first with an LSOA "
    "code's shape); IMD decile from the LSOA through the lookup file",
    "patients: practice and PCN from the care site (the person's, else their latest visit's) "
    "through the site map, or one named practice and PCN",
    "patients: type-1 opt-out from the latest dissent (true) or dissent-withdrawn (false) record",
    "activity: visit 9201 inpatient, 262 emergency inpatient, 9203 A&E, 9202 outpatient, "
    "581477 and 5083 GP, 581476 community; other visit types are not activity",
    "activity: inpatient admission method from visit 262 (emergency), a HES admission method "
    "code as admitted-from source value (2x emergency, 1x elective, 3x maternity, 8x "
    "transfer), admitted from 8870 (emergency) or 8717 (transfer), an A&E visit ending that day "
    "or the day before (emergency), else elective",
    "activity: primary diagnosis is the ICD-10 source value of the visit's condition with "
    "status 32902 (or type 44786627)",
    "activity: an outpatient or GP visit with a did-not-attend record (linked to it, or "
    "unlinked on the same day) was not attended",
    "activity: end_date is an inpatient stay's discharge (empty while still in hospital); "
    "empty in other settings",
    "conditions: codelist matches, the earliest per person and condition",
    "medications: every drug exposure with an ingredient; class from the ingredients' "
    "codelists (first in contract order) or the combination's listed class, else OTHER",
    "observations: codelist matches in observation, measurement, condition_occurrence and "
    "procedure_occurrence; BMI (10-90) and CFS (1-9) need a value",
    "conditions and observations are the GP record: records linked to a hospital visit "
    "(inpatient, A&E, outpatient) are left out unless hospital records are included",
    "everything dated on or after the extract date is left out",
]


def _write_tables(con: Connection, folder: Path) -> dict[str, int]:
    rows: dict[str, int] = {}
    for table in TABLE_ORDER:
        path = folder / f"{table}.parquet"
        con.execute(
            f"COPY ({mapping.OUTPUT_SQL[table]}) TO '{_q(str(path))}' "
            "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 1000000)"
        )
        rows[table] = pq.ParquetFile(path).metadata.num_rows
    return rows


def _validate(
    folder: Path, scratch: Path, *, memory_limit: str | None, threads: int | None
) -> dict[str, Any]:
    """The written extract must pass validation with no rejects; anything else is a fault in
    the mapping, so nothing is published."""
    from riskstrat.data.extract import connect, remove_database, scratch_database, validate_extract

    database = scratch_database(scratch)
    con = connect(
        memory_limit=memory_limit, threads=threads, temp_directory=scratch, database=database
    )
    try:
        with validate_extract(folder, max_reject_share=1.0, con=con) as extract:
            summary = extract.summary
    finally:
        remove_database(database)
    if any(summary.rows_rejected.values()):
        detail = "; ".join(
            f"{r.table}.{r.column} {r.rule}: {r.rows:,}" for r in summary.rule_counts
        )
        raise ExtractError(f"the import produced rows the data contract rejects ({detail})")
    return {"rows_read": summary.rows_read, "rows_rejected": summary.rows_rejected}


def _extract_date(con: Connection, given: date | None) -> tuple[date, str]:
    if given is not None:
        return given, "given"
    latest = con.execute("SELECT max(observation_period_end_date) FROM cdm_observation_period")
    value = latest.fetchall()[0][0]
    if value is None:
        raise ExtractError(
            "the CDM has no observation periods: give --extract-date", hint=_OPTIONS_HINT
        )
    return value + timedelta(days=1), "the day after the latest observation period ends"


def _read_lookup(con: Connection, path: Path, name: str, columns: tuple[str, ...]) -> None:
    """Read a small CSV file (site map, IMD lookup) into the temp table ``name``, as text."""
    if not path.is_file() and not os.path.lexists(path):
        raise ExtractError("file not found", file=str(path))
    check_plain_file(path.parent, path, folder="its own folder")
    scan = scan_csv(path)
    header = [h.strip().lower() for h in scan.header]
    missing = [c for c in columns if c not in header]
    if missing:
        raise ExtractError(f"needs a column {missing[0]}", file=str(path), column=missing[0])
    spec = "{" + ", ".join(f"'{h}': 'VARCHAR'" for h in header) + "}"
    sql = (
        f"SELECT row_number() OVER () + 1 AS line, * "
        f"FROM read_csv('{_q(str(path))}', header = true, columns = {spec}, auto_detect = false,"
        " strict_mode = true, quote = '\"', escape = '\"')"
    )
    if isinstance(con, duckdb.DuckDBPyConnection):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")
        return
    # A small file: read by DuckDB here, then handed to the engine as a table.
    with duckdb.connect() as local:
        con.register(name, local.sql(sql).to_arrow_table())


def _check_shapes(
    con: Connection,
    path: Path,
    table: str,
    patterns: dict[str, str],
    message: str,
) -> None:
    """Stop at the first line of a lookup file whose value does not have its column's shape,
    naming the file, line and column (never the value)."""
    broken = " ".join(
        f"WHEN NOT regexp_full_match(coalesce({c}, ''), '{p}') THEN '{c}'"
        for c, p in patterns.items()
    )
    bad = con.execute(
        f"SELECT line, column_name FROM (SELECT line, CASE {broken} END AS column_name "
        f"FROM {table}) WHERE column_name IS NOT NULL ORDER BY line LIMIT 1"
    ).fetchall()
    if bad:
        raise ExtractError(message, file=str(path), line=int(bad[0][0]), column=str(bad[0][1]))


def _load_site_map(con: Connection, path: Path) -> None:
    """``site_map(care_site_id, practice_code, pcn_code)`` from the site map file; rows keyed
    by ``care_site_source_value`` are looked up in the CDM's care_site table."""
    _read_lookup(con, path, "site_file", ("practice_code", "pcn_code"))
    cols = [r[0] for r in con.execute("DESCRIBE site_file").fetchall()]
    if "care_site_id" not in cols and "care_site_source_value" not in cols:
        raise ExtractError("needs a column care_site_id or care_site_source_value", file=str(path))
    _check_shapes(
        con,
        path,
        "site_file",
        {"practice_code": ODS_PRACTICE_PATTERN, "pcn_code": ODS_PCN_PATTERN},
        "is not an ODS code of the right shape (practice A81001, PCN U12345)",
    )
    by_id = "TRY_CAST(s.care_site_id AS BIGINT)" if "care_site_id" in cols else "NULL"
    by_value = "s.care_site_source_value" if "care_site_source_value" in cols else "NULL"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE site_map AS
        SELECT DISTINCT coalesce({by_id}, c.care_site_id) AS care_site_id, s.practice_code,
               s.pcn_code
        FROM site_file s
        LEFT JOIN cdm_care_site c ON {by_id} IS NULL
             AND c.care_site_source_value = {by_value}
        WHERE coalesce({by_id}, c.care_site_id) IS NOT NULL
        """
    )
    clash = con.execute(
        "SELECT care_site_id FROM site_map GROUP BY 1 HAVING count(*) > 1 LIMIT 1"
    ).fetchall()
    if clash:
        raise ExtractError(
            f"maps care site {clash[0][0]} to more than one practice", file=str(path)
        )


def _load_imd(con: Connection, path: Path) -> None:
    _read_lookup(con, path, "imd_file", ("lsoa_code", "imd_decile"))
    _check_shapes(
        con,
        path,
        "imd_file",
        {"lsoa_code": LSOA_PATTERN, "imd_decile": "([1-9]|10)"},
        "is not an LSOA code (E01000001) with a decile from 1 to 10",
    )
    dup = con.execute(
        "SELECT line FROM (SELECT line, count(*) OVER (PARTITION BY lsoa_code) AS n FROM imd_file)"
        " WHERE n > 1 ORDER BY line LIMIT 1"
    ).fetchall()
    if dup:
        raise ExtractError(
            "names an LSOA a second time", file=str(path), line=int(dup[0][0]), column="lsoa_code"
        )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE imd_lookup AS SELECT lsoa_code, "
        "CAST(imd_decile AS INTEGER) AS imd_decile FROM imd_file"
    )


def _check_code(value: str | None, pattern: str, what: str, example: str) -> None:
    if value is None or not re.fullmatch(pattern, value):
        raise ExtractError(f"{what} must look like {example}", hint=_OPTIONS_HINT)


def _check_target(out: Path, overwrite: bool) -> None:
    if overwrite or not out.exists():
        return
    if not out.is_dir() or any(out.iterdir()):
        raise AlreadyExistsError(
            f"{out} exists and is not empty", hint="pass --overwrite to replace it"
        )


def _previous_report(out: Path) -> dict[str, Any] | None:
    path = out / REPORT_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _changed(previous: dict[str, Any] | None, lists: CodelistSet) -> list[str] | None:
    """Lists whose version differs from the previous import's at the same place (None: no
    previous import there)."""
    if previous is None:
        return None
    before = previous.get("codelists", {}).get("versions", {})
    now = lists.versions
    return [
        f"{k}: {before.get(k, 'absent')} -> {now.get(k, 'absent')}"
        for k in sorted(set(before) | set(now))
        if before.get(k) != now.get(k)
    ]


def _version() -> str:
    try:
        return version("riskstrat")
    except PackageNotFoundError:
        return "unknown"


def _q(text: str) -> str:
    return text.replace("'", "''")
