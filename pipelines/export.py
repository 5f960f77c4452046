"""Export a month's cohort for a PCN or practice as CSV or Excel. Every export is a
patient-level read, so it is recorded in the access log like an API read."""

from __future__ import annotations

import getpass
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

import pandas as pd

from pipelines.common import published_run
from riskstrat.config import Settings, get_settings
from riskstrat.listing import listing_frame
from riskstrat.store import Store, access_record

ExportFormat = Literal["csv", "xlsx"]


@dataclass(frozen=True)
class ExportResult:
    path: Path
    rows: int
    run_id: int


def default_export_path(
    month: date, cohort: str, pcn: str | None, practice: str | None, fmt: ExportFormat
) -> Path:
    parts = [month.strftime("%Y-%m"), cohort] + [p for p in (pcn, practice) if p]
    return Path("exports") / f"{'_'.join(parts)}.{fmt}"


def run_export(
    *,
    month: date,
    cohort: str,
    fmt: ExportFormat,
    pcn: str | None = None,
    practice: str | None = None,
    capacity: int | None = None,
    out: Path | None = None,
    settings: Settings | None = None,
) -> ExportResult:
    """Write the cohort list; the file appears complete or not at all."""
    settings = settings or get_settings()
    store = Store(settings.serving_database_url)
    try:
        run = published_run(store, month)
        record = run.details.get("cohort_config", {}).get("interventions", {})
        if cohort not in record:
            known = ", ".join(record) or "none"
            raise ValueError(f"unknown cohort {cohort!r}; this run has: {known}")
        limit = capacity if capacity is not None else 10_000_000
        _, rows = store.intervention_page(
            run.id, cohort, pcn_code=pcn, practice_code=practice, offset=0, limit=limit
        )
        frame = listing_frame(rows, record[cohort]["criteria"])
        path = out or default_export_path(month, cohort, pcn, practice, fmt)
        _write_atomically(
            frame, path, fmt, about=_about(run.month, run.model_version, record[cohort])
        )
        store.record_access(
            access_record(
                actor=os.environ.get("RISKSTRAT_ACTOR") or getpass.getuser(),
                route=f"riskstrat export {cohort}",
                nhs_numbers=[m.nhs_number for m, _ in rows],
                key=settings.pseudonym_key.get_secret_value(),
                purpose=f"export {fmt}",
            )
        )
        return ExportResult(path=path, rows=len(frame), run_id=run.id)
    finally:
        store.dispose()


def _about(month: date, model_version: str, intervention: dict[str, object]) -> pd.DataFrame:
    items = [
        ("cohort", intervention["title"]),
        ("month (index date)", month.isoformat()),
        ("model version", model_version),
        ("criteria source", intervention["source"]),
        ("ranked by", intervention["ranked_by"]),
        (
            "effect assumed",
            intervention["effect"] if intervention["effect"] is not None else "none claimed",
        ),
        ("note", intervention.get("note") or ""),
        ("exported at (UTC)", datetime.now(UTC).strftime("%Y-%m-%d %H:%M")),
    ]
    return pd.DataFrame(items, columns=["item", "value"])


def _write_atomically(
    frame: pd.DataFrame, path: Path, fmt: ExportFormat, *, about: pd.DataFrame
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if fmt == "csv":
            frame.to_csv(tmp, index=False, encoding="utf-8-sig")  # BOM: Excel reads UTF-8
        else:
            _write_xlsx(frame, tmp, about)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_xlsx(frame: pd.DataFrame, path: Path, about: pd.DataFrame) -> None:
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        frame.to_excel(writer, sheet_name="cohort", index=False)
        about.to_excel(writer, sheet_name="about", index=False)
        sheet = writer.sheets["cohort"]
        nhs_col = list(frame.columns).index("nhs_number") + 1
        for (cell,) in sheet.iter_rows(min_row=2, min_col=nhs_col, max_col=nhs_col):
            cell.number_format = "@"  # text: never a number in scientific notation
        widths = {"nhs_number": 14, "eligible_because": 60, "reasons": 90}
        for i, name in enumerate(frame.columns, start=1):
            sheet.column_dimensions[sheet.cell(row=1, column=i).column_letter].width = widths.get(
                name, 14
            )
        sheet.freeze_panes = "A2"
