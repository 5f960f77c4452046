"""One ``riskstrat bench`` run as Markdown, for the manual's benchmarks page.

:func:`render_report` takes the JSON that :func:`riskstrat.bench.stages.write_results` wrote
(as a dict) and returns Markdown: a heading with the run's date (UTC) and machine, a table of
every stage at every size (wall time, rows, rows/s, peak memory, CPU time where a stage
records it), the growth exponents, the targets the stages check, and every other figure the
stages recorded, one table per stage with a column per size.

It is pure: no files, no clock, no machine of its own. Of the machine it prints only what it
knows to be safe to publish (CPU, cores, memory, Python, system, package versions), never a
field it does not know, so that a later ``machine_info`` that records a host or user name
does not leak it. Detail fields whose names suggest a host, a user or a file path are left
out for the same reason. A field missing from an older or partial file shows as "n/a".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

#: Detail fields left out of a report: they could name a machine, a person or a local path.
_PRIVATE_WORDS = ("host", "node", "user", "login", "path", "dir", "home")

#: Detail fields shown in a table of their own, not among the figures.
_OWN_TABLE = ("targets",)

_NA = "n/a"


def render_report(run: Mapping[str, Any], *, title: str = "`riskstrat bench`") -> str:
    """The Markdown of one bench run (the dict of its results JSON), ending in a newline."""
    results = [r for r in _as_list(run.get("results")) if isinstance(r, Mapping)]
    sizes = sorted({int(r["patients"]) for r in results if _is_number(r.get("patients"))})
    lines = [f"## {title}, {_when(run.get('at'))}: {_machine_heading(run.get('machine'))}", ""]
    about = _machine_details(run.get("machine"))
    if about:
        lines += [about, ""]
    people = ", ".join(f"{n:,}" for n in sizes) or _NA
    lines += [f"People: {people}.", ""]
    lines += _stage_table(results)
    lines += _engines_table(results)
    lines += _growth_table(run, sizes)
    lines += _targets_table(results)
    lines += _figures(results)
    return "\n".join(lines).rstrip("\n") + "\n"


# ----------------------------------------------------------------------------------------
# Heading and machine


def _when(at: object) -> str:
    if not isinstance(at, str):
        return "date unknown"
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        return f"{_cell(at)} (as recorded)"
    if moment.tzinfo is None:  # write_results always records UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _machine_heading(machine: object) -> str:
    if not isinstance(machine, Mapping):
        return "machine unknown"
    parts = [_cell(str(machine.get("cpu") or "unknown CPU"))]
    cores, memory = _float(machine.get("cores")), _float(machine.get("memory_gb"))
    if cores is not None:
        parts.append(f"{cores:g} cores")
    if memory is not None:
        parts.append(f"{memory:g} GB")
    return ", ".join(parts)


def _machine_details(machine: object) -> str:
    if not isinstance(machine, Mapping):
        return ""
    parts = []
    if machine.get("python"):
        parts.append(f"Python {_cell(str(machine['python']))}")
    if machine.get("system"):
        parts.append(_cell(str(machine["system"])))
    packages = machine.get("packages")
    if isinstance(packages, Mapping) and packages:
        versions = ", ".join(f"{_cell(str(k))} {_cell(str(v))}" for k, v in packages.items())
        parts.append(f"packages: {versions}")
    return "Machine: " + "; ".join(parts) + "." if parts else ""


# ----------------------------------------------------------------------------------------
# Tables


def _stage_table(results: Sequence[Mapping[str, Any]]) -> list[str]:
    if not results:
        return ["No stage results.", ""]
    with_cpu = any(_cpu_seconds(r) is not None for r in results)
    with_tree = any(_is_number(r.get("peak_tree_rss_mb")) for r in results)
    header = ["stage", "people", "wall time (s)", "rows", "rows/s", "peak RSS (MB)"]
    if with_tree:
        header.append("peak tree RSS (MB)")
    if with_cpu:
        header.append("CPU time (s)")
    rows = []
    for r in results:
        row = [
            _code(r.get("stage")),
            _number(r.get("patients")),
            _seconds(r.get("seconds")),
            _number(r.get("rows")),
            _number(_rows_per_second(r), decimals=0),
            _number(r.get("peak_rss_mb"), decimals=0),
        ]
        if with_tree:
            row.append(_number(r.get("peak_tree_rss_mb"), decimals=0))
        if with_cpu:
            row.append(_seconds(_cpu_seconds(r)))
        rows.append(row)
    return ["### Stages", "", *_table(header, rows), ""]


#: Stages measured on Spark beside their DuckDB twin (``riskstrat bench --engine spark``).
_SPARK_SUFFIX = "-spark"


def _engines_table(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each stage with a Spark twin at each size: both engines' time, seconds per million
    people and peak memory of the whole process tree (the JVM and Python workers too)."""
    by_key = {(str(r.get("stage")), r.get("patients")): r for r in results}
    rows = []
    for (stage, patients), spark in by_key.items():
        if not stage.endswith(_SPARK_SUFFIX):
            continue
        duck = by_key.get((stage.removesuffix(_SPARK_SUFFIX), patients))
        people = _float(patients)
        row = [_code(stage.removesuffix(_SPARK_SUFFIX)), _number(patients)]
        for r in (duck, spark):
            seconds = _float(r.get("seconds")) if r is not None else None
            row.append(_seconds(seconds))
            per_million = seconds * 1e6 / people if seconds is not None and people else None
            row.append(_seconds(per_million))
        for r in (duck, spark):
            tree = r.get("peak_tree_rss_mb", r.get("peak_rss_mb")) if r is not None else None
            row.append(_number(tree, decimals=0))
        duck_s = _float(duck.get("seconds")) if duck is not None else None
        spark_s = _float(spark.get("seconds"))
        row.append(f"{spark_s / duck_s:.1f}x" if duck_s and spark_s is not None else _NA)
        rows.append(row)
    if not rows:
        return []
    header = [
        "stage", "people", "DuckDB (s)", "DuckDB s per million", "Spark (s)",
        "Spark s per million", "DuckDB peak tree (MB)", "Spark peak tree (MB)", "Spark / DuckDB",
    ]  # fmt: skip
    return ["### DuckDB beside Spark", "", *_table(header, rows), ""]


def _growth_table(run: Mapping[str, Any], sizes: Sequence[int]) -> list[str]:
    rows = []
    for key, label in (("growth_exponent", "stage"), ("step_growth_exponent", "step")):
        exponents = run.get(key)
        if not isinstance(exponents, Mapping):
            continue
        for name, value in exponents.items():
            number = _float(value)
            exponent = _NA if number is None else f"N^{number:.2f}"
            rows.append([f"{label} {_code(name)}", exponent])
    if not rows:
        return []
    span = f"from {sizes[0]:,} to {sizes[-1]:,} people" if len(sizes) >= 2 else "between sizes"
    return [
        "### Growth with N",
        "",
        f"Time grows as N^b {span}:",
        "",
        *_table(["what", "N^b"], rows),
        "",
    ]


def _targets_table(results: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = []
    for r in results:
        detail = r.get("detail")
        if not isinstance(detail, Mapping):
            continue
        for target in _as_list(detail.get("targets")):
            if not isinstance(target, Mapping):
                continue
            met = target.get("met")
            rows.append(
                [
                    _code(r.get("stage")),
                    _number(r.get("patients")),
                    _cell(str(target.get("name", _NA))),
                    _number(target.get("value")),
                    _cell(str(target.get("target", _NA))),
                    "**met**" if met is True else "not met" if met is False else _NA,
                ]
            )
    if not rows:
        return []
    header = ["stage", "people", "target", "value", "wanted", "met?"]
    return ["### Targets", "", *_table(header, rows), ""]


def _figures(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per stage, every other recorded figure: a row per figure, a column per size."""
    stages = list(dict.fromkeys(str(r.get("stage", _NA)) for r in results))
    blocks: list[str] = []
    for stage in stages:
        runs = [r for r in results if str(r.get("stage", _NA)) == stage]
        flat = [dict(_flatten(r.get("detail"))) for r in runs]
        names = list(dict.fromkeys(name for figures in flat for name in figures))
        if not names:
            continue
        header = ["figure", *(f"{_number(r.get('patients'))} people" for r in runs)]
        rows = [[_code(name), *(figures.get(name, _NA) for figures in flat)] for name in names]
        blocks += [f"**{_code(stage)}**", "", *_table(header, rows), ""]
    return ["### Figures per stage", "", *blocks] if blocks else []


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# ----------------------------------------------------------------------------------------
# Fields and figures


def _flatten(
    value: object, prefix: str = "", *, label_key: str | None = None
) -> Iterable[tuple[str, str]]:
    """``(dotted name, formatted value)`` for every scalar under a detail dict; lists of
    dicts are keyed by their entries' ``name`` or ``people`` (else their position)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = str(key)
            if (not prefix and name in _OWN_TABLE) or name == label_key:
                continue
            if any(word in name.lower() for word in _PRIVATE_WORDS):
                continue
            yield from _flatten(item, f"{prefix}.{name}" if prefix else name)
    elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        for index, item in enumerate(value):
            key = next((k for k in ("name", "people") if k in item), None)
            label = index if key is None else item[key]
            yield from _flatten(item, f"{prefix}[{label}]", label_key=key)
    elif isinstance(value, list):
        yield prefix, _list(value)
    elif prefix:
        yield prefix, _scalar(value)


def _list(values: Sequence[object]) -> str:
    if not values:
        return "none"
    if len(values) <= 6:
        return ", ".join(_scalar(v) for v in values)
    return f"{len(values)} values, {_scalar(values[0])} to {_scalar(values[-1])}"


def _scalar(value: object) -> str:
    if value is None:
        return _NA
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return _number(value)
    return _cell(str(value))


def _number(value: object, *, decimals: int | None = None) -> str:
    """Thousands separated; floats to a precision that suits their size."""
    if not _is_number(value):
        return _NA
    if isinstance(value, int):
        return f"{value:,}"
    number = _float(value)
    if number is None or not math.isfinite(number):
        return _NA
    if decimals is not None:
        return f"{number:,.{decimals}f}"
    size = abs(number)
    if number == 0:
        return "0"
    if size < 0.001:
        return f"{number:.2e}"
    if size < 1:
        return f"{number:.3f}"
    if size < 100:
        return f"{number:.2f}"
    return f"{number:,.0f}" if size >= 1000 else f"{number:.1f}"


def _seconds(value: object) -> str:
    number = _float(value)
    if number is None:
        return _NA
    return _number(number, decimals=2 if abs(number) < 10 else 1)


def _rows_per_second(result: Mapping[str, Any]) -> float | None:
    given = _float(result.get("rows_per_second"))
    if given is not None:
        return given
    rows, seconds = _float(result.get("rows")), _float(result.get("seconds"))
    return rows / seconds if rows is not None and seconds is not None and seconds > 0 else None


def _cpu_seconds(result: Mapping[str, Any]) -> object:
    """The stage's own CPU time, where its results carry one (``cpu_seconds``)."""
    detail = result.get("detail")
    for source in (result, detail if isinstance(detail, Mapping) else {}):
        if _is_number(source.get("cpu_seconds")):
            return source["cpu_seconds"]
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _as_list(value: object) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _code(value: object) -> str:
    text = _NA if value is None else str(value).replace("`", "'")
    return f"`{_cell(text)}`"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")
