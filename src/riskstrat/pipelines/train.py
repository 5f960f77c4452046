"""Training pipeline: extract -> monthly snapshots -> LightGBM + calibration -> evaluation,
baselines, fairness audit and gates -> model card -> MLflow (a new version, alias challenger).

Promotion to champion is a separate, gated step (``riskstrat.pipelines.promote``).

The training frame's steps (pieces, splits, compaction) live in
``riskstrat.pipelines.frame``; the public ones are re-exported here, where the bench times
them with the rest of the run.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import date
from functools import cache, partial
from pathlib import Path
from typing import Any

import pandas as pd

from riskstrat.config import Settings, get_settings
from riskstrat.data.extract import read_oracle
from riskstrat.data.omop.report import read_mapping_coverage
from riskstrat.errors import DataError, UsageError
from riskstrat.features.build import history_start, population_size, sample_people
from riskstrat.modelling.baselines import baseline_rows, fit_baselines
from riskstrat.modelling.model import IndexPlan, RiskModel, plan_index_months, predict_risk
from riskstrat.modelling.registry import (
    CHALLENGER,
    CHAMPION,
    LoadedModel,
    ModelNotFoundError,
    ModelRegistry,
    ModelVersionInfo,
    registry_for,
)
from riskstrat.modelling.spec import ModelSpec, default_spec_dir, load_spec
from riskstrat.monitoring.psi import reference_distributions
from riskstrat.pipelines.common import Progress, open_extract, release_freed_memory, report
from riskstrat.pipelines.evaluate import (
    ChampionPredictions,
    EvaluationReport,
    card_context,
    draw_plots,
    evaluate_version,
    log_card,
)
from riskstrat.pipelines.frame import (
    build_training_frame,
    iter_training_parts,
    split_by_plan,
    split_parts,
    training_columns,
    training_parts,
)
from riskstrat.synth import default_oracle_path

_log = logging.getLogger(__name__)

#: The public surface: the whole run, and the steps it is made of, which the benchmark times
#: one by one (riskstrat.bench) and tests call directly.
__all__ = [
    "TrainResult",
    "build_training_frame",
    "fit_model",
    "iter_training_parts",
    "run_training",
    "split_by_plan",
    "split_parts",
    "training_columns",
    "training_parts",
    "training_plan",
    "training_sample",
]


@dataclass(frozen=True)
class TrainResult:
    model: ModelVersionInfo
    plan: IndexPlan
    metrics: dict[str, float]
    report: EvaluationReport
    train_rows: int
    validation_rows: int
    seconds: float


def training_plan(con: Any, spec: ModelSpec, extract_date: date) -> IndexPlan:
    """Which index months the spec trains, stops, calibrates and evaluates on, given where
    the extract's history begins."""
    start = history_start(con)
    if start is None:
        raise DataError(
            "the extract has no activity rows, so no history to learn from",
            hint="check that the extract's activity files hold rows (`riskstrat profile`)",
        )
    t = spec.training
    return plan_index_months(
        data_start=start,
        extract_date=extract_date,
        horizon_days=spec.horizon_days,
        min_lookback_days=t.min_lookback_days,
        max_train_months=t.max_train_months,
        early_stopping_months=t.early_stopping_months,
        calibration_months=t.calibration_months,
        evaluation_months=t.evaluation_months,
    )


def fit_model(spec: ModelSpec, parts: Mapping[str, pd.DataFrame]) -> RiskModel:
    """The spec's LightGBM model fitted on ``parts`` (from ``split_by_plan``): trees on
    ``train``, their number chosen on ``stop``, the calibrator fitted on ``calibrate``."""
    names = spec.feature_names
    train = parts["train"]
    return RiskModel(
        params=spec.lightgbm.params,
        num_boost_round=spec.lightgbm.num_boost_round,
        early_stopping_rounds=spec.lightgbm.early_stopping_rounds,
        monotone_increasing=spec.monotone.increasing,
        monotone_decreasing=spec.monotone.decreasing,
        calibration=spec.calibration.method,
        seasonal_baseline=spec.training.seasonal_baseline,
    ).fit(
        train[names],
        train["label"],
        X_stop=parts["stop"][names],
        y_stop=parts["stop"]["label"],
        X_calibrate=parts["calibrate"][names],
        y_calibrate=parts["calibrate"]["label"],
        index_dates=train["index_date"].to_numpy(),
    )


def training_sample(con: Any, spec: ModelSpec, plan: IndexPlan) -> tuple[list[str] | None, float]:
    """The people the model is fitted on: everyone, unless the training months would hold
    more than ``training.max_train_rows`` rows; then a random sample of people sized to fit
    (``features.sample_people``). Returns the sample (None for everyone) and its fraction."""
    cap = spec.training.max_train_rows
    if cap is None or not plan.train_months:
        return None, 1.0
    expected_rows = population_size(con, plan.train_months[-1]) * len(plan.train_months)
    if expected_rows <= cap:
        return None, 1.0
    fraction = cap / expected_rows
    return sample_people(con, fraction=fraction, seed=spec.evaluation.seed), fraction


def _load_champion(registry: ModelRegistry, spec: ModelSpec) -> LoadedModel | None:
    """The current champion of the spec's model, or None when there is none yet."""
    try:
        return registry.load(spec.name, CHAMPION)
    except ModelNotFoundError:
        return None


def _champion_predictions(
    champion: LoadedModel | None, spec: ModelSpec, rows: pd.DataFrame
) -> ChampionPredictions | None:
    """The current champion's risks on the same rows, if there is a comparable champion."""
    if champion is None:
        return None
    missing = [f for f in champion.feature_names if f not in rows.columns]
    if missing:
        _log.warning("champion uses features this extract lacks; not compared")
        return None
    from riskstrat.modelling.model import predict_risk

    return ChampionPredictions(
        version=champion.info.version,
        risk=predict_risk(champion.booster, rows, champion.calibrator),
    )


def run_training(
    data_dir: Path,
    *,
    spec_dir: Path | None = None,
    settings: Settings | None = None,
    oracle_path: Path | None = None,
    progress: Progress = None,
) -> TrainResult:
    """Train, evaluate and register a new version of the spec's model as ``challenger``.

    If the extract is synthetic and its oracle file (true risks) is found, at ``oracle_path``
    or beside the extract where ``riskstrat generate --oracle`` puts it, the evaluation
    includes the oracle's AUROC on the same people and the model's ratio to it. If a
    champion exists, it is scored on the same held-out rows so promotion can compare like
    with like.
    """
    settings = settings or get_settings()
    spec = load_spec(spec_dir or default_spec_dir())
    registry = registry_for(settings)
    started = time.perf_counter()
    # The registry is opened (MLflow imported, its database made or checked) and any
    # champion read on a thread of its own while DuckDB validates the extract and builds
    # the features: seconds of Python that would otherwise wait for them.
    lookup = ThreadPoolExecutor(max_workers=1, thread_name_prefix="champion")
    champion_loaded = lookup.submit(_load_champion, registry, spec)
    lookup.shutdown(wait=False)
    report(progress, "validate extract", 0.0)
    try:
        with open_extract(settings, data_dir, progress=progress) as extract:
            plan = training_plan(extract.con, spec, extract.extract_date)
            report(progress, f"build features and labels for {len(plan.all_months)} months", 0.1)
            people, people_fraction = training_sample(extract.con, spec, plan)
            if people is not None:
                _log.info(
                    "training on a sample of %.1f%% of people (training.max_train_rows)",
                    100 * people_fraction,
                )
            censored: dict[date, int] = {}
            pieces = training_parts(
                extract.con,
                spec,
                plan,
                people=people,
                censored=censored,
                columns=training_columns(spec),
            )
            validation_summary = extract.summary.as_dict()
            extract_date, source = extract.extract_date, extract.summary.manifest.source
            manifest = extract.summary.manifest
    except BaseException:
        # Never leave the registry's lookup (MLflow's own migrations among it) running on a
        # thread behind a failed run: the next store or registry opened in this process
        # would migrate beside it, and Alembic is not thread-safe.
        wait([champion_loaded])
        raise
    # DuckDB's memory is released by now; each part is copied from the pieces once.
    parts = split_parts(pieces, spec, plan)
    release_freed_memory()  # DuckDB's results and the pieces: the heap they leave

    names = spec.feature_names
    train = parts["train"]

    report(progress, f"fit LightGBM on {len(train):,} rows", 0.25)
    model = fit_model(spec, parts)
    report(progress, "summarise the training rows", 0.5)
    # The baselines are fitted during the evaluation, beside the bootstraps that do not need
    # them (one core each); only their rows are kept from the training months.
    baseline_X, baseline_y = baseline_rows(train, train["label"], seed=spec.evaluation.seed)
    baselines = cache(
        partial(
            fit_baselines,
            spec.evaluation.baselines,
            baseline_X[names],
            baseline_y,
            seed=spec.evaluation.seed,
        )
    )
    del baseline_X, baseline_y
    # What is kept of the development months; their rows are let go before evaluation.
    train_rows, train_event_rate = len(train), float(train["label"].mean())
    stop_rows, calibration_rows = len(parts["stop"]), len(parts["calibrate"])
    X_example = train[names].iloc[:0]  # the signature's column names and types
    # The training window's distributions, for `riskstrat monitor`'s drift checks.
    reference = training_reference(model, train, names)
    evaluation_rows = parts.pop("evaluate")
    del train, parts
    release_freed_memory()  # the development months' rows and LightGBM's datasets

    report(progress, "fit baselines and evaluate on held-out months (with bootstrap CIs)", 0.6)
    oracle_file = oracle_path or default_oracle_path(Path(data_dir))
    # The generator's oracle is the true risk of an emergency admission: no other outcome's.
    if oracle_path is not None and spec.outcome.name != "emergency_admission":
        raise UsageError(
            f"the oracle file holds true risks of an emergency admission, not of "
            f"{spec.outcome.plural}",
            hint="leave out --oracle for this model",
        )
    admission = spec.outcome.name == "emergency_admission"
    oracle = (
        read_oracle(oracle_file)
        if admission and (oracle_path is not None or oracle_file.is_file())
        else None
    )
    primary_rows = evaluation_rows.loc[evaluation_rows["index_date"] == plan.validation_month]
    champion = _champion_predictions(champion_loaded.result(), spec, primary_rows)
    del primary_rows  # a copy of the month's rows; evaluate_version makes its own
    result = evaluate_version(
        spec=spec,
        plan=plan,
        model=model,
        baselines=baselines,
        evaluation_rows=evaluation_rows,
        oracle=oracle,
        champion=champion,
    )
    metrics = result.flat_metrics() | {
        "train_rows": float(train_rows),
        "train_people_fraction": people_fraction,
        "train_event_rate": train_event_rate,
        "early_stopping_rows": float(stop_rows),
        "calibration_rows": float(calibration_rows),
        "censored_rows": float(sum(censored.values())),
        "best_iteration": float(model.best_iteration_),
        **(
            {
                "seasonal_peak_month": float(model.seasonal_baseline_.peak_month),
                "seasonal_peak_to_trough": float(model.seasonal_baseline_.peak_to_trough),
            }
            if model.seasonal_baseline_ is not None
            else {}
        ),
        "calibration_a": model.calibrator_.a,
        "calibration_b": model.calibrator_.b,
    }

    report(progress, "draw plots and write the model card", 0.75)
    with tempfile.TemporaryDirectory() as tmp:
        plots_dir = Path(tmp) / "plots"
        draw_plots(
            result,
            model=model,
            baselines=baselines(),
            evaluation_rows=evaluation_rows,
            plan=plan,
            out_dir=plots_dir,
            seed=spec.evaluation.seed,
        )
        report(progress, "register the version in MLflow", 0.85)
        gate_failures = [f"{g.name} ({g.subject})" for g in result.gates if not g.passed]
        info = registry.log_training_run(
            model_name=spec.name,
            model=model,
            X_example=X_example,
            params=_params(spec, plan),
            metrics=metrics,
            tags={
                "riskstrat.modelling.spec": spec.name,
                "riskstrat.extract_date": extract_date.isoformat(),
                "riskstrat.validation_month": plan.validation_month.isoformat(),
                "riskstrat.horizon_days": str(spec.horizon_days),
                "riskstrat.gates_passed": str(result.gates_passed).lower(),
                "riskstrat.identifier_kind": manifest.identifier_kind,
            },
            version_tags={
                "riskstrat.gate_failures": "; ".join(gate_failures)[:4000] or "none",
                "riskstrat.compared_with_champion": champion.version if champion else "none",
            },
            json_artifacts={
                "index_plan.json": plan.as_dict(),
                "extract_validation.json": validation_summary,
                "extract_provenance.json": {
                    "contract_version": manifest.contract_version,
                    "identifier_kind": manifest.identifier_kind,
                    "provenance": manifest.provenance,
                },
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
                "feature_importance_gain.json": _importance(model),
                # With an OMOP import's mapping coverage (None otherwise), for its drift check.
                "monitoring/reference.json": reference
                | {"mapping_coverage": read_mapping_coverage(Path(data_dir))},
            },
            text_artifacts={"spec.yaml": Path(spec.source).read_text(encoding="utf-8")}
            if spec.source
            else None,
            files={f"plots/{p.name}": p for p in result.plots.values()}
            | {"fairness/audit.csv": _audit_csv(result, Path(tmp) / "audit.csv")},
            set_aliases=(CHALLENGER,),
        )
        report(progress, "write the model card", 0.95)
        context = card_context(
            result,
            spec=spec,
            plan=plan,
            model=model,
            version=info.version,
            run_id=info.run_id,
            created_at=info.created_at.isoformat(timespec="seconds"),
            extract_date=extract_date,
            source=source,
            train_rows=train_rows,
            identifier_kind=manifest.identifier_kind,
            provenance=manifest.provenance,
            censored_rows=sum(censored.values()),
        )
        log_card(registry, info.run_id, context, spec, plots_dir, Path(tmp) / "card")
    report(progress, "done", 1.0)
    return TrainResult(
        model=info,
        plan=plan,
        metrics=metrics,
        report=result,
        train_rows=train_rows,
        validation_rows=int(result.primary["rows"]),
        seconds=time.perf_counter() - started,
    )


def _audit_csv(result: EvaluationReport, path: Path) -> Path:
    """The fairness audit as one table: a row per group, CIs as columns."""
    rows = []
    for g in result.fairness["groups"]:
        row: dict[str, Any] = {k: g[k] for k in ("attribute", "group", "rows", "events",
                                                 "estimable", "reason")}  # fmt: skip
        for metric in ("auroc", "oe", "selection_rate", "fpr", "fnr", "false_omission_rate",
                       "false_discovery_rate"):  # fmt: skip
            ci = g.get(metric) or {}
            row[metric], row[f"{metric}_lo"], row[f"{metric}_hi"] = (
                ci.get("value"),
                ci.get("lo"),
                ci.get("hi"),
            )
        rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def training_reference(
    model: RiskModel, train: pd.DataFrame, names: Sequence[str], *, max_rows: int = 200_000
) -> dict[str, Any]:
    """Decile bins and shares of every feature and of the score in the training months
    (a random sample of at most ``max_rows`` rows): the reference of the PSI drift checks."""
    sample = train.sample(n=max_rows, random_state=0) if len(train) > max_rows else train
    score = predict_risk(model.booster_, sample[list(names)], model.calibrator_)
    return reference_distributions(sample, names, score=score) | {
        "months": sorted({str(d)[:10] for d in sample["index_date"]}),
    }


def _importance(model: RiskModel) -> dict[str, float]:
    gains = model.booster_.feature_importance(importance_type="gain")
    pairs = zip(model.feature_names_, (round(float(g), 3) for g in gains), strict=True)
    return dict(sorted(pairs, key=lambda kv: -kv[1]))


def _params(spec: ModelSpec, plan: IndexPlan) -> dict[str, Any]:
    return {
        "horizon_days": spec.horizon_days,
        "n_features": len(spec.feature_names),
        "num_boost_round": spec.lightgbm.num_boost_round,
        "early_stopping_rounds": spec.lightgbm.early_stopping_rounds,
        **{f"lgb_{k}": v for k, v in spec.lightgbm.params.items()},
        "calibration": spec.calibration.method,
        "monotone_increasing": spec.monotone.increasing,
        "monotone_decreasing": spec.monotone.decreasing,
        "gate_rule": spec.gates.rule,
        "train_months": [d.isoformat() for d in plan.train_months],
        "evaluation_months": [d.isoformat() for d in plan.evaluation_months],
    }
