"""Monthly scoring pipeline: extract -> features at the month's first day -> champion risk ->
SHAP reasons -> one published run in the serving store."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd

from pipelines.common import Progress, open_extract, report
from pipelines.train import registry_for
from riskstrat.config import Settings, get_settings
from riskstrat.explain import explain_rows
from riskstrat.features import build_features
from riskstrat.modelling import predict_risk
from riskstrat.registry import CHAMPION, LoadedModel
from riskstrat.store import Store

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreResult:
    run_id: int
    month: date
    model_name: str
    model_version: str
    n_scored: int
    n_type1_opt_outs_excluded: int
    seconds: float


def parse_month(text: str) -> date:
    """``YYYY-MM`` to the first day of that month."""
    try:
        year, month = text.split("-")
        if len(year) != 4 or len(month) != 2:
            raise ValueError
        return date(int(year), int(month), 1)
    except ValueError:
        raise ValueError(f"month must look like YYYY-MM, got {text!r}") from None


def check_as_of(as_of: date, extract_date: date) -> None:
    """Features at ``as_of`` need complete data before it."""
    if as_of > extract_date:
        raise ValueError(
            f"{as_of.isoformat()} is after the extract date {extract_date.isoformat()}: the "
            "extract does not cover the days before it"
        )


def score_frame(
    model: LoadedModel,
    features: pd.DataFrame,
    *,
    reasons: bool = True,
    top_raising: int = 3,
    top_lowering: int = 1,
) -> pd.DataFrame:
    """Risk, rank (1 = highest), percentile and reasons for each row of ``features``."""
    X = features[model.feature_names]
    risk = predict_risk(model.booster, X, model.calibrator)
    out = features[["nhs_number", "practice_code", "pcn_code"]].copy()
    out["risk"] = risk
    # Percentile: the share of the scored population at or below this risk, in percent.
    out["percentile"] = (pd.Series(risk).rank(method="max", pct=True) * 100).round(2).to_numpy()
    order = pd.Series(risk).rank(method="first", ascending=False).astype(int).to_numpy()
    out["rank"] = order
    if reasons:
        explained = explain_rows(
            model.booster,
            X,
            calibrator=model.calibrator,
            top_raising=top_raising,
            top_lowering=top_lowering,
        )
        out["reasons"] = pd.Series(explained, index=out.index, dtype=object)
    return out.sort_values("rank").reset_index(drop=True)


def run_scoring(
    data_dir: Path,
    *,
    month: date,
    settings: Settings | None = None,
    model_ref: str = CHAMPION,
    progress: Progress = None,
) -> ScoreResult:
    """Score everyone registered and alive on ``month`` (a first of month) and publish it."""
    settings = settings or get_settings()
    if month.day != 1:
        raise ValueError("month must be the first day of a month")
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    registry = registry_for(settings)
    store = Store(settings.serving_database_url)
    store.create_schema()
    extract_date: date | None = None
    try:
        report(progress, "load model", 0.0)
        model = registry.load(settings.model_name, model_ref)
        report(progress, "validate extract", 0.05)
        with open_extract(settings, data_dir) as extract:
            check_as_of(month, extract.extract_date)
            extract_date = extract.extract_date
            validation = extract.summary.as_dict()
            report(progress, "build features", 0.2)
            features = build_features(extract.con, index_dates=[month])
        opt_out = features["type1_opt_out"].astype(bool)
        n_opt_out = int(opt_out.sum())
        if not settings.publish_type1_opt_outs:
            features = features.loc[~opt_out].reset_index(drop=True)
        else:
            n_opt_out = 0
        if features.empty:
            raise ValueError(f"nobody is registered and alive on {month.isoformat()}")
        report(progress, f"score and explain {len(features):,} people", 0.35)
        scores = score_frame(model, features)
        report(progress, "publish", 0.9)
        run_id = store.publish_run(
            month=month,
            extract_date=extract_date,
            model_name=model.info.name,
            model_version=model.info.version,
            scores=scores,
            n_type1_opt_outs_excluded=n_opt_out,
            started_at=started_at,
            details={
                "extract_validation": validation,
                "model_metrics": {
                    k: v for k, v in model.info.metrics.items() if k.startswith("validation_")
                },
                "mean_risk": float(scores["risk"].mean()),
            },
        )
    except Exception as exc:
        _log.warning("scoring %s failed: %s", month.isoformat(), type(exc).__name__)
        try:
            store.record_failed_run(
                month=month,
                extract_date=extract_date,
                model_name=settings.model_name,
                model_version="unknown",
                started_at=started_at,
                reason=f"{type(exc).__name__}: {exc}",
            )
        finally:
            store.dispose()
        raise
    store.dispose()
    report(progress, "done", 1.0)
    return ScoreResult(
        run_id=run_id,
        month=month,
        model_name=model.info.name,
        model_version=model.info.version,
        n_scored=len(scores),
        n_type1_opt_outs_excluded=n_opt_out,
        seconds=time.perf_counter() - started,
    )
