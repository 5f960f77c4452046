"""Model specifications (``models/<name>/spec.yaml``), typed on load."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from riskstrat.data.contract import INTERVENTION_CODES
from riskstrat.errors import ConfigError, MissingFileError
from riskstrat.features.labels import OutcomeDefinition, outcome_definition
from riskstrat.features.sql import feature_columns
from riskstrat.modelling.baselines import BASELINE_NAMES, BaselineName
from riskstrat.resources import model_dir

SPEC_FILE = "spec.yaml"


class TrainingPlan(BaseModel):
    """Which index months do what (see ``riskstrat.modelling.model.plan_index_months``)."""

    model_config = ConfigDict(extra="forbid")

    min_lookback_days: int = Field(default=365, ge=0)
    max_train_months: int = Field(default=12, ge=1)
    #: At most about this many rows in the training months: beyond it, a random sample of
    #: people is used for fitting (the held-out months always hold everyone). None: no cap.
    max_train_rows: int | None = Field(default=None, ge=10_000)
    early_stopping_months: int = Field(default=0, ge=0)
    #: Share of people held out of the training months to choose the number of trees (used
    #: when there are no early-stopping months): no row of theirs is fitted on, and no other
    #: month is given up for it.
    early_stopping_people: float = Field(default=0.15, ge=0, lt=1)
    calibration_months: int = Field(default=1, ge=0)
    evaluation_months: int = Field(default=3, ge=1)
    #: Start the trees from a yearly harmonic in ``index_month`` fitted to every training row
    #: (``modelling.seasons``): the season the trees alone learn too little of before early
    #: stopping, and the one calibration month (usually in the other season) cannot fix.
    seasonal_baseline: bool = False
    #: How time after an intervention the lists trigger is treated. ``include``: the outcome
    #: counts whatever care followed (the model learns risk under current care, reviews
    #: included). ``censor``: a person-month with one of ``censor_interventions`` recorded in
    #: its window before the outcome is left out of every stage (the model learns risk
    #: without those interventions; the card says how many were left out).
    post_intervention: Literal["include", "censor"] = "include"
    censor_interventions: list[str] = Field(
        default_factory=lambda: ["FALLS_ASSESSMENT", "MEDICATION_REVIEW", "ADVANCE_CARE_PLAN"]
    )

    @field_validator("censor_interventions")
    @classmethod
    def _intervention_codes(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(INTERVENTION_CODES))
        if unknown:
            raise ValueError(f"not intervention codes: {', '.join(unknown)}")
        return value


class MonotoneConfig(BaseModel):
    """Features whose clinical direction is known: risk never falls as they rise (or fall)."""

    model_config = ConfigDict(extra="forbid")

    increasing: list[str] = Field(default_factory=list)
    decreasing: list[str] = Field(default_factory=list)


class CalibrationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["none", "platt", "isotonic"] = "platt"


class EvaluationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bootstrap_samples: int = Field(default=200, ge=0)
    ci_level: float = Field(default=0.95, gt=0, lt=1)
    list_shares: list[float] = Field(default_factory=lambda: [0.01, 0.05, 0.10])
    recall_target: float = Field(default=0.7, gt=0, lt=1)
    net_benefit_thresholds: list[float] = Field(
        default_factory=lambda: [0.01, 0.02, 0.05, 0.10, 0.20, 0.30]
    )
    calibration_bins: int = Field(default=10, ge=2)
    baselines: list[BaselineName] = Field(default_factory=lambda: list(BASELINE_NAMES))
    seed: int = 0


class FairnessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attributes: list[str] = Field(
        default_factory=lambda: ["sex", "age_band", "imd_quintile", "ethnic_group"]
    )
    list_share: float = Field(default=0.05, gt=0, lt=1)
    min_group_rows: int = Field(default=100, ge=1)
    min_group_events: int = Field(default=20, ge=1)


class CalibrationGates(BaseModel):
    model_config = ConfigDict(extra="forbid")

    oe_range: tuple[float, float] = (0.9, 1.1)
    slope_range: tuple[float, float] = (0.8, 1.25)


class FairnessGatesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    oe_range: tuple[float, float] = (0.8, 1.25)
    max_auroc_gap: float = Field(default=0.05, ge=0)
    auroc_gap_attributes: list[str] = Field(
        default_factory=lambda: ["sex", "imd_quintile", "ethnic_group"]
    )


class GatesConfig(BaseModel):
    """What a version must pass before it can become the champion."""

    model_config = ConfigDict(extra="forbid")

    rule: Literal["ci", "point"] = "ci"
    #: Non-inferiority to logistic regression on the same features and the same held-out
    #: rows: the model's AUROC minus its (paired bootstrap) may not be below minus this.
    #: None: not gated (both are still reported).
    max_auroc_below_logistic: float | None = Field(default=0.005, ge=0)
    calibration: CalibrationGates = Field(default_factory=CalibrationGates)
    fairness: FairnessGatesConfig = Field(default_factory=FairnessGatesConfig)


class TargetsConfig(BaseModel):
    """The model-quality targets: reported on the card and checked by the benchmark, on point
    estimates. They are the quality bar; the gates are what blocks a promotion.

    Logistic regression is a target of non-inferiority, not one to beat by a margin: the
    project's generator makes the true risk log-linear in the features, so logistic
    regression is already close to the best model possible there, and any gap over it is a
    property of the generator rather than of the model.
    """

    model_config = ConfigDict(extra="forbid")

    max_auroc_below_logistic: float = Field(default=0.005, ge=0)
    #: Model / oracle AUROC on the primary held-out month (synthetic data only): the oracle's
    #: AUROC is the ceiling set by the generator's unobservable individual effect.
    min_auroc_ratio_to_oracle: float = Field(default=0.945, gt=0, le=1)
    #: Share flagged to catch ``evaluation.recall_target`` of admissions / the oracle's share.
    max_share_flagged_ratio_to_oracle: float = Field(default=1.45, ge=1)
    #: Observed/expected and calibration slope, overall and on each held-out month.
    oe_range: tuple[float, float] = (0.95, 1.05)
    slope_range: tuple[float, float] = (0.9, 1.1)


class PromotionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_auroc_drop: float = Field(
        default=0.005,
        ge=0,
        description="How far below the champion's AUROC, on the same "
        "held-out rows, a challenger may be and still be promoted.",
    )


class MonitoringConfig(BaseModel):
    """Thresholds of ``riskstrat monitor``: amber and red per check (defaults as the gates)."""

    model_config = ConfigDict(extra="forbid")

    psi_amber: float = Field(default=0.1, ge=0, description="PSI at or above: amber.")
    psi_red: float = Field(default=0.25, ge=0, description="PSI above: red.")
    oe_range: tuple[float, float] = (0.9, 1.1)
    slope_range: tuple[float, float] = (0.8, 1.25)
    max_auroc_drop: float = Field(
        default=0.005,
        ge=0,
        description="Below the version's validation AUROC by more: amber; "
        "the CI's upper end below it by more: red.",
    )
    list_share: float = Field(default=0.05, gt=0, lt=1)
    missing_increase_amber: float = Field(default=0.05, ge=0)
    missing_increase_red: float = Field(default=0.2, ge=0)
    reject_share_increase_amber: float = Field(default=0.005, ge=0)
    reject_share_increase_red: float = Field(default=0.02, ge=0)
    bootstrap_samples: int = Field(default=200, ge=0)
    drift_exclude: list[str] = Field(
        default_factory=lambda: ["index_month"],
        description="Features left out of the PSI checks: the calendar month differs between "
        "one month and a training window of many by design.",
    )


class CardText(BaseModel):
    """What a model's card says it is for, where that differs from the admission model's."""

    model_config = ConfigDict(extra="forbid")

    intended_use: str | None = None
    out_of_scope: str | None = None


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
    #: A built-in outcome's name (``features.labels.OUTCOMES``) or a declared one.
    outcome: OutcomeDefinition = Field(
        default_factory=lambda: outcome_definition("emergency_admission")
    )
    horizon_days: int = Field(default=90, ge=1, le=730)
    features: Literal["all"] | list[str] = "all"
    exclude_features: list[str] = Field(default_factory=list)
    training: TrainingPlan = Field(default_factory=TrainingPlan)
    lightgbm: LightGBMConfig = Field(default_factory=LightGBMConfig)
    monotone: MonotoneConfig = Field(default_factory=MonotoneConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)
    gates: GatesConfig = Field(default_factory=GatesConfig)
    targets: TargetsConfig = Field(default_factory=TargetsConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    card_template: str = "card.md.j2"
    card: CardText = Field(default_factory=CardText)
    source: str | None = Field(default=None, description="Where the spec was read from.")

    @property
    def folder(self) -> Path | None:
        return Path(self.source).parent if self.source else None

    @property
    def card_template_path(self) -> Path:
        """The card template: in the spec's folder, else the default model's."""
        if self.folder is not None and (self.folder / self.card_template).is_file():
            return self.folder / self.card_template
        return default_spec_dir() / "card.md.j2"

    @field_validator("outcome", mode="before")
    @classmethod
    def _named_outcome(cls, value: Any) -> Any:
        return outcome_definition(value)

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

    @model_validator(mode="after")
    def _season_needs_the_month(self) -> ModelSpec:
        if self.training.seasonal_baseline and "index_month" not in self.feature_names:
            raise ValueError("training.seasonal_baseline needs the feature index_month")
        return self

    @model_validator(mode="after")
    def _monotone_features_are_used(self) -> ModelSpec:
        used = set(self.feature_names)
        for name in self.monotone.increasing + self.monotone.decreasing:
            if name not in used:
                raise ValueError(f"monotone constraint on {name}, which the model does not use")
        return self


def default_spec_dir() -> Path:
    """The shipped ``models/emergency_admission_90d`` folder (a package resource)."""
    return model_dir()


def load_spec(path: Path | str) -> ModelSpec:
    """Read a spec from a model folder, a YAML file, or a shipped model's folder name
    (``death_12m``, when no such path exists here).

    Raises:
        MissingFileError: there is no spec there (also a ``FileNotFoundError``).
        ConfigError: the file is not YAML, or not a valid spec; the message names the file
            and what is wrong with it (also a ``ValueError``).
    """
    p = Path(path)
    if not p.exists() and len(p.parts) == 1 and (model_dir(p.name) / SPEC_FILE).is_file():
        p = model_dir(p.name)  # a shipped model by its folder's name: "death_12m"
    file = p / SPEC_FILE if p.is_dir() else p
    if not file.is_file():
        raise MissingFileError(
            f"no model spec at {file}",
            hint=f"name a model folder holding {SPEC_FILE}, or the YAML file itself",
        )
    hint = f"fix the YAML named above; {default_spec_dir() / SPEC_FILE} shows every field"
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping of fields, not {type(data).__name__}")
        data["source"] = str(file)
        return ModelSpec.model_validate(data)
    except (yaml.YAMLError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"{file}: not a valid model spec: {exc}", hint=hint) from exc
