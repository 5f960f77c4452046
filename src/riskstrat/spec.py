"""Model specifications (``models/<name>/spec.yaml``), typed on load."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from riskstrat.features import feature_columns

SPEC_FILE = "spec.yaml"


class TrainingPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_lookback_days: int = Field(default=365, ge=0)
    max_train_months: int = Field(default=12, ge=1)
    early_stopping_months: int = Field(default=1, ge=0)


class LightGBMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_boost_round: int = Field(default=400, ge=1)
    early_stopping_rounds: int | None = Field(default=40, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)


class ModelSpec(BaseModel):
    """What to predict and how: the contents of a model's ``spec.yaml``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    outcome: Literal["emergency_admission"] = "emergency_admission"
    horizon_days: int = Field(default=90, ge=1, le=730)
    features: Literal["all"] | list[str] = "all"
    exclude_features: list[str] = Field(default_factory=list)
    training: TrainingPlan = Field(default_factory=TrainingPlan)
    lightgbm: LightGBMConfig = Field(default_factory=LightGBMConfig)
    source: str | None = Field(default=None, description="Where the spec was read from.")

    @field_validator("features", "exclude_features")
    @classmethod
    def _known_features(cls, value: Any) -> Any:
        if isinstance(value, list):
            unknown = sorted(set(value) - set(feature_columns()))
            if unknown:
                raise ValueError(f"unknown features: {', '.join(unknown)}")
        return value

    @property
    def feature_names(self) -> list[str]:
        chosen = feature_columns() if self.features == "all" else list(self.features)
        return [f for f in chosen if f not in set(self.exclude_features)]


def default_spec_dir() -> Path:
    """``models/emergency_admission_90d`` in the source tree riskstrat runs from."""
    return Path(__file__).resolve().parents[2] / "models" / "emergency_admission_90d"


def load_spec(path: Path | str) -> ModelSpec:
    """Read a spec from a model folder or a YAML file."""
    p = Path(path)
    file = p / SPEC_FILE if p.is_dir() else p
    if not file.is_file():
        raise FileNotFoundError(f"no model spec at {file}")
    data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    data["source"] = str(file)
    return ModelSpec.model_validate(data)
