"""Monthly scoring pipeline: extract -> features at the month's first day -> champion risk ->
SHAP reasons -> intervention cohorts -> one run staged in the serving store, then switched
to published in one transaction.

Why one module: the run's three parts (compute on either engine, publish, record a failure)
share its job and result types, and the ICB split publishes through them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from riskstrat.cohorts.listing import cohort_items_json
from riskstrat.cohorts.select import (
    CohortConfig,
    build_cohorts,
    check_columns,
    load_cohort_config,
    served_counts,
)
from riskstrat.config import Settings, get_settings
from riskstrat.data.contract import IdentifierKind
from riskstrat.errors import ConfigError, DataError, UsageError, failure_message
from riskstrat.explain.reasons import (
    contributions_and_log_odds,
    explain_as_json,
    explain_with_contributions,
)
from riskstrat.features.build import COHORT_COLUMNS, build_features
from riskstrat.modelling.model import calibrated_risk, model_matrix, predict_risk
from riskstrat.modelling.registry import (
    CHAMPION,
    LoadedModel,
    ModelNotFoundError,
    ModelRegistry,
    registry_for,
)
from riskstrat.pipelines.common import Progress, open_extract, report
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
    cohort_sizes: dict[str, int]
    replaced_runs: list[int]
    pruned_runs: list[int]
    #: Why retention pruning after the publish failed (the exception's type), or None. The
    #: month is published either way; the next run's pruning finishes what was left.
    prune_error: str | None = None
    #: What the run's people are identified by: NHS numbers, or pseudonyms (from the extract).
    identifier_kind: IdentifierKind = "nhs_number"
    #: Models that rank a list (cohort file ``rank_by``) by "name version"; and those named
    #: with no champion, whose lists fell back to admission risk.
    ranking_models: dict[str, str] | None = None
    ranking_missing: list[str] | None = None


def check_as_of(as_of: date, extract_date: date) -> None:
    """Features at ``as_of`` need complete data before it."""
    if as_of > extract_date:
        raise DataError(
            f"{as_of.isoformat()} is after the extract date {extract_date.isoformat()}: the "
            "extract does not cover the days before it",
            hint=f"choose a date on or before {extract_date.isoformat()}, or use a later extract",
        )


def score_frame(
    model: LoadedModel,
    features: pd.DataFrame,
    *,
    reasons: bool = True,
    top_raising: int = 3,
    top_lowering: int = 1,
    carry: Collection[str] | None = None,
) -> pd.DataFrame:
    """Risk, rank (1 = highest), percentile, reasons and every reason group's size
    (``contributions``) for each row of ``features``, highest risk first. Columns the
    cohort criteria need are carried through.

    ``reasons`` and ``contributions`` are JSON text (Arrow-backed strings), exactly as the
    store keeps them: a month's reasons are never a Python object per person.

    ``carry``: the feature columns the scores keep besides identifiers and the cohort facts
    (what the cohort criteria read); default every model feature."""
    # The trees' float32 copy of the features, made once for the prediction and TreeSHAP;
    # the words read the features' own values (no copy of the model's columns).
    matrix = model_matrix(model.booster, features)
    if reasons:
        # The log-odds come from the explanation's pass over the trees (LightGBM's to the
        # bit, checked on a sample each run) rather than from a second pass by LightGBM.
        contributions, log_odds = contributions_and_log_odds(model.booster, matrix, keep=False)
        risk = calibrated_risk(log_odds, model.calibrator)
        # Handed over, not kept here: explain_as_json lets the contributions (0.6 GB at a
        # million people) go once the reasons are chosen, before it writes the texts.
        handed = [contributions]
        del contributions
    else:
        risk = predict_risk(model.booster, matrix, model.calibrator)
    del matrix
    out = features[carried_columns(model, list(features.columns), carry)].copy()
    out["risk"] = risk
    order = rank_scores(out)
    out = out.take(order).reset_index(drop=True)
    if reasons:
        # Written in rank order: a million people's texts (about 1 GB) are never copied
        # to sort them.
        explained = explain_as_json(
            model.booster,
            features,
            calibrator=model.calibrator,
            top_raising=top_raising,
            top_lowering=top_lowering,
            contributions=handed.pop(),
            order=order,
        )
        out["reasons"] = json_column(explained.reasons, out.index)
        out["contributions"] = json_column(explained.contributions, out.index)
    return out


def json_column(texts: pa.Array | pa.ChunkedArray, index: pd.Index) -> pd.Series:
    """JSON text as a pandas column backed by the Arrow array (no Python string per row)."""
    return pd.Series(pd.arrays.ArrowExtensionArray(pa.chunked_array([texts])), index=index)


def carried_columns(
    model: LoadedModel, columns: Sequence[str], carry: Collection[str] | None = None
) -> list[str]:
    """The feature frame's columns a scores frame keeps: identifiers, practice and PCN, the
    cohort facts and ``carry`` (default the model's features, which the cohort criteria may
    read)."""
    kept = set(model.feature_names if carry is None else carry)
    carried = ["nhs_number", "practice_code", "pcn_code"] + [
        c for c in columns if c in COHORT_COLUMNS or c in kept
    ]
    return list(dict.fromkeys(carried))


def ranked_scores(out: pd.DataFrame) -> pd.DataFrame:
    """``out`` (one row per person, in NHS-number order, with ``risk``) with ``percentile``
    (the share of the scored population at or below this risk, in percent) and ``rank``
    (1 = highest; equal risks in row order), highest risk first."""
    order = rank_scores(out)
    return out.take(order).reset_index(drop=True)


def rank_scores(out: pd.DataFrame) -> npt.NDArray[np.intp]:
    """Add ``percentile`` and ``rank`` to ``out`` (see ``ranked_scores``) and return the
    order of its rows by rank (row ``order[0]`` is rank 1)."""
    risk = out["risk"].to_numpy()
    out["percentile"] = (pd.Series(risk).rank(method="max", pct=True) * 100).round(2).to_numpy()
    rank = pd.Series(risk).rank(method="first", ascending=False).astype(int).to_numpy()
    out["rank"] = rank
    order = np.empty(len(rank), dtype=np.intp)
    order[rank - 1] = np.arange(len(rank))  # ranks are 1..n, each once
    return order


def ranking_risks(
    registry: ModelRegistry, config: CohortConfig, features: pd.DataFrame, order: pd.Series
) -> tuple[dict[str, npt.NDArray[np.float64]], dict[str, LoadedModel], list[str]]:
    """Each ``rank_by`` model's champion risk for everyone in ``features``, in the order of
    the identifiers ``order`` (the scores' rows); the models loaded; and the names with no
    champion (their lists fall back to admission risk, and the run says so)."""
    risks: dict[str, npt.NDArray[np.float64]] = {}
    loaded, missing = load_ranking_models(registry, config, list(features.columns))
    for name, model in loaded.items():
        risk = predict_risk(model.booster, features[model.feature_names], model.calibrator)
        risks[name] = in_order(risk, features["nhs_number"], order)
    return risks, loaded, missing


def in_order(
    values: npt.NDArray[np.float64], people: pd.Series, order: pd.Series
) -> npt.NDArray[np.float64]:
    """``values`` (one per person of ``people``) in the order of the identifiers ``order``."""
    by_person = pd.Series(values, index=people.to_numpy())
    return np.asarray(by_person.reindex(order.to_numpy()), dtype=np.float64)


def load_ranking_models(
    registry: ModelRegistry, config: CohortConfig, columns: Sequence[str]
) -> tuple[dict[str, LoadedModel], list[str]]:
    """The champion of each ``rank_by`` model, and the names with no champion.

    Raises:
        ConfigError: a champion needs a feature that is not among ``columns``.
    """
    loaded: dict[str, LoadedModel] = {}
    missing: list[str] = []
    for name in config.ranking_models():
        try:
            model = registry.load(name, CHAMPION)
        except ModelNotFoundError:
            _log.warning("no champion of %s: its lists are ranked by admission risk", name)
            missing.append(name)
            continue
        absent = [f for f in model.feature_names if f not in columns]
        if absent:
            raise ConfigError(
                f"the champion of {name} needs features this version does not build: "
                f"{', '.join(absent)}",
                hint=f"retrain {name} with this version of riskstrat",
            )
        loaded[name] = model
    return loaded, missing


def ranking_records(
    cohorts: pd.DataFrame,
    config: CohortConfig,
    features: pd.DataFrame,
    models: dict[str, LoadedModel],
) -> list[dict[str, Any] | None]:
    """For each cohort row ranked by another model: that model, its risk and its reasons
    (exact TreeSHAP, as for admission risk) and the expected bed days; None elsewhere."""
    out: list[dict[str, Any] | None] = [None] * len(cohorts)
    for key, intervention in config.interventions.items():
        rank_by = intervention.rank_by
        if rank_by is None or rank_by.model not in models:
            continue
        model = models[rank_by.model]
        rows = np.flatnonzero(
            (cohorts["intervention"] == key).to_numpy() & cohorts["ranking_risk"].notna().to_numpy()
        )
        if not len(rows):
            continue
        people = cohorts["nhs_number"].to_numpy()[rows]
        X = features.set_index("nhs_number").loc[people, model.feature_names].reset_index(drop=True)
        reasons, _ = explain_with_contributions(model.booster, X, calibrator=model.calibrator)
        risk = cohorts["ranking_risk"].to_numpy()[rows]
        days = cohorts["expected_bed_days"].to_numpy()[rows]
        for i, row in enumerate(rows):
            out[row] = {
                "model": model.info.name,
                "version": model.info.version,
                "label": rank_by.label,
                "risk": float(risk[i]),
                "expected_bed_days": None if np.isnan(days[i]) else float(days[i]),
                "reasons": reasons[i],
            }
    return out


@dataclass(frozen=True)
class ScoringJob:
    """One month's scoring: what it scores and when it began (one run per serving store)."""

    month: date
    config: CohortConfig
    started_at: datetime
    started: float


def scoring_job(month: date, cohorts_file: Path | None) -> ScoringJob:
    if month.day != 1:
        raise UsageError("month must be the first day of a month")
    config = load_cohort_config(cohorts_file)
    return ScoringJob(month, config, datetime.now(UTC), time.perf_counter())


def run_scoring(
    data_dir: Path | str,
    *,
    month: date,
    settings: Settings | None = None,
    model_ref: str = CHAMPION,
    cohorts_file: Path | None = None,
    progress: Progress = None,
) -> ScoreResult:
    """Score everyone registered and alive on ``month`` (a first of month), build the
    intervention cohorts, and publish the run.

    The run is staged under a status no reader sees and switched to published in one
    transaction, replacing any earlier run of the same month. A failure marks the staged run
    failed, with the reason, and leaves the previous run served.
    """
    settings = settings or get_settings()
    job = scoring_job(month, cohorts_file)
    store = Store(settings.serving_database_url)
    store.create_schema()
    try:
        model, computed = load_and_compute(settings, data_dir, job, model_ref, progress)
    except BaseException as exc:
        record_failure(store, settings, job, exc)
        raise
    return publish_computed(store, settings, job, model, computed, progress)


def load_and_compute(
    settings: Settings,
    data_dir: Path | str,
    job: ScoringJob,
    model_ref: str,
    progress: Progress = None,
) -> tuple[LoadedModel, Computed]:
    """The model, then the month's scores and cohorts on the deployment's engine."""
    config = job.config
    report(progress, "load model", 0.0)
    if config.model is not None and config.model != settings.model_name:
        raise ConfigError(
            f"the cohort file is for model {config.model}, not {settings.model_name}",
            hint="its criteria read that model's risk: score with that model, or name "
            "the cohort file written for this one (--cohorts)",
        )
    registry = registry_for(settings)
    model = registry.load(settings.model_name, model_ref)
    report(progress, "validate extract", 0.05)
    compute = compute_on_spark if settings.engine == "spark" else compute_on_duckdb
    computed = compute(
        settings,
        data_dir,
        month=job.month,
        model=model,
        registry=registry,
        config=config,
        progress=progress,
    )
    return model, computed


def record_failure(
    store: Store,
    settings: Settings,
    job: ScoringJob,
    exc: BaseException,
    *,
    run_id: int | None = None,
    extract_date: date | None = None,
) -> None:
    """Mark the staged run failed (or record a failed run where none was staged), with the
    reason, and release the store; the previous run stays served."""
    # BaseException: Ctrl-C too. A killed process never gets here; the next run clears what
    # it staged.
    _log.warning("scoring %s failed: %s", job.month.isoformat(), type(exc).__name__)
    reason = f"{type(exc).__name__}: {failure_message(exc)}"
    try:
        if run_id is not None:
            store.runs.fail(run_id, reason)
        else:
            store.runs.record_failed(
                month=job.month,
                extract_date=extract_date,
                model_name=settings.model_name,
                model_version="unknown",
                started_at=job.started_at,
                reason=reason,
            )
    finally:
        store.dispose()


def publish_computed(
    store: Store,
    settings: Settings,
    job: ScoringJob,
    model: LoadedModel,
    computed: Computed,
    progress: Progress = None,
) -> ScoreResult:
    """Build the cohorts' records, stage the run in ``store`` and publish it (one
    transaction), then prune beyond the retention window; a failure is recorded
    (``record_failure``) and raised. The store is released either way."""
    month, config, started_at, started = job.month, job.config, job.started_at, job.started
    extract_date: date | None = computed.extract_date
    run_id: int | None = None
    try:
        if computed.scores.empty:
            raise _no_one(month)
        scores, cohorts = computed.scores, computed.cohorts
        ranking_models, ranking_missing = computed.ranking_models, computed.ranking_missing
        n_opt_out, identifier_kind = computed.n_opt_out, computed.identifier_kind
        validation = computed.validation
        report(progress, "build cohorts", 0.8)
        cohorts["ranking"] = pd.Series(
            ranking_records(cohorts, config, computed.features, ranking_models),
            index=cohorts.index,
            dtype=object,
        )
        summary = cohort_summary(scores, cohorts, config)
        config_record = cohort_config_record(
            config, ranking_models=ranking_models, ranking_missing=ranking_missing
        )
        cohorts = cohorts.assign(
            item_json=cohort_items_json(
                cohorts,
                scores,
                {k: i["criteria"] for k, i in config_record["interventions"].items()},
                identifier_kind=identifier_kind,
            )
        )
        report(progress, "stage", 0.85)
        run_id = store.runs.begin(
            month=month,
            extract_date=extract_date,
            model_name=model.info.name,
            model_version=model.info.version,
            started_at=started_at,
        )
        store.runs.stage_scores(run_id, scores)
        store.runs.stage_cohorts(run_id, cohorts)
        store.runs.seal(run_id)  # PostgreSQL: the run's indexes, built once; part of staging
        report(progress, "publish", 0.97)
        info = store.runs.publish(
            run_id,
            n_type1_opt_outs_excluded=n_opt_out,
            expected_people=len(scores),
            identifier_kind=identifier_kind,
            details={
                "extract_validation": validation,
                "model_metrics": {
                    k: v for k, v in model.info.metrics.items() if k.startswith("validation_")
                },
                "mean_risk": float(scores["risk"].mean()),
                "cohort_config": config_record,
                "cohorts": summary,
                "pcns": sorted(map(str, scores["pcn_code"].unique())),
                "seconds_to_stage": round(time.perf_counter() - started, 2),
            },
        )
        pruned, prune_error = prune_after_publish(store, keep_months=settings.retain_months)
    except BaseException as exc:
        record_failure(store, settings, job, exc, run_id=run_id, extract_date=extract_date)
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
        cohort_sizes={k: int(v["eligible"]) for k, v in summary.items()},
        replaced_runs=info.replaced_runs,
        pruned_runs=pruned,
        prune_error=prune_error,
        identifier_kind=info.identifier_kind,
        ranking_models={k: f"{m.info.name} {m.info.version}" for k, m in ranking_models.items()},
        ranking_missing=ranking_missing,
    )


@dataclass
class Computed:
    """A month's scores and cohorts, computed by one engine, ready to publish."""

    extract_date: date
    validation: dict[str, Any]
    identifier_kind: IdentifierKind
    #: One row per person with every column the scores and the ranking models read.
    features: pd.DataFrame
    scores: pd.DataFrame
    cohorts: pd.DataFrame
    ranking_models: dict[str, LoadedModel]
    ranking_missing: list[str]
    #: Type 1 opt-outs left out, by practice (none when the deployment publishes them).
    opt_outs: dict[str, int]

    @property
    def n_opt_out(self) -> int:
        return sum(self.opt_outs.values())


def _no_one(month: date) -> DataError:
    return DataError(
        f"nobody is registered and alive on {month.isoformat()}",
        hint="choose a month the extract's registrations cover",
    )


def compute_on_duckdb(
    settings: Settings,
    data_dir: Path | str,
    *,
    month: date,
    model: LoadedModel,
    registry: ModelRegistry,
    config: CohortConfig,
    progress: Progress = None,
) -> Computed:
    """Validate, build features, score, explain and select cohorts in embedded DuckDB (the
    model-sized frame in pandas)."""
    with open_extract(settings, data_dir, progress=progress, at=0.05) as extract:
        check_as_of(month, extract.extract_date)
        extract_date = extract.extract_date
        validation = extract.summary.as_dict()
        # NHS numbers or pseudonyms (contract version 2): recorded with the run, so every
        # surface that serves it says which, and no pseudonym is checked as an NHS number.
        identifier_kind = extract.summary.manifest.identifier_kind
        report(progress, "build features", 0.2)
        features = build_features(extract.con, index_dates=[month])
    check_columns(config, [*features.columns, "risk"])
    opt_out = features["type1_opt_out"].astype(bool)
    opt_outs: dict[str, int] = {}
    if not settings.publish_type1_opt_outs:
        counted = features.loc[opt_out, "practice_code"].astype(str).value_counts()
        opt_outs = {str(k): int(v) for k, v in counted.items()}
        features = features.loc[~opt_out].reset_index(drop=True)
    if features.empty:
        raise _no_one(month)
    report(progress, f"score and explain {len(features):,} people", 0.35)
    # The scores keep what the criteria read, not every feature: at a million people the
    # model's features copied into the scores were 0.7 GB of the run's peak.
    scores = score_frame(model, features, carry=config.columns())
    ranking, ranking_models, ranking_missing = ranking_risks(
        registry, config, features, scores["nhs_number"]
    )
    # Choosing the members is the first half of building the cohorts (their records are
    # the second, at publication): timed as that step, not as scoring.
    report(progress, "build cohorts", 0.75)
    cohorts = build_cohorts(scores, config, ranking)
    return Computed(
        extract_date=extract_date,
        validation=validation,
        identifier_kind=identifier_kind,
        features=features,
        scores=scores,
        cohorts=cohorts,
        ranking_models=ranking_models,
        ranking_missing=ranking_missing,
        opt_outs=opt_outs,
    )


def compute_on_spark(
    settings: Settings,
    data_dir: Path | str,
    *,
    month: date,
    model: LoadedModel,
    registry: ModelRegistry,
    config: CohortConfig,
    progress: Progress = None,
) -> Computed:
    """``compute_on_duckdb`` on Apache Spark (``pipelines.spark_score``): the same values;
    only the run's scores (not every feature) come to the driver."""
    from riskstrat.engines.spark import spark_session
    from riskstrat.features.spark import duckdb_schema
    from riskstrat.features.sql import features_sql
    from riskstrat.pipelines.common import open_spark_extract
    from riskstrat.pipelines.spark_score import score_month_spark

    columns = [name for name, _ in duckdb_schema(features_sql())]
    check_columns(config, [*columns, "risk"])
    ranking_models, ranking_missing = load_ranking_models(registry, config, columns)
    # What the driver needs of the features: what publishing stores and the criteria read
    # (the cohorts themselves are selected on Spark).
    needed = {"nhs_number", "practice_code", "pcn_code", *COHORT_COLUMNS, *config.columns()}
    carried = [c for c in columns if c in needed]
    with spark_session(settings) as spark, open_spark_extract(settings, data_dir, spark) as extract:
        check_as_of(month, extract.extract_date)
        report(progress, "build features, score and explain on Spark", 0.2)
        sparked, opt_outs = score_month_spark(
            spark,
            month=month,
            model=model,
            ranking_models=ranking_models,
            config=config,
            carried=carried,
            keep_opt_outs=settings.publish_type1_opt_outs,
        )
        extract_date = extract.extract_date
        validation = extract.summary.as_dict()
        identifier_kind = extract.summary.manifest.identifier_kind
    if sparked.scores.empty:
        raise _no_one(month)
    # Percentile and rank over the run, on the driver, as the embedded path ranks them (the
    # cohorts were ranked on Spark and carry the ranking models' risks already).
    scores = ranked_scores(sparked.scores)
    return Computed(
        extract_date=extract_date,
        validation=validation,
        identifier_kind=identifier_kind,
        features=sparked.ranked_features,
        scores=scores,
        cohorts=sparked.cohorts,
        ranking_models=ranking_models,
        ranking_missing=ranking_missing,
        opt_outs=opt_outs,
    )


def prune_after_publish(store: Store, *, keep_months: int) -> tuple[list[int], str | None]:
    """Retention pruning once a month is published: the runs deleted, and why it failed (the
    exception's type) or None.

    The scoring has succeeded by then, so a failure here must not report it failed: the
    pruning retires the old months first, in one short transaction, and a prune that stops
    part way is finished by the next one (``RunRepository.prune``). It is logged, by its type only:
    a database error's text can quote the rows it was deleting."""
    try:
        return store.runs.prune(keep_months=keep_months), None
    except Exception as exc:
        _log.warning(
            "retention pruning after publishing failed (%s); the next run finishes it",
            type(exc).__name__,
        )
        return [], type(exc).__name__


def cohort_summary(
    scores: pd.DataFrame, cohorts: pd.DataFrame, config: CohortConfig
) -> dict[str, dict[str, Any]]:
    """Counts for the run's metadata: eligible, already served, expected admissions and
    admissions avoided, and eligible people per PCN. Aggregates only."""
    served = served_counts(scores, config)
    out: dict[str, dict[str, Any]] = {}
    for key, intervention in config.interventions.items():
        members = cohorts[cohorts["intervention"] == key]
        expected = float(members["risk"].sum())
        bed_days = (
            members["expected_bed_days"].sum(min_count=1)
            if "expected_bed_days" in members
            else float("nan")
        )
        out[key] = {
            "title": intervention.title,
            "eligible": len(members),
            "served_within_lookback": served[key],
            "expected_admissions_90d": round(expected, 2),
            "expected_admissions_avoided": (
                None if intervention.effect is None else round(expected * intervention.effect, 2)
            ),
            "expected_bed_days_saved": None if pd.isna(bed_days) else round(float(bed_days), 1),
            "by_pcn": {str(k): int(v) for k, v in members.groupby("pcn_code").size().items()},
        }
    return out


def cohort_config_record(
    config: CohortConfig,
    *,
    ranking_models: dict[str, LoadedModel] | None = None,
    ranking_missing: list[str] | None = None,
) -> dict[str, Any]:
    """What a run records of its cohort configuration, so that lists, exports and outcomes
    read the words and effects the run was made with, not today's file; for a list ranked
    by another model, which version ranked it (or that none could, and it fell back)."""
    models = ranking_models or {}
    missing = set(ranking_missing or [])

    def ranking(i: Any) -> dict[str, Any] | None:
        if i.rank_by is None:
            return None
        name = i.rank_by.model
        loaded = models.get(name)
        return {
            "model": name,
            "version": None if loaded is None else loaded.info.version,
            "label": i.rank_by.label,
            "fell_back": name in missing,
        }

    def ranked_by(i: Any) -> str:
        if i.rank_by is not None and i.rank_by.model in missing:
            return f"admission risk ({i.rank_by.model} has no champion yet)"
        return str(i.ranked_by)

    return {
        "version": config.version,
        "digest": config.digest,
        "model": config.model,
        "interventions": {
            key: {
                "title": i.title,
                "source": i.source,
                "effect": i.effect,
                "served_by": i.served_by,
                "lookback_days": i.lookback_days,
                "ranked_by": ranked_by(i),
                "ranking": ranking(i),
                "bed_days": None if i.bed_days is None else i.bed_days.model_dump(),
                "note": i.note,
                "criteria": {c.key: c.text for c in i.criteria},
            }
            for key, i in config.interventions.items()
        },
    }
