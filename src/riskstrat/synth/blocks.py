"""Simulation block by block: the plan drawn once for the whole population, one block's
simulation, progress across blocks, and :func:`simulate`, which returns every block's tables
and hidden truth as one :class:`~riskstrat.synth.simulation.Simulation`.

People are simulated in fixed blocks of :data:`BLOCK_SIZE`, each with its own random stream
spawned from the seed. Only the practice structure and the NHS numbers are drawn up front for
everyone: the numbers are sorted and each block takes a contiguous slice, so the blocks
concatenated in order keep every table sorted by NHS number, then date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from riskstrat.errors import UsageError
from riskstrat.nhs_number import SYNTHETIC_NHS_CAPACITY, sorted_synthetic_nhs_numbers
from riskstrat.synth.params import ProgressCallback, SimulationParams
from riskstrat.synth.population import Practices, build_practices
from riskstrat.synth.simulation import Simulation, _Simulator

_T = TypeVar("_T")

#: People simulated and written together. A constant, never derived from the machine, so that
#: the same seed gives the same files everywhere; a block of 100,000 people with 48 months of
#: history peaks at about 1.5 GB.
BLOCK_SIZE = 100_000


@dataclass(frozen=True)
class _Plan:
    """What is drawn once for the whole population before any block is simulated."""

    n: int
    practices: Practices
    nhs: npt.NDArray[np.int64]  # every NHS number, ascending
    block_seeds: tuple[np.random.SeedSequence, ...]

    @property
    def blocks(self) -> int:
        return len(self.block_seeds)

    def bounds(self, block: int) -> tuple[int, int]:
        return block * BLOCK_SIZE, min(self.n, (block + 1) * BLOCK_SIZE)


def _plan(n: int, seed: int) -> _Plan:
    n_blocks = max(1, -(-n // BLOCK_SIZE))
    children = np.random.SeedSequence(seed).spawn(1 + n_blocks)
    rng = np.random.default_rng(children[0])
    practices = build_practices(rng, n)
    nhs = sorted_synthetic_nhs_numbers(rng, n)
    return _Plan(n=n, practices=practices, nhs=nhs, block_seeds=tuple(children[1:]))


class _Progress:
    """Maps (block, stage, fraction of the stage) to the caller's (stage, overall fraction)."""

    def __init__(
        self, callback: ProgressCallback | None, blocks: int, stages: dict[str, float]
    ) -> None:
        self.callback = callback
        self.blocks = blocks
        self.last = list(stages)[-1]
        total = sum(stages.values())
        self.start: dict[str, float] = {}
        self.weight: dict[str, float] = {}
        acc = 0.0
        for name, w in stages.items():
            self.start[name] = acc / total
            self.weight[name] = w / total
            acc += w

    def __call__(self, block: int, stage: str, fraction: float) -> None:
        if self.callback is None:
            return
        f = min(max(fraction, 0.0), 1.0)
        within = self.start[stage] + self.weight[stage] * f
        if stage == self.last and f >= 1.0:
            within = 1.0
        self.callback(stage, min(max((block + within) / self.blocks, 0.0), 1.0))


_SIM_STAGES = {"population": 0.03, "simulate": 0.6, "medications": 0.06, "observations": 0.03,
               "assemble": 0.08}  # fmt: skip


def _simulate_block(
    plan: _Plan,
    block: int,
    *,
    seed: int,
    months: int,
    extract_date: dt.date,
    params: SimulationParams,
    report: Callable[[str, float], None] | None,
) -> Simulation:
    lo, hi = plan.bounds(block)
    sim = _Simulator(
        nhs=plan.nhs[lo:hi],
        practices=plan.practices,
        seed_sequence=plan.block_seeds[block],
        months=months,
        extract_date=extract_date,
        params=params,
        progress=report,
    )
    sim._report("population", 0.0)
    sim.build_population()
    sim._report("population", 1.0)
    sim.run()
    sim.finalise_registration()
    sim._report("medications", 0.0)
    med = sim.medications()
    sim._report("medications", 1.0)
    sim._report("observations", 0.0)
    sim.static_observations()
    sim._report("observations", 1.0)
    sim._report("assemble", 0.0)
    tables = sim.tables(med)
    sim._report("assemble", 1.0)
    return Simulation(
        tables=tables,
        state=sim.state,
        events=sim.events(),
        nhs_numbers=sim.nhs,
        practices=sim.practices,
        extract_date=extract_date,
        history_start=sim.history_start_date,
        seed=seed,
        months=months,
        params=params,
        oracle_seed=sim.oracle_seed,
    )


def _check_arguments(n_patients: int, months: int, extract_date: dt.date) -> None:
    if n_patients < 1:
        raise UsageError("n_patients must be at least 1")
    if n_patients > SYNTHETIC_NHS_CAPACITY:
        raise UsageError(
            f"n_patients is {n_patients:,}, but synthetic NHS numbers must start 999 and that "
            f"range holds only {SYNTHETIC_NHS_CAPACITY:,} valid numbers (10**6 nine-digit "
            "bodies less those whose Modulus 11 check digit would be 10); ask for at most "
            f"{SYNTHETIC_NHS_CAPACITY:,} people"
        )
    if not 1 <= months <= 600:
        raise UsageError("months must be between 1 and 600")
    if isinstance(extract_date, dt.datetime) or not isinstance(extract_date, dt.date):
        raise TypeError("extract_date must be a datetime.date")


def _concat_simulations(sims: list[Simulation]) -> Simulation:
    """One Simulation from blocks simulated separately (positions offset block by block)."""
    first = sims[0]
    offsets = np.cumsum([0] + [s.state.n for s in sims[:-1]])
    tables: dict[str, pd.DataFrame] = {}
    for name in first.tables:
        frames = [s.tables[name] for s in sims]
        columns: dict[str, object] = {}
        for col in frames[0].columns:
            parts = [f[col] for f in frames]
            if isinstance(parts[0].dtype, pd.CategoricalDtype):
                columns[col] = pd.Series(
                    pd.api.types.union_categoricals([pd.Categorical(x) for x in parts])
                )
            else:
                columns[col] = pd.concat(parts, ignore_index=True)
        tables[name] = pd.DataFrame(columns)

    def cat(values: list[object]) -> object:
        arrays = [np.asarray(v) for v in values]
        return np.concatenate(arrays)

    people = _replace_fields(
        first.state.people, {f.name: cat([getattr(s.state.people, f.name) for s in sims])
                             for f in fields(first.state.people)}
    )  # fmt: skip
    values: dict[str, object] = {"people": people}
    for f in fields(first.state):
        if f.name != "people":
            values[f.name] = cat([getattr(s.state, f.name) for s in sims])
    state = _replace_fields(first.state, values)
    events: dict[str, pd.DataFrame] = {}
    for name in first.events:
        shifted: list[pd.DataFrame] = []
        for s, off in zip(sims, offsets, strict=True):
            frame = s.events[name].copy()
            frame["person"] = frame["person"] + int(off)
            shifted.append(frame)
        events[name] = pd.concat(shifted, ignore_index=True)
    return Simulation(
        tables=tables,
        state=state,
        events=events,
        nhs_numbers=np.concatenate([s.nhs_numbers for s in sims]),
        practices=first.practices,
        extract_date=first.extract_date,
        history_start=first.history_start,
        seed=first.seed,
        months=first.months,
        params=first.params,
        oracle_seed=first.oracle_seed,
    )


def _replace_fields(obj: _T, values: dict[str, object]) -> _T:
    """``dataclasses.replace`` for a dict of new field values."""
    return replace(obj, **values)  # type: ignore[type-var]


def simulate(
    *,
    n_patients: int,
    seed: int,
    extract_date: dt.date,
    months: int = 48,
    progress: ProgressCallback | None = None,
    params: SimulationParams | None = None,
) -> Simulation:
    """Simulate a registered population and return its extract tables and hidden truth.

    Everything is held in memory: for large populations use
    :func:`~riskstrat.synth.generator.generate_extract`, which writes block by block. The tables
    are those it writes for the same arguments.

    Args:
        n_patients: number of people ever registered during the history (rows of patients).
        seed: the seed; the same arguments give the same tables.
        extract_date: first day not covered by the extract.
        months: length of the history in calendar months before ``extract_date``'s month.
        progress: optional ``callback(stage, fraction_done)``.
        params: simulation parameters (burn-in length, hazard coefficients).

    Returns:
        A :class:`Simulation` with the five tables, the hidden state and the event log.
    """
    _check_arguments(n_patients, months, extract_date)
    params = params or SimulationParams()
    plan = _plan(n_patients, seed)
    tracker = _Progress(progress, plan.blocks, _SIM_STAGES)
    sims = []
    for b in range(plan.blocks):
        sims.append(
            _simulate_block(
                plan,
                b,
                seed=seed,
                months=months,
                extract_date=extract_date,
                params=params,
                report=lambda stage, f, b=b: tracker(b, stage, f),  # type: ignore[misc]
            )
        )
    return sims[0] if len(sims) == 1 else _concat_simulations(sims)
