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
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from riskstrat import errors
from riskstrat.bench.data_stages import (
    stage_features,
    stage_generate,
    stage_generate_omop,
    stage_import_omop,
)
from riskstrat.bench.measure import TreeRssSampler, cpu_shares, cpu_times
from riskstrat.bench.model_stages import (
    stage_explain,
    stage_sampling,
    stage_score,
    stage_score_postgres,
    stage_train,
)
from riskstrat.bench.serving_stages import stage_api
from riskstrat.bench.spark_stages import stage_features_spark, stage_score_spark
from riskstrat.errors import RiskstratError, UsageError

STAGES = ("generate", "train", "features", "explain", "score", "api", "generate-omop",
          "import-omop", "sampling", "features-spark", "score-spark", "score-postgres")  # fmt: skip
#: The stages with a Spark twin, run beside them with ``--engine spark``.
SPARK_TWINS = {"features": "features-spark", "score": "score-spark"}


def with_engine(stages: Sequence[str], engine: str) -> list[str]:
    """The stages to run for ``engine``: with ``"spark"``, each stage that has a Spark twin
    is followed by it (``features``, ``features-spark``), so both engines' figures are
    measured on the same extract and model, one after the other."""
    if engine not in ("duckdb", "spark"):
        raise UsageError(f"engine must be duckdb or spark, not {engine!r}")
    out: list[str] = []
    for stage in stages:
        for name in (stage, SPARK_TWINS.get(stage) if engine == "spark" else None):
            if name and name not in out:
                out.append(name)
    return out


@dataclass(frozen=True)
class StageResult:
    stage: str
    patients: int
    seconds: float
    rows: int
    peak_rss_mb: float
    detail: dict[str, Any] = field(default_factory=dict)
    #: The peak of the stage process and all it started together (Spark's JVM and Python
    #: workers), sampled every 0.25 s, never below ``peak_rss_mb``; None where not Linux.
    peak_tree_rss_mb: float | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_second": self.rows_per_second}


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
    for name in ("riskstrat", "duckdb", "lightgbm", "numpy", "pandas", "pyarrow", "pyspark"):
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


STAGE_FUNCTIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "generate": stage_generate,
    "train": stage_train,
    "features": stage_features,
    "explain": stage_explain,
    "score": stage_score,
    "api": stage_api,
    "generate-omop": stage_generate_omop,
    "import-omop": stage_import_omop,
    "sampling": stage_sampling,
    "features-spark": stage_features_spark,
    "score-spark": stage_score_spark,
    "score-postgres": stage_score_postgres,
}


def _child_main(argv: Sequence[str]) -> int:
    """``python -m riskstrat.bench.stages STAGE JSON_ARGS``: run one stage, print its JSON result.

    The peak resident memory is the child's own (``ru_maxrss`` of this process at the end).
    A :class:`RiskstratError` (a stage run without the one it needs, say) is printed as JSON
    too, ``{"error": {"class", "message", "hint"}}``, for the parent to raise again.
    """
    import resource

    stage, raw = argv[0], argv[1]
    try:
        result = STAGE_FUNCTIONS[stage](json.loads(raw))
    except RiskstratError as exc:
        error = {"class": type(exc).__name__, "message": exc.message, "hint": exc.hint}
        sys.stdout.write(json.dumps({"error": error}) + "\n")
        return 1
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


# ----------------------------------------------------------------------------------------
# The parent: run stages in children and collect


def _raise_child_error(stdout: str) -> None:
    """Raise again the :class:`RiskstratError` a child printed (see ``_child_main``), if any."""
    lines = stdout.strip().splitlines()
    try:
        error = json.loads(lines[-1])["error"] if lines else None
    except (ValueError, KeyError, TypeError):
        return
    if not isinstance(error, dict):
        return
    cls = getattr(errors, str(error.get("class")), None)
    if isinstance(cls, type) and issubclass(cls, RiskstratError):
        raise cls(str(error.get("message")), hint=error.get("hint"))


def run_stage(stage: str, args: dict[str, Any]) -> StageResult:
    """Run one stage in a child process; its peak RSS comes from the OS when it exits, and
    the peak of its whole process tree (what it starts included) from sampling ``/proc``."""
    if stage not in STAGE_FUNCTIONS:
        raise UsageError(f"unknown stage {stage!r}; known: {', '.join(STAGE_FUNCTIONS)}")
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
        [sys.executable, "-m", "riskstrat.bench.stages", stage, json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine_before = cpu_times()
    with TreeRssSampler(proc.pid) as sampler:
        stdout, stderr = proc.communicate()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine = cpu_shares(machine_before, cpu_times())
    if proc.returncode != 0:
        _raise_child_error(stdout)
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        kept = ""
        if args.get("workdir"):  # the whole of it, for a failure hours into a long run
            log = Path(args["workdir"]) / f"{stage}.stderr.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(stderr, encoding="utf-8")
            kept = f" (its whole stderr: {log})"
        raise RuntimeError(f"bench stage {stage} failed (exit {proc.returncode}){kept}: {tail}")
    payload = json.loads(stdout.strip().splitlines()[-1])
    detail = payload.get("detail", {})
    # The CPU time of the stage's process and of what it started and waited for (Spark's
    # JVM, its Python workers), and how busy the whole machine was meanwhile: other work
    # on a shared machine lengthens wall times.
    reaped = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    detail["tree_cpu_seconds"] = round(max(reaped, sampler.cpu_seconds or 0.0), 2)
    detail.update(machine)
    peak = float(payload["peak_rss_mb"])
    if "peak_rss_target_gb" in detail:  # only the parent knows the child's peak
        limit = float(detail["peak_rss_target_gb"])
        detail.setdefault("targets", []).append(
            {"name": "peak RSS (GB)", "value": peak / 1024, "target": f"<= {limit:g}",
             "met": peak / 1024 <= limit}
        )  # fmt: skip
    tree = None if sampler.peak_mb is None else round(max(sampler.peak_mb, peak), 1)
    return StageResult(
        stage=stage,
        patients=int(args["patients"]),
        seconds=float(payload["seconds"]),
        rows=int(payload["rows"]),
        peak_rss_mb=peak,
        detail=detail,
        peak_tree_rss_mb=tree,
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
