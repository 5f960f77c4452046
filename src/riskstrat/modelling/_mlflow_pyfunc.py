"""The MLflow model definition for a riskstrat model ("models from code").

MLflow copies this file into every logged model and runs it when the model is loaded, so a
registered version loads without unpickling anything: the trees come from LightGBM's text
format and the calibrator from JSON. ``riskstrat.modelling.registry`` logs it; nothing imports
it (it calls ``set_model`` when run), which is why it alone, beside the registry, imports mlflow.
"""

from __future__ import annotations

import json
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

from riskstrat.modelling.model import Calibrator, raw_log_odds


class RiskstratModel(PythonModel):
    """Calibrated probability of the outcome for each row of a feature frame."""

    def load_context(self, context: Any) -> None:
        self.booster = lgb.Booster(model_file=context.artifacts["booster"])
        with open(context.artifacts["calibrator"], encoding="utf-8") as fh:
            self.calibrator = Calibrator.from_dict(json.load(fh))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        return self.calibrator.transform(raw_log_odds(self.booster, model_input))


mlflow.models.set_model(RiskstratModel())
