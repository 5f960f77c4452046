"""Training pipeline: extract -> monthly snapshots -> LightGBM + calibration -> evaluation,
baselines, fairness audit and gates -> model card -> MLflow (a new version, alias challenger).

Promotion to champion is a separate, gated step (``riskstrat.pipelines.promote``).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from riskstrat.config import Settings, get_settings
from riskstrat.data.extract import read_oracle
from riskstrat.data.omop.report import read_mapping_coverage
from riskstrat.errors import DataError, UsageError
from riskstrat.features.build import (
    KEY_COLUMNS,
    build_features,
    history_start,
    people_sample,
    population_size,
    sample_people,
)
from riskstrat.features.labels import build_labels
from riskstrat.modelling.baselines import fit_baselines
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
    con: Any, spec: ModelSpec, plan: IndexPlan, *, people: Sequence[str] | None = None
) -> pd.DataFrame:
    """Features and labels for every planned index month, type 1 opt-outs removed. With
    ``people``, the months the model is fitted on (trees, early stopping, calibration) hold
    only that sample; the held-out evaluation months always hold everyone."""
    return pd.concat(training_parts(con, spec, plan, people=people), ignore_index=True)


def training_parts(
    con: Any,
    spec: ModelSpec,
    plan: IndexPlan,
    *,
    people: Sequence[str] | None = None,
    censored: dict[date, int] | None = None,
) -> list[pd.DataFrame]:
    """``build_training_frame`` in pieces, a few months each, to concatenate once DuckDB
    has been closed: at a million people, DuckDB's tables and the whole frame side by side
    were the peak of training's memory."""
    return list(iter_training_parts(con, spec, plan, people=people, censored=censored))


def iter_training_parts(
    con: Any,
    spec: ModelSpec,
    plan: IndexPlan,
    *,
    people: Sequence[str] | None = None,
    censored: dict[date, int] | None = None,
) -> Iterator[pd.DataFrame]:
    """``training_parts`` one piece at a time, for a caller that keeps less of each."""
    # A few months per query: DuckDB's result and its pandas copy are the peak of training
    # memory, so each chunk is made compact before the next is built. Held-out months hold
    # everyone (a million people is ~800,000 rows a month), so they go one at a time.
    censor_codes = (
        spec.training.censor_interventions if spec.training.post_intervention == "censor" else []
    )
    chunks = [
        *((plan.development_months[i : i + 3], True)
          for i in range(0, len(plan.development_months), 3)),
        *(((month,), False) for month in plan.evaluation_months),
    ]  # fmt: skip
    with ExitStack() as stack:
        # The sampled months read the sample's own copies of the event tables, made once.
        sample = stack.enter_context(people_sample(con, people)) if people is not None else None
        for months, sampled in chunks:
            who = sample if sampled else None
            part = build_features(con, index_dates=list(months), people=who)
            labels = build_labels(
                con,
                index_dates=list(months),
                horizon_days=spec.horizon_days,
                people=who,
                outcome=spec.outcome,
                censor_codes=censor_codes,
            )
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
            del labels
            part = _compact(part, spec.feature_names)  # before the copy that drops opt-outs
            yield part.loc[keep]
            del part


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


def _champion_predictions(
    registry: ModelRegistry, spec: ModelSpec, rows: pd.DataFrame
) -> ChampionPredictions | None:
    """The current champion's risks on the same rows, if there is a comparable champion."""
    try:
        champion = registry.load(spec.name, CHAMPION)
    except ModelNotFoundError:
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
    report(progress, "validate extract", 0.0)
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
        pieces = training_parts(extract.con, spec, plan, people=people, censored=censored)
        validation_summary = extract.summary.as_dict()
        extract_date, source = extract.extract_date, extract.summary.manifest.source
        manifest = extract.summary.manifest
    frame = pd.concat(pieces, ignore_index=True)  # DuckDB's memory is released by now
    del pieces

    names = spec.feature_names
    parts = split_by_plan(frame, spec, plan)
    del frame  # the parts are copies
    train = parts["train"]

    report(progress, f"fit LightGBM on {len(train):,} rows", 0.25)
    model = fit_model(spec, parts)
    report(progress, "fit baselines", 0.5)
    baselines = fit_baselines(
        spec.evaluation.baselines, train[names], train["label"], seed=spec.evaluation.seed
    )

    report(progress, "evaluate on held-out months (with bootstrap CIs)", 0.6)
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
    evaluation_rows = parts["evaluate"]
    primary_rows = evaluation_rows.loc[evaluation_rows["index_date"] == plan.validation_month]
    champion = _champion_predictions(registry, spec, primary_rows)
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
        "train_rows": float(len(train)),
        "train_people_fraction": people_fraction,
        "train_event_rate": float(train["label"].mean()),
        "early_stopping_rows": float(len(parts["stop"])),
        "calibration_rows": float(len(parts["calibrate"])),
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
            baselines=baselines,
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
            X_example=train[names],
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
                # The training window's distributions, for `riskstrat monitor`'s drift checks.
                # With an OMOP import's mapping coverage (None otherwise), for its drift check.
                "monitoring/reference.json": training_reference(model, train, names)
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
            train_rows=len(train),
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
        train_rows=len(train),
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
