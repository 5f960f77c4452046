"""Training pipeline: extract -> monthly snapshots -> LightGBM + calibration -> evaluation,
baselines, fairness audit and gates -> model card -> MLflow (a new version, alias challenger).

Promotion to champion is a separate, gated step (``riskstrat.pipelines.promote``).

Why one module: the steps that build the training frame in few passes (pieces, splits,
compaction) and the run that uses them share the plan and the frame's layout; the bench times
them through this module's public steps. Splitting them is the next tidy-up.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from riskstrat.config import Settings, get_settings
from riskstrat.data.extract import read_oracle
from riskstrat.data.omop.report import read_mapping_coverage
from riskstrat.errors import DataError, UsageError
from riskstrat.features.build import (
    CHUNK_PEOPLE,
    GROUP_COLUMNS,
    KEY_COLUMNS,
    build_features,
    feature_columns,
    history_start,
    iter_feature_ranges,
    people_sample,
    population_size,
    sample_people,
)
from riskstrat.features.labels import build_labels
from riskstrat.modelling.baselines import baseline_rows, fit_baselines
from riskstrat.modelling.model import (
    IndexPlan,
    RiskModel,
    hold_out_people,
    plan_index_months,
    predict_risk,
)
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
from riskstrat.pipelines.common import Progress, open_extract, report
from riskstrat.pipelines.evaluate import (
    ChampionPredictions,
    EvaluationReport,
    card_context,
    draw_plots,
    evaluate_version,
    log_card,
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


def build_training_frame(
    con: Any,
    spec: ModelSpec,
    plan: IndexPlan,
    *,
    people: Sequence[str] | None = None,
    chunk_people: int = CHUNK_PEOPLE,
) -> pd.DataFrame:
    """Features and labels for every planned index month, type 1 opt-outs removed. With
    ``people``, the months the model is fitted on (trees, early stopping, calibration) hold
    only that sample; the held-out evaluation months always hold everyone."""
    pieces = training_parts(con, spec, plan, people=people, chunk_people=chunk_people)
    return pd.concat(pieces, ignore_index=True)


def training_parts(
    con: Any,
    spec: ModelSpec,
    plan: IndexPlan,
    *,
    people: Sequence[str] | None = None,
    censored: dict[date, int] | None = None,
    columns: Sequence[str] | None = None,
    chunk_people: int = CHUNK_PEOPLE,
) -> list[pd.DataFrame]:
    """``build_training_frame`` in pieces, a few months each, to concatenate (or to split with
    ``split_parts``) once DuckDB has been closed: at a million people, DuckDB's tables and
    the whole frame side by side were the peak of training's memory. With ``columns``, the
    pieces hold only those of the frame's columns (in the frame's order)."""
    return list(
        iter_training_parts(
            con,
            spec,
            plan,
            people=people,
            censored=censored,
            columns=columns,
            chunk_people=chunk_people,
        )
    )


#: Development months per features query. A query's cost grows with its rows, but less than
#: in proportion: on 2 cores (a shared machine, 2026-12-07, 12 sampled months of a
#: 300,000-person extract, CPU seconds) one month per query took 31-36 s, three 23-26 s,
#: six 20-21 s and all twelve 23 s. Six months of a sample (about 83,000 people) are about
#: 500,000 rows, which DuckDB's result and its pandas copy hold in a few hundred MB.
DEVELOPMENT_MONTHS_PER_QUERY = 6


def iter_training_parts(
    con: Any,
    spec: ModelSpec,
    plan: IndexPlan,
    *,
    people: Sequence[str] | None = None,
    censored: dict[date, int] | None = None,
    columns: Sequence[str] | None = None,
    chunk_people: int = CHUNK_PEOPLE,
) -> Iterator[pd.DataFrame]:
    """``training_parts`` one piece at a time, for a caller that keeps less of each: the
    development months' pieces (``iter_development_parts``), then the held-out months'
    (``iter_evaluation_parts``). ``chunk_people`` is ``build_features``' (the frame is the
    same whatever it is)."""
    yield from iter_development_parts(
        con, spec, plan, people=people, censored=censored, columns=columns,
        chunk_people=chunk_people,
    )  # fmt: skip
    yield from iter_evaluation_parts(
        con, spec, plan, censored=censored, columns=columns, chunk_people=chunk_people
    )


def iter_development_parts(
    con: Any,
    spec: ModelSpec,
    plan: IndexPlan,
    *,
    people: Sequence[str] | None = None,
    censored: dict[date, int] | None = None,
    columns: Sequence[str] | None = None,
    chunk_people: int = CHUNK_PEOPLE,
) -> Iterator[pd.DataFrame]:
    """The development months' pieces of the training frame (trees, early stopping,
    calibration): of ``people`` only, if given, several months per features query
    (``DEVELOPMENT_MONTHS_PER_QUERY``), with one labels query for them all."""
    development = list(plan.development_months)
    if not development:
        return
    codes = _censor_codes(spec)
    with ExitStack() as stack:
        # The sampled months read the sample's own copies of the event tables, made once.
        sample = stack.enter_context(people_sample(con, people)) if people is not None else None
        labels = _labels(con, spec, development, people=sample, censor_codes=codes)
        step = DEVELOPMENT_MONTHS_PER_QUERY
        for i in range(0, len(development), step):
            months = development[i : i + step]
            part = build_features(con, index_dates=months, people=sample, chunk_people=chunk_people)
            yield _labelled(
                part,
                _months_of(labels, months),
                spec=spec,
                censor_codes=codes,
                censored=censored,
                columns=columns,
            )
            del part


def iter_evaluation_parts(
    con: Any,
    spec: ModelSpec,
    plan: IndexPlan,
    *,
    censored: dict[date, int] | None = None,
    columns: Sequence[str] | None = None,
    chunk_people: int = CHUNK_PEOPLE,
) -> Iterator[pd.DataFrame]:
    """The held-out months' pieces of the training frame, one per month, of everyone.

    They are most of the frame's rows (a million people is ~800,000 rows a month), so they
    are built together in one pass over the extract, an NHS-number range at a time
    (``iter_feature_ranges``), each range made compact before the next is built, with one
    labels query for them all.
    """
    evaluation = list(plan.evaluation_months)
    if not evaluation:
        return
    codes = _censor_codes(spec)
    labels = _labels(con, spec, evaluation, people=None, censor_codes=codes)
    pieces: dict[date, list[pd.DataFrame]] = {month: [] for month in evaluation}
    for frame in iter_feature_ranges(con, index_dates=evaluation, chunk_people=chunk_people):
        # Compact before the next range's query: the held-out months' query results are the
        # largest of training.
        small = _compact(frame, spec.feature_names)
        del frame
        dates = small["index_date"].to_numpy()
        for month in evaluation:
            pieces[month].append(small.loc[dates == month])
        del small
    for month in evaluation:
        part = _concat_compact(pieces.pop(month), spec.feature_names)
        yield _labelled(
            part,
            _months_of(labels, [month]),
            spec=spec,
            censor_codes=codes,
            censored=censored,
            columns=columns,
            compact=False,
        )
        del part


def _censor_codes(spec: ModelSpec) -> list[str]:
    """The interventions that censor a person-month (none unless the spec censors)."""
    t = spec.training
    return list(t.censor_interventions) if t.post_intervention == "censor" else []


def _labels(
    con: Any,
    spec: ModelSpec,
    months: Sequence[date],
    *,
    people: Any,
    censor_codes: Sequence[str],
) -> pd.DataFrame:
    """The labels of every month of one group, in one query (sorted like the features)."""
    return build_labels(
        con,
        index_dates=list(months),
        horizon_days=spec.horizon_days,
        people=people,
        outcome=spec.outcome,
        censor_codes=censor_codes,
    )


def _months_of(labels: pd.DataFrame, months: Sequence[date]) -> pd.DataFrame:
    """The rows of ``labels`` (sorted by index date) in ``months``: one block of rows."""
    return labels.loc[labels["index_date"].isin(months).to_numpy()]


def _labelled(
    part: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    spec: ModelSpec,
    censor_codes: Sequence[str],
    censored: dict[date, int] | None,
    columns: Sequence[str] | None,
    compact: bool = True,
) -> pd.DataFrame:
    """A piece of the training frame: features with their ``label``, made compact (unless it
    is already), without type 1 opt-outs or censored rows, and only ``columns`` if given."""
    # Both come sorted by index date and NHS number over the same population.
    for key in KEY_COLUMNS:
        if not np.array_equal(part[key].to_numpy(), labels[key].to_numpy()):
            raise RuntimeError(f"features and labels disagree on {key}")
    part["label"] = labels["label"].to_numpy()
    keep = ~part["type1_opt_out"].astype(bool).to_numpy()
    if censor_codes:
        # training.post_intervention: censor: reached before the outcome, left out.
        cut = labels["censored"].to_numpy().astype(bool) & keep
        if censored is not None:
            for month in part["index_date"].to_numpy()[cut].tolist():
                censored[month] = censored.get(month, 0) + 1
        keep &= ~cut
    if columns is not None:
        wanted = set(columns)
        part = part[[c for c in part.columns if c in wanted]]
    if compact:
        part = _compact(part, spec.feature_names)  # before the copy that drops opt-outs
    return part.loc[keep]


def _concat_compact(pieces: list[pd.DataFrame], names: Sequence[str]) -> pd.DataFrame:
    """Compacted pieces of one frame, one after another, as ``_compact`` would have made the
    whole frame: a model feature that is a whole number in one piece and has missing values
    (so floats) in another is 32-bit floats throughout, not the 64-bit floats that
    concatenating an int32 and a float32 column gives."""
    frame = pd.concat(pieces, ignore_index=True) if len(pieces) != 1 else pieces[0]
    pieces.clear()
    widened = {
        name: frame[name].astype(np.float32)
        for name in names
        if name in frame.columns
        and pd.api.types.is_float_dtype(frame[name].dtype)
        and frame[name].dtype != np.float32
    }
    return frame.assign(**widened) if widened else frame.reset_index(drop=True)


def training_columns(spec: ModelSpec) -> list[str]:
    """The columns of the training frame that training reads: the keys, the audit's groups,
    every feature (a champion compared on the same rows may use some this spec leaves out)
    and the label; not where people are registered, nor the cohorts' facts."""
    wanted = [*KEY_COLUMNS, *GROUP_COLUMNS, *spec.fairness.attributes, *feature_columns()]
    return list(dict.fromkeys([*wanted, "label"]))


def _compact(frame: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Model features as 32-bit numbers (the trees read float32 anyway), and each text or
    date column holding one object per distinct value instead of one per row: a million
    people's held-out months are millions of rows, and a Python string costs 50-60 bytes."""
    out: dict[str, pd.Series] = {}
    small = np.iinfo(np.int32)
    for name in names:
        column = frame[name]
        if pd.api.types.is_float_dtype(column.dtype):
            out[name] = column.astype(np.float32)
        elif column.dtype == np.int64 and (
            column.empty or (column.min() >= small.min and column.max() <= small.max)
        ):
            out[name] = column.astype(np.int32)
    for name in frame.columns:
        if frame[name].dtype == object and name not in out:
            values = frame[name].to_numpy()
            codes, uniques = pd.factorize(values)
            if len(uniques) == 0:
                continue
            shared = np.asarray(uniques, dtype=object)[codes]
            missing = codes < 0
            shared[missing] = values[missing]  # None stays None, NaN stays NaN
            out[name] = pd.Series(shared, index=frame.index, dtype=object)
    return frame.assign(**out) if out else frame


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


def split_by_plan(frame: pd.DataFrame, spec: ModelSpec, plan: IndexPlan) -> dict[str, pd.DataFrame]:
    """The frame's rows for each part of the plan (``train``, ``stop``, ``calibrate``,
    ``evaluate``), as copies. Without early-stopping months, a share of the training months'
    people (``training.early_stopping_people``) is held out to stop on instead."""
    t = spec.training
    masks = {
        name: frame["index_date"].isin(months).to_numpy()
        for name, months in (("train", plan.train_months),
                             ("stop", plan.early_stopping_months),
                             ("calibrate", plan.calibration_months),
                             ("evaluate", plan.evaluation_months))
    }  # fmt: skip
    if not plan.early_stopping_months and t.early_stopping_people > 0:
        # Early stopping on people the trees never see, in the training months themselves.
        # Each part is one copy out of the frame, never a copy of a copy.
        held = np.zeros(len(frame), dtype=bool)
        held[masks["train"]] = hold_out_people(
            frame["nhs_number"].loc[masks["train"]],
            share=t.early_stopping_people,
            seed=spec.evaluation.seed,
        )
        masks["stop"], masks["train"] = held, masks["train"] & ~held
    parts = {name: frame.loc[mask] for name, mask in masks.items()}
    for label in ("train", "evaluate"):
        if parts[label].empty or parts[label]["label"].nunique() < 2:
            raise DataError(
                f"the {label} months need people with and without the outcome",
                hint="use an extract with more people or more months of history",
            )
    return parts


def split_parts(
    pieces: list[pd.DataFrame], spec: ModelSpec, plan: IndexPlan
) -> dict[str, pd.DataFrame]:
    """``split_by_plan`` of the pieces' concatenation (``training_parts``), without making
    it: the same rows of each part, in the same order (with a fresh index). The list is
    emptied as the pieces are copied into their parts, so that each is let go once copied,
    and a piece that is all one part is that part's rows without a copy."""
    t = spec.training
    months = {
        "train": set(plan.train_months),
        "stop": set(plan.early_stopping_months),
        "calibrate": set(plan.calibration_months),
        "evaluate": set(plan.evaluation_months),
    }
    held: list[npt.NDArray[np.bool_]] | None = None
    if not plan.early_stopping_months and t.early_stopping_people > 0:
        # Early stopping on people the trees never see, chosen from the training months'
        # people exactly as split_by_plan chooses them from the whole frame.
        in_train = [p["index_date"].isin(plan.train_months).to_numpy() for p in pieces]
        numbers = pd.concat(
            [p["nhs_number"].loc[m] for p, m in zip(pieces, in_train, strict=True)],
            ignore_index=True,
        )
        flags = hold_out_people(numbers, share=t.early_stopping_people, seed=spec.evaluation.seed)
        cuts = np.cumsum([int(m.sum()) for m in in_train])[:-1]
        held = np.split(flags, cuts)
        del numbers, flags
    empty = pieces[0].iloc[:0] if pieces else pd.DataFrame()  # a part with no rows
    bits: dict[str, list[pd.DataFrame]] = {name: [] for name in months}
    for i in range(len(pieces)):
        piece = pieces[i]
        dates = piece["index_date"]
        masks = {name: dates.isin(list(m)).to_numpy() for name, m in months.items()}
        if held is not None:
            train_rows = np.flatnonzero(masks["train"])
            stop = np.zeros(len(piece), dtype=bool)
            stop[train_rows[held[i]]] = True
            masks["stop"], masks["train"] = stop, masks["train"] & ~stop
        for name, mask in masks.items():
            if mask.all():
                bits[name].append(piece)
            elif mask.any():
                bits[name].append(piece.loc[mask])
        pieces[i] = pd.DataFrame()  # let it go once its rows are in their parts
        del piece
    pieces.clear()
    parts: dict[str, pd.DataFrame] = {}
    for name in months:
        found = bits.pop(name) or [empty]
        part = pd.concat(found, ignore_index=True) if len(found) > 1 else found[0]
        parts[name] = part.reset_index(drop=True)
        del found, part
    for label in ("train", "evaluate"):
        if parts[label].empty or parts[label]["label"].nunique() < 2:
            raise DataError(
                f"the {label} months need people with and without the outcome",
                hint="use an extract with more people or more months of history",
            )
    return parts


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
