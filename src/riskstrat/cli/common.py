"""What every command shares: the consoles, the progress bar, option parsing into
:mod:`riskstrat.errors`, and the one place that turns built-in exceptions of library code into
errors a user can act on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from riskstrat.errors import (
    AlreadyExistsError,
    InvalidValueError,
    MissingFileError,
    RiskstratError,
    UsageError,
)

if TYPE_CHECKING:
    from riskstrat.config import Settings

#: Progress, warnings and notes: stderr, so that stdout holds only results.
console = Console(stderr=True)
#: Results: tables and one-line outcomes.
out = Console()


def setup() -> None:
    """Logging as configured, and consoles that keep tables whole when not on a terminal."""
    from riskstrat.logs import configure_logging

    configure_logging()
    for console_ in (out, console):
        if not console_.is_terminal:  # piped or captured: keep tables whole, not cut at 80
            console_.width = 160


#: ``--engine`` on the commands that read an extract (validate, predict, score).
ENGINE_HELP = (
    "duckdb (embedded, the default) or spark (Apache Spark: local[*], or "
    "RISKSTRAT_SPARK_MASTER); default RISKSTRAT_ENGINE. docs/scale.md."
)


#: ``--data`` of the commands the Spark engine runs: a local folder, or a URI Spark reads.
DATA_HELP = (
    "Extract folder; with --engine spark also a URI Spark reads (s3a://, abfss://, gs://, "
    "hdfs://, file://)."
)


def extract_location(data: str) -> Path | str:
    """``--data`` as given: a URI stays text (``Path`` would fold its ``//``); anything else
    is a local path."""
    from riskstrat.engines.hadoop_fs import is_uri

    return data if is_uri(data) else Path(data)


def settings_for_engine(engine: str | None) -> Settings:
    """The settings, with ``--engine`` (when given) in place of ``RISKSTRAT_ENGINE``."""
    from riskstrat.config import get_settings

    settings = get_settings()
    if engine is None:
        return settings
    if engine not in ("duckdb", "spark"):
        raise UsageError(f"not an engine: {engine!r}", hint="give --engine duckdb or spark")
    return settings.model_copy(update={"engine": engine})


def parse_date(text: str, option: str) -> date:
    """An option's ``YYYY-MM-DD`` date, or a :class:`UsageError` naming the option."""
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{option} must be a date like 2026-11-01, got {text!r}",
            hint=f"give {option} as YYYY-MM-DD",
        ) from None


def parse_month_option(text: str) -> date:
    """The first day of a ``YYYY-MM`` month option, or a :class:`UsageError`."""
    from riskstrat.calendar import parse_month

    try:
        return parse_month(text)
    except ValueError as exc:
        raise UsageError(str(exc), hint="give the month as YYYY-MM, e.g. 2026-11") from None


@contextmanager
def progress_bar(title: str) -> Iterator[Callable[[str, float], None]]:
    """A rich progress bar driven by the pipelines' (stage, fraction) callbacks."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(title, total=1.0)

        def update(stage: str, fraction: float) -> None:
            bar.update(task, completed=fraction, description=f"{title}: {stage}")

        yield update


@contextmanager
def library_errors() -> Iterator[None]:
    """Built-in exceptions that library code (the generator, model specs, cohort files, the
    store's user table) still raises for things a user caused, as :class:`RiskstratError`
    with the same message and exit code 1, as the commands reported them before. A
    ``RiskstratError`` passes through unchanged."""
    try:
        yield
    except RiskstratError:
        raise
    except FileExistsError as exc:
        raise AlreadyExistsError(str(exc)) from exc
    except FileNotFoundError as exc:
        raise MissingFileError(str(exc)) from exc
    except OSError as exc:
        raise RiskstratError(
            str(exc), hint="check the path, its permissions and the free disk space"
        ) from exc
    except ValueError as exc:
        raise InvalidValueError(str(exc)) from exc
