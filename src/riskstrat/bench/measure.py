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
        """Seconds per step name, in the order first reported; a step reported more than
        once (the monthly run chooses the cohorts' members, then builds their records at
        publication) counts each of its spans."""
        out: dict[str, float] = {}
        for i, (name, at) in enumerate(self.marks[:-1]):
            out[name] = out.get(name, 0.0) + self.marks[i + 1][1] - at
        return {name: round(spent, 2) for name, spent in out.items()}


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


# ----------------------------------------------------------------------------------------
# The memory of a process and everything it started (Spark's JVM and Python workers)


def _children(pid: int) -> list[int]:
    """The children of ``pid`` from ``/proc/<pid>/task/*/children`` (Linux); empty if none
    or unreadable."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def _children_by_ppid() -> dict[int, list[int]]:
    """Every process's children, from each ``/proc/<pid>/stat``'s parent field: the fallback
    where the kernel has no ``children`` files."""
    by_parent: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (name) state ppid ...": the name may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1:
            by_parent.setdefault(int(fields[1]), []).append(int(entry.name))
    return by_parent


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux ``/proc``), ``pid`` first; empty where there
    is no ``/proc/<pid>``."""
    if not Path(f"/proc/{pid}").exists():
        return []
    has_children_files = Path(f"/proc/{pid}/task/{pid}/children").exists()
    by_parent = {} if has_children_files else _children_by_ppid()
    seen, queue = [pid], [pid]
    while queue:
        parent = queue.pop()
        kids = _children(parent) if has_children_files else by_parent.get(parent, [])
        for kid in kids:
            if kid not in seen:
                seen.append(kid)
                queue.append(kid)
    return seen


def rss_kb(pid: int) -> int:
    """``VmRSS`` of ``pid`` in KiB (0 for a process that is gone or has no memory of its
    own, such as a zombie)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cpu_ticks(pid: int) -> int | None:
    """User and system CPU time of ``pid`` so far, in clock ticks (``/proc/<pid>/stat``);
    None for a process that is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # from field 3 (state) on
    try:
        return int(fields[11]) + int(fields[12])  # fields 14 and 15: utime, stime
    except (IndexError, ValueError):
        return None


def tree_rss_mb(pid: int) -> float | None:
    """The resident memory of ``pid`` and its descendants together, in MB; None where
    ``/proc`` cannot tell (not Linux, or the process is gone)."""
    tree = process_tree(pid)
    if not tree:
        return None
    return sum(rss_kb(p) for p in tree) / 1024


class TreeRssSampler:
    """Samples the total resident memory of a process tree on a daemon thread, every
    ``interval`` seconds, keeping the peak: the figure that includes what a stage starts
    (Spark's JVM, its Python workers), which the stage's own ``ru_maxrss`` leaves out.

    A sample is a sum of each process's RSS at that moment, so a spike shorter than the
    interval can be missed; ``peak_mb`` is None until a sample has been taken (always None
    off Linux). ``cpu_seconds`` is the CPU time of every process seen in the tree, each as
    of its last sample (a process the stage never waits for, like Spark's JVM, is counted
    here, not in the parent's ``RUSAGE_CHILDREN``).
    """

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        import threading

        self.pid = pid
        self.interval = interval
        self.peak_mb: float | None = None
        self.samples = 0
        self._ticks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-rss", daemon=True)

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def sample(self) -> None:
        tree = process_tree(self.pid)
        if not tree:
            return
        total = sum(rss_kb(p) for p in tree) / 1024
        self.samples += 1
        self.peak_mb = total if self.peak_mb is None else max(self.peak_mb, total)
        for p in tree:
            ticks = cpu_ticks(p)
            if ticks is not None:
                self._ticks[p] = max(ticks, self._ticks.get(p, 0))

    @property
    def cpu_seconds(self) -> float | None:
        if not self._ticks:
            return None
        import os

        return sum(self._ticks.values()) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> TreeRssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
