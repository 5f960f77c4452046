"""Synthetic population generator: simulate a GP-registered population month by month and
write it as an extract that satisfies the input data contract (``shared/spec/data-contract.md``).

Public entry points:

* :func:`~riskstrat.synth.blocks.simulate` returns the five tables as pandas DataFrames
  together with the hidden state and hidden event log (nothing is written);
* :func:`generate_extract` simulates and writes ``manifest.json`` plus the five tables as CSV
  or Parquet, atomically, and optionally each person's true risk (the oracle).

People are simulated in fixed blocks of :data:`~riskstrat.synth.blocks.BLOCK_SIZE`, each with
its own random stream spawned from the seed, and each block is written before the next is
simulated, so that memory stays flat whatever the population size.

Hospital activity that SUS would hold (emergency admissions and the A&E attendances that lead
to them) is written for as long as the person lives, whether or not they are still registered,
because the activity table is SUS-linked; everything else is written only while registered.

The generator's modules depend one way only (each imports only modules before it)::

    params -> simbase -> recording, assembly -> simulation -> blocks, truth -> oracle
    params -> writers;  omop;  blocks, oracle, writers, omop -> generator

:mod:`~riskstrat.synth.params` (parameters, constants, days), :mod:`~riskstrat.synth.simbase`
(the simulator's shared fields and row helpers), :mod:`~riskstrat.synth.recording` and
:mod:`~riskstrat.synth.assembly` (parts of the simulator), :mod:`~riskstrat.synth.simulation`
(:class:`~riskstrat.synth.simulation.Simulation` and the monthly loop),
:mod:`~riskstrat.synth.blocks` (blocks and :func:`~riskstrat.synth.blocks.simulate`),
:mod:`~riskstrat.synth.truth` and :mod:`~riskstrat.synth.oracle` (the hidden truth and the true
risk), :mod:`~riskstrat.synth.writers` and :mod:`~riskstrat.synth.omop` (writing), and this
module (:func:`generate_extract`).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from riskstrat.data.files import replace_folder
from riskstrat.errors import AlreadyExistsError, UsageError
from riskstrat.synth.blocks import _SIM_STAGES, _check_arguments, _plan, _Progress, _simulate_block
from riskstrat.synth.omop import OmopLayout, OmopWriter
from riskstrat.synth.oracle import (
    ORACLE_HORIZON_DAYS,
    check_oracle_dates,
    compute_oracle,
    default_oracle_date,
    default_oracle_path,
    write_oracle,
)
from riskstrat.synth.params import Format, ProgressCallback, SimulationParams, history_start_for
from riskstrat.synth.writers import _ExtractWriter


@dataclass(frozen=True)
class GenerationSummary:
    """What :func:`generate_extract` wrote."""

    out_dir: Path
    n_patients: int
    rows: dict[str, int]
    extract_date: dt.date
    history_start: dt.date
    seconds: float
    fmt: str = "csv"
    seed: int = 0
    oracle_path: Path | None = None  # where the true risks were written, if asked for
    oracle_dates: tuple[dt.date, ...] = ()  # their index dates


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if overwrite or not out_dir.exists():
        return
    if not out_dir.is_dir() or any(out_dir.iterdir()):
        raise AlreadyExistsError(f"{out_dir} exists and is not empty")


_WRITE_STAGES = {**_SIM_STAGES, "oracle": 0.0, "write": 0.2}


def generate_extract(
    out_dir: Path,
    *,
    n_patients: int,
    seed: int,
    months: int = 48,
    extract_date: dt.date,
    fmt: Format = "csv",
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    oracle: bool = False,
    oracle_dates: Sequence[dt.date] | None = None,
    oracle_path: Path | None = None,
    omop_layout: OmopLayout = "duckdb",
) -> GenerationSummary:
    """Simulate a population and write it as a contract extract in ``out_dir``, atomically.

    People are simulated and written in blocks of :data:`BLOCK_SIZE`, so memory does not grow
    with the population. Everything is written into a hidden sibling folder first and renamed
    into place at the end; on any error the partial folder is removed and ``out_dir`` is left
    as it was.

    The true risk (the oracle, see :func:`riskstrat.synth.oracle.compute_oracle`) is written
    when ``oracle`` is true or ``oracle_dates`` or ``oracle_path`` is given: a Parquet file
    with ``nhs_number``, ``index_date`` and ``true_risk`` for everyone in the population at
    each index date, outside the extract folder (by default
    :func:`~riskstrat.synth.oracle.default_oracle_path`), also written atomically. Without
    dates it covers the latest index month whose 90-day window is complete.

    Args:
        out_dir: folder to create (its parent is created if needed).
        n_patients: rows of the patients table (everyone ever registered in the history), at
            most :data:`~riskstrat.nhs_number.SYNTHETIC_NHS_CAPACITY`.
        seed: random seed; the same arguments give byte-identical files.
        months: months of history before the extract date's month.
        extract_date: the manifest's extract date (first day not covered).
        fmt: ``"csv"`` or ``"parquet"`` (a contract extract), or ``"omop"``: the same
            population as an OMOP CDM 5.4 with its site map, IMD lookup and linkage files
            (see :mod:`riskstrat.synth.omop`); ``rows`` then counts the CDM's tables.
        omop_layout: with ``"omop"``, ``"duckdb"`` (``cdm.duckdb``) or ``"csv"`` (a ``cdm``
            folder of upper-case CSV files, as OHDSI's Eunomia ships).
        overwrite: replace a non-empty ``out_dir`` (only once the new extract is complete) and
            an existing oracle file.
        progress: optional ``callback(stage, fraction_done)`` for a progress bar.
        oracle: write the true risk at the default index date (or at ``oracle_dates``).
        oracle_dates: index dates (first days of months) for the true risk.
        oracle_path: where to write the true risk.

    Returns:
        A :class:`GenerationSummary`.

    Raises:
        FileExistsError: ``out_dir`` exists and is not empty (or the oracle file exists), and
            ``overwrite`` is false.
        ValueError: bad arguments, including more people than synthetic NHS numbers exist and
            oracle dates whose window is not inside the history.
    """

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if fmt not in ("csv", "parquet", "omop"):
        raise UsageError(f"fmt must be 'csv', 'parquet' or 'omop', not {fmt!r}")
    _check_arguments(n_patients, months, extract_date)
    want_oracle = oracle or oracle_dates is not None or oracle_path is not None
    dates: tuple[dt.date, ...] = ()
    target: Path | None = None
    if want_oracle:
        dates = tuple(oracle_dates) if oracle_dates else (default_oracle_date(extract_date),)
        check_oracle_dates(
            dates, history_start_for(extract_date, months), extract_date, ORACLE_HORIZON_DAYS
        )
        target = Path(oracle_path) if oracle_path is not None else default_oracle_path(out_dir)
        if target.exists() and not overwrite:
            raise AlreadyExistsError(f"{target} exists")
    _check_target(out_dir, overwrite)
    params = SimulationParams()
    plan = _plan(n_patients, seed)
    stages = {**_WRITE_STAGES, "oracle": 0.1 * len(dates)}
    tracker = _Progress(progress, plan.blocks, stages)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{secrets.token_hex(6)}"
    tmp_oracle: Path | None = None
    tmp.mkdir()
    try:
        source = f"riskstrat synthetic generator, seed {seed}, {n_patients} patients"
        writer: _ExtractWriter | OmopWriter
        if fmt == "omop":
            pr = plan.practices
            writer = OmopWriter(
                tmp,
                layout=omop_layout,
                extract_date=extract_date,
                source=source,
                practices=pd.DataFrame({"practice_code": pr.practice_code,
                                        "pcn_code": pr.pcn_code}),
                lsoas=pd.DataFrame({"lsoa_code": pr.lsoa_code, "imd_decile": pr.lsoa_decile}),
            )  # fmt: skip
        else:
            writer = _ExtractWriter(tmp, fmt=fmt, extract_date=extract_date, source=source)
        risks: list[pd.DataFrame] = []
        history_start = history_start_for(extract_date, months)
        try:
            for b in range(plan.blocks):

                def report(stage: str, f: float, b: int = b) -> None:
                    tracker(b, stage, f)

                sim = _simulate_block(
                    plan,
                    b,
                    seed=seed,
                    months=months,
                    extract_date=extract_date,
                    params=params,
                    report=report,
                )
                history_start = sim.history_start
                if dates:
                    report("oracle", 0.0)
                    risks.append(compute_oracle(sim, dates))
                    report("oracle", 1.0)

                def report_write(f: float, b: int = b) -> None:
                    tracker(b, "write", f)

                writer.write_block(sim.tables, report_write)
                del sim
            if isinstance(writer, OmopWriter):
                writer.finish([str(n) for n in plan.nhs])
            else:
                writer.finish()
        finally:
            writer.close()
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp_oracle = target.parent / f".{target.name}.tmp-{secrets.token_hex(6)}"
            write_oracle(risks, tmp_oracle)
        _check_target(out_dir, overwrite)
        replace_folder(tmp, out_dir)
        if target is not None and tmp_oracle is not None:
            os.replace(tmp_oracle, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if tmp_oracle is not None:
            tmp_oracle.unlink(missing_ok=True)
        raise
    return GenerationSummary(
        out_dir=out_dir,
        n_patients=n_patients,
        rows=writer.rows,
        extract_date=extract_date,
        history_start=history_start,
        seconds=time.perf_counter() - t0,
        fmt=fmt,
        seed=seed,
        oracle_path=target,
        oracle_dates=dates,
    )
