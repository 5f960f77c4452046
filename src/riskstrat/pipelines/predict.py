"""Predict pipeline: risk for everyone eligible at a date, written to a CSV file."""

from __future__ import annotations

import os
import tempfile
from datetime import date
from pathlib import Path

import pandas as pd

from riskstrat.config import Settings, get_settings
from riskstrat.features.build import build_features
from riskstrat.modelling.model import predict_risk
from riskstrat.modelling.registry import CHAMPION, LoadedModel, registry_for
from riskstrat.pipelines.common import Progress, open_extract, report
from riskstrat.pipelines.score import check_as_of


def run_predict(
    data_dir: Path | str,
    *,
    as_of: date,
    out: Path,
    settings: Settings | None = None,
    model_ref: str = CHAMPION,
    progress: Progress = None,
) -> int:
    """Write ``nhs_number,risk`` for everyone registered and alive on ``as_of``.

    Type 1 opt-outs are left out. The file appears complete or not at all. Returns the
    number of rows written.
    """
    settings = settings or get_settings()
    report(progress, "load model", 0.0)
    model = registry_for(settings).load(settings.model_name, model_ref)
    report(progress, "validate extract", 0.1)
    if settings.engine == "spark":
        result = _predict_on_spark(settings, data_dir, as_of=as_of, model=model)
    else:
        with open_extract(settings, data_dir, progress=progress, at=0.1) as extract:
            check_as_of(as_of, extract.extract_date)
            report(progress, "build features", 0.3)
            features = build_features(extract.con, index_dates=[as_of])
        features = features.loc[~features["type1_opt_out"].astype(bool)]
        report(progress, "predict", 0.7)
        result = features[["nhs_number"]].copy()
        result["risk"] = predict_risk(
            model.booster, features[model.feature_names], model.calibrator
        )
    result["risk"] = result["risk"].round(6)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        result.to_csv(tmp, index=False, float_format="%.6f")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    report(progress, "done", 1.0)
    return len(result)


def _predict_on_spark(
    settings: Settings, data_dir: Path | str, *, as_of: date, model: LoadedModel
) -> pd.DataFrame:
    from riskstrat.engines.spark import spark_session
    from riskstrat.pipelines.common import open_spark_extract
    from riskstrat.pipelines.spark_score import predict_spark

    with spark_session(settings) as spark, open_spark_extract(settings, data_dir, spark) as extract:
        check_as_of(as_of, extract.extract_date)
        return predict_spark(spark, as_of=as_of, model=model)
