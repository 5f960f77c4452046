"""What an extract folder declares and holds: ``manifest.json`` (contract version, extract
date, identifier kind, row counts, provenance) and the one file of each contract table."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

from riskstrat.data.contract import (
    IDENTIFIER_KINDS,
    SUPPORTED_CONTRACT_VERSIONS,
    TABLE_ORDER,
    TABLES,
    IdentifierKind,
)
from riskstrat.data.errors import ExtractError
from riskstrat.data.files import check_file_at, check_plain_file

FileFormat = Literal["csv", "parquet"]
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True)
class Manifest:
    contract_version: int
    extract_date: date
    source: str | None
    #: What the identifier column holds: NHS numbers, or pseudonyms (contract version 2).
    identifier_kind: IdentifierKind = "nhs_number"
    #: Data rows per table as the writer counted them, checked when present (version 2).
    row_counts: dict[str, int] = field(default_factory=dict)
    #: Where the extract came from (free JSON, e.g. an OMOP import's codelist versions).
    provenance: dict[str, object] = field(default_factory=dict)


def read_manifest(extract_dir: Path | str, fs: Any = None) -> Manifest:
    """Read and check ``manifest.json``: in a local folder, or at a URI read through ``fs``
    (an fsspec file system, as ``riskstrat.engines.hadoop_fs`` gives the Spark engine).

    Raises:
        ExtractError: the manifest is missing, not JSON, or breaks the contract.
    """
    path: Path | str
    if fs is not None:
        path = f"{str(extract_dir).rstrip('/')}/manifest.json"
        if not fs.exists(path):
            raise ExtractError("manifest is missing", file=path)
        check_file_at(fs, path)
        raw = fs.cat_file(path)
    else:
        path = Path(extract_dir) / "manifest.json"
        if not os.path.lexists(path):
            raise ExtractError("manifest is missing", file=str(path))
        check_plain_file(Path(extract_dir), path)
        raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExtractError(
            f"manifest is not valid JSON ({type(exc).__name__})", file=str(path)
        ) from None
    if not isinstance(data, dict):
        raise ExtractError("manifest must be a JSON object", file=str(path))
    version = data.get("contract_version")
    if version is None:
        raise ExtractError("contract_version is missing", file=str(path), column="contract_version")
    if isinstance(version, bool) or version not in SUPPORTED_CONTRACT_VERSIONS:
        raise ExtractError(
            "contract_version must be " + " or ".join(str(v) for v in SUPPORTED_CONTRACT_VERSIONS),
            file=str(path),
            column="contract_version",
        )
    raw_date = data.get("extract_date")
    if raw_date is None:
        raise ExtractError("extract_date is missing", file=str(path), column="extract_date")
    if not isinstance(raw_date, str) or not _ISO_DATE.fullmatch(raw_date):
        raise ExtractError(
            "extract_date must be an ISO 8601 date (YYYY-MM-DD)",
            file=str(path),
            column="extract_date",
        )
    try:
        extract_date = date.fromisoformat(raw_date)
    except ValueError:
        raise ExtractError(
            "extract_date is not a real calendar date", file=str(path), column="extract_date"
        ) from None
    source = data.get("source")
    if source is not None and not isinstance(source, str):
        raise ExtractError("source must be text", file=str(path), column="source")
    if version == 1:
        for key in _VERSION_2_KEYS:
            if key in data:
                raise ExtractError(f"{key} needs contract_version 2", file=str(path), column=key)
    kind = data.get("identifier_kind", "nhs_number")
    if kind not in IDENTIFIER_KINDS:
        raise ExtractError(
            "identifier_kind must be " + " or ".join(IDENTIFIER_KINDS),
            file=str(path),
            column="identifier_kind",
        )
    counts = data.get("row_counts", {})
    if not isinstance(counts, dict) or any(
        t not in TABLES or isinstance(n, bool) or not isinstance(n, int) or n < 0
        for t, n in counts.items()
    ):
        raise ExtractError(
            "row_counts must map contract table names to whole numbers of rows",
            file=str(path),
            column="row_counts",
        )
    provenance = data.get("provenance", {})
    if not isinstance(provenance, dict):
        raise ExtractError("provenance must be a JSON object", file=str(path), column="provenance")
    return Manifest(
        contract_version=int(version),
        extract_date=extract_date,
        source=source,
        identifier_kind=kind,
        row_counts={str(t): int(n) for t, n in counts.items()},
        provenance=provenance,
    )


_VERSION_2_KEYS = ("identifier_kind", "row_counts", "provenance")


def locate_files(
    extract_dir: Path | str, fs: Any = None
) -> dict[str, tuple[Path | str, FileFormat]]:
    """Find each contract table's file (``name.csv`` or ``name.parquet``), in a local folder
    or at a URI read through ``fs`` (see ``read_manifest``).

    Raises:
        ExtractError: a table with no file or with both, or a file that is not a plain file
            inside the folder (a link leading out of it, a FIFO, a device, a folder).
    """
    found: dict[str, tuple[Path | str, FileFormat]] = {}
    for name in TABLE_ORDER:
        csv_path: Path | str
        pq_path: Path | str
        if fs is not None:
            base = str(extract_dir).rstrip("/")
            csv_path, pq_path = f"{base}/{name}.csv", f"{base}/{name}.parquet"
            has_csv, has_pq = bool(fs.exists(csv_path)), bool(fs.exists(pq_path))
        else:
            folder = Path(extract_dir)
            csv_path, pq_path = folder / f"{name}.csv", folder / f"{name}.parquet"
            has_csv, has_pq = os.path.lexists(csv_path), os.path.lexists(pq_path)
        if has_csv and has_pq:
            raise ExtractError(
                f"both {name}.csv and {name}.parquet exist; keep exactly one",
                file=str(csv_path),
            )
        if not (has_csv or has_pq):
            raise ExtractError(
                f"table {name} is missing (expected {name}.csv or {name}.parquet)",
                file=str(csv_path),
            )
        fmt: FileFormat = "csv" if has_csv else "parquet"
        path = csv_path if has_csv else pq_path
        if fs is not None:
            check_file_at(fs, str(path))
        else:
            check_plain_file(Path(extract_dir), Path(path))
        found[name] = (path, fmt)
    return found
