"""External validation: a registered version evaluated on another population.

``riskstrat evaluate VERSION --data EXTRACT`` loads a version from the registry, builds
features and labels on the other extract's latest complete index months (the spec's number
of evaluation months, the last one primary), and runs the training pipeline's own evaluation,
fairness audit and gates on them (``pipelines.evaluate.evaluate_version``). The result is
logged as an MLflow run linked to the version (``ModelRegistry.log_external_validation``),
its summary is recorded on the version, and the version's card gains an "External
validation" section. Failed gates are reported, not raised: this is an evaluation, and
nothing about the version changes but its record.

The population helpers here (``local_plan``, ``load_population``, ``data_digest``) are also
what local recalibration (``pipelines.recalibrate``) builds on.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from riskstrat.calendar import add_months, first_of_month, latest_complete_month, month_starts
from riskstrat.config import Settings, get_settings
from riskstrat.data.extract import read_oracle
from riskstrat.errors import DataError
from riskstrat.features.build import history_start
from riskstrat.modelling.model import IndexPlan, RiskModel
from riskstrat.modelling.registry import (
    DATA_DIGEST_TAG,
    LoadedModel,
    ModelNotFoundError,
    ModelRegistry,
    registry_for,
)
from riskstrat.modelling.spec import ModelSpec, default_spec_dir, load_spec
from riskstrat.pipelines.common import Progress, open_extract, report
from riskstrat.pipelines.evaluate import EvaluationReport, evaluate_version, log_card
from riskstrat.pipelines.train import training_parts
from riskstrat.synth import default_oracle_path

__all__ = [
    "ExternalResult",
    "Population",
    "data_digest",
    "load_population",
    "load_version",
    "local_plan",
    "run_external_validation",
]


@dataclass(frozen=True)
class Population:
    """Features and labels of another extract's complete index months, and where they came
    from. ``rows`` holds the plan's calibration months (if any) and its evaluation months."""

    rows: pd.DataFrame
    plan: IndexPlan
    extract_date: date
    source: str
    digest: str
    identifier_kind: str
    provenance: dict[str, Any]

    def describe(self) -> str:
        """The data in a few words: source, extract date and digest."""
        return f"{self.source}, extract of {self.extract_date.isoformat()} ({self.digest[:12]})"


@dataclass(frozen=True)
class ExternalResult:
    version: str
    run_id: str
    report: EvaluationReport
    population: Population
    summary: dict[str, Any]

    @property
    def failed_gates(self) -> list[str]:
        return [f"{g.name} ({g.subject}): {g.detail}" for g in self.report.gates if not g.passed]


def data_digest(data_dir: Path) -> str:
    """SHA-256 of the extract's manifest (its files, row counts, dates and source): what
    names the data an evaluation or a recalibration was made on."""
    manifest = Path(data_dir) / "manifest.json"
    if not manifest.is_file():
        return hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()
    return hashlib.sha256(manifest.read_bytes()).hexdigest()


def local_plan(
    con: Any, spec: ModelSpec, extract_date: date, *, calibration_months: int = 0
) -> IndexPlan:
    """Index months of another population: the spec's number of evaluation months (the
    latest whose outcome window is complete) and, before them, ``calibration_months`` whose
    outcome windows end before the first evaluation month, each with the spec's lookback of
    history behind it. No months are for training: the trees are the registered version's.

    Raises:
        DataError: the extract is too short for these months.
    """
    start = history_start(con)
    if start is None:
        raise DataError(
            "the extract has no activity rows, so no history to build features from",
            hint="check that the extract's activity files hold rows (`riskstrat profile`)",
        )
    t = spec.training
    validation = latest_complete_month(extract_date, spec.horizon_days)
    evaluation = [add_months(validation, -k) for k in range(t.evaluation_months - 1, -1, -1)]
    lookback_end = start + timedelta(days=t.min_lookback_days)
    earliest = first_of_month(lookback_end)
    if earliest < lookback_end:
        earliest = add_months(earliest, 1)
    calibration: list[date] = []
    if calibration_months:
        last = latest_complete_month(evaluation[0], spec.horizon_days)
        months = month_starts(earliest, last) if earliest <= last else []
        calibration = months[-calibration_months:]
    if evaluation[0] < earliest or len(calibration) < calibration_months:
        raise DataError(
            f"the extract covers {start.isoformat()} to {extract_date.isoformat()}: too short "
            f"for {t.min_lookback_days} days of lookback, {calibration_months} calibration "
            f"month(s) and {t.evaluation_months} evaluation month(s) with complete "
            f"{spec.horizon_days}-day outcomes",
            hint="use an extract with more months of history",
        )
    return IndexPlan(
        train_months=(),
        early_stopping_months=(),
        calibration_months=tuple(calibration),
        evaluation_months=tuple(evaluation),
    )


def load_population(
    settings: Settings, spec: ModelSpec, data_dir: Path, *, calibration_months: int = 0
) -> Population:
    """Validate another extract and build features and labels on its ``local_plan`` months
    (type 1 opt-outs removed, as in training)."""
    with open_extract(settings, data_dir) as extract:
        plan = local_plan(
            extract.con, spec, extract.extract_date, calibration_months=calibration_months
        )
        pieces = training_parts(extract.con, spec, plan)
        manifest = extract.summary.manifest
        extract_date, source = extract.extract_date, manifest.source
    rows = pd.concat(pieces, ignore_index=True)
    for months, what in ((plan.evaluation_months, "evaluation"),
                         (plan.calibration_months, "calibration")):  # fmt: skip
        part = rows.loc[rows["index_date"].isin(months), "label"]
        if months and part.nunique() < 2:
            raise DataError(
                f"the {what} months of {data_dir} need people with and without the outcome",
                hint="use an extract with more people or more months of history",
            )
    return Population(
        rows=rows,
        plan=plan,
        extract_date=extract_date,
        source=source or "not stated",
        digest=data_digest(data_dir),
        identifier_kind=manifest.identifier_kind,
        provenance=dict(manifest.provenance or {}),
    )


def load_version(registry: ModelRegistry, spec: ModelSpec, version: str) -> LoadedModel:
    """A registered version, or a ``ModelNotFoundError`` that says how to find one."""
    try:
        return registry.load(spec.name, version)
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(
            str(exc), hint="`riskstrat models` lists the registered versions and their aliases"
        ) from exc


def oracle_for(data_dir: Path, oracle_path: Path | None) -> pd.DataFrame | None:
    """The true risks of a synthetic extract, if given or found beside it."""
    oracle_file = oracle_path or default_oracle_path(Path(data_dir))
    return read_oracle(oracle_file) if oracle_path is not None or oracle_file.is_file() else None


def summary_of(report: EvaluationReport, population: Population) -> dict[str, Any]:
    """The few figures recorded on the version and shown on its card."""
    p = report.primary
    cal = p["calibration"]
    return {
        "source": population.source,
        "data_digest": population.digest,
        "extract_date": population.extract_date.isoformat(),
        "month": population.plan.validation_month.isoformat(),
        "rows": int(p["rows"]),
        "events": int(p["events"]),
        "auroc": p["auroc"],
        "oe": cal["oe"],
        "slope": cal["slope"],
        "gates_passed": report.gates_passed,
        "gate_failures": [f"{g.name} ({g.subject})" for g in report.gates if not g.passed][:20],
        "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def run_external_validation(
    version: str,
    data_dir: Path,
    *,
    spec_dir: Path | None = None,
    settings: Settings | None = None,
    oracle_path: Path | None = None,
    progress: Progress = None,
) -> ExternalResult:
    """Evaluate a registered version on another extract; log and record it (see module)."""
    settings = settings or get_settings()
    spec = load_spec(spec_dir or default_spec_dir())
    registry = registry_for(settings)
    report(progress, "load the version", 0.0)
    loaded = load_version(registry, spec, version)
    report(progress, "validate the extract and build features and labels", 0.1)
    population = load_population(settings, spec, data_dir)
    model = RiskModel.from_fitted(loaded.booster, loaded.calibrator)
    missing = [f for f in model.feature_names_ if f not in population.rows.columns]
    if missing:
        raise DataError(
            f"version {loaded.info.version} uses features this extract lacks: "
            f"{', '.join(missing[:5])}",
            hint="evaluate a version trained on the same feature set",
        )
    report(progress, "evaluate on the held-out months (with bootstrap CIs)", 0.5)
    result = evaluate_version(
        spec=spec,
        plan=population.plan,
        model=model,
        baselines={},
        evaluation_rows=population.rows,
        oracle=oracle_for(data_dir, oracle_path),
        champion=None,
    )
    summary = summary_of(result, population)
    report(progress, "log the evaluation in MLflow", 0.8)
    run_id = registry.log_external_validation(
        spec.name,
        loaded.info.version,
        metrics=result.flat_metrics(),
        json_artifacts={
            "index_plan.json": population.plan.as_dict(),
            "extract_provenance.json": {
                "source": population.source,
                "extract_date": population.extract_date.isoformat(),
                "identifier_kind": population.identifier_kind,
                "provenance": population.provenance,
            },
            "evaluation/primary.json": result.primary,
            "evaluation/stability.json": result.stability,
            "evaluation/oracle.json": result.oracle,
            "fairness/audit.json": result.fairness,
            "gates.json": [g.as_dict() for g in result.gates],
            "summary.json": summary,
        },
        tags={
            DATA_DIGEST_TAG: population.digest,
            "riskstrat.extract_date": population.extract_date.isoformat(),
            "riskstrat.data_source": population.source[:500],
            "riskstrat.validation_month": population.plan.validation_month.isoformat(),
            "riskstrat.gates_passed": str(result.gates_passed).lower(),
        },
        summary=summary,
    )
    report(progress, "add the result to the version's card", 0.9)
    refresh_card(registry, spec, loaded.info.version)
    report(progress, "done", 1.0)
    return ExternalResult(
        version=loaded.info.version,
        run_id=run_id,
        report=result,
        population=population,
        summary={**summary, "run_id": run_id},
    )


def refresh_card(registry: ModelRegistry, spec: ModelSpec, version: str) -> bool:
    """Render a version's card again with its external validations, from the context its
    training run stored (``card/context.json``). False when the version has no card."""
    info = registry.describe(spec.name, version)
    if info.run_id is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = registry.download_artifacts(info.run_id, "card", Path(tmp) / "old")
        except Exception:  # MLflow raises its own types for a missing artefact
            return False
        context_file = folder / "context.json"
        if not context_file.is_file():
            return False
        context = json.loads(context_file.read_text(encoding="utf-8"))
        context["external_validation"] = registry.external_validations(spec.name, version)
        out_dir = Path(tmp) / "card"
        log_card(registry, info.run_id, context, spec, folder / "plots", out_dir)
    return True
