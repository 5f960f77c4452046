"""A training sample of people, written once as a Parquet extract.

Training stays on one machine: at national scale it is fitted on a sample of people, drawn
where the whole population is (on Spark, ``--engine spark``) and written once as an extract
of its own, which ``riskstrat train`` then reads like any other. The sample holds every row
of every contract table for the people drawn, from the validated (clean) tables.

Who is drawn depends only on the identifier, the seed and the fraction: a person is in when
the first 8 bytes of BLAKE2b("seed:identifier"), read as a number in [0, 1), are below the
fraction. So DuckDB and Spark draw the same people, a larger fraction keeps everyone a
smaller one kept, and the draw needs no pass over the population to number it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import numpy.typing as npt
import pandas as pd

from riskstrat.data.contract import CONTRACT_VERSION, TABLE_ORDER
from riskstrat.data.duck import sql_path
from riskstrat.data.files import replace_folder
from riskstrat.data.manifest import Manifest
from riskstrat.errors import AlreadyExistsError, UsageError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_SCALE = float(1 << 64)


def draws(identifiers: Iterable[str], *, seed: int) -> npt.NDArray[np.float64]:
    """Each identifier's draw in [0, 1) (see the module's docstring)."""
    prefix = f"{int(seed)}:".encode()
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(prefix + str(i).encode(), digest_size=8).digest())
            / _SCALE
            for i in identifiers
        ),
        dtype=np.float64,
    )


def check_fraction(fraction: float) -> None:
    if not 0 < fraction <= 1:
        raise UsageError("the sample's fraction must be in (0, 1]", hint="e.g. --fraction 0.1")


@dataclass(frozen=True)
class SampleResult:
    out_dir: Path
    people: int
    rows: dict[str, int]
    fraction: float
    seed: int


def _manifest(source: Manifest, rows: dict[str, int], fraction: float, seed: int) -> str:
    people = rows["patients"]
    of = source.source or "an extract"
    data: dict[str, Any] = {
        "contract_version": CONTRACT_VERSION,
        "extract_date": source.extract_date.isoformat(),
        "source": f"a sample of people ({fraction:.4g}, seed {seed}) of: {of}",
        "identifier_kind": source.identifier_kind,
        "row_counts": rows,
        "provenance": {
            **source.provenance,
            "sample": {"fraction": fraction, "seed": seed, "people": people,
                       "rule": "BLAKE2b(seed:identifier) below the fraction"},
        },
    }  # fmt: skip
    return json.dumps(data, indent=1) + "\n"


def _parquet_rows(path: Path) -> int:
    """The rows a written Parquet file holds (from its footer)."""
    con = duckdb.connect(":memory:")
    try:
        return int(
            con.execute(f"SELECT count(*) FROM read_parquet('{sql_path(path)}')").fetchall()[0][0]
        )
    finally:
        con.close()


@contextmanager
def _writing(
    out: Path, manifest: Manifest, fraction: float, seed: int, overwrite: bool
) -> Iterator[tuple[Path, dict[str, int]]]:
    """A hidden folder beside ``out`` for the tables, and the rows written per table; the
    manifest is added and the folder renamed to ``out`` at the end (removed on failure)."""
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise AlreadyExistsError(f"{out} exists and is not empty", hint="pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(6)}"
    tmp.mkdir()
    rows: dict[str, int] = {}
    try:
        yield tmp, rows
        (tmp / "manifest.json").write_text(_manifest(manifest, rows, fraction, seed), "utf-8")
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_sample_duckdb(
    con: duckdb.DuckDBPyConnection,
    manifest: Manifest,
    out: Path,
    *,
    fraction: float,
    seed: int,
    overwrite: bool = False,
) -> SampleResult:
    """Write the sample from a validated extract's clean tables in ``con``."""
    check_fraction(fraction)
    ids = con.execute("SELECT nhs_number FROM patients").df()["nhs_number"].astype(str)
    kept = pd.DataFrame({"nhs_number": ids[draws(ids, seed=seed) < fraction].to_numpy()})
    con.register("_sampled_ids", kept)
    try:
        with _writing(out, manifest, fraction, seed, overwrite) as (tmp, rows):
            for table in TABLE_ORDER:
                path = tmp / f"{table}.parquet"
                con.execute(
                    f"COPY (SELECT * FROM {table} WHERE nhs_number IN "
                    f"(SELECT nhs_number FROM _sampled_ids) ORDER BY nhs_number) "
                    f"TO '{sql_path(path)}' (FORMAT parquet, COMPRESSION zstd)"
                )
                rows[table] = _parquet_rows(path)
    finally:
        con.unregister("_sampled_ids")
    return SampleResult(out, rows["patients"], rows, fraction, seed)


def write_sample_spark(
    spark: SparkSession,
    manifest: Manifest,
    out: Path,
    *,
    fraction: float,
    seed: int,
    overwrite: bool = False,
) -> SampleResult:
    """Write the sample from the clean tables registered in ``spark`` (temp views under the
    contract's names): the draw runs on the executors, each table is written by Spark as
    one Parquet file, sorted by identifier."""
    check_fraction(fraction)
    from pyspark.sql.types import StringType, StructField, StructType

    def keep(batches: Iterable[pd.DataFrame]) -> Iterable[pd.DataFrame]:
        for frame in batches:
            ids = frame["nhs_number"].astype(str)
            yield pd.DataFrame({"nhs_number": ids[draws(ids, seed=seed) < fraction].to_numpy()})

    schema = StructType([StructField("nhs_number", StringType())])
    kept: DataFrame = spark.table("patients").select("nhs_number").mapInPandas(keep, schema)  # type: ignore[arg-type]
    kept = kept.persist()
    try:
        with _writing(out, manifest, fraction, seed, overwrite) as (tmp, rows):
            for table in TABLE_ORDER:
                part_dir = tmp / f".{table}.parts"
                sampled = spark.table(table).join(kept.hint("broadcast"), "nhs_number", "left_semi")
                columns = spark.table(table).columns
                sampled.select(*columns).orderBy("nhs_number").coalesce(1).write.option(
                    "compression", "zstd"
                ).parquet(str(part_dir))
                (part,) = sorted(part_dir.glob("part-*.parquet"))
                part.replace(tmp / f"{table}.parquet")
                shutil.rmtree(part_dir)
                rows[table] = _parquet_rows(tmp / f"{table}.parquet")
    finally:
        kept.unpersist()
    return SampleResult(out, rows["patients"], rows, fraction, seed)
