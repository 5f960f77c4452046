"""Synthetic population generator: a GP-registered population simulated month by month and
written as an extract that satisfies the input data contract.

``generate_extract`` writes an extract folder; ``simulate`` returns the tables and the hidden
truth behind them (latent frailty, unobserved individual effects, condition onsets, the full
emergency admission history) without writing anything.
"""

from riskstrat.synth.generator import (
    GenerationSummary,
    Simulation,
    SimulationParams,
    generate_extract,
    history_start_for,
    simulate,
    write_tables,
)
from riskstrat.synth.hazards import (
    DEFAULT_HAZARD_PARAMS,
    HazardInputs,
    HazardParams,
    death_hazard,
    emergency_admission_hazard,
    latent_frailty,
)
from riskstrat.synth.state import HiddenState, hazard_inputs
from riskstrat.synth.truth import hazard_inputs_at

__all__ = [
    "DEFAULT_HAZARD_PARAMS",
    "GenerationSummary",
    "HazardInputs",
    "HazardParams",
    "HiddenState",
    "Simulation",
    "SimulationParams",
    "death_hazard",
    "emergency_admission_hazard",
    "generate_extract",
    "hazard_inputs",
    "hazard_inputs_at",
    "history_start_for",
    "latent_frailty",
    "simulate",
    "write_tables",
]
