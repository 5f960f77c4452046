"""Runtime settings, read from ``RISKSTRAT_*`` environment variables on first use."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Placeholder keys that are refused outside development.
_DEV_PSEUDONYM_KEY = "development-only-pseudonymisation-key"


class Settings(BaseSettings):
    """Everything riskstrat needs to know about where it runs.

    Paths are resolved against the working directory when the settings are created, so a
    later ``chdir`` does not move the stores.
    """

    model_config = SettingsConfigDict(env_prefix="RISKSTRAT_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    home: Path = Field(
        default=Path(".riskstrat"),
        description="Folder for the local MLflow store, the serving database and run files.",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the serving store; default SQLite in home."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default a SQLite store in home."
    )
    model_name: str = "riskstrat-emergency-admission-90d"
    max_reject_share: float = Field(default=0.01, ge=0.0, le=1.0)
    duckdb_memory_limit: str = "8GB"
    duckdb_threads: int | None = None
    publish_type1_opt_outs: bool = Field(
        default=False,
        description="Publish type 1 opt-outs in lists (only if the deployment's IG allows it).",
    )
    api_token: SecretStr | None = Field(
        default=None, description="Bearer token the API accepts; `riskstrat serve` makes one."
    )
    pseudonym_key: SecretStr = Field(
        default=SecretStr(_DEV_PSEUDONYM_KEY),
        description="HMAC key used to pseudonymise NHS numbers in the access log.",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    max_page_size: int = 500
    retain_months: int = Field(
        default=24,
        ge=2,
        description="Published monthly runs kept (for 'what changed' and outcomes); older "
        "months are pruned after each publish.",
    )

    @model_validator(mode="after")
    def _refuse_placeholders_outside_development(self) -> Settings:
        if self.environment != "development":
            if self.pseudonym_key.get_secret_value() == _DEV_PSEUDONYM_KEY:
                raise ValueError("set RISKSTRAT_PSEUDONYM_KEY outside development")
            if self.api_token is None:
                raise ValueError("set RISKSTRAT_API_TOKEN outside development")
        self.home = self.home.expanduser().resolve()
        return self

    @property
    def serving_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'serving.db'}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def rejects_dir(self) -> Path:
        return self.home / "rejects"

    @property
    def work_dir(self) -> Path:
        """Scratch space (DuckDB spill files); safe to delete when nothing runs."""
        return self.home / "work"


def new_api_token() -> str:
    """A fresh random bearer token for a development server."""
    return secrets.token_urlsafe(24)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, created on first use."""
    return Settings()
