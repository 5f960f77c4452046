"""Several Parquet extracts combined into one pseudonymous extract (for benchmarks at scale).

The synthetic ``999`` NHS number range holds only 909,091 people, so a population larger
than that cannot be one NHS-numbered extract. ``combine_extracts`` joins k extracts (each
its own population, say the generator's at k seeds) into one extract of contract version 2
whose identifiers are pseudonyms: every table's ``nhs_number`` becomes
``p{copy}-{nhs_number}`` (``copy`` is the extract's place in the list), the same rewrite in
every table, so each person's events stay theirs and two copies' people never meet. The
manifest says ``identifier_kind: "pseudonym"`` and sums the parts' row counts.

The work is one DuckDB ``COPY`` per table over the parts' Parquet files. The combined
folder is written beside ``out`` and renamed into place at the end (``replace_folder``), so
``out`` is only ever the old folder or the new one, whole; the oracle file too, when the
parts have one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from riskstrat.data.contract import CONTRACT_VERSION, TABLE_ORDER
from riskstrat.data.errors import ExtractError
from riskstrat.data.files import replace_folder
from riskstrat.data.manifest import read_manifest

__all__ = ["CombinedExtract", "combine_extracts", "pseudonym_sql"]


@dataclass(frozen=True)
class CombinedExtract:
    """What ``combine_extracts`` wrote: the folder, its rows per table, the oracle file."""

    out_dir: Path
    rows: dict[str, int]
    parts: int
    oracle_path: Path | None


def pseudonym_sql(copy: int, column: str = "nhs_number") -> str:
    """The SQL of copy ``copy``'s pseudonym for ``column``: ``'p{copy}-' || column``."""
    if copy < 0:
        raise ValueError("copy must be 0 or more")
    return f"('p{copy}-' || {column})"


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def combine_extracts(
    parts: Sequence[Path],
    out_dir: Path,
    *,
    oracle_parts: Sequence[Path] | None = None,
    oracle_path: Path | None = None,
    memory_limit: str | None = None,
    threads: int | None = None,
    scratch_dir: Path | None = None,
) -> CombinedExtract:
    """Combine the Parquet extracts ``parts`` into one pseudonymous extract in ``out_dir``.

    Args:
        parts: extract folders, each with Parquet tables and a manifest; all with the same
            extract date and NHS numbers as identifiers.
        out_dir: the combined extract's folder (replaced, whole, if it exists).
        oracle_parts: the parts' oracle files (``nhs_number``, ``index_date``,
            ``true_risk``), in the parts' order; combined, pseudonyms and all, into
            ``oracle_path``.
        memory_limit, threads, scratch_dir: DuckDB's limits and where it spills.

    Raises:
        ExtractError: a part that is not a Parquet extract of NHS numbers, or parts with
            different extract dates.
        ValueError: no parts, or oracle files that do not match the parts.
    """
    if not parts:
        raise ValueError("at least one extract is needed")
    if (oracle_parts is None) != (oracle_path is None) or (
        oracle_parts is not None and len(oracle_parts) != len(parts)
    ):
        raise ValueError("give one oracle file per part and where the combined one goes")
    manifests = [read_manifest(Path(p)) for p in parts]
    dates = {m.extract_date for m in manifests}
    if len(dates) != 1:
        raise ExtractError("the extracts to combine have different extract dates")
    for part, manifest in zip(parts, manifests, strict=True):
        if manifest.identifier_kind != "nhs_number":
            raise ExtractError("only extracts of NHS numbers can be combined", file=str(part))
        for name in TABLE_ORDER:
            if not (Path(part) / f"{name}.parquet").is_file():
                raise ExtractError(f"{name}.parquet is missing", file=str(part))
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{secrets.token_hex(6)}"
    tmp.mkdir()
    tmp_oracle: Path | None = None
    con = duckdb.connect(":memory:")
    try:
        if memory_limit:
            con.execute(f"SET memory_limit = '{memory_limit}'")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        if scratch_dir is not None:
            scratch_dir.mkdir(parents=True, exist_ok=True)
            con.execute(f"SET temp_directory = {_quoted(scratch_dir)}")
        rows = {
            name: _copy_table(
                con, [Path(p) / f"{name}.parquet" for p in parts], tmp / f"{name}.parquet"
            )
            for name in TABLE_ORDER
        }
        sources = [m.source or "unknown" for m in manifests]
        written: dict[str, object] = {
            "contract_version": CONTRACT_VERSION,
            "extract_date": manifests[0].extract_date.isoformat(),
            "source": f"{len(parts)} extracts combined, identifiers pseudonymised: "
            + "; ".join(sources),
            "identifier_kind": "pseudonym",
            "row_counts": rows,
            "provenance": {"combined_parts": len(parts), "pseudonym": "p{copy}-{nhs_number}"},
        }
        (tmp / "manifest.json").write_text(json.dumps(written) + "\n", encoding="utf-8")
        if oracle_parts is not None and oracle_path is not None:
            oracle_path.parent.mkdir(parents=True, exist_ok=True)
            tmp_oracle = oracle_path.parent / f".{oracle_path.name}.tmp-{secrets.token_hex(6)}"
            _copy_table(con, [Path(p) for p in oracle_parts], tmp_oracle)
        replace_folder(tmp, out_dir)
        if tmp_oracle is not None and oracle_path is not None:
            os.replace(tmp_oracle, oracle_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if tmp_oracle is not None:
            tmp_oracle.unlink(missing_ok=True)
        raise
    finally:
        con.close()
    return CombinedExtract(
        out_dir=out_dir,
        rows=rows,
        parts=len(parts),
        oracle_path=oracle_path if oracle_parts is not None else None,
    )


def _copy_table(con: duckdb.DuckDBPyConnection, files: Sequence[Path], target: Path) -> int:
    """``files`` (one per copy, the same columns) as one Parquet file ``target``, each
    copy's ``nhs_number`` its pseudonym; returns the rows written."""
    query = " UNION ALL ".join(
        f"SELECT * REPLACE ({pseudonym_sql(copy)} AS nhs_number) FROM read_parquet({_quoted(path)})"
        for copy, path in enumerate(files)
    )
    con.execute(f"COPY ({query}) TO {_quoted(target)} (FORMAT parquet)")
    (written,) = con.execute(f"SELECT count(*) FROM read_parquet({_quoted(target)})").fetchall()[0]
    return int(written)
