"""The monthly run's speed targets (issue 27), checked by the bench stages, never by a test.

The targets are set for an ICB of 909,091 people (the whole synthetic 999 range) on two
cores; a run of fewer people is held to them too (it must be no slower). Above that size the
monthly run is held to the largest ICBs' target: 4,000,000 people scored and published
within four minutes and 24 GB; the steps that grow with people (validation, staging) are
held to their 909,091-person figure scaled by the number of people, and rates (people or rows
a second) stay as they are.
"""

from __future__ import annotations

from typing import Any

#: The issue's population: the targets below are for this many people.
TARGET_PATIENTS = 909_091
#: The largest ICBs' run, and its targets.
LARGE_PATIENTS = 4_000_000
LARGE_SCORE_SECONDS = 240.0
LARGE_PEAK_GB = 24.0

SCORE_SECONDS = 45.0  # validate -> published, SQLite and PostgreSQL
SCORE_PEAK_GB = 3.0
VALIDATE_SECONDS = 8.0  # a full validation, the first time an extract is seen
STAGE_SECONDS = 8.0  # scores, reasons and cohorts written to the store
#: How much longer than the store's own copy of the same rows into tables shaped as its own
#: (``store.floor.copy_run``) staging them may take: issue 27's honest target for the stage,
#: which the database's own work puts beyond 8 s on two cores (docs/benchmarks.md).
STAGE_OVER_COPY = 1.2
SCORE_AND_EXPLAIN_PEOPLE_PER_SECOND = 100_000.0
TRAIN_SECONDS = 120.0
TRAIN_PEAK_GB = 4.0
TREESHAP_ROWS_PER_SECOND = 250_000.0
TREESHAP_MAX_DIFFERENCE = 1e-12


def target(name: str, value: float | None, op: str, bound: float) -> dict[str, Any]:
    """One target as the bench reports it: name, value, ``"<= 45"``, and whether it is met."""
    met = None if value is None else (value <= bound if op == "<=" else value >= bound)
    return {"name": name, "value": value, "target": f"{op} {bound:g}", "met": met}


def scaled(seconds: float, patients: int) -> float:
    """A per-people time target at ``patients``: as set at 909,091 people, scaled above it."""
    return seconds * max(1.0, patients / TARGET_PATIENTS)


def validate_step(steps: dict[str, float]) -> float | None:
    """The seconds a run spent on its extract's validation: the rules, or recognising the
    extract by its digest and loading the rows validation kept (two steps then)."""
    found = [v for k, v in steps.items() if k.startswith(("validate extract", "extract validated"))]
    return sum(found) if found else None


def score_targets(
    patients: int,
    seconds: float,
    steps: dict[str, float],
    people_per_second: float | None,
    store_copy_seconds: float | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """The monthly run's targets, and its peak-memory target in GB (which only the parent,
    that sees the child's peak, can check). ``store_copy_seconds``: the store's own copy of
    the run's rows (``store.floor.copy_run``), which the stage is held to as well."""
    large = patients > TARGET_PATIENTS
    out = [
        target(
            "monthly run, validate to published (s)",
            seconds,
            "<=",
            LARGE_SCORE_SECONDS if large else SCORE_SECONDS,
        ),
        target(
            "score and explain (people/s)",
            people_per_second,
            ">=",
            SCORE_AND_EXPLAIN_PEOPLE_PER_SECOND,
        ),
        target("stage (s)", steps.get("stage"), "<=", scaled(STAGE_SECONDS, patients)),
        target(
            "validate step of the run (s)",
            validate_step(steps),
            "<=",
            scaled(VALIDATE_SECONDS, patients),
        ),
        target(
            "stage against the store's own copy of the same rows (x)",
            stage / store_copy_seconds
            if (stage := steps.get("stage")) is not None and store_copy_seconds
            else None,
            "<=",
            STAGE_OVER_COPY,
        ),
    ]
    return out, (LARGE_PEAK_GB if large else SCORE_PEAK_GB)
