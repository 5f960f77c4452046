"""Monitoring the champion: for every published month whose outcomes have matured in the
latest extract, discrimination and calibration on what happened (overall, per PCN, per
fairness group, actioned and not); input drift (PSI of every feature and of the score, the
latest month against the training window); data-quality drift (missingness, reject rates,
and for an extract imported from OMOP the share of source rows mapped to the contract);
a green / amber / red status per check against the model spec's ``monitoring`` thresholds.

Results are stored with each run (``store.monitoring``, aggregates only) and logged to MLflow
as time series on the version that scored the month (step = months since January 2000).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from riskstrat.config import Settings, get_settings
from riskstrat.data.errors import ExtractError
from riskstrat.data.omop.report import is_omop_import, read_mapping_coverage
from riskstrat.errors import NotFoundError
from riskstrat.features.build import GROUP_COLUMNS, build_features
from riskstrat.features.labels import build_labels
from riskstrat.modelling.model import predict_risk
from riskstrat.modelling.registry import CHAMPION, LoadedModel, ModelRegistry, registry_for
from riskstrat.modelling.spec import ModelSpec, MonitoringConfig, default_spec_dir, load_spec
from riskstrat.monitoring.checks import (
    drift_checks,
    performance_checks,
    reject_checks,
    summarise,
)
from riskstrat.monitoring.coverage import coverage_checks
from riskstrat.monitoring.psi import reference_distributions
from riskstrat.pipelines.common import Progress, open_extract, report
from riskstrat.store import Store
from riskstrat.store.records import RunInfo

_log = logging.getLogger(__name__)

#: Marks that mean the service acted on a listed person (reviews may change the outcome).
ACTIONED_STATUSES = frozenset({"reviewed", "contacted"})
REFERENCE_ARTIFACT = "monitoring/reference.json"
#: Rows of the extract's training months used when a version has no stored reference.
FALLBACK_REFERENCE_ROWS = 200_000


@dataclass
class MonitoringReport:
    model_name: str
    model_version: str
    check_date: date
    latest_month: date
    #: Per matured published month: ``run_id, month, model_version, performance, status``.
    months: list[dict[str, Any]]
    drift: list[dict[str, Any]]
    rejects: list[dict[str, Any]]
    status: dict[str, str]
    reference_source: str
    notes: list[str] = field(default_factory=list)
    #: OMOP mapping coverage against the reference (``monitoring.coverage.coverage_checks``).
    mapping_coverage: dict[str, Any] = field(default_factory=dict)
    #: The thresholds the statuses were judged against (the spec's ``monitoring`` section).
    thresholds: dict[str, Any] = field(default_factory=dict)

    @property
    def overall(self) -> str:
        return self.status.get("overall", "unknown")

    def payload(self) -> dict[str, Any]:
        """The JSON stored with each run (aggregates only)."""
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "check_date": self.check_date.isoformat(),
            "latest_month": self.latest_month.isoformat(),
            "months": self.months,
            "drift": self.drift,
            "rejects": self.rejects,
            "status": self.status,
            "reference_source": self.reference_source,
            "notes": self.notes,
            "mapping_coverage": self.mapping_coverage,
            "thresholds": self.thresholds,
        }


def month_step(month: date) -> int:
    """The MLflow step of a month: months since January 2000."""
    return (month.year - 2000) * 12 + month.month - 1


def matured(run: RunInfo, check_date: date, horizon_days: int) -> bool:
    """True when the run's whole outcome window lies before the extract date."""
    return run.month + timedelta(days=horizon_days) <= check_date


def _actioned(store: Store, run: RunInfo, people: pd.Series, until: date) -> pd.Series:
    """Whether each person's latest mark before ``until`` (any intervention) was an action."""
    listed = store.cohorts.frame(run.id)
    if listed.empty:
        return pd.Series(False, index=people.index)
    latest = store.marks.latest(
        sorted(set(listed["nhs_number"].astype(str))),
        identifier_kind=run.identifier_kind,
        as_of=datetime.combine(until, time.min, tzinfo=UTC),
    )
    acted = {m.person for m in latest.values() if m.status in ACTIONED_STATUSES}
    return people.astype(str).isin(acted)


def _reference(
    registry: ModelRegistry, model: LoadedModel, extract: Any, notes: list[str]
) -> tuple[dict[str, Any], str]:
    stored = registry.read_json_artifact_or_none(model.info.run_id, REFERENCE_ARTIFACT)
    if stored is not None:
        return stored, "stored with the version at training"
    plan = registry.read_json_artifact_or_none(model.info.run_id, "index_plan.json") or {}
    months = [date.fromisoformat(m) for m in plan.get("train_months", [])][-3:]
    if not months:
        raise NotFoundError(
            f"version {model.info.version} has no training reference and no index plan",
            hint="retrain the model (`riskstrat train`) so it stores its reference",
        )
    frame = build_features(extract.con, index_dates=months)
    if len(frame) > FALLBACK_REFERENCE_ROWS:
        frame = frame.sample(n=FALLBACK_REFERENCE_ROWS, random_state=0)
    names = model.feature_names
    score = predict_risk(model.booster, frame[names], model.calibrator)
    source = (
        "computed from this extract's last training months "
        f"({', '.join(m.isoformat()[:7] for m in months)}): the version was trained before "
        "references were stored"
    )
    notes.append(f"The drift reference was {source}.")
    return reference_distributions(frame, names, score=score), source


def run_monitoring(
    data_dir: Path,
    *,
    settings: Settings | None = None,
    spec_dir: Path | None = None,
    store_results: bool = True,
    log_to_mlflow: bool = True,
    progress: Progress = None,
) -> MonitoringReport:
    """Monitor the champion on the latest extract (``data_dir``); store and log the results."""
    settings = settings or get_settings()
    spec: ModelSpec = load_spec(spec_dir or default_spec_dir())
    config = spec.monitoring
    registry = registry_for(settings)
    store = Store(settings.serving_database_url)
    try:
        store.create_schema()
        report(progress, "load the champion", 0.0)
        model = registry.load(settings.model_name, CHAMPION)
        info = model.info
        runs = [r for r in store.runs.all() if r.status == "published"]
        if not runs:
            raise NotFoundError(
                "no published run to monitor",
                hint="score a month first (`riskstrat score --month YYYY-MM`)",
            )
        notes: list[str] = []
        report(progress, "validate extract", 0.05)
        with open_extract(settings, data_dir, progress=progress, at=0.05) as extract:
            check_date = extract.extract_date
            latest_month = check_date.replace(day=1)
            due = sorted(
                (r for r in runs if r.model_name == info.name
                 and matured(r, check_date, spec.horizon_days)),
                key=lambda r: r.month,
            )  # fmt: skip
            if not due:
                notes.append(
                    f"No published month's {spec.horizon_days}-day outcomes have matured by "
                    f"{check_date.isoformat()}: drift and data quality only."
                )
            months: list[dict[str, Any]] = []
            reference_auroc = info.metrics.get("validation_auroc")
            for i, run in enumerate(due):
                report(progress, f"outcomes of {run.month:%Y-%m}", 0.1 + 0.6 * i / len(due))
                months.append(_month(store, extract, run, spec, reference_auroc, registry))
            report(progress, "drift", 0.75)
            reference, source = _reference(registry, model, extract, notes)
            latest = build_features(extract.con, index_dates=[latest_month])
            score = pd.Series(predict_risk(model.booster, latest[model.feature_names],
                                           model.calibrator))  # fmt: skip
            drift = drift_checks(reference, latest, model.feature_names, config, score=score)
            trained_on = registry.read_json_artifact_or_none(info.run_id, "extract_validation.json")
            if trained_on is None:
                notes.append("The training extract's reject rates are not recorded.")
            rejects = reject_checks(trained_on, extract.summary.as_dict(), config)
            omop = is_omop_import(extract.summary.manifest.provenance)
        coverage = coverage_against_reference(
            data_dir, omop, reference, store, info.name, info.version, config, notes
        )
        status = summarise(months, drift, rejects, coverage)
        result = MonitoringReport(
            model_name=info.name,
            model_version=info.version,
            check_date=check_date,
            latest_month=latest_month,
            months=months,
            drift=drift,
            rejects=rejects,
            status=dict(status),
            reference_source=source,
            notes=notes,
            mapping_coverage=coverage,
            thresholds=config.model_dump(mode="json"),
        )
        if store_results:
            report(progress, "store", 0.9)
            targets = due or [max(runs, key=lambda r: r.month)]
            for run in targets:
                store.monitoring.replace(
                    run_id=run.id,
                    month=run.month,
                    check_date=check_date,
                    model_name=info.name,
                    model_version=info.version,
                    status=result.overall,
                    payload=result.payload(),
                )
        if log_to_mlflow:
            _log_metrics(registry, result)
        report(progress, "done", 1.0)
        return result
    finally:
        store.dispose()


def coverage_against_reference(
    data_dir: Path,
    omop: bool,
    reference: dict[str, Any],
    store: Store,
    model_name: str,
    model_version: str,
    config: MonitoringConfig,
    notes: list[str],
) -> dict[str, Any]:
    """Mapping coverage of the latest extract against the training extract's (stored in the
    version's reference as ``mapping_coverage``) or, for a version trained before that was
    stored, against the first stored check of the same version that recorded coverage."""
    if not omop:
        return coverage_checks(None, None, config, omop=False)
    try:
        latest = read_mapping_coverage(data_dir)
    except ExtractError as exc:
        notes.append(f"The OMOP mapping report could not be read: {exc}")
        latest = None
    trained = reference.get("mapping_coverage")
    if trained is not None:
        source = "the training extract's mapping report"
        return coverage_checks(trained, latest, config, omop=True, reference_source=source)
    earlier = [
        r for r in store.monitoring.all()
        if r.model_name == model_name and r.model_version == model_version
        and (r.payload.get("mapping_coverage") or {}).get("latest")
    ]  # fmt: skip
    if not earlier:
        return coverage_checks(None, latest, config, omop=True)
    first = min(earlier, key=lambda r: (r.check_date, r.computed_at))
    return coverage_checks(
        first.payload["mapping_coverage"]["latest"], latest, config, omop=True,
        reference_source=f"the extract of {first.check_date.isoformat()}, the first checked "
        f"for version {model_version} (the training extract's coverage was not stored)",
    )  # fmt: skip


def _month(
    store: Store,
    extract: Any,
    run: RunInfo,
    spec: ModelSpec,
    reference_auroc: float | None,
    registry: ModelRegistry,
) -> dict[str, Any]:
    """Performance of one matured run: its published risks against what happened."""
    del registry
    risks = store.monitoring.published_risks(run.id)
    labels = build_labels(
        extract.con, index_dates=[run.month], horizon_days=spec.horizon_days, outcome=spec.outcome
    )
    groups = build_features(extract.con, index_dates=[run.month])[
        ["nhs_number", *[c for c in GROUP_COLUMNS if c in spec.fairness.attributes]]
    ]
    frame = risks.merge(labels[["nhs_number", "label"]], on="nhs_number", how="inner").merge(
        groups, on="nhs_number", how="left"
    )
    window_end = run.month + timedelta(days=spec.horizon_days)
    frame["actioned"] = _actioned(store, run, frame["nhs_number"], window_end).to_numpy()
    perf = performance_checks(
        frame.drop(columns=["nhs_number"]),
        spec.monitoring,
        reference_auroc=reference_auroc,
        fairness_attributes=spec.fairness.attributes,
        seed=spec.evaluation.seed,
    )
    return {
        "run_id": run.id,
        "month": run.month.isoformat(),
        "model_version": run.model_version,
        "published_people": len(risks),
        "followed_people": len(frame),
        "performance": perf,
    }


def _log_metrics(registry: ModelRegistry, result: MonitoringReport) -> None:
    """Each month's headline numbers on the version that scored it; drift on the champion."""
    for month in result.months:
        overall = month["performance"]["overall"]
        if not overall.get("estimable"):
            continue
        metrics = {
            "monitoring_auroc": overall["auroc"]["value"],
            "monitoring_oe": overall["oe"]["value"],
            "monitoring_calibration_slope": overall["slope"]["value"],
            "monitoring_ppv_top": overall["ppv_top"]["value"],
        }
        step = month_step(date.fromisoformat(month["month"]))
        kept = {k: v for k, v in metrics.items() if v is not None}
        registry.log_monitoring(result.model_name, month["model_version"], kept, step=step)
    drift = {f"monitoring_psi_{d['name'].strip('()')}": d["psi"] for d in result.drift}
    drift |= {
        f"monitoring_mapping_coverage_{t['table']}": t["coverage"]
        for t in result.mapping_coverage.get("tables", [])
        if t["coverage"] is not None
    }
    registry.log_monitoring(
        result.model_name, result.model_version, drift, step=month_step(result.latest_month)
    )


def monitor_after_score(
    data_dir: Path, *, settings: Settings | None = None
) -> tuple[MonitoringReport | None, str | None]:
    """Run monitoring after a monthly score when the same extract lets an earlier published
    month's outcomes mature. Never raises: a failure is logged by its type and returned as
    ``(None, error type)``, so monitoring can never fail a publish. ``(None, None)`` when no
    month has matured."""
    from riskstrat.data.extract import read_manifest

    settings = settings or get_settings()
    try:
        extract_date = read_manifest(data_dir).extract_date
        spec = load_spec(default_spec_dir())
        store = Store(settings.serving_database_url)
        try:
            runs = [r for r in store.runs.all() if r.status == "published"]
        finally:
            store.dispose()
        if not any(matured(r, extract_date, spec.horizon_days) for r in runs):
            return None, None
        return run_monitoring(data_dir, settings=settings), None
    except Exception as exc:  # monitoring must never fail a publish
        name = type(exc).__name__
        _log.warning("monitoring after the score failed (%s); the month is published", name)
        return None, type(exc).__name__
