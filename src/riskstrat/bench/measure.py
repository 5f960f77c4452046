"""What every benchmark stage measures with: CPU time, the machine's load, step timings.

Shared by the stages (:mod:`riskstrat.bench.data_stages`, :mod:`riskstrat.bench.model_stages`,
:mod:`riskstrat.bench.serving_stages`), which run in the child processes that
:mod:`riskstrat.bench.stages` starts.
"""

from __future__ import annotations

import re
import time
from datetime import date
from pathlib import Path

#: The extract date of the bench's generated population (its scoring month is this month).
BENCH_EXTRACT_DATE = date(2026, 11, 1)


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


class StepTimer:
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
