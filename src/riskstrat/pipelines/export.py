"""Export a month's cohort for a PCN or practice as CSV or Excel. Every export is a
patient-level read, so it is recorded in the access log like an API read.

A pseudonymous run's export lists pseudonyms, under that heading. For direct care, a practice
that holds the linkage (pseudonym -> NHS number) may add NHS numbers back
(``riskstrat.data.linkage``): a re-identification, recorded in the access log as an event of its own
before the file is written. The linkage file is only read: nothing of it reaches the store,
the logs or MLflow."""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

import pandas as pd

from riskstrat.cohorts.listing import (
    IDENTIFIER_COLUMNS,
    about_frame,
    about_rows,
    format_nhs_number,
    listed_for,
    listing_frame,
    ranking_risks,
    write_xlsx,
)
from riskstrat.config import Settings, acting_user, get_settings
from riskstrat.data.contract import IdentifierKind
from riskstrat.data.linkage import DIRECT_CARE, is_direct_care, read_linkage, reidentify
from riskstrat.errors import InvalidValueError, NotFoundError, RefusedError
from riskstrat.pipelines.common import published_run
from riskstrat.store import Store
from riskstrat.store.audit import access_record

ExportFormat = Literal["csv", "xlsx"]


@dataclass(frozen=True)
class ExportResult:
    path: Path
    rows: int
    run_id: int
    #: What the export's identifier column holds (its heading says so too).
    identifier_kind: IdentifierKind = "nhs_number"
    #: People given their NHS numbers from a linkage file (0: no re-identification).
    reidentified: int = 0


def check_reidentification(
    *, month: date, identifier_kind: IdentifierKind, purpose: str | None
) -> None:
    """Refuse a re-identification that may not happen, saying why: only a pseudonymous run
    has pseudonyms to re-identify, and only for direct care."""
    if identifier_kind != "pseudonym":
        raise InvalidValueError(
            f"the run for {month:%Y-%m} identifies people by NHS number already, so there is "
            "nothing to re-identify: export it without --linkage"
        )
    if not is_direct_care(purpose):
        raise RefusedError(
            "re-identifying people from a linkage file is allowed only for direct care: "
            f'give --purpose "{DIRECT_CARE}" if that is what the list is for; otherwise '
            "export it with pseudonyms (without --linkage)"
        )


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
    linkage: Path | None = None,
    purpose: str | None = None,
) -> ExportResult:
    """Write the cohort list; the file appears complete or not at all.

    With ``linkage`` (a pseudonymous run only, and ``purpose`` "direct care" only), the list
    gains an ``nhs_number`` column from the practice's linkage file, and the
    re-identification is recorded in the access log, on its own, before the file is written.
    """
    settings = settings or get_settings()
    store = Store(settings.serving_database_url)
    try:
        run = published_run(store, month)
        kind = run.identifier_kind
        if linkage is not None:
            check_reidentification(month=run.month, identifier_kind=kind, purpose=purpose)
        record = run.interventions
        if cohort not in record:
            known = ", ".join(record) or "none"
            raise NotFoundError(f"unknown cohort {cohort!r}; this run has: {known}")
        limit = capacity if capacity is not None else 10_000_000
        _, rows = store.cohorts.page(
            run.id, cohort, pcn_code=pcn, practice_code=practice, offset=0, limit=limit
        )
        identifiers = [m.nhs_number for m, _ in rows]
        frame = listing_frame(
            rows, record[cohort]["criteria"], identifier_kind=kind, one_practice=bool(practice)
        )
        actor = acting_user()
        key = settings.pseudonym_key.get_secret_value()
        request_id = None
        if linkage is not None:
            nhs_numbers = reidentify(identifiers, read_linkage(linkage), file=linkage)
            frame = with_nhs_numbers(frame, nhs_numbers)
            request_id = uuid.uuid4().hex  # ties the re-identification to the export's read
            # Recorded before the file exists: no re-identified list without its record. The
            # record names the people by their pseudonyms, as every read of this run does:
            # NHS numbers next to them would put the linkage itself in the store.
            store.audit.record(
                access_record(
                    actor=actor,
                    route=f"riskstrat export {cohort} --linkage (re-identification)",
                    nhs_numbers=identifiers,
                    key=key,
                    request_id=request_id,
                    purpose=f"{DIRECT_CARE}: re-identified {len(nhs_numbers):,} people",
                    identifier_kind=kind,
                )
            )
        path = out or default_export_path(month, cohort, pcn, practice, fmt)
        _write_atomically(
            frame,
            path,
            fmt,
            about=about_frame(
                about_rows(
                    run=run,
                    intervention=cohort,
                    listed_for=listed_for(pcn=pcn, practice=practice),
                    risks=[m.risk for m, _ in rows],
                    ranking_risks=ranking_risks(rows),
                    identifier_kind=kind,
                    reidentified=linkage is not None,
                )
            ),
        )
        store.audit.record(
            access_record(
                actor=actor,
                route=f"riskstrat export {cohort}",
                nhs_numbers=identifiers,
                key=key,
                purpose=f"export {fmt}" + (f": {purpose}" if purpose else ""),
                request_id=request_id,
                identifier_kind=kind,
            )
        )
        return ExportResult(
            path=path,
            rows=len(frame),
            run_id=run.id,
            identifier_kind=kind,
            reidentified=len(identifiers) if linkage is not None else 0,
        )
    finally:
        store.dispose()


def with_nhs_numbers(frame: pd.DataFrame, nhs_numbers: list[str]) -> pd.DataFrame:
    """A pseudonymous listing with each person's NHS number (display format) after their
    pseudonym."""
    at = list(frame.columns).index(IDENTIFIER_COLUMNS["pseudonym"]) + 1
    out = frame.copy()
    out.insert(at, "nhs_number", [format_nhs_number(n) for n in nhs_numbers])
    return out


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
            write_xlsx(frame, tmp, about)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
