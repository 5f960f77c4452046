"""Local recalibration: a registered version's trees, calibrated again on a local population.

``riskstrat recalibrate VERSION --data EXTRACT`` keeps the version's trees and refits only its
calibrator (the spec's method: for ``platt``, the intercept and slope on the trees' log-odds)
on the local extract's calibration months, then evaluates the result on the local held-out
months with the training pipeline's own evaluation, fairness audit and gates, and registers
it as a new version (alias ``challenger``) whose lineage names the parent version and the
data it was recalibrated on. Gates and promotion then work as for any version: the current
champion, if any, is scored on the same local held-out rows so ``riskstrat promote`` can
compare like with like.

A model moved to a population with another age structure or admission rate usually keeps
its ranking and loses its calibration; this puts the calibration right without retraining
on data the local population may not have enough of.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from riskstrat.config import Settings, get_settings
from riskstrat.modelling.baselines import fit_baselines
from riskstrat.modelling.model import Calibrator, IndexPlan, RiskModel, raw_log_odds
from riskstrat.modelling.registry import (
    CHALLENGER,
    CHAMPION,
    PARENT_VERSION_TAG,
    RECALIBRATED_ON_TAG,
    ModelNotFoundError,
    ModelRegistry,
    ModelVersionInfo,
    registry_for,
)
from riskstrat.modelling.spec import ModelSpec, default_spec_dir, load_spec
from riskstrat.pipelines.common import Progress, report
from riskstrat.pipelines.evaluate import (
    CALIBRATION_WORDS,
    ChampionPredictions,
    EvaluationReport,
    card_context,
    draw_plots,
    evaluate_version,
    log_card,
)
from riskstrat.pipelines.external import Population, load_population, load_version, oracle_for

__all__ = ["RecalibrationResult", "lineage_tags", "recalibrate_model", "run_recalibration"]

#: Calibration months of the local population, unless the caller says otherwise: a whole year,
#: so that the level is fitted across every season (the trees carry the season: a few months
#: in one season set the level of that season, and a recalibrated version judged on a month in
#: another season was 5-8% off in the recovery test) and a smaller population has enough
#: admissions. The CLI uses it when --months is not given.
DEFAULT_CALIBRATION_MONTHS = 12


@dataclass(frozen=True)
class RecalibrationResult:
    model: ModelVersionInfo
    parent_version: str
    parent_calibrator: Calibrator
    calibrator: Calibrator
    population: Population
    report: EvaluationReport
    seconds: float


def lineage_tags(parent_version: str, population: Population) -> dict[str, str]:
    """The tags that name where a recalibrated version came from (on its run and version)."""
    return {
        PARENT_VERSION_TAG: str(parent_version),
        RECALIBRATED_ON_TAG: (
            f"{population.digest} (extract {population.extract_date.isoformat()})"
        ),
        "riskstrat.lineage.recalibrated_on_source": population.source[:500],
        "riskstrat.lineage.recalibrated_on_digest": population.digest,
        "riskstrat.lineage.calibration_months": ",".join(
            d.isoformat() for d in population.plan.calibration_months
        ),
    }


def recalibrate_model(model: RiskModel, method: str, rows: pd.DataFrame, labels: Any) -> RiskModel:
    """The same trees with a calibrator of ``method`` fitted on ``rows``' log-odds."""
    calibrator = Calibrator.fit(
        method,  # type: ignore[arg-type]  # the spec's Literal, checked on load
        raw_log_odds(model.booster_, rows),
        labels,
    )
    return RiskModel.from_fitted(model.booster_, calibrator)


def _champion_on(
    registry: ModelRegistry, spec: ModelSpec, rows: pd.DataFrame
) -> ChampionPredictions | None:
    try:
        champion = registry.load(spec.name, CHAMPION)
    except ModelNotFoundError:
        return None
    if any(f not in rows.columns for f in champion.feature_names):
        return None
    model = RiskModel.from_fitted(champion.booster, champion.calibrator)
    return ChampionPredictions(version=champion.info.version, risk=model.predict_proba(rows))


def _card_plan(registry: ModelRegistry, parent: ModelVersionInfo, plan: IndexPlan) -> IndexPlan:
    """The parent's training months with the local calibration and evaluation months."""
    stored: dict[str, Any] = {}
    if parent.run_id:
        try:
            stored = dict(registry.read_json_artifact(parent.run_id, "index_plan.json"))
        except Exception:  # an old run without the artefact: no months shown
            stored = {}

    def months(key: str) -> tuple[date, ...]:
        return tuple(date.fromisoformat(m) for m in stored.get(key, []))

    return IndexPlan(
        train_months=months("train_months"),
        early_stopping_months=months("early_stopping_months"),
        calibration_months=plan.calibration_months,
        evaluation_months=plan.evaluation_months,
    )


def run_recalibration(
    version: str,
    data_dir: Path,
    *,
    spec_dir: Path | None = None,
    settings: Settings | None = None,
    calibration_months: int = DEFAULT_CALIBRATION_MONTHS,
    oracle_path: Path | None = None,
    progress: Progress = None,
) -> RecalibrationResult:
    """Recalibrate a registered version on another extract and register the result as a
    new version, alias ``challenger`` (see the module)."""
    started = time.perf_counter()
    settings = settings or get_settings()
    spec = load_spec(spec_dir or default_spec_dir())
    registry = registry_for(settings)
    report(progress, "load the version", 0.0)
    parent = load_version(registry, spec, version)
    report(progress, "validate the extract and build features and labels", 0.1)
    population = load_population(settings, spec, data_dir, calibration_months=calibration_months)
    plan, rows = population.plan, population.rows
    calibrate = rows.loc[rows["index_date"].isin(plan.calibration_months)]
    evaluation_rows = rows.loc[rows["index_date"].isin(plan.evaluation_months)]
    old = RiskModel.from_fitted(parent.booster, parent.calibrator)
    names = old.feature_names_
    method = spec.calibration.method
    report(progress, f"refit the calibration ({method}) on {len(calibrate):,} rows", 0.4)
    model = recalibrate_model(old, spec.calibration.method, calibrate[names], calibrate["label"])
    baselines = fit_baselines(
        spec.evaluation.baselines,
        calibrate[names],
        calibrate["label"],
        seed=spec.evaluation.seed,
    )
    report(progress, "evaluate on the local held-out months (with bootstrap CIs)", 0.5)
    primary_rows = evaluation_rows.loc[evaluation_rows["index_date"] == plan.validation_month]
    champion = _champion_on(registry, spec, primary_rows)
    result = evaluate_version(
        spec=spec,
        plan=plan,
        model=model,
        baselines=baselines,
        evaluation_rows=evaluation_rows,
        oracle=oracle_for(data_dir, oracle_path),
        champion=champion,
    )
    lineage = lineage_tags(parent.info.version, population)
    metrics = result.flat_metrics() | {
        "calibration_rows": float(len(calibrate)),
        "calibration_a": model.calibrator_.a,
        "calibration_b": model.calibrator_.b,
        "parent_calibration_a": parent.calibrator.a,
        "parent_calibration_b": parent.calibrator.b,
    }
    gate_failures = [f"{g.name} ({g.subject})" for g in result.gates if not g.passed]
    report(progress, "draw plots and register the version", 0.7)
    with tempfile.TemporaryDirectory() as tmp:
        plots_dir = Path(tmp) / "plots"
        card_plan = _card_plan(registry, parent.info, plan)
        draw_plots(
            result,
            model=model,
            baselines=baselines,
            evaluation_rows=evaluation_rows,
            plan=plan,
            out_dir=plots_dir,
            seed=spec.evaluation.seed,
        )
        info = registry.log_training_run(
            model_name=spec.name,
            model=model,
            X_example=evaluation_rows[names],
            params={
                "recalibration": spec.calibration.method,
                "parent_version": parent.info.version,
                "calibration_months": [d.isoformat() for d in plan.calibration_months],
                "evaluation_months": [d.isoformat() for d in plan.evaluation_months],
                "gate_rule": spec.gates.rule,
            },
            metrics=metrics,
            tags={
                "riskstrat.modelling.spec": spec.name,
                "riskstrat.extract_date": population.extract_date.isoformat(),
                "riskstrat.validation_month": plan.validation_month.isoformat(),
                "riskstrat.horizon_days": str(spec.horizon_days),
                "riskstrat.gates_passed": str(result.gates_passed).lower(),
                "riskstrat.identifier_kind": population.identifier_kind,
                **lineage,
            },
            version_tags={
                "riskstrat.gate_failures": "; ".join(gate_failures)[:4000] or "none",
                "riskstrat.compared_with_champion": champion.version if champion else "none",
            },
            json_artifacts={
                "index_plan.json": card_plan.as_dict(),
                "lineage.json": lineage,
                "evaluation/primary.json": result.primary,
                "evaluation/baselines.json": result.baselines,
                "evaluation/stability.json": result.stability,
                "evaluation/oracle.json": result.oracle,
                "evaluation/champion_comparison.json": result.champion_comparison,
                "fairness/audit.json": result.fairness,
                "fairness/comparison_with_champion.json": result.fairness_comparison,
                "gates.json": [g.as_dict() for g in result.gates],
                "features.json": names,
                "calibrator.json": model.calibrator_.as_dict(),
                "parent_calibrator.json": parent.calibrator.as_dict(),
            },
            files={f"plots/{p.name}": p for p in result.plots.values()},
            set_aliases=(CHALLENGER,),
        )
        report(progress, "write the model card", 0.9)
        context = card_context(
            result,
            spec=spec,
            plan=card_plan,
            model=model,
            version=info.version,
            run_id=info.run_id,
            created_at=info.created_at.isoformat(timespec="seconds"),
            extract_date=population.extract_date,
            source=population.source,
            train_rows=int(parent.info.metrics.get("train_rows", 0)),
            identifier_kind=population.identifier_kind,
            provenance=population.provenance,
        )
        context["lineage"] = {
            "parent_version": parent.info.version,
            "recalibrated_on": population.describe(),
            "method": CALIBRATION_WORDS[spec.calibration.method].split(",")[0],
            "calibration_months": [d.isoformat() for d in plan.calibration_months],
        }
        log_card(registry, info.run_id, context, spec, plots_dir, Path(tmp) / "card")
    report(progress, "done", 1.0)
    return RecalibrationResult(
        model=info,
        parent_version=parent.info.version,
        parent_calibrator=parent.calibrator,
        calibrator=model.calibrator_,
        population=population,
        report=result,
        seconds=time.perf_counter() - started,
    )
