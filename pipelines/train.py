"""Training pipeline: extract -> monthly snapshots -> LightGBM -> metrics -> MLflow registry."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.common import Progress, open_extract, report
from riskstrat.config import Settings, get_settings
from riskstrat.evaluation import discrimination_metrics, oracle_comparison
from riskstrat.extract import read_oracle
from riskstrat.features import KEY_COLUMNS, build_features, history_start
from riskstrat.labels import build_labels
from riskstrat.modelling import IndexPlan, RiskModel, plan_index_months
from riskstrat.registry import CHAMPION, ModelRegistry, ModelVersionInfo
from riskstrat.spec import ModelSpec, default_spec_dir, load_spec
from riskstrat.synth import default_oracle_path

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    model: ModelVersionInfo
    plan: IndexPlan
    metrics: dict[str, float]
    train_rows: int
    validation_rows: int
    seconds: float


def registry_for(settings: Settings) -> ModelRegistry:
    return ModelRegistry(tracking_uri=settings.tracking_uri, artifact_root=settings.artifact_root)


def build_training_frame(con: Any, spec: ModelSpec, plan: IndexPlan) -> pd.DataFrame:
    """Features and labels for every planned index month, type 1 opt-outs removed."""
    months = [*plan.train_months, *plan.early_stopping_months, plan.validation_month]
    features = build_features(con, index_dates=months)
    labels = build_labels(con, index_dates=months, horizon_days=spec.horizon_days)
    frame = features.merge(labels, on=list(KEY_COLUMNS), how="inner", validate="1:1")
    return frame.loc[~frame["type1_opt_out"].astype(bool)].reset_index(drop=True)


def run_training(
    data_dir: Path,
    *,
    spec_dir: Path | None = None,
    settings: Settings | None = None,
    aliases: tuple[str, ...] = (CHAMPION,),
    oracle_path: Path | None = None,
    progress: Progress = None,
) -> TrainResult:
    """Train the spec's model on an extract and register it (alias ``champion`` by default).

    If the extract is synthetic and its oracle file (true risks) is found, at ``oracle_path``
    or beside the extract where ``riskstrat generate --oracle`` puts it, the held-out metrics
    include the oracle's AUROC on the same people and the model's ratio to it.
    """
    settings = settings or get_settings()
    spec = load_spec(spec_dir or default_spec_dir())
    started = time.perf_counter()
    report(progress, "validate extract", 0.0)
    with open_extract(settings, data_dir) as extract:
        start = history_start(extract.con)
        if start is None:
            raise ValueError("the extract has no activity rows, so no history to learn from")
        plan = plan_index_months(
            data_start=start,
            extract_date=extract.extract_date,
            horizon_days=spec.horizon_days,
            min_lookback_days=spec.training.min_lookback_days,
            max_train_months=spec.training.max_train_months,
            early_stopping_months=spec.training.early_stopping_months,
        )
        report(progress, "build features and labels", 0.2)
        frame = build_training_frame(extract.con, spec, plan)
        validation_summary = extract.summary.as_dict()

    names = spec.feature_names
    in_train = frame["index_date"].isin(plan.train_months)
    in_stop = frame["index_date"].isin(plan.early_stopping_months)
    in_valid = frame["index_date"] == plan.validation_month
    train, stop, valid = frame.loc[in_train], frame.loc[in_stop], frame.loc[in_valid]
    for label, part in (("training", train), ("validation", valid)):
        if part.empty or part["label"].nunique() < 2:
            raise ValueError(f"the {label} months need people with and without the outcome")

    report(progress, f"fit LightGBM on {len(train):,} rows", 0.4)
    model = RiskModel(
        params=spec.lightgbm.params,
        num_boost_round=spec.lightgbm.num_boost_round,
        early_stopping_rounds=spec.lightgbm.early_stopping_rounds,
    ).fit(train[names], train["label"], X_stop=stop[names], y_stop=stop["label"])

    report(progress, "evaluate on the held-out month", 0.8)
    risk = model.predict_proba(valid[names])
    metrics = {
        f"validation_{k}": v for k, v in discrimination_metrics(valid["label"], risk).items()
    }
    oracle_file = oracle_path or default_oracle_path(Path(data_dir))
    if oracle_path is not None or oracle_file.is_file():
        oracle = read_oracle(oracle_file)
        matched = (
            valid[["nhs_number", "index_date", "label"]]
            .assign(risk=risk)
            .merge(oracle, on=["nhs_number", "index_date"], how="inner", validate="1:1")
        )
        if len(matched) == len(valid):
            comparison = oracle_comparison(matched["label"], matched["risk"], matched["true_risk"])
            metrics.update({f"validation_{k}": v for k, v in comparison.items()})
        else:
            _log.warning(
                "oracle covers %d of %d held-out people; no oracle comparison",
                len(matched),
                len(valid),
            )
    metrics.update(
        {
            "train_rows": float(len(train)),
            "train_event_rate": float(train["label"].mean()),
            "early_stopping_rows": float(len(stop)),
            "best_iteration": float(model.best_iteration_),
        }
    )
    importance = dict(
        zip(
            names,
            model.booster_.feature_importance(importance_type="gain").round(3).tolist(),
            strict=True,
        )
    )
    report(progress, "register model in MLflow", 0.9)
    info = registry_for(settings).log_training_run(
        model_name=spec.name,
        booster=model.booster_,
        X_example=train[names],
        params={
            "horizon_days": spec.horizon_days,
            "n_features": len(names),
            "num_boost_round": spec.lightgbm.num_boost_round,
            "early_stopping_rounds": spec.lightgbm.early_stopping_rounds,
            **{f"lgb_{k}": v for k, v in spec.lightgbm.params.items()},
            "train_months": [d.isoformat() for d in plan.train_months],
            "validation_month": plan.validation_month.isoformat(),
        },
        metrics=metrics,
        tags={
            "riskstrat.spec": spec.name,
            "riskstrat.extract_date": validation_summary["extract_date"],  # type: ignore[dict-item]
            "riskstrat.validation_month": plan.validation_month.isoformat(),
            "riskstrat.horizon_days": str(spec.horizon_days),
        },
        json_artifacts={
            "index_plan.json": plan.as_dict(),
            "extract_validation.json": validation_summary,
            "feature_importance_gain.json": dict(sorted(importance.items(), key=lambda kv: -kv[1])),
            "features.json": names,
        },
        text_artifacts={"spec.yaml": Path(spec.source).read_text(encoding="utf-8")}
        if spec.source
        else None,
        set_aliases=aliases,
    )
    report(progress, "done", 1.0)
    return TrainResult(
        model=info,
        plan=plan,
        metrics=metrics,
        train_rows=len(train),
        validation_rows=len(valid),
        seconds=time.perf_counter() - started,
    )
