"""Outcomes of a past month's cohorts, from a later extract: expected against observed
admissions, split by whether the intervention was delivered, and by the marks teams made on
the lists (reviewed against the rest). Aggregates only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pandas as pd

from riskstrat.cohorts.outcomes import (
    mark_table,
    outcome_table,
    summarise_marks,
    summarise_outcomes,
)
from riskstrat.cohorts.select import CohortConfig, Criterion, Intervention, Requirement
from riskstrat.config import Settings, get_settings
from riskstrat.errors import ConflictError, DataError, NotFoundError
from riskstrat.features.labels import DEFAULT_HORIZON_DAYS, outcomes_after
from riskstrat.pipelines.common import Progress, open_extract, published_run, report
from riskstrat.store import Store
from riskstrat.store.records import RunInfo


@dataclass(frozen=True)
class OutcomeResult:
    run_id: int
    month: date
    outcome_extract_date: date
    by_intervention: pd.DataFrame
    by_practice: pd.DataFrame
    #: Per intervention: listed people by their latest mark (``<mark>_people``), and O/E for
    #: the people marked reviewed and for the rest (``cohorts.outcomes.summarise_marks``).
    by_mark: pd.DataFrame


def config_from_run(run: RunInfo) -> CohortConfig:
    """The cohort configuration a run recorded (titles, effects, codes), as typed config."""
    record = run.cohort_config
    if "interventions" not in record:
        raise ConflictError(
            "the run does not record its cohort configuration",
            hint="score the month again with this version of riskstrat (`riskstrat score`)",
        )
    interventions = {}
    for key, i in run.interventions.items():
        # The run's list already applied the criteria; only their keys and words are needed.
        criteria = [Criterion(key=k, text=t, when="risk >= 0") for k, t in i["criteria"].items()]
        interventions[key] = Intervention(
            title=i["title"],
            source=i["source"],
            effect=i["effect"],
            served_by=i["served_by"],
            lookback_days=i["lookback_days"],
            note=i.get("note"),
            require=[Requirement(name="recorded", any=criteria)],
        )
    return CohortConfig(version=str(record["version"]), interventions=interventions)


def latest_marks(store: Store, run: RunInfo, members: pd.DataFrame, *, until: date) -> pd.DataFrame:
    """Each cohort member's latest mark for that intervention made before the follow-up
    window closed (``until``): ``intervention, nhs_number, status``. Marks hold across months,
    so one made before the run (reviewed in an earlier month) counts too."""
    people = sorted(set(members["nhs_number"].astype(str)))
    latest = store.marks.latest(
        people,
        identifier_kind=run.identifier_kind,
        as_of=datetime.combine(until, time.min, tzinfo=UTC),
    )
    return pd.DataFrame(
        [(m.intervention, m.person, m.status) for m in latest.values()],
        columns=["intervention", "nhs_number", "status"],
    )


def run_outcomes(
    data_dir: Path,
    *,
    month: date,
    settings: Settings | None = None,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    progress: Progress = None,
) -> OutcomeResult:
    """Follow up the published run of ``month`` in a later extract and store the summary."""
    settings = settings or get_settings()
    store = Store(settings.serving_database_url)
    try:
        run = published_run(store, month)
        config = config_from_run(run)
        window_end = month + timedelta(days=horizon_days)
        report(progress, "read cohorts", 0.05)
        members = store.cohorts.frame(run.id)
        if members.empty:
            raise NotFoundError(f"run {run.id} has no cohort members")
        report(progress, "validate extract", 0.1)
        with open_extract(settings, data_dir, progress=progress, at=0.1) as extract:
            if extract.extract_date < window_end:
                raise DataError(
                    f"the extract ends {extract.extract_date.isoformat()}, before the "
                    f"{horizon_days}-day window after {month.isoformat()} closes on "
                    f"{window_end.isoformat()}: use a later extract",
                    hint=f"give --data an extract dated {window_end.isoformat()} or later",
                )
            report(progress, "follow up", 0.6)
            followed = outcomes_after(
                extract.con,
                index_date=month,
                nhs_numbers=sorted(set(members["nhs_number"])),
                delivered_codes=[i.served_by for i in config.interventions.values()],
                horizon_days=horizon_days,
            )
            outcome_extract_date = extract.extract_date
        table = outcome_table(members, followed, config)
        store.outcomes.replace(run.id, table, outcome_extract_date=outcome_extract_date)
        marks = latest_marks(store, run, members, until=window_end)
        report(progress, "done", 1.0)
        return OutcomeResult(
            run_id=run.id,
            month=month,
            outcome_extract_date=outcome_extract_date,
            by_intervention=summarise_outcomes(table, config),
            by_practice=summarise_outcomes(table, config, by=("intervention", "practice_code")),
            by_mark=summarise_marks(mark_table(members, followed, marks)),
        )
    finally:
        store.dispose()
