"""Benchmarks that anyone can rerun: each stage in its own process, timed, with its peak memory.

``riskstrat bench`` runs the chosen stages at one or more population sizes. Each stage runs
in a child process (``python -m riskstrat.bench.stages STAGE ...``) so that its peak resident memory
is its own, read from the operating system when the child exits. Results are printed as a
table and written as JSON under a git-ignored folder, with a description of the machine.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

    from riskstrat.config import Settings

STAGES = ("generate", "train", "features", "explain", "score", "api", "generate-omop",
          "import-omop", "sampling")  # fmt: skip
BENCH_EXTRACT_DATE = date(2026, 11, 1)


@dataclass(frozen=True)
class StageResult:
    stage: str
    patients: int
    seconds: float
    rows: int
    peak_rss_mb: float
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_second": self.rows_per_second}


def process_cpu_seconds() -> float:
    """CPU time this process has used so far, on all its threads (DuckDB's included), in
    user and system mode. Unlike wall time it leaves out time the machine gave to others,
    which on a shared 2-core machine moves wall times by 20% or more from minute to minute.
    """
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_times() -> list[int] | None:
    """The machine's CPU time counters (Linux ``/proc/stat``: user, nice, system, idle,
    iowait, irq, softirq, steal), or None where there are none."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if first[0] != "cpu" or len(first) < 9:
        return None
    return [int(v) for v in first[1:9]]


def cpu_shares(before: list[int] | None, after: list[int] | None) -> dict[str, float | None]:
    """Shares of the time between two ``cpu_times`` readings that the machine was busy and
    that the hypervisor took (steal); None where they could not be read."""
    if before is None or after is None:
        return {"machine_busy_share": None, "cpu_steal_share": None}
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta)
    if total <= 0:
        return {"machine_busy_share": None, "cpu_steal_share": None}
    idle = delta[3] + delta[4]
    return {
        "machine_busy_share": round((total - idle - delta[7]) / total, 3),
        "cpu_steal_share": round(delta[7] / total, 3),
    }


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory_gb = round(pages * size / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        pass
    packages = {}
    for name in ("riskstrat", "duckdb", "lightgbm", "numpy", "pandas", "pyarrow"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "missing"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "packages": packages,
    }


# ----------------------------------------------------------------------------------------
# Stages (run inside the child process)


def _generate(args: dict[str, Any], out: Path, fmt: str, *, oracle: bool) -> tuple[Any, float]:
    """The bench's population (its size, seed and months), written as ``fmt``; and seconds."""
    from riskstrat.synth import generate_extract

    started = time.perf_counter()
    summary = generate_extract(
        out,
        n_patients=int(args["patients"]),
        seed=int(args.get("seed", 1)),
        months=int(args.get("months", 48)),
        extract_date=BENCH_EXTRACT_DATE,
        fmt=fmt,  # type: ignore[arg-type]
        overwrite=True,
        oracle=oracle,
    )
    return summary, time.perf_counter() - started


def _stage_generate(args: dict[str, Any]) -> dict[str, Any]:
    out = Path(args["workdir"]) / "extract"
    summary, seconds = _generate(
        args, out, args.get("format", "parquet"), oracle=bool(args.get("oracle", True))
    )
    files = [p for p in out.iterdir() if p.is_file()]
    detail: dict[str, Any] = {
        "rows_by_table": dict(summary.rows),
        "extract_mb": round(sum(p.stat().st_size for p in files) / 1024**2, 1),
        "format": args.get("format", "parquet"),
        "months": int(args.get("months", 48)),
    }
    oracle_path = getattr(summary, "oracle_path", None)
    if oracle_path:
        detail["oracle_dates"] = [str(d) for d in getattr(summary, "oracle_dates", ())]
    return {"seconds": seconds, "rows": sum(summary.rows.values()), "detail": detail}


#: The OMOP import's target (issue 22): a CDM of 1,000,000 persons into an extract in under 2
#: minutes on 2 cores, peak memory under 6 GB. The generator's population stops at 909,091
#: (the synthetic NHS number range), so the time is also given per million persons.
OMOP_IMPORT_SECONDS_PER_MILLION = 120.0
OMOP_IMPORT_PEAK_RSS_GB = 6.0
#: CDM tables whose rows are the clinical record (the vocabulary and places are not).
_CLINICAL_TABLES = (
    "observation_period",
    "death",
    "visit_occurrence",
    "condition_occurrence",
    "drug_exposure",
    "measurement",
    "observation",
    "procedure_occurrence",
)


def _stage_generate_omop(args: dict[str, Any]) -> dict[str, Any]:
    """The generator's population written as an OMOP CDM 5.4 (a DuckDB file)."""
    out = Path(args["workdir"]) / "omop"
    summary, seconds = _generate(args, out, "omop", oracle=False)
    clinical = sum(summary.rows.get(t, 0) for t in _CLINICAL_TABLES)
    detail = {
        "rows_by_table": dict(summary.rows),
        "clinical_rows": clinical,
        "cdm_mb": round((out / "cdm.duckdb").stat().st_size / 1024**2, 1),
    }
    return {"seconds": seconds, "rows": clinical, "detail": detail}


def _stage_import_omop(args: dict[str, Any]) -> dict[str, Any]:
    """``riskstrat import omop`` of the CDM the generate-omop stage left, validation of the
    written extract included, with the deployment's DuckDB limits."""
    from riskstrat.config import Settings
    from riskstrat.data.omop import import_omop

    cdm = Path(args["workdir"]) / "omop"
    if not (cdm / "cdm.duckdb").is_file():
        raise FileNotFoundError("the import-omop stage needs the generate-omop stage before it")
    settings = Settings(home=Path(args["workdir"]) / "home")
    steps = _StepTimer()
    started = time.perf_counter()
    result = import_omop(
        cdm / "cdm.duckdb",
        Path(args["workdir"]) / "omop-extract",
        sites=cdm / "site_map.csv",
        imd=cdm / "imd_lookup.csv",
        overwrite=True,
        scratch_dir=settings.home / "duckdb-tmp",
        memory_limit=settings.duckdb_memory_limit,
        threads=settings.duckdb_threads,
        progress=steps,
    )
    steps("end", 1.0)
    seconds = time.perf_counter() - started
    tables = result.report["source_tables"]
    clinical = sum(tables[t]["rows_read"] for t in _CLINICAL_TABLES if t in tables)
    persons = int(result.report["persons"]["read"])
    per_million = seconds * 1_000_000 / max(persons, 1)
    detail = {
        "persons": persons,
        "clinical_rows": clinical,
        "rows_written": dict(result.rows),
        "seconds_by_step": steps.seconds(),
        "seconds_per_million_persons": round(per_million, 1),
        "duckdb_memory_limit": settings.duckdb_memory_limit,
        "targets": [
            {"name": "seconds per million persons", "value": per_million,
             "target": f"<= {OMOP_IMPORT_SECONDS_PER_MILLION:g}",
             "met": per_million <= OMOP_IMPORT_SECONDS_PER_MILLION}
        ],
        "peak_rss_target_gb": OMOP_IMPORT_PEAK_RSS_GB,
    }  # fmt: skip
    return {"seconds": seconds, "rows": clinical, "detail": detail}


#: Model quality targets of issue 4, checked by the train stage (never by a test).
MODEL_TARGETS = {
    "auroc_ratio_to_oracle": (">=", 0.95),
    "auroc_gain_over_each_baseline": (">=", 0.02),
    "oe": ("within", (0.95, 1.05)),
    "calibration_slope": ("within", (0.9, 1.1)),
    "share_flagged_ratio_to_oracle": ("<=", 1.3),
    "train_seconds": ("<=", 300.0),
}


def _meets(value: float, op: str, bound: Any) -> bool:
    if op == ">=":
        return value >= float(bound)
    if op == "<=":
        return value <= float(bound)
    lo, hi = bound
    return float(lo) <= value <= float(hi)


class _StepTimer:
    """A pipeline progress callback that times each reported step until the next one."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []

    def __call__(self, step: str, _fraction: float) -> None:
        # Steps that carry a count ("fit LightGBM on 1,628,650 rows") are named by their
        # first words, so runs of different sizes line up.
        name = re.sub(r"\s*\b(on|for)?\s*[0-9][0-9,]*.*$", "", step) or step
        self.marks.append((name, time.perf_counter()))

    def seconds(self) -> dict[str, float]:
        return {
            name: round(self.marks[i + 1][1] - at, 2)
            for i, (name, at) in enumerate(self.marks[:-1])
        }


def _stage_train(args: dict[str, Any]) -> dict[str, Any]:
    """Train, evaluate and register on the extract the generate stage left (with its oracle)."""
    from riskstrat.config import Settings
    from riskstrat.pipelines.train import run_training

    extract = Path(args["workdir"]) / "extract"
    if not (extract / "manifest.json").is_file():
        raise FileNotFoundError("the train stage needs the generate stage before it")
    settings = Settings(home=Path(args["workdir"]) / "home")
    steps = _StepTimer()
    started = time.perf_counter()
    spec_dir = Path(args["spec_dir"]) if args.get("spec_dir") else None
    result = run_training(extract, spec_dir=spec_dir, settings=settings, progress=steps)
    seconds = time.perf_counter() - started
    m, report = result.metrics, result.report
    gains = {b["key"]: b["auroc_difference"]["value"] for b in report.baselines[1:]}
    measured = {
        "auroc": m["validation_auroc"],
        "oracle_auroc": m.get("validation_oracle_auroc"),
        "auroc_ratio_to_oracle": m.get("validation_auroc_ratio_to_oracle"),
        "auroc_gain_over_each_baseline": min(gains.values()) if gains else None,
        "oe": m["validation_oe"],
        "calibration_slope": m["validation_calibration_slope"],
        "share_flagged_for_70pct_recall": m["validation_share_flagged_for_70pct_recall"],
        "share_flagged_ratio_to_oracle": (
            m["validation_share_flagged_for_70pct_recall"]
            / m["validation_oracle_share_flagged_for_70pct_recall"]
            if "validation_oracle_share_flagged_for_70pct_recall" in m
            else None
        ),
        "train_seconds": seconds,
    }
    targets = []
    for name, (op, bound) in MODEL_TARGETS.items():
        value = measured[name]
        targets.append(
            {
                "name": name,
                "value": value,
                "target": f"{op} {bound}",
                "met": None if value is None else _meets(float(value), op, bound),
            }
        )
    detail = {
        "measured": measured,
        "step_seconds": steps.seconds(),
        "baseline_gains": gains,
        "targets": targets,
        "train_rows": result.train_rows,
        "train_months": len(result.plan.train_months),
        "evaluation_rows": result.validation_rows,
        "gates_passed": report.gates_passed,
    }
    return {"seconds": seconds, "rows": result.train_rows, "detail": detail}


#: How much held-out AUROC the training sample may cost against training on everyone.
SAMPLING_AUROC_TOLERANCE = 0.005


def _stage_sampling(args: dict[str, Any]) -> dict[str, Any]:
    """What the training sample costs: the production spec fitted on its sample of people
    and on everyone, in the same months, judged on the same held-out month.

    Both fits go through the training pipeline's own steps (``training_plan``,
    ``training_sample``, ``split_by_plan``, ``fit_model``); the sample's rows are taken from
    everyone's, which the features tests show are equal to a sample's own. Fitting on
    everyone needs several times the train stage's memory (about 15 GB at 909,091 people),
    so this stage is a measurement, not a way to train. ``spec_dir`` in the stage's
    arguments, as for the train stage, names another spec than the default.
    """
    import dataclasses

    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from riskstrat.config import Settings
    from riskstrat.modelling.spec import default_spec_dir, load_spec
    from riskstrat.pipelines.common import open_extract
    from riskstrat.pipelines.train import (
        fit_model,
        iter_training_parts,
        split_by_plan,
        training_plan,
        training_sample,
    )

    extract = Path(args["workdir"]) / "extract"
    if not (extract / "manifest.json").is_file():
        raise FileNotFoundError("the sampling stage needs the generate stage before it")
    settings = Settings(home=Path(args["workdir"]) / "home")
    spec = load_spec(Path(args["spec_dir"]) if args.get("spec_dir") else default_spec_dir())
    names = spec.feature_names
    started = time.perf_counter()
    # Everyone's rows are several times the train stage's, so they are kept lean: the
    # features as one float32 matrix, NHS numbers as codes into one list of categories.
    features, keys = [], []
    with open_extract(settings, extract) as opened:
        plan = training_plan(opened.con, spec, opened.extract_date)
        # Only the primary held-out month is judged on.
        plan = dataclasses.replace(plan, evaluation_months=(plan.validation_month,))
        sample, fraction = training_sample(opened.con, spec, plan)
        people = pd.CategoricalDtype(
            opened.con.execute("SELECT nhs_number FROM patients ORDER BY 1").df()["nhs_number"]
        )
        for piece in iter_training_parts(opened.con, spec, plan):
            features.append(piece[names].to_numpy(dtype=np.float32, na_value=np.nan))
            keys.append(
                pd.DataFrame(
                    {
                        "nhs_number": piece["nhs_number"].astype(people),
                        "index_date": piece["index_date"],
                        "label": piece["label"].astype(np.int8),
                    }
                )
            )
            del piece
    matrix = np.concatenate(features)
    del features
    frame = pd.DataFrame(matrix, columns=names, copy=False)
    del matrix
    for name, column in pd.concat(keys, ignore_index=True).items():
        frame[name] = column.array
    del keys
    features_seconds = time.perf_counter() - started

    def fit_and_judge(parts: dict[str, pd.DataFrame], people: str) -> dict[str, Any]:
        began = time.perf_counter()
        model = fit_model(spec, parts)
        judged = parts["evaluate"]
        auroc = roc_auc_score(judged["label"], model.predict_proba(judged[names]))
        return {
            "people": people,
            "train_rows": len(parts["train"]),
            "trees": model.best_iteration_,
            "fit_seconds": round(time.perf_counter() - began, 2),
            "auroc": float(auroc),
        }

    fits = []
    if sample is not None:
        development = frame["index_date"].isin(plan.development_months)
        sampled = frame.loc[~development | frame["nhs_number"].isin(sample)]
        fits.append(fit_and_judge(split_by_plan(sampled, spec, plan), "sample"))
        del sampled, development
    parts = split_by_plan(frame, spec, plan)
    del frame  # the parts are copies; the biggest fit gets the memory
    fits.append(fit_and_judge(parts, "everyone"))
    loss = fits[-1]["auroc"] - fits[0]["auroc"] if sample is not None else 0.0
    detail = {
        "train_months": len(plan.train_months),
        "validation_month": plan.validation_month.isoformat(),
        "validation_rows": len(parts["evaluate"]),
        "sample_fraction": fraction,
        "max_train_rows": spec.training.max_train_rows,
        "features_seconds": round(features_seconds, 2),
        "fits": fits,
        "auroc_loss_from_sampling": loss,
        "targets": [
            {
                "name": "auroc_loss_from_sampling",
                "value": loss,
                "target": f"<= {SAMPLING_AUROC_TOLERANCE}",
                "met": loss <= SAMPLING_AUROC_TOLERANCE,
            }
        ],
    }
    return {
        "seconds": time.perf_counter() - started,
        "rows": fits[-1]["train_rows"],
        "detail": detail,
    }


def _stage_score(args: dict[str, Any]) -> dict[str, Any]:
    """Score, explain, build the cohorts and publish the extract's month with the model the
    train stage registered; each step is timed from the pipeline's own progress reports."""
    from riskstrat.config import Settings
    from riskstrat.pipelines.score import run_scoring

    extract = Path(args["workdir"]) / "extract"
    home = Path(args["workdir"]) / "home"
    if not (home / "mlflow.db").is_file():
        raise FileNotFoundError("the score stage needs the train stage before it")
    settings = Settings(home=home)
    timer = _StepTimer()
    started = time.perf_counter()
    result = run_scoring(
        extract,
        month=BENCH_EXTRACT_DATE.replace(day=1),
        settings=settings,
        model_ref="challenger",
        progress=timer,
    )
    seconds = time.perf_counter() - started
    steps = timer.seconds()
    explain_seconds = steps.get("score and explain", 0.0)
    detail = {
        "people_scored": result.n_scored,
        "step_seconds": steps,
        "score_and_explain_rows_per_second": (
            round(result.n_scored / explain_seconds) if explain_seconds else None
        ),
        "cohort_sizes": result.cohort_sizes,
        # A rerun on a kept store replaces the month's earlier run: its rows are deleted in
        # the publish transaction, which then takes far longer than a first publish.
        "replaced_runs": result.replaced_runs,
    }
    return {"seconds": seconds, "rows": result.n_scored, "detail": detail}


def _stage_features(args: dict[str, Any]) -> dict[str, Any]:
    """Validate the extract and build one index month's features (the scoring month)."""
    from riskstrat.config import Settings
    from riskstrat.features.build import build_features, person_ranges
    from riskstrat.pipelines.common import open_extract

    extract = Path(args["workdir"]) / "extract"
    settings = Settings(home=Path(args["workdir"]) / "home")
    month = BENCH_EXTRACT_DATE.replace(day=1)
    started = time.perf_counter()
    with open_extract(settings, extract) as opened:
        validated = time.perf_counter()
        cpu = process_cpu_seconds()
        features = build_features(opened.con, index_dates=[month])
        runs = [time.perf_counter() - validated]
        cpu_runs = [process_cpu_seconds() - cpu]
        while len(runs) < MIN_RUNS or (sum(runs) < REPEAT_BELOW_SECONDS and len(runs) < 5):
            again, cpu = time.perf_counter(), process_cpu_seconds()
            build_features(opened.con, index_dates=[month])
            runs.append(time.perf_counter() - again)
            cpu_runs.append(process_cpu_seconds() - cpu)
        ranges = len(person_ranges(opened.con))
        base_patients = int(args.get("same_extract_base_patients", SAME_MODEL_BASE_PATIENTS))
        same_extract = (
            _same_extract_growth(opened.con, settings, base_patients, month)
            if 0 < base_patients < int(args["patients"])
            else {}
        )
    validate_seconds = validated - started
    detail = {
        "validate_seconds": round(validate_seconds, 2),
        "features_seconds": round(min(runs), 2),
        "features_cpu_seconds": round(min(cpu_runs), 2),
        "features_runs": len(runs),
        "features_ranges": ranges,
        "people": len(features),
        "columns": features.shape[1],
        **same_extract,
    }
    return {"seconds": validate_seconds + min(runs), "rows": len(features), "detail": detail}


def _same_extract_growth(
    con: duckdb.DuckDBPyConnection, settings: Settings, base_patients: int, month: date
) -> dict[str, Any]:
    """One month's features for the first ``base_patients`` people of the extract (by NHS
    number, with all their events, copied into a database of their own) and for everyone,
    timed in turn in this process, so that both sizes meet the machine in the same state:
    how the step's cost grows with people, apart from the minutes between one size's
    process and the next (this machine's speed drifts by a third within an hour). The copy
    is a scratch database like the extract's, deleted before this returns."""
    import duckdb

    from riskstrat.data.extract import remove_database, scratch_database
    from riskstrat.features.build import EVENT_TABLES, build_features

    patients = int(con.execute("SELECT count(*) FROM patients").fetchall()[0][0])
    first_left_out = con.execute(
        "SELECT nhs_number FROM patients ORDER BY nhs_number LIMIT 1 OFFSET ?", [base_patients]
    ).fetchall()
    if not first_left_out:
        return {}
    cut = first_left_out[0][0]
    path = scratch_database(settings.home / "duckdb-tmp")
    quoted = str(path).replace("'", "''")
    try:
        con.execute(f"ATTACH '{quoted}' AS base_extract")
        try:
            for table in ("patients", *EVENT_TABLES):
                con.execute(
                    f"CREATE TABLE base_extract.{table} AS "
                    f"SELECT * FROM {table} WHERE nhs_number < ?",
                    [cut],
                )
        finally:
            con.execute("DETACH base_extract")
        base = duckdb.connect(str(path))
        try:
            for setting in (
                "preserve_insertion_order",
                "memory_limit",
                "threads",
                "temp_directory",
            ):
                (value,) = con.execute(f"SELECT current_setting('{setting}')").fetchall()[0]
                quoted_value = str(value).replace("'", "''")
                base.execute(f"SET {setting} = '{quoted_value}'")
            timed: dict[str, list[tuple[float, float]]] = {"base": [], "all": []}
            for _ in range(SAME_MODEL_RUNS):
                for name, connection in (("base", base), ("all", con)):
                    wall, cpu = time.perf_counter(), process_cpu_seconds()
                    build_features(connection, index_dates=[month])
                    timed[name].append((time.perf_counter() - wall, process_cpu_seconds() - cpu))
        finally:
            base.close()
    finally:
        remove_database(path)
    ratio = math.log(patients / base_patients)
    figures: dict[str, Any] = {
        "same_extract_base_patients": base_patients,
        "same_extract_runs": SAME_MODEL_RUNS,
    }
    for index, measure in enumerate(("seconds", "cpu_seconds")):
        low = min(run[index] for run in timed["base"])
        high = min(run[index] for run in timed["all"])
        figures[f"same_extract_base_{measure}"] = round(low, 6)
        figures[f"same_extract_all_{measure}"] = round(high, 6)
        key = "same_extract_growth_exponent" if index == 0 else "same_extract_cpu_growth_exponent"
        figures[key] = round(math.log(high / low) / ratio, 3) if low > 0 and high > 0 else None
    return figures


#: A step measured in less than this many seconds is run again (at most 5 times in all)
#: and its fastest run kept: a single sub-second timing at 100,000 people is mostly noise,
#: and it is the base that the growth exponents are computed from.
REPEAT_BELOW_SECONDS = 5.0
#: Every size gets at least this many runs, so that the largest, which reaches
#: ``REPEAT_BELOW_SECONDS`` in one run, is not judged by one slow moment against the
#: fastest of five at the smallest (runs on these machines vary by 20-40%).
MIN_RUNS = 3


#: The explain stage also times its model on the rows a population of this size would have.
SAME_MODEL_BASE_PATIENTS = 100_000
SAME_MODEL_RUNS = 3


def _explained_trees(booster: Any) -> int:
    return int(booster.best_iteration if booster.best_iteration > 0 else booster.num_trees())


def _stage_explain(args: dict[str, Any]) -> dict[str, Any]:
    """Exact SHAP for everyone in the scoring month with the trained model: riskstrat's
    TreeSHAP on all rows against LightGBM's ``pred_contrib`` on a sample, same values."""
    import numpy as np

    from riskstrat.config import Settings
    from riskstrat.explain.treeshap import TreeShapExplainer
    from riskstrat.features.build import build_features
    from riskstrat.modelling.registry import registry_for
    from riskstrat.pipelines.common import open_extract

    extract = Path(args["workdir"]) / "extract"
    settings = Settings(home=Path(args["workdir"]) / "home")
    model = registry_for(settings).load(settings.model_name, "challenger")
    with open_extract(settings, extract) as opened:
        features = build_features(opened.con, index_dates=[BENCH_EXTRACT_DATE.replace(day=1)])
    booster = model.booster
    names = booster.feature_name()
    X = features[names].to_numpy(dtype=np.float32, na_value=np.nan)
    del features
    started = time.perf_counter()
    explainer = TreeShapExplainer(booster, num_iteration=booster.best_iteration or None)
    built = time.perf_counter()
    explainer.shap_values(X[:100])  # compiled once per machine (numba's cache); not timed
    runs: list[float] = []
    while len(runs) < MIN_RUNS or (sum(runs) < REPEAT_BELOW_SECONDS and len(runs) < 5):
        run_started = time.perf_counter()
        values = explainer.shap_values(X)
        runs.append(time.perf_counter() - run_started)
    fast_seconds = min(runs)
    # The same model on the rows a 100,000-person population would have: how the cost
    # grows with rows alone, apart from the bigger model a bigger population trains. Both
    # sizes get the same number of runs, taken in turn, and each keeps its fastest, so
    # neither is favoured by more tries or by a quieter moment.
    base_patients = int(args.get("same_model_base_patients", SAME_MODEL_BASE_PATIENTS))
    base_rows = round(len(X) * base_patients / int(args["patients"]))
    same_model: dict[str, Any] = {}
    if 0 < base_rows < len(X):
        timed: dict[int, list[float]] = {base_rows: [], len(X): []}
        for _ in range(SAME_MODEL_RUNS):
            for rows, times in timed.items():
                run_started = time.perf_counter()
                explainer.shap_values(X[:rows])
                times.append(time.perf_counter() - run_started)
        base_seconds, all_seconds = min(timed[base_rows]), min(timed[len(X)])
        same_model = {
            "same_model_base_rows": base_rows,
            "same_model_base_seconds": round(base_seconds, 6),
            "same_model_all_seconds": round(all_seconds, 6),
            "same_model_runs": SAME_MODEL_RUNS,
            "same_model_growth_exponent": round(
                math.log(all_seconds / base_seconds) / math.log(len(X) / base_rows), 3
            ),
        }
    sample = X[: min(len(X), int(args.get("pred_contrib_rows", 2000)))]
    ref_started = time.perf_counter()
    reference = booster.predict(
        sample, pred_contrib=True, num_iteration=booster.best_iteration or None, num_threads=2
    )
    ref_seconds = time.perf_counter() - ref_started
    fast_rate = len(X) / fast_seconds
    ref_rate = len(sample) / ref_seconds
    detail = {
        "trees": _explained_trees(booster),
        "table_build_seconds": round(built - started, 2),
        "rows_per_second": round(fast_rate),
        "runs": len(runs),
        "row_trees_per_second": round(fast_rate * _explained_trees(booster)),
        "pred_contrib_rows_per_second": round(ref_rate),
        "speed_up": round(fast_rate / ref_rate, 1),
        "max_abs_difference": float(np.abs(values[: len(sample)] - reference).max()),
        **same_model,
    }
    return {"seconds": fast_seconds, "rows": len(X), "detail": detail}


#: Service targets of issue 6, checked by the api stage (never by a test).
API_TARGETS = {"patient_risk_p99_ms": 20.0, "cohort_page_p99_ms": 100.0}


def _serve(home: Path, port: int, workers: int = 2) -> subprocess.Popen[bytes]:
    """Start the API in its own process (uvicorn, one worker per core) and wait for /health."""
    import urllib.request

    env = {**os.environ, "RISKSTRAT_HOME": str(home), "RISKSTRAT_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
        [sys.executable, "-m", "uvicorn", "--factory", "riskstrat.service.app:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--no-access-log",
         "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the API did not start within 60 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _stage_api(args: dict[str, Any]) -> dict[str, Any]:
    """Load the API on loopback at a fixed rate: patient risk, then 100-row cohort pages;
    then restart it and check that no audit record was lost."""
    import socket
    from datetime import timedelta

    from riskstrat.bench.loadtest import choose, run_load
    from riskstrat.config import Settings
    from riskstrat.service.auth import new_api_key
    from riskstrat.store.core import Store

    home = Path(args["workdir"]) / "home"
    settings = Settings(home=home)
    store = Store(settings.serving_database_url)
    run = store.latest_run()
    if run is None:
        raise FileNotFoundError("the api stage needs the score stage before it")
    _, people = store.cohort_page(run.id, limit=10_000_000)
    nhs = [p.nhs_number for p in people]
    pcns = sorted({p.pcn_code for p in people})
    del people  # the load generator shares this process: keep its heap small
    headers = {}
    for role in ("care_coordinator", "pcn_team"):
        key = new_api_key()
        store.add_user(
            name=f"bench-{role}-{key.prefix}", role=role, pcns=["*"], key_prefix=key.prefix,
            key_hash=key.hash, expires_at=datetime.now(UTC) + timedelta(hours=2),
            created_by="bench",
        )  # fmt: skip
        headers[role] = {"Authorization": f"Bearer {key.key}"}
    audit_before = len(store.access_records(limit=10_000_000))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    rate, seconds = float(args.get("api_rate", 200)), float(args.get("api_seconds", 60))
    proc = _serve(home, port, workers=int(args.get("api_workers", 2)))
    try:
        run_load(base, paths=choose(nhs, "/api/v1/patients/{}/risk"),
                 headers=headers["care_coordinator"], rate=min(rate, 50), seconds=3,
                 name="warm-up")  # fmt: skip
        before = cpu_times()
        patient = run_load(
            base, paths=choose(nhs, "/api/v1/patients/{}/risk"),
            headers=headers["care_coordinator"], rate=rate, seconds=seconds, name="patient risk",
        )  # fmt: skip
        middle = cpu_times()
        cohort = run_load(
            base, paths=choose(pcns, "/api/v1/cohorts/falls_review?pcn={}&page_size=100"),
            headers=headers["pcn_team"], rate=rate, seconds=seconds, name="cohort page (100 rows)",
        )  # fmt: skip
        after = cpu_times()
    finally:
        _stop(proc)
    audit_after = len(store.access_records(limit=10_000_000))
    # Every 200 was audited before it was sent (3 s of warm-up reads included).
    warm_up_ok = audit_after - audit_before - patient.ok - cohort.ok
    proc = _serve(home, port, workers=int(args.get("api_workers", 2)))
    try:
        import urllib.request

        kept = len(store.access_records(limit=10_000_000))  # after the restart, before reads
        request = urllib.request.Request(  # noqa: S310 - loopback http
            f"{base}/api/v1/patients/{nhs[0]}/risk", headers=headers["care_coordinator"]
        )
        with urllib.request.urlopen(request, timeout=5) as r:  # noqa: S310 - loopback http
            served_after_restart = r.status == 200
    finally:
        _stop(proc)
    audit_restarted = len(store.access_records(limit=10_000_000))
    served_after_restart = served_after_restart and audit_restarted == kept + 1
    audit_restarted = kept
    store.dispose()
    # The machine's share of time busy and stolen by the hypervisor during each load: on a
    # shared virtual machine, steal moves the tail latencies from run to run.
    summaries = [
        {**patient.summary(), **cpu_shares(before, middle)},
        {**cohort.summary(), **cpu_shares(middle, after)},
    ]
    detail = {
        "people": len(nhs),
        "load": summaries,
        "audit_records_written": audit_after - audit_before,
        "audit_records_expected": patient.ok + cohort.ok + warm_up_ok,
        "warm_up_reads": warm_up_ok,
        "audit_records_after_restart": audit_restarted - audit_before,
        "served_after_restart": served_after_restart,
        "targets": [
            {"name": "patient_risk_p99_ms", "value": summaries[0]["p99_ms"],
             "target": f"<= {API_TARGETS['patient_risk_p99_ms']}",
             "met": summaries[0]["p99_ms"] <= API_TARGETS["patient_risk_p99_ms"]
             and patient.errors == 0},
            {"name": "cohort_page_p99_ms", "value": summaries[1]["p99_ms"],
             "target": f"<= {API_TARGETS['cohort_page_p99_ms']}",
             "met": summaries[1]["p99_ms"] <= API_TARGETS["cohort_page_p99_ms"]
             and cohort.errors == 0},
            {"name": "audit_records_survive_restart",
             "value": audit_restarted - audit_before, "target": "one per 200 response",
             "met": audit_restarted - audit_before == audit_after - audit_before
             and served_after_restart},
        ],
    }  # fmt: skip
    return {
        "seconds": patient.seconds + cohort.seconds,
        "rows": patient.sent + cohort.sent,
        "detail": detail,
    }


_STAGE_FUNCTIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "generate": _stage_generate,
    "train": _stage_train,
    "features": _stage_features,
    "explain": _stage_explain,
    "score": _stage_score,
    "api": _stage_api,
    "generate-omop": _stage_generate_omop,
    "import-omop": _stage_import_omop,
    "sampling": _stage_sampling,
}


def _child_main(argv: Sequence[str]) -> int:
    """``python -m riskstrat.bench.stages STAGE JSON_ARGS``: run one stage, print its JSON result.

    The peak resident memory is the child's own (``ru_maxrss`` of this process at the end).
    """
    import resource

    stage, raw = argv[0], argv[1]
    result = _STAGE_FUNCTIONS[stage](json.loads(raw))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


# ----------------------------------------------------------------------------------------
# The parent: run stages in children and collect


def run_stage(stage: str, args: dict[str, Any]) -> StageResult:
    """Run one stage in a child process; its peak RSS comes from the OS when it exits."""
    if stage not in _STAGE_FUNCTIONS:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(_STAGE_FUNCTIONS)}")
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
        [sys.executable, "-m", "riskstrat.bench.stages", stage, json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"bench stage {stage} failed (exit {proc.returncode}): {tail}")
    payload = json.loads(stdout.strip().splitlines()[-1])
    detail = payload.get("detail", {})
    peak = float(payload["peak_rss_mb"])
    if "peak_rss_target_gb" in detail:  # only the parent knows the child's peak
        limit = float(detail["peak_rss_target_gb"])
        detail.setdefault("targets", []).append(
            {"name": "peak RSS (GB)", "value": peak / 1024, "target": f"<= {limit:g}",
             "met": peak / 1024 <= limit}
        )  # fmt: skip
    return StageResult(
        stage=stage,
        patients=int(args["patients"]),
        seconds=float(payload["seconds"]),
        rows=int(payload["rows"]),
        peak_rss_mb=peak,
        detail=detail,
    )


def run_benchmarks(
    *,
    sizes: Sequence[int],
    stages: Sequence[str],
    workdir: Path,
    months: int = 48,
    fmt: str = "parquet",
    seed: int = 1,
    keep: bool = False,
    on_result: Callable[[StageResult], None] | None = None,
    stage_args: dict[str, Any] | None = None,
) -> list[StageResult]:
    """Every stage at every size, smallest first; work files are removed unless ``keep``.

    A run that generates starts from an empty work folder; one that does not reuses what a
    kept earlier run left there (to rerun, say, only the API stage on last run's store).
    """
    results = []
    for n in sorted(sizes):
        size_dir = workdir / f"n{n}"
        if "generate" in stages:
            shutil.rmtree(size_dir, ignore_errors=True)
        size_dir.mkdir(parents=True, exist_ok=True)
        try:
            for stage in stages:
                result = run_stage(
                    stage,
                    {
                        "patients": n,
                        "months": months,
                        "format": fmt,
                        "seed": seed,
                        "workdir": str(size_dir),
                        **(stage_args or {}),
                    },
                )
                results.append(result)
                if on_result is not None:
                    on_result(result)
        finally:
            if not keep:
                shutil.rmtree(size_dir, ignore_errors=True)
    return results


def growth(results: Sequence[StageResult]) -> dict[str, float]:
    """Per stage, the exponent b in time ~ N^b between the smallest and largest size."""
    import math

    out = {}
    for stage in dict.fromkeys(r.stage for r in results):
        rows = sorted((r for r in results if r.stage == stage), key=lambda r: r.patients)
        if len(rows) >= 2 and rows[0].seconds > 0 and rows[-1].patients > rows[0].patients:
            out[stage] = math.log(rows[-1].seconds / rows[0].seconds) / math.log(
                rows[-1].patients / rows[0].patients
            )
    return out


#: Steps inside a stage whose growth is worth its own exponent: stage -> detail keys.
STEP_GROWTH = {"features": ("features_seconds", "features_cpu_seconds")}


def step_growth(results: Sequence[StageResult]) -> dict[str, float]:
    """As ``growth``, for the ``STEP_GROWTH`` steps: ``"stage.key"`` -> exponent."""
    out = {}
    for stage, keys in STEP_GROWTH.items():
        rows = sorted((r for r in results if r.stage == stage), key=lambda r: r.patients)
        if len(rows) < 2 or rows[-1].patients <= rows[0].patients:
            continue
        for key in keys:
            low, high = rows[0].detail.get(key), rows[-1].detail.get(key)
            if low and high:
                out[f"{stage}.{key}"] = math.log(high / low) / math.log(
                    rows[-1].patients / rows[0].patients
                )
    return out


def write_results(results: Sequence[StageResult], results_dir: Path) -> Path:
    """Write the run as JSON (results, growth, machine) and return its path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = results_dir / f"bench-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": machine_info(),
                "results": [r.as_dict() for r in results],
                "growth_exponent": growth(results),
                "step_growth_exponent": step_growth(results),
            },
            indent=2,
        )
    )
    return path


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))
