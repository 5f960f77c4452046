"""What the store hands out and takes in: runs, scores, cohort members and access records as
plain values, the converters from database rows, and the encoding of frames for writing.

A run's ``details`` is JSON written at publication (counts only: rejects, cohort sizes, the
cohort configuration, model metrics). :class:`RunInfo` reads it once, here, through typed
accessors (``interventions``, ``cohort_counts``, ``pcns``, ``replaced_runs``, ``error``,
``identifier_kind``); callers never parse the dict by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from riskstrat.data.contract import IDENTIFIER_KINDS, IdentifierKind
from riskstrat.errors import UsageError

SCORE_COLUMNS = (
    "nhs_number", "practice_code", "pcn_code", "risk", "percentile", "rank", "reasons",
    "contributions",
)  # fmt: skip
COHORT_COLUMNS = (
    "intervention", "nhs_number", "practice_code", "pcn_code", "risk", "expected_benefit",
    "rank", "criteria",
)  # fmt: skip
OUTCOME_COLUMNS = (
    "intervention", "practice_code", "pcn_code", "delivered", "people", "expected", "observed",
)  # fmt: skip


@dataclass(frozen=True)
class RunInfo:
    id: int
    month: date
    extract_date: date | None
    model_name: str
    model_version: str
    status: str
    n_scored: int
    n_type1_opt_outs_excluded: int
    created_at: datetime
    published_at: datetime | None
    duration_seconds: float | None
    details: dict[str, Any]

    @property
    def identifier_kind(self) -> IdentifierKind:
        """What the run's ``nhs_number`` columns hold: NHS numbers or pseudonyms.

        Kept in ``details``, written with the run in the publishing transaction, rather than
        in a column of its own: like the rest of a run's metadata it is read with the run's
        row (parsed once per process, see ``RunRepository.latest_two``) and never filtered on
        in SQL, so a column would add a migration of ``score_runs`` and nothing else. Runs
        published before it was recorded hold NHS numbers."""
        return "pseudonym" if self.details.get("identifier_kind") == "pseudonym" else "nhs_number"

    @property
    def cohort_config(self) -> dict[str, Any]:
        """The cohort configuration the run recorded (version, interventions); empty if none."""
        record = self.details.get("cohort_config")
        return record if isinstance(record, dict) else {}

    @property
    def cohort_config_version(self) -> str:
        """The recorded cohort configuration's version; empty if none."""
        return str(self.cohort_config.get("version", ""))

    @property
    def interventions(self) -> dict[str, dict[str, Any]]:
        """The run's interventions by key, as recorded (title, source, effect, criteria, ...)."""
        record = self.cohort_config.get("interventions")
        return record if isinstance(record, dict) else {}

    @property
    def cohort_counts(self) -> dict[str, dict[str, Any]]:
        """Each intervention's counts (``eligible``, ``served_within_lookback``, ...) by key."""
        counts = self.details.get("cohorts")
        return counts if isinstance(counts, dict) else {}

    def cohort_count(self, key: str) -> dict[str, Any]:
        """One intervention's counts; empty if the run has none for it."""
        counts = self.cohort_counts.get(key)
        return counts if isinstance(counts, dict) else {}

    @property
    def pcns(self) -> list[str] | None:
        """The PCN codes in the run, recorded at publication; None for runs that predate it
        (ask the store: ``ScoreRepository.pcn_in_run``)."""
        known = self.details.get("pcns")
        return known if isinstance(known, list) else None

    @property
    def replaced_runs(self) -> list[int]:
        """The ids of the runs of the same month this run retired when it was published."""
        return [int(r) for r in self.details.get("replaced_runs", [])]

    @property
    def error(self) -> str | None:
        """Why a failed run failed; None for any other run."""
        error = self.details.get("error")
        return None if error is None else str(error)


@dataclass(frozen=True)
class PatientScore:
    nhs_number: str
    practice_code: str
    pcn_code: str
    risk: float
    percentile: float
    rank: int
    reasons: list[dict[str, Any]]
    contributions: dict[str, float]


class CohortRowRaw(NamedTuple):
    """A cohort row with its criteria and reasons as stored JSON text (see
    ``CohortRepository.page_raw``)."""

    rank: int
    nhs_number: str
    practice_code: str
    pcn_code: str
    risk: float
    expected_benefit: float | None
    criteria_json: str
    percentile: float
    reasons_json: str


@dataclass(frozen=True)
class CohortMember:
    intervention: str
    nhs_number: str
    practice_code: str
    pcn_code: str
    risk: float
    expected_benefit: float | None
    rank: int
    criteria: list[str]
    #: A list ranked by another model: its name, version, label, risk, reasons and expected
    #: bed days (``pipelines.score.ranking_records``); None for lists ranked by admission risk.
    ranking: dict[str, Any] | None = None


@dataclass(frozen=True)
class AccessRecord:
    """One patient-level read, ready to write: patients already pseudonymised."""

    at: datetime
    actor: str
    role: str | None
    organisations: list[str] | None
    route: str
    request_id: str | None
    purpose: str | None
    patients: list[str]
    #: What ``patients`` were read by: NHS numbers or pseudonyms.
    identifier_kind: IdentifierKind = "nhs_number"


def check_kind(identifier_kind: str) -> None:
    """Refuse anything but a known identifier kind."""
    if identifier_kind not in IDENTIFIER_KINDS:
        raise UsageError(
            "identifier_kind must be " + " or ".join(IDENTIFIER_KINDS),
            hint="say whether the people are identified by NHS numbers or by pseudonyms",
        )


# ---- rows to values ---------------------------------------------------------------------


def utc(value: datetime | None) -> datetime | None:
    """A stored time as an aware UTC time (SQLite keeps no time zone; all is written in UTC)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def from_json(value: Any) -> Any:
    """A JSON column's value: decoded where the driver hands back text (SQLite)."""
    return json.loads(value) if isinstance(value, str) else value


def run_from_row(row: Any) -> RunInfo:
    return RunInfo(
        id=int(row["id"]),
        month=row["month"],
        extract_date=row["extract_date"],
        model_name=row["model_name"],
        model_version=row["model_version"],
        status=row["status"],
        n_scored=int(row["n_scored"]),
        n_type1_opt_outs_excluded=int(row["n_type1_opt_outs_excluded"]),
        created_at=utc(row["created_at"]) or datetime.now(UTC),
        published_at=utc(row["published_at"]),
        duration_seconds=row["duration_seconds"],
        details=from_json(row["details"]) or {},
    )


def score_from_row(row: Any) -> PatientScore:
    return PatientScore(
        nhs_number=row["nhs_number"],
        practice_code=row["practice_code"],
        pcn_code=row["pcn_code"],
        risk=float(row["risk"]),
        percentile=float(row["percentile"]),
        rank=int(row["rank"]),
        reasons=list(from_json(row["reasons"])),
        contributions=dict(from_json(row["contributions"]) or {}),
    )


def member_from_row(row: Any) -> CohortMember:
    benefit = row["expected_benefit"]
    return CohortMember(
        intervention=row["intervention"],
        nhs_number=row["nhs_number"],
        practice_code=row["practice_code"],
        pcn_code=row["pcn_code"],
        risk=float(row["risk"]),
        expected_benefit=None if benefit is None else float(benefit),
        rank=int(row["rank"]),
        criteria=list(from_json(row["criteria"]) or []),
        ranking=from_json(row["ranking"]) if row.get("ranking") else None,
    )


def user_from_row(row: Any) -> dict[str, Any]:
    user = dict(row)
    user["pcns"] = list(from_json(user["pcns"]) or [])
    for k in ("created_at", "expires_at", "revoked_at"):
        user[k] = utc(user[k])
    return user


# ---- values to rows ---------------------------------------------------------------------


def json_text(value: Any) -> str:
    """JSON text for a stored column: compact, UTF-8, any NaN inside written as null (valid
    JSON, which PostgreSQL's JSON type requires); read back by any JSON parser."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()


def frame_tuples(
    frame: pd.DataFrame, columns: Sequence[str], size: int, encode: Sequence[bool]
) -> Iterable[list[tuple[Any, ...]]]:
    """Plain-Python row tuples, in chunks (NaN becomes None; ``encode`` columns as JSON,
    where a value that is already text is taken as JSON text and kept as it is: a month's
    reasons come from ``explain_as_json`` written already)."""
    part_cols = list(columns)
    for start in range(0, len(frame), size):
        part = frame.iloc[start : start + size][part_cols]
        lists = []
        for c, as_json in zip(part_cols, encode, strict=True):
            if as_json and is_arrow_text(part[c]):
                # JSON text already (score_frame's), taken from Arrow in one call.
                lists.append(part[c].array.__arrow_array__().to_pylist())
            elif as_json:
                # orjson writes numpy numbers and NaN (as null) itself, however deep.
                values = part[c].tolist()
                lists.append(
                    [v if v is None or isinstance(v, str) else json_text(v) for v in values]
                )
            else:
                lists.append(_column_values(part[c]))
        yield list(zip(*lists, strict=True))


def arrow_rows(
    frame: pd.DataFrame, columns: Sequence[str], encode: Sequence[bool], first: dict[str, Any]
) -> pa.Table:
    """``frame``'s ``columns`` as an Arrow table for a bulk load, after the constant columns
    ``first`` (the run's id): NaN as null, ``encode`` columns as JSON text (text kept as it
    is, as in ``frame_tuples``), numbers as they are."""
    arrays: dict[str, pa.Array] = {
        name: pa.array(np.full(len(frame), value)) for name, value in first.items()
    }
    for c, as_json in zip(columns, encode, strict=True):
        column = frame[c]
        if as_json and column.dtype == object:
            values = [v if v is None or isinstance(v, str) else json_text(v) for v in column]
            arrays[c] = pa.array(values, pa.large_string())
        elif isinstance(column.dtype, np.dtype) and column.dtype.kind in "fiub":
            arrays[c] = pa.array(column.to_numpy(), from_pandas=True)
        else:
            arrays[c] = pa.array(column, from_pandas=True)
    return pa.table(arrays)


def is_arrow_text(column: pd.Series) -> bool:
    """Whether ``column`` is Arrow-backed text (every value a string or missing)."""
    dtype = column.dtype
    return isinstance(dtype, pd.ArrowDtype) and (
        pa.types.is_string(dtype.pyarrow_dtype) or pa.types.is_large_string(dtype.pyarrow_dtype)
    )


def _column_values(column: pd.Series) -> list[Any]:
    """A column as plain Python values: numbers by array operations (NaN as None), anything
    else value by value (``_plain``)."""
    if is_arrow_text(column):
        # Text written in Arrow (the cohort items): taken out in one call.
        return list(column.array.__arrow_array__().to_pylist())
    kind = column.dtype.kind if isinstance(column.dtype, np.dtype) else "O"
    if kind == "f":
        array = column.to_numpy()
        values = array.astype(object)
        values[np.isnan(array)] = None
        return list(values.tolist())
    if kind in "iub":
        return list(column.tolist())
    if isinstance(column.dtype, pd.StringDtype):
        # Strings or missing, nothing else: no value needs looking at.
        return list(column.array.to_numpy(dtype=object, na_value=None).tolist())
    return _plain(column.tolist())


def _plain(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if isinstance(v, float) and v != v:  # NaN
            out.append(None)
        elif isinstance(v, np.generic):
            out.append(v.item())
        else:
            out.append(v)
    return out
