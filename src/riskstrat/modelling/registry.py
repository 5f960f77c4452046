"""The model registry: the only module that talks to MLflow.

Training runs, their parameters, metrics and artefacts go to an MLflow tracking store
(SQLite under ``RISKSTRAT_HOME`` by default); models are registered under the spec's name
and moved between aliases (``challenger``, ``champion``). Nothing here logs patient
identifiers or feature rows: only counts, metrics, parameters, plots of aggregates, the
model card and the model itself (no input example).

A model is logged "from code" (``riskstrat/_mlflow_pyfunc.py``): its trees as LightGBM text
and its calibrator as JSON, so loading a version never unpickles anything, and MLflow's own
pyfunc returns calibrated probabilities.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from riskstrat.config import Settings
from riskstrat.errors import NotFoundError
from riskstrat.modelling.model import Calibrator, RiskModel

CHAMPION = "champion"
CHALLENGER = "challenger"
EXPERIMENT = "riskstrat-training"
#: Evaluations of a registered version on another population (``riskstrat evaluate``).
EXTERNAL_EXPERIMENT = "riskstrat-external-validation"
#: Version tags: the version an evaluation run validates, and each evaluation's summary
#: (one tag per run: ``riskstrat.external_validation.<run id>``, a JSON object).
VALIDATES_VERSION_TAG = "riskstrat.validates_version"
VALIDATES_MODEL_TAG = "riskstrat.validates_model"
DATA_DIGEST_TAG = "riskstrat.data_digest"
EXTERNAL_SUMMARY_PREFIX = "riskstrat.external_validation."
#: Lineage of a locally recalibrated version (on its run and its version).
PARENT_VERSION_TAG = "riskstrat.lineage.parent_version"
RECALIBRATED_ON_TAG = "riskstrat.lineage.recalibrated_on"
_PYFUNC_CODE = Path(__file__).with_name("_mlflow_pyfunc.py")
_log = logging.getLogger(__name__)


class ModelNotFoundError(NotFoundError):
    """No registered model version matches the request."""

    default_hint = "train a model (`riskstrat train`) and promote it (`riskstrat promote`)"


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: str
    aliases: tuple[str, ...]
    run_id: str | None
    created_at: datetime
    metrics: dict[str, float]
    tags: dict[str, str]


@dataclass(frozen=True)
class LoadedModel:
    """A registered model loaded for scoring: its trees (for SHAP) and its calibrator."""

    booster: lgb.Booster
    calibrator: Calibrator
    info: ModelVersionInfo

    @property
    def feature_names(self) -> list[str]:
        return list(self.booster.feature_name())


class ModelRegistry:
    """MLflow tracking and model registry for one tracking store."""

    def __init__(self, *, tracking_uri: str, artifact_root: Path) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root

    # ---- writing ------------------------------------------------------------------------

    def log_training_run(
        self,
        *,
        model_name: str,
        model: RiskModel,
        X_example: pd.DataFrame,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        tags: Mapping[str, str],
        json_artifacts: Mapping[str, Any],
        text_artifacts: Mapping[str, str] | None = None,
        files: Mapping[str, Path] | None = None,
        version_tags: Mapping[str, str] | None = None,
        set_aliases: tuple[str, ...] = (CHALLENGER,),
    ) -> ModelVersionInfo:
        """Log one training run, register its model as a new version and set aliases.

        ``files`` maps an artefact path (``plots/roc.png``) to a local file. ``X_example``
        supplies only the column names and types of the signature; no row of it is stored.
        """
        with self._mlflow() as mlflow:
            from mlflow.models import infer_signature

            experiment_id = self._experiment_id(mlflow)
            sample = X_example.head(0).astype("float64")
            signature = infer_signature(sample, np.zeros(0, dtype=np.float64))
            with (
                mlflow.start_run(experiment_id=experiment_id) as run,
                tempfile.TemporaryDirectory() as tmp,
            ):
                mlflow.log_params({k: _param(v) for k, v in params.items()})
                mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
                mlflow.set_tags(dict(tags))
                for name, value in json_artifacts.items():
                    mlflow.log_dict(value, name)
                for name, text in (text_artifacts or {}).items():
                    mlflow.log_text(text, name)
                for name, path in (files or {}).items():
                    parent = str(Path(name).parent)
                    mlflow.log_artifact(str(path), None if parent == "." else parent)
                booster_file = Path(tmp) / "booster.txt"
                model.booster_.save_model(str(booster_file))
                calibrator_file = Path(tmp) / "calibrator.json"
                calibrator_file.write_text(json.dumps(model.calibrator_.as_dict()))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # "no input example": on purpose
                    info = mlflow.pyfunc.log_model(
                        name="model",
                        python_model=str(_PYFUNC_CODE),
                        artifacts={
                            "booster": str(booster_file),
                            "calibrator": str(calibrator_file),
                        },
                        signature=signature,
                        registered_model_name=model_name,
                        pip_requirements=_pip_requirements(),
                    )
                version = str(info.registered_model_version)
                client = mlflow.MlflowClient()
                for key, value in {**tags, **(version_tags or {})}.items():
                    client.set_model_version_tag(model_name, version, key, value)
                for alias in set_aliases:
                    client.set_registered_model_alias(model_name, alias, version)
                _log.info("registered %s version %s (run %s)", model_name, version, run.info.run_id)
        return self.describe(model_name, version)

    def log_external_validation(
        self,
        model_name: str,
        version: str,
        *,
        metrics: Mapping[str, float],
        json_artifacts: Mapping[str, Any],
        tags: Mapping[str, str],
        summary: Mapping[str, Any],
        files: Mapping[str, Path] | None = None,
    ) -> str:
        """Log an evaluation of a registered version on another population as its own run,
        linked to the version: the run is tagged with the model, the version and the data's
        digest (``tags`` must hold ``DATA_DIGEST_TAG``), and the version gets the ``summary``
        as a tag of its own (``EXTERNAL_SUMMARY_PREFIX`` + run id). Returns the run id.

        Raises:
            ModelNotFoundError: no such version.
            ValueError: ``tags`` does not name the data's digest.
        """
        if not tags.get(DATA_DIGEST_TAG):
            raise ValueError(f"an external validation run needs the {DATA_DIGEST_TAG} tag")
        with self._mlflow() as mlflow:
            client = mlflow.MlflowClient()
            mv = self._resolve(client, model_name, version)
            experiment = mlflow.get_experiment_by_name(EXTERNAL_EXPERIMENT)
            experiment_id = (
                str(experiment.experiment_id)
                if experiment is not None
                else str(
                    mlflow.create_experiment(
                        EXTERNAL_EXPERIMENT, artifact_location=self.artifact_root.as_uri()
                    )
                )
            )
            link = {
                VALIDATES_MODEL_TAG: model_name,
                VALIDATES_VERSION_TAG: str(mv.version),
                "riskstrat.validates_run": str(mv.run_id or ""),
            }
            with mlflow.start_run(experiment_id=experiment_id) as run:
                mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
                mlflow.set_tags({**tags, **link})
                for name, value in json_artifacts.items():
                    mlflow.log_dict(value, name)
                for name, path in (files or {}).items():
                    parent = str(Path(name).parent)
                    mlflow.log_artifact(str(path), None if parent == "." else parent)
                run_id = str(run.info.run_id)
            record = json.dumps({**summary, "run_id": run_id}, default=str)
            if len(record) > 5000:  # MLflow's limit on a tag's value
                raise ValueError("an external validation summary must stay under 5000 characters")
            client.set_model_version_tag(
                model_name, str(mv.version), EXTERNAL_SUMMARY_PREFIX + run_id, record
            )
        _log.info("external validation of %s version %s: run %s", model_name, mv.version, run_id)
        return run_id

    def external_validations(self, model_name: str, version: str) -> list[dict[str, Any]]:
        """The summaries ``log_external_validation`` recorded on a version, oldest first."""
        info = self.describe(model_name, version)
        found = [
            json.loads(value)
            for key, value in info.tags.items()
            if key.startswith(EXTERNAL_SUMMARY_PREFIX)
        ]
        return sorted(found, key=lambda s: str(s.get("evaluated_at", "")))

    def log_run_folder(self, run_id: str, folder: Path, artifact_path: str) -> None:
        """Add a folder of files to a finished run's artefacts (the model card)."""
        with self._mlflow() as mlflow:
            mlflow.MlflowClient().log_artifacts(run_id, str(folder), artifact_path)

    def set_alias(self, model_name: str, alias: str, version: str) -> None:
        with self._mlflow() as mlflow:
            mlflow.MlflowClient().set_registered_model_alias(model_name, alias, version)

    def set_version_tags(self, model_name: str, version: str, tags: Mapping[str, str]) -> None:
        with self._mlflow() as mlflow:
            client = mlflow.MlflowClient()
            for key, value in tags.items():
                client.set_model_version_tag(model_name, version, key, value)

    # ---- reading ------------------------------------------------------------------------

    def describe(self, model_name: str, version_or_alias: str = CHAMPION) -> ModelVersionInfo:
        """Metadata and metrics of a registered version, by number or alias."""
        with self._mlflow() as mlflow:
            client = mlflow.MlflowClient()
            mv = self._resolve(client, model_name, version_or_alias)
            return self._info(client, model_name, mv)

    def versions(self, model_name: str) -> list[ModelVersionInfo]:
        """Every registered version of a model, newest first."""
        with self._mlflow() as mlflow:
            from mlflow.exceptions import MlflowException

            client = mlflow.MlflowClient()
            try:
                found = client.search_model_versions(f"name = '{model_name}'")
            except MlflowException:
                return []
            # search results omit aliases; fetch each version for its full record
            out = [
                self._info(client, model_name, client.get_model_version(model_name, mv.version))
                for mv in found
            ]
        return sorted(out, key=lambda v: int(v.version), reverse=True)

    def load(self, model_name: str, version_or_alias: str = CHAMPION) -> LoadedModel:
        """Load a registered version (only from this project's own registry)."""
        info = self.describe(model_name, version_or_alias)
        with self._mlflow() as mlflow:
            pyfunc = mlflow.pyfunc.load_model(f"models:/{model_name}/{info.version}")
            inner = pyfunc.unwrap_python_model()
        return LoadedModel(booster=inner.booster, calibrator=inner.calibrator, info=info)

    def read_json_artifact(self, run_id: str, name: str) -> Any:
        with self._mlflow() as mlflow, tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=name, dst_path=tmp
            )
            return json.loads(Path(path).read_text(encoding="utf-8"))

    def download_artifacts(self, run_id: str, name: str, dst: Path) -> Path:
        """Copy a run's artefact (file or folder) to ``dst``; returns the local path."""
        dst.mkdir(parents=True, exist_ok=True)
        with self._mlflow() as mlflow:
            return Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=name, dst_path=str(dst)
                )
            )

    def ui_command(self, *, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
        """The command that serves MLflow's own UI on this store (loopback by default)."""
        executable = Path(sys.executable).with_name("mlflow")
        return [
            str(executable), "ui", "--backend-store-uri", self.tracking_uri,
            "--default-artifact-root", self.artifact_root.as_uri(),
            "--host", host, "--port", str(port),
        ]  # fmt: skip

    # ---- internals ----------------------------------------------------------------------

    @contextmanager
    def _mlflow(self) -> Iterator[Any]:
        import mlflow  # imported here so that importing riskstrat stays cheap

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self.artifact_root.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        yield mlflow

    def _experiment_id(self, mlflow: Any) -> str:
        experiment = mlflow.get_experiment_by_name(EXPERIMENT)
        if experiment is not None:
            return str(experiment.experiment_id)
        return str(
            mlflow.create_experiment(EXPERIMENT, artifact_location=self.artifact_root.as_uri())
        )

    @staticmethod
    def _info(client: Any, model_name: str, mv: Any) -> ModelVersionInfo:
        metrics: dict[str, float] = {}
        if mv.run_id:
            metrics = dict(client.get_run(mv.run_id).data.metrics)
        return ModelVersionInfo(
            name=model_name,
            version=str(mv.version),
            aliases=tuple(sorted(getattr(mv, "aliases", ()) or ())),
            run_id=mv.run_id,
            created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
            metrics=metrics,
            tags=dict(mv.tags or {}),
        )

    @staticmethod
    def _resolve(client: Any, model_name: str, version_or_alias: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            if version_or_alias.isdigit():
                return client.get_model_version(model_name, version_or_alias)
            return client.get_model_version_by_alias(model_name, version_or_alias)
        except MlflowException as exc:
            raise ModelNotFoundError(
                f"no version '{version_or_alias}' of model {model_name} in the registry"
            ) from exc

    # ---- monitoring ---------------------------------------------------------------------

    def read_json_artifact_or_none(self, run_id: str | None, name: str) -> Any | None:
        """A run's JSON artefact, or None when the run or the artefact does not exist
        (a version trained before the artefact was written)."""
        if run_id is None:
            return None
        with self._mlflow() as mlflow:
            from mlflow.exceptions import MlflowException

            try:
                with tempfile.TemporaryDirectory() as tmp:
                    path = mlflow.artifacts.download_artifacts(
                        run_id=run_id, artifact_path=name, dst_path=tmp
                    )
                    return json.loads(Path(path).read_text(encoding="utf-8"))
            except (MlflowException, OSError):
                return None

    def log_monitoring(
        self, model_name: str, version: str, metrics: Mapping[str, float], *, step: int
    ) -> None:
        """Log monitoring metrics as a time series (``step`` = the month's index) on the
        training run of a version, so they appear with that version's own metrics."""
        with self._mlflow() as mlflow:
            client = mlflow.MlflowClient()
            mv = self._resolve(client, model_name, version)
            from mlflow.entities import Metric

            now = int(datetime.now(UTC).timestamp() * 1000)
            batch = [
                Metric(key=k, value=float(v), timestamp=now, step=step)
                for k, v in metrics.items()
                if v == v  # NaN: not logged
            ]
            if batch and mv.run_id:
                client.log_batch(mv.run_id, metrics=batch)


def _param(value: Any) -> Any:
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str)[:6000]
    return value


def _pip_requirements() -> list[str]:
    # Stated explicitly: MLflow's own inference loads the model in a subprocess (slow).
    return [
        f"{pkg}=={metadata.version(pkg)}" for pkg in ("riskstrat", "lightgbm", "numpy", "pandas")
    ]


def registry_for(settings: Settings) -> ModelRegistry:
    """The model registry the settings name (MLflow tracking URI and artefact root)."""
    return ModelRegistry(tracking_uri=settings.tracking_uri, artifact_root=settings.artifact_root)
