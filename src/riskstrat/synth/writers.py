"""Writing contract extracts: each table's CSV or Parquet file appended to block by block,
and ``manifest.json`` with the rows written (the OMOP writer is :mod:`riskstrat.synth.omop`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from riskstrat.data.contract import CONTRACT_VERSION, TABLE_ORDER, TABLES
from riskstrat.synth.params import Format, ProgressCallback

_ARROW_TYPES = {
    "nhs_number": pa.string(),
    "string": pa.string(),
    "code": pa.string(),
    "date": pa.date32(),
    "boolean": pa.bool_(),
    "integer": pa.int32(),
    "number": pa.float64(),
}


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema a contract table is written with (Parquet types as the contract says)."""
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.kind]) for c in TABLES[table].columns])


def _to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    arrays = []
    for f in schema:
        col = frame[f.name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            arr: pa.Array = pa.DictionaryArray.from_arrays(
                pa.array(col.cat.codes.to_numpy(), mask=col.isna().to_numpy()),
                pa.array(col.cat.categories.to_numpy(dtype=object), pa.string()),
            )
        else:
            arr = pa.array(col, from_pandas=True)
        arrays.append(arr.cast(f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


class _TableSink:
    """One table's file, appended to block by block."""

    def __init__(self, path: Path, table: str, fmt: Format) -> None:
        self.schema = arrow_schema(table)
        self.fmt = fmt
        self.rows = 0
        self._parquet: pq.ParquetWriter | None = None
        self._csv: pacsv.CSVWriter | None = None
        self._file: IO[bytes] | None = None
        if fmt == "parquet":
            self._parquet = pq.ParquetWriter(str(path), self.schema, compression="snappy")
        else:
            self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
            header = ",".join(self.schema.names) + "\n"
            self._file.write(header.encode("utf-8"))
            self._csv = pacsv.CSVWriter(
                self._file,
                self.schema,
                write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"),
            )

    def write(self, frame: pd.DataFrame) -> None:
        table = _to_arrow(frame, self.schema)
        self.rows += table.num_rows
        if table.num_rows == 0:
            return
        if self._parquet is not None:
            self._parquet.write_table(table, row_group_size=1 << 20)
        elif self._csv is not None:
            self._csv.write_table(table)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
        if self._csv is not None:
            self._csv.close()
            self._csv = None
        if self._file is not None:
            self._file.close()
            self._file = None


class _ExtractWriter:
    """Appends each block's five tables to their files; ``finish`` writes manifest.json with
    the rows written, so a file cut short later is caught by validation."""

    def __init__(self, folder: Path, *, fmt: Format, extract_date: dt.date, source: str) -> None:
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"fmt must be 'csv' or 'parquet', not {fmt!r}")
        self.folder = folder
        self.manifest: dict[str, object] = {
            "contract_version": CONTRACT_VERSION,
            "extract_date": extract_date.isoformat(),
            "source": source,
            "identifier_kind": "nhs_number",
        }
        self.sinks: dict[str, _TableSink] = {}
        try:
            for name in TABLE_ORDER:
                self.sinks[name] = _TableSink(folder / f"{name}.{fmt}", name, fmt)
        except BaseException:
            self.close()
            raise

    def write_block(
        self, tables: dict[str, pd.DataFrame], report: Callable[[float], None] | None = None
    ) -> None:
        for i, name in enumerate(TABLE_ORDER):
            self.sinks[name].write(tables[name])
            if report is not None:
                report((i + 1) / len(TABLE_ORDER))

    @property
    def rows(self) -> dict[str, int]:
        return {name: sink.rows for name, sink in self.sinks.items()}

    def close(self) -> None:
        for sink in self.sinks.values():
            sink.close()

    def finish(self) -> None:
        """Close the files and write the manifest (only once every block is written)."""
        self.close()
        manifest = {**self.manifest, "row_counts": self.rows}
        text = json.dumps(manifest) + "\n"
        (self.folder / "manifest.json").write_text(text, encoding="utf-8")


def write_tables(
    tables: dict[str, pd.DataFrame],
    folder: Path,
    *,
    fmt: Format,
    extract_date: dt.date,
    source: str,
    progress: ProgressCallback | None = None,
) -> dict[str, int]:
    """Write manifest.json and the five tables into an existing empty ``folder``.

    Returns the number of rows written per table.
    """
    writer = _ExtractWriter(folder, fmt=fmt, extract_date=extract_date, source=source)
    try:
        writer.write_block(tables, None if progress is None else (lambda f: progress("write", f)))
        writer.finish()
    finally:
        writer.close()
    return writer.rows
