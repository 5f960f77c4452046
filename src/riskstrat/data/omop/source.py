"""Opening an OMOP CDM read-only and presenting its tables, typed, to the mapping SQL.

Sources: a DuckDB database file (attached read-only), a folder of CDM tables as CSV or Parquet
(OHDSI's Eunomia layout: one file per table, upper- or lower-case names such as
``PERSON.csv``; tab-separated files such as Athena's vocabulary downloads are read too), or a
PostgreSQL schema (read in a read-only transaction and copied table by table into scratch CSV
files that are deleted when the source is closed; DuckDB's postgres extension would need a
download at run time).

Every table the mapping uses becomes a view ``cdm_<table>`` with the columns it needs, cast to
their CDM types; an optional table that is absent is an empty view, and the report says so.
CDM v5.3 and v5.4 names are both read (``admitting_source_concept_id`` in v5.3 is
``admitted_from_concept_id`` in v5.4).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import duckdb

from riskstrat.data.errors import ExtractError
from riskstrat.data.files import check_plain_file, scan_csv
from riskstrat.data.omop.spark_con import Connection, SparkConnection

CdmVersion = str  # "5.3" or "5.4"

#: (column, DuckDB type, required when the table is present, v5.3 name if it differs)
_Col = tuple[str, str, bool, str | None]
CDM_COLUMNS: dict[str, tuple[_Col, ...]] = {
    "person": (
        ("person_id", "BIGINT", True, None),
        ("gender_concept_id", "BIGINT", True, None),
        ("year_of_birth", "INTEGER", True, None),
        ("month_of_birth", "INTEGER", False, None),
        ("day_of_birth", "INTEGER", False, None),
        ("birth_datetime", "TIMESTAMP", False, None),
        ("race_concept_id", "BIGINT", False, None),
        ("ethnicity_concept_id", "BIGINT", False, None),
        ("location_id", "BIGINT", False, None),
        ("care_site_id", "BIGINT", False, None),
    ),
    "observation_period": (
        ("person_id", "BIGINT", True, None),
        ("observation_period_start_date", "DATE", True, None),
        ("observation_period_end_date", "DATE", True, None),
    ),
    "death": (("person_id", "BIGINT", True, None), ("death_date", "DATE", True, None)),
    "location": (
        ("location_id", "BIGINT", True, None),
        ("location_source_value", "VARCHAR", False, None),
        ("county", "VARCHAR", False, None),
        ("zip", "VARCHAR", False, None),
    ),
    "care_site": (
        ("care_site_id", "BIGINT", True, None),
        ("care_site_source_value", "VARCHAR", False, None),
    ),
    "visit_occurrence": (
        ("visit_occurrence_id", "BIGINT", True, None),
        ("person_id", "BIGINT", True, None),
        ("visit_concept_id", "BIGINT", True, None),
        ("visit_start_date", "DATE", True, None),
        ("visit_end_date", "DATE", False, None),
        ("admitted_from_concept_id", "BIGINT", False, "admitting_source_concept_id"),
        ("admitted_from_source_value", "VARCHAR", False, "admitting_source_value"),
        ("care_site_id", "BIGINT", False, None),
    ),
    "condition_occurrence": (
        ("condition_occurrence_id", "BIGINT", True, None),
        ("person_id", "BIGINT", True, None),
        ("condition_concept_id", "BIGINT", True, None),
        ("condition_start_date", "DATE", True, None),
        ("condition_type_concept_id", "BIGINT", False, None),
        ("condition_status_concept_id", "BIGINT", False, None),
        ("condition_source_value", "VARCHAR", False, None),
        ("condition_source_concept_id", "BIGINT", False, None),
        ("visit_occurrence_id", "BIGINT", False, None),
    ),
    "drug_exposure": (
        ("drug_exposure_id", "BIGINT", True, None),
        ("person_id", "BIGINT", True, None),
        ("drug_concept_id", "BIGINT", True, None),
        ("drug_exposure_start_date", "DATE", True, None),
        ("drug_source_concept_id", "BIGINT", False, None),
    ),
    "measurement": (
        ("measurement_id", "BIGINT", True, None),
        ("person_id", "BIGINT", True, None),
        ("measurement_concept_id", "BIGINT", True, None),
        ("measurement_date", "DATE", True, None),
        ("value_as_number", "DOUBLE", False, None),
        ("measurement_source_value", "VARCHAR", False, None),
        ("measurement_source_concept_id", "BIGINT", False, None),
        ("visit_occurrence_id", "BIGINT", False, None),
    ),
    "observation": (
        ("observation_id", "BIGINT", True, None),
        ("person_id", "BIGINT", True, None),
        ("observation_concept_id", "BIGINT", True, None),
        ("observation_date", "DATE", True, None),
        ("value_as_number", "DOUBLE", False, None),
        ("observation_source_value", "VARCHAR", False, None),
        ("observation_source_concept_id", "BIGINT", False, None),
        ("visit_occurrence_id", "BIGINT", False, None),
    ),
    "procedure_occurrence": (
        ("procedure_occurrence_id", "BIGINT", True, None),
        ("person_id", "BIGINT", True, None),
        ("procedure_concept_id", "BIGINT", True, None),
        ("procedure_date", "DATE", True, None),
        ("procedure_source_value", "VARCHAR", False, None),
        ("procedure_source_concept_id", "BIGINT", False, None),
        ("visit_occurrence_id", "BIGINT", False, None),
    ),
    "concept": (
        ("concept_id", "BIGINT", True, None),
        ("concept_name", "VARCHAR", True, None),
        ("domain_id", "VARCHAR", False, None),
        ("vocabulary_id", "VARCHAR", True, None),
        ("concept_class_id", "VARCHAR", False, None),
        ("standard_concept", "VARCHAR", False, None),
        ("concept_code", "VARCHAR", True, None),
    ),
    "concept_ancestor": (
        ("ancestor_concept_id", "BIGINT", True, None),
        ("descendant_concept_id", "BIGINT", True, None),
    ),
    "concept_relationship": (
        ("concept_id_1", "BIGINT", True, None),
        ("concept_id_2", "BIGINT", True, None),
        ("relationship_id", "VARCHAR", True, None),
    ),
    "cdm_source": (
        ("cdm_source_name", "VARCHAR", False, None),
        ("cdm_version", "VARCHAR", False, None),
    ),
}
REQUIRED_TABLES = ("person", "observation_period", "concept")
_VERSION = re.compile(r"v?(5)\.([34])(\.[0-9]+)*", re.IGNORECASE)


@dataclass
class CdmSource:
    """An opened CDM: views ``cdm_<table>`` in ``con``, and what was found."""

    con: Connection
    kind: str  # "duckdb", "folder" or "postgresql"
    description: str  # where it came from, without credentials
    present: dict[str, list[str]]  # table -> its columns (lower case), for tables found
    cdm_version: CdmVersion = "5.4"
    cdm_version_from: str = "default"
    notes: list[str] = field(default_factory=list)
    _scratch: Path | None = None

    def close(self) -> None:
        self.con.close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def rows(self, table: str) -> int:
        if table not in self.present:
            return 0
        return int(self.con.execute(f"SELECT count(*) FROM cdm_{table}").fetchall()[0][0])


def open_source(
    source: str,
    *,
    con: Connection,
    schema: str | None = None,
    cdm_version: str | None = None,
    scratch_dir: Path | None = None,
    opened: tuple[str, str, dict[str, list[str]]] | None = None,
) -> CdmSource:
    """Open ``source`` read-only and create the ``cdm_<table>`` views in ``con``.

    ``opened``: the raw views are already made (on Spark, by ``spark_source.open_on_spark``):
    their (kind, description, table -> lower-case columns).

    Raises:
        ExtractError: the source cannot be found or opened, a required table or column is
            missing, or the CDM version is not 5.3 or 5.4.
    """
    scratch: Path | None = None
    if opened is not None:
        kind, description, found = opened
    elif isinstance(con, SparkConnection):
        raise ExtractError("on Spark the CDM is opened by spark_source.open_on_spark")
    elif re.match(r"postgres(ql)?(\+\w+)?://", source):
        assert isinstance(con, duckdb.DuckDBPyConnection)
        scratch = Path(tempfile.mkdtemp(prefix="riskstrat-omop-", dir=scratch_dir))
        try:
            raw, description = _copy_postgres(source, schema, scratch)
            kind = "postgresql"
            _raw_views_from_folder(con, raw)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    else:
        assert isinstance(con, duckdb.DuckDBPyConnection)
        path = Path(source)
        if path.is_dir():
            kind, description = "folder", f"folder {path}"
            _raw_views_from_folder(con, _folder_files(path))
        elif path.is_file():
            kind = "duckdb"
            description = _attach_duckdb(con, path, schema)
        else:
            raise ExtractError(
                "OMOP source not found (a DuckDB file, a folder of CDM tables, or a "
                "postgresql:// URL)",
                file=source,
            )
    if opened is None:
        found = {
            str(name).removeprefix("cdm_raw_"): [str(c).lower() for c in cols]
            for name, cols in con.execute(
                "SELECT table_name, list(column_name ORDER BY column_index) FROM duckdb_columns() "
                "WHERE table_name LIKE 'cdm_raw_%' GROUP BY table_name"
            ).fetchall()
        }
    cdm = CdmSource(con=con, kind=kind, description=description, present=found, _scratch=scratch)
    try:
        for table in REQUIRED_TABLES:
            if table not in found:
                raise ExtractError(f"the CDM has no {table} table", file=description)
        cdm.cdm_version, cdm.cdm_version_from = _version(con, found, cdm_version)
        for table, columns in CDM_COLUMNS.items():
            _typed_view(cdm, table, columns)
    except BaseException:
        cdm.close()
        raise
    return cdm


def _attach_duckdb(con: duckdb.DuckDBPyConnection, path: Path, schema: str | None) -> str:
    try:
        con.execute(f"ATTACH '{_q(str(path))}' AS omop_src (READ_ONLY)")
    except duckdb.Error as exc:
        raise ExtractError(
            f"cannot be opened as a DuckDB database ({type(exc).__name__})", file=str(path)
        ) from None
    rows = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'omop_src' "
        "UNION ALL SELECT schema_name, view_name FROM duckdb_views() "
        "WHERE database_name = 'omop_src'"
    ).fetchall()
    schemas = sorted({str(s) for s, t in rows if str(t).lower() == "person"})
    if schema is None:
        if len(schemas) != 1:
            raise ExtractError(
                "name the CDM schema with --schema ("
                + (f"person tables in: {', '.join(schemas)}" if schemas else "no person table")
                + ")",
                file=str(path),
            )
        schema = schemas[0]
    for s, t in rows:
        if str(s) == schema and str(t).lower() in CDM_COLUMNS:
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW cdm_raw_{str(t).lower()} AS "
                f'SELECT * FROM omop_src."{_ident(str(s))}"."{_ident(str(t))}"'
            )
    return f"DuckDB file {path} (schema {schema})"


def _folder_files(root: Path) -> dict[str, Path]:
    """The CDM tables in a folder, by lower-case table name (``PERSON.csv`` or
    ``person.parquet``); two files for one table is an error."""
    found: dict[str, Path] = {}
    for entry in sorted(root.iterdir()):
        stem, _, ext = entry.name.lower().partition(".")
        if stem in CDM_COLUMNS and ext in ("csv", "parquet", "tsv"):
            if stem in found:
                raise ExtractError(
                    f"two files for table {stem}: {found[stem].name} and {entry.name}",
                    file=str(entry),
                )
            check_plain_file(root, entry, folder="the CDM folder")
            found[stem] = entry
    return found


def _raw_views_from_folder(con: duckdb.DuckDBPyConnection, files: dict[str, Path]) -> None:
    for table, path in files.items():
        if path.suffix.lower() == ".parquet":
            sql = f"SELECT * FROM read_parquet('{_q(str(path))}')"
        else:
            delim = _delimiter(path)
            scan = scan_csv(path, delimiter=delim)
            quote = "'\"'" if delim == "," else "''"
            sql = (
                f"SELECT * FROM read_csv('{_q(str(path))}', header = true, all_varchar = true, "
                f"delim = '{delim}', quote = {quote}, escape = {quote}, strict_mode = true, "
                f"encoding = 'utf-8', null_padding = false)"
            )
            try:
                n = con.execute(f"SELECT count(*) FROM ({sql})").fetchall()[0][0]
            except duckdb.Error as exc:
                raise ExtractError(
                    f"cannot be read as CSV ({type(exc).__name__})", file=str(path)
                ) from None
            if n != scan.rows and n != scan_csv(path, delimiter=delim, count_blank=True).rows:
                raise ExtractError(
                    f"the CSV reader returned {n:,} rows but the file holds {scan.rows:,}",
                    file=str(path),
                )
        con.execute(f"CREATE OR REPLACE TEMP VIEW cdm_raw_{table} AS {sql}")
        try:
            con.execute(f"SELECT * FROM cdm_raw_{table} LIMIT 0").fetchall()
        except duckdb.Error as exc:
            raise ExtractError(f"cannot be read ({type(exc).__name__})", file=str(path)) from None


def _delimiter(path: Path) -> str:
    with path.open("rb") as fh:
        first = fh.readline()
    return "\t" if b"\t" in first and b"," not in first else ","


def _version(
    con: Connection, found: dict[str, list[str]], given: str | None
) -> tuple[CdmVersion, str]:
    if given is not None:
        match = _VERSION.fullmatch(given.strip())
        if not match:
            raise ExtractError(f"CDM version must be 5.3 or 5.4, not {given!r}")
        return f"5.{match.group(2)}", "given"
    if "cdm_source" in found and "cdm_version" in found["cdm_source"]:
        values = [
            str(v)
            for (v,) in con.execute(
                "SELECT DISTINCT cdm_version FROM cdm_raw_cdm_source WHERE cdm_version IS NOT NULL"
            ).fetchall()
        ]
        for v in values:
            match = _VERSION.fullmatch(v.strip())
            if match:
                return f"5.{match.group(2)}", "cdm_source"
        if values:
            raise ExtractError(
                f"cdm_source.cdm_version says {values[0]!r}; riskstrat reads CDM 5.3 and 5.4 "
                "(give --cdm-version to override)",
                column="cdm_version",
            )
    visits = found.get("visit_occurrence", [])
    if "admitting_source_concept_id" in visits:
        return "5.3", "column names"
    return "5.4", "column names" if "admitted_from_concept_id" in visits else "default"


def _typed_view(cdm: CdmSource, table: str, columns: tuple[_Col, ...]) -> None:
    present = set(cdm.present.get(table, []))
    select = []
    for name, sql_type, required, v53 in columns:
        wanted = v53 if (cdm.cdm_version == "5.3" and v53) else name
        other = name if wanted == v53 else v53
        if wanted in present:
            source = wanted
        elif other and other in present:
            source = other
            cdm.notes.append(
                f"{table}.{other} read as {wanted}: the CDM says version {cdm.cdm_version} but "
                f"has the other version's column name"
            )
        elif required and table in cdm.present:
            raise ExtractError(
                f"the CDM's {table} table has no {wanted} column (CDM {cdm.cdm_version})",
                file=cdm.description,
                column=wanted,
            )
        else:
            source = None
        expr = "NULL" if source is None else _cast(f'"{source}"', sql_type)
        select.append(f"{expr} AS {name}")
    body = (
        f"SELECT {', '.join(select)} FROM cdm_raw_{table}"
        if table in cdm.present
        else f"SELECT {', '.join(select)} WHERE false"
    )
    cdm.con.execute(f"CREATE OR REPLACE TEMP VIEW cdm_{table} AS {body}")


def _cast(expr: str, sql_type: str) -> str:
    if sql_type == "DATE":
        # CSV dates come as 2026-01-31 or (Athena) 20260131; typed sources as DATE/TIMESTAMP.
        # The second form is cut into the first's shape (Spark has no strptime).
        text = f"CAST({expr} AS VARCHAR)"
        return (
            f"coalesce(TRY_CAST({expr} AS DATE), "
            f"CASE WHEN regexp_full_match({text}, '[0-9]{{8}}') THEN TRY_CAST("
            f"substr({text}, 1, 4) || '-' || substr({text}, 5, 2) || '-' || "
            f"substr({text}, 7, 2) AS DATE) END)"
        )
    if sql_type == "VARCHAR":
        return f"NULLIF(CAST({expr} AS VARCHAR), '')"
    if sql_type in ("BIGINT", "INTEGER"):
        # Ids written from a frame with gaps can read 123.0: DuckDB's cast reads that as
        # 123, Spark's gives NULL, so both read what is left through a double.
        return (
            f"coalesce(TRY_CAST({expr} AS {sql_type}), "
            f"TRY_CAST(TRY_CAST({expr} AS DOUBLE) AS {sql_type}))"
        )
    return f"TRY_CAST({expr} AS {sql_type})"


# --------------------------------------------------------------------------------------
# PostgreSQL


def split_postgres_url(url: str, schema: str | None) -> tuple[str, str]:
    """The connection URL without riskstrat's ``schema`` query parameter, and the schema
    (``--schema`` first, then ``?schema=``, then ``public``)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    in_url = [v for k, v in query if k == "schema"]
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    scheme = parts.scheme.split("+", 1)[0]
    clean = urlunsplit((scheme, parts.netloc, parts.path, rest, parts.fragment))
    return clean, schema or (in_url[0] if in_url else "public")


def _safe_description(url: str, schema: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "local socket"
    port = f":{parts.port}" if parts.port else ""
    return f"PostgreSQL {host}{port}{parts.path} (schema {schema})"


def _copy_postgres(url: str, schema: str | None, scratch: Path) -> tuple[dict[str, Path], str]:
    """Copy the CDM tables of one schema to CSV files in ``scratch``, in one read-only
    transaction (so the tables are read at one point in time and nothing can be written)."""
    import psycopg
    from psycopg import sql

    dsn, schema_name = split_postgres_url(url, schema)
    description = _safe_description(dsn, schema_name)
    files: dict[str, Path] = {}
    try:
        with psycopg.connect(dsn, autocommit=False) as conn:
            conn.read_only = True
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION READ ONLY")
                cur.execute("SET LOCAL DateStyle TO ISO, YMD")
                cur.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    (schema_name,),
                )
                tables = {str(r[0]): str(r[0]).lower() for r in cur.fetchall()}
                if not tables:
                    raise ExtractError(f"schema {schema_name} has no tables", file=description)
                for name, lower in sorted(tables.items()):
                    if lower not in CDM_COLUMNS:
                        continue
                    target = scratch / f"{lower}.csv"
                    ident = sql.Identifier(schema_name, name)
                    query = sql.SQL(
                        "COPY (SELECT * FROM {}) TO STDOUT WITH (FORMAT csv, HEADER)"
                    ).format(ident)
                    with target.open("wb") as out, cur.copy(query) as copy:
                        for chunk in copy:
                            out.write(chunk)
                    files[lower] = target
            conn.rollback()
    except psycopg.Error as exc:
        raise ExtractError(
            f"cannot read the PostgreSQL source ({type(exc).__name__})", file=description
        ) from None
    os.chmod(scratch, 0o700)
    return files, description


def _q(text: str) -> str:
    return text.replace("'", "''")


def _ident(text: str) -> str:
    return text.replace('"', '""')
