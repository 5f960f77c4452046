"""The training sample pipeline: validate an extract (on DuckDB or Spark) and write a sample
of its people as an extract of its own (``riskstrat sample``; see ``data.sample``)."""

from __future__ import annotations

from pathlib import Path

from riskstrat.config import Settings, get_settings
from riskstrat.data.sample import SampleResult, check_fraction
from riskstrat.errors import UsageError
from riskstrat.pipelines.common import Progress, open_extract, report


def sample_fraction(fraction: float | None, people: int | None, patients: int) -> float:
    """The fraction to draw: given, or ``people`` out of the extract's ``patients``."""
    if (fraction is None) == (people is None):
        raise UsageError("give either --fraction or --people", hint="e.g. --people 1000000")
    if fraction is None:
        assert people is not None
        if people < 1:
            raise UsageError("--people must be at least 1")
        fraction = min(1.0, people / max(patients, 1))
    check_fraction(fraction)
    return fraction


def run_sample(
    data_dir: Path | str,
    out: Path,
    *,
    fraction: float | None = None,
    people: int | None = None,
    seed: int = 1,
    overwrite: bool = False,
    settings: Settings | None = None,
    progress: Progress = None,
) -> SampleResult:
    """Validate ``data_dir`` with the deployment's engine and write a sample of its people to
    ``out`` (atomically): ``fraction`` of them, or about ``people``."""
    settings = settings or get_settings()
    report(progress, "validate extract", 0.0)
    if settings.engine == "spark":
        from riskstrat.data.sample import write_sample_spark
        from riskstrat.engines.spark import spark_session
        from riskstrat.pipelines.common import open_spark_extract

        with spark_session(settings) as spark, open_spark_extract(settings, data_dir, spark) as ex:
            share = sample_fraction(fraction, people, ex.summary.rows_accepted["patients"])
            report(progress, "draw and write the sample on Spark", 0.5)
            result = write_sample_spark(
                spark, ex.summary.manifest, out, fraction=share, seed=seed, overwrite=overwrite
            )
    else:
        from riskstrat.data.sample import write_sample_duckdb

        with open_extract(settings, data_dir, progress=progress) as extract:
            share = sample_fraction(fraction, people, extract.summary.rows_accepted["patients"])
            report(progress, "draw and write the sample", 0.5)
            result = write_sample_duckdb(
                extract.con,
                extract.summary.manifest,
                out,
                fraction=share,
                seed=seed,
                overwrite=overwrite,
            )
    report(progress, "done", 1.0)
    return result
