"""The monthly scoring's computing on Apache Spark: features, risk, exact TreeSHAP reasons
and cohorts, with the same values as the embedded path (``--engine spark``).

* Features: the one features query, transpiled (``features.spark``).
* Scores: ``mapInPandas`` over the feature rows; each Python worker takes the model from a
  broadcast (the LightGBM model text and calibrator, sent once) and runs the same
  ``contributions_and_log_odds`` and ``explain_as_json`` the embedded path runs, on its
  partition's batches. A row's risk and reasons depend only on that row, so partitioning
  changes nothing.
* Cohorts: ``cohorts.sql.cohort_sql``, transpiled: eligibility as predicates, ranks as a
  window function.
* Then the run's rows come to the driver (they go to one ICB's serving store in one
  transaction): percentile and rank over the run, and the rest of publishing, are the
  embedded path's own functions.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pandas as pd

from riskstrat.cohorts.select import CohortConfig
from riskstrat.cohorts.sql import COHORT_SQL_COLUMNS, cohort_sql
from riskstrat.engines.dialect import to_spark
from riskstrat.engines.spark import to_pandas_in_slices
from riskstrat.explain.reasons import contributions_and_log_odds, explain_as_json
from riskstrat.features.spark import build_features_spark
from riskstrat.modelling.model import Calibrator, calibrated_risk, predict_risk
from riskstrat.modelling.registry import LoadedModel

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

#: The scored rows' view, which the cohort queries read.
SCORES_VIEW = "_riskstrat_scores"

#: Models a worker has rebuilt from a broadcast, by the run's key.
_WORKER_MODELS: dict[str, Any] = {}


@dataclass(frozen=True)
class _Payload:
    """What each worker needs: the models as LightGBM text (exact: every threshold and leaf
    value is written with 17 significant digits) and their calibrators."""

    model: tuple[str, Calibrator]
    ranking: tuple[tuple[str, str, Calibrator], ...]
    carried: tuple[str, ...]
    reasons: bool


def _models(
    payload_id: str, payload: _Payload
) -> tuple[lgb.Booster, list[tuple[str, lgb.Booster]]]:
    held = _WORKER_MODELS.get(payload_id)
    if held is None:
        main = lgb.Booster(model_str=payload.model[0])
        ranking = [(name, lgb.Booster(model_str=text)) for name, text, _ in payload.ranking]
        held = _WORKER_MODELS[payload_id] = (main, ranking)
    return held


def ranking_column(index: int) -> str:
    """The scores' column holding the ``index``-th ranking model's risk."""
    return f"_ranking_risk_{index}"


def _score_batches(
    batches: Iterator[pd.DataFrame], payload_id: str, payload: _Payload
) -> Iterator[pd.DataFrame]:
    booster, ranking = _models(payload_id, payload)
    calibrator = payload.model[1]
    names = list(booster.feature_name())
    for frame in batches:
        frame = frame.reset_index(drop=True)
        out = frame[list(payload.carried)].copy()
        features = frame[names]  # the model's columns, taken once for the batch
        if payload.reasons:
            # As the embedded path: the log-odds from the explanation's pass over the trees.
            contributions, log_odds = contributions_and_log_odds(booster, features)
            out["risk"] = calibrated_risk(log_odds, calibrator)
            explained = explain_as_json(
                booster, features, calibrator=calibrator, contributions=contributions
            )
            out["reasons"] = explained.reasons.to_pylist()
            out["contributions"] = explained.contributions.to_pylist()
        else:
            out["risk"] = predict_risk(booster, features, calibrator)
        for i, ((_, other), (_, _, cal)) in enumerate(zip(ranking, payload.ranking, strict=True)):
            out[ranking_column(i)] = predict_risk(other, frame[list(other.feature_name())], cal)
        yield out


@dataclass
class SparkScores:
    """A month scored on Spark, on the driver: ``scores`` as ``score.score_frame`` returns
    them (before percentile and rank; only the columns publishing reads), each ranking
    model's risk in the scores' row order, the cohorts as ``select.build_cohorts`` returns
    them, and the features of the people a ranking model ranks (for its reasons)."""

    scores: pd.DataFrame
    ranking: dict[str, npt.NDArray[np.float64]]
    cohorts: pd.DataFrame
    ranked_features: pd.DataFrame


def score_month_spark(
    spark: SparkSession,
    *,
    month: date,
    model: LoadedModel,
    ranking_models: dict[str, LoadedModel],
    config: CohortConfig,
    carried: Sequence[str],
    keep_opt_outs: bool,
) -> tuple[SparkScores, dict[str, int]]:
    """Features, scores, reasons and cohorts for ``month`` on Spark (the contract tables are
    temp views in ``spark``); and how many type 1 opt-outs were left out, by practice.

    ``carried``: the feature columns the scores keep (identifiers, practice and PCN, the
    cohort facts, what the criteria read); only these and the scores come to the driver,
    with the features of the people on lists another model ranks."""
    features = build_features_spark(spark, index_dates=[month])
    features = features.persist()
    try:
        opt_outs: dict[str, int] = {}
        if not keep_opt_outs:
            counted = features.filter("type1_opt_out").groupBy("practice_code").count()
            opt_outs = {str(r[0]): int(r[1]) for r in counted.collect()}
            features = features.filter("NOT type1_opt_out")
        scored = _scored(spark, features, model, ranking_models, carried).persist()
        try:
            scored.createOrReplaceTempView(SCORES_VIEW)
            names = list(ranking_models)
            cohorts = _cohorts(spark, config, names)
            frame = to_pandas_in_slices(scored, key="nhs_number")
        finally:
            spark.catalog.dropTempView(SCORES_VIEW)
            scored.unpersist()
        ranked = _ranked_features(spark, features, cohorts, config, ranking_models)
    finally:
        features.unpersist()
    frame = frame.sort_values("nhs_number", kind="stable").reset_index(drop=True)
    ranking = {
        name: frame.pop(ranking_column(i)).to_numpy(dtype=np.float64)
        for i, name in enumerate(names)
    }
    # Arrow hands each column over as a block of its own; one consolidation now saves the
    # columns added later (percentile, rank) a fragmented frame.
    frame = frame.copy()
    scores = SparkScores(scores=frame, ranking=ranking, cohorts=cohorts, ranked_features=ranked)
    return scores, opt_outs


def _ranked_features(
    spark: SparkSession,
    features: DataFrame,
    cohorts: pd.DataFrame,
    config: CohortConfig,
    ranking_models: dict[str, LoadedModel],
) -> pd.DataFrame:
    """The features the ranking models read, for the people on the lists they rank: their
    reasons are worded on the driver, as the embedded path words them."""
    keys = [
        k
        for k, i in config.interventions.items()
        if i.rank_by and i.rank_by.model in ranking_models
    ]
    columns = list(dict.fromkeys(f for m in ranking_models.values() for f in m.feature_names))
    people = cohorts.loc[cohorts["intervention"].isin(keys), "nhs_number"].drop_duplicates()
    if not columns or people.empty:
        return pd.DataFrame({"nhs_number": pd.Series([], dtype=str)})
    wanted = spark.createDataFrame(pd.DataFrame({"nhs_number": people.astype(str).to_numpy()}))
    chosen = features.join(wanted.hint("broadcast"), "nhs_number", "left_semi")
    return chosen.select("nhs_number", *columns).toPandas()


def _scored(
    spark: SparkSession,
    features: DataFrame,
    model: LoadedModel,
    ranking_models: dict[str, LoadedModel],
    carried: Sequence[str],
    *,
    reasons: bool = True,
) -> DataFrame:
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    payload = _Payload(
        model=(model.booster.model_to_string(), model.calibrator),
        ranking=tuple(
            (name, m.booster.model_to_string(), m.calibrator) for name, m in ranking_models.items()
        ),
        carried=tuple(carried),
        reasons=reasons,
    )
    broadcast = spark.sparkContext.broadcast(payload)
    # Workers keep the models they rebuilt by this key, one per run (a Python worker serves
    # many tasks, and rebuilding the boosters and TreeSHAP tables per batch would cost more
    # than scoring it).
    key = uuid.uuid4().hex
    fields = [f for f in features.schema.fields if f.name in set(carried)]
    by_name = {f.name: f for f in fields}
    schema = StructType(
        [by_name[c] for c in carried]
        + [StructField("risk", DoubleType())]
        + (
            [StructField("reasons", StringType()), StructField("contributions", StringType())]
            if reasons
            else []
        )
        + [StructField(ranking_column(i), DoubleType()) for i in range(len(ranking_models))]
    )

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        return _score_batches(batches, key, broadcast.value)

    return features.mapInPandas(score, schema)


def predict_spark(spark: SparkSession, *, as_of: date, model: LoadedModel) -> pd.DataFrame:
    """``nhs_number`` and ``risk`` for everyone registered and alive on ``as_of`` on Spark,
    type 1 opt-outs left out, in NHS-number order (``pipelines.predict`` on Spark)."""
    features = build_features_spark(spark, index_dates=[as_of]).filter("NOT type1_opt_out")
    scored = _scored(spark, features, model, {}, ["nhs_number"], reasons=False)
    frame = scored.toPandas()
    return frame.sort_values("nhs_number", kind="stable").reset_index(drop=True)


def _cohorts(spark: SparkSession, config: CohortConfig, ranking_names: list[str]) -> pd.DataFrame:
    parts = []
    for intervention in config.interventions.values():
        rank_by = intervention.rank_by
        column = (
            ranking_column(ranking_names.index(rank_by.model))
            if rank_by is not None and rank_by.model in ranking_names
            else None
        )
        sql = cohort_sql(intervention, source=SCORES_VIEW, ranking_column=column)
        part = spark.sql(to_spark(sql)).toPandas()
        parts.append(part.sort_values("rank").reset_index(drop=True))
    cohorts = pd.concat(parts, ignore_index=True)[list(COHORT_SQL_COLUMNS)]
    cohorts["criteria"] = pd.Series(
        [list(v) for v in cohorts["criteria"]], index=cohorts.index, dtype=object
    )
    cohorts["rank"] = cohorts["rank"].astype(np.int64)
    return cohorts
