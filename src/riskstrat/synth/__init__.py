"""Synthetic population generator: a GP-registered population simulated month by month and
written as an extract that satisfies the input data contract.

``generate_extract`` writes an extract folder block by block (and, if asked, each person's true
risk beside it); ``simulate`` returns the tables and the hidden truth behind them (latent
frailty, unobserved individual effects, condition onsets, the full emergency admission
history) without writing anything; ``compute_oracle`` turns a simulation's hidden state into
each person's true probability of the outcome.
"""

from riskstrat.synth.blocks import BLOCK_SIZE, simulate
from riskstrat.synth.generator import GenerationSummary, generate_extract
from riskstrat.synth.hazards import (
    DEFAULT_HAZARD_PARAMS,
    HazardInputs,
    HazardParams,
    death_hazard,
    emergency_admission_hazard,
    latent_frailty,
)
from riskstrat.synth.oracle import (
    ORACLE_HORIZON_DAYS,
    compute_oracle,
    default_oracle_date,
    default_oracle_path,
)
from riskstrat.synth.params import SimulationParams, history_start_for
from riskstrat.synth.simulation import Simulation
from riskstrat.synth.state import HiddenState, hazard_inputs
from riskstrat.synth.truth import hazard_inputs_at, state_at
from riskstrat.synth.writers import write_tables

__all__ = [
    "BLOCK_SIZE",
    "DEFAULT_HAZARD_PARAMS",
    "ORACLE_HORIZON_DAYS",
    "GenerationSummary",
    "HazardInputs",
    "HazardParams",
    "HiddenState",
    "Simulation",
    "SimulationParams",
    "compute_oracle",
    "death_hazard",
    "default_oracle_date",
    "default_oracle_path",
    "emergency_admission_hazard",
    "generate_extract",
    "hazard_inputs",
    "hazard_inputs_at",
    "history_start_for",
    "latent_frailty",
    "simulate",
    "state_at",
    "write_tables",
]
