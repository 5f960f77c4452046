"""Runtime settings, read from ``RISKSTRAT_*`` environment variables on first use."""

from __future__ import annotations

import getpass
import os
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
    reuse_validation: bool = Field(
        default=True,
        description="Recognise an extract validated earlier by the digest of its files and "
        "skip the rules (DuckDB engine); false runs them on every command.",
    )
    keep_validated_tables: bool = Field(
        default=True,
        description="Keep a recognised extract's validated tables (a DuckDB file of the "
        "extract's rows, personal data like the extract) under home/validated, one per "
        "extract folder, so that later commands open a copy instead of loading the files; "
        "false deletes them and loads the files on every command.",
    )
    duckdb_memory_limit: str = Field(
        default="4GB",
        description="DuckDB's memory limit for extracts; beyond it DuckDB spills to home.",
    )
    duckdb_threads: int | None = Field(default=None, description="DuckDB threads; None: all.")
    engine: Literal["duckdb", "spark"] = Field(
        default="duckdb",
        description="Where validate, features, predict, score and cohorts run: embedded "
        "DuckDB, or Apache Spark (docs/scale.md).",
    )
    spark_master: str = Field(
        default="local[*]",
        description="Spark master URL; local[*] runs Spark in this process's JVM on every core.",
    )
    spark_driver_memory: str = Field(default="4g", description="Spark driver memory (local mode).")
    spark_shuffle_partitions: int = Field(
        default=8, ge=1, description="Spark SQL shuffle partitions (spark.sql.shuffle.partitions)."
    )
    publish_type1_opt_outs: bool = Field(
        default=False,
        description="Publish type 1 opt-outs in lists (only if the deployment's IG allows it).",
    )
    oidc_issuer: str | None = Field(default=None, description="OIDC issuer (enables JWTs).")
    oidc_audience: str | None = None
    oidc_jwks: str | None = Field(
        default=None, description="JWKS URL of the issuer, or a local JSON file."
    )
    oidc_role_claim: str = "riskstrat_role"
    oidc_org_claim: str = "riskstrat_pcns"
    oidc_name_claim: str = "sub"
    oidc_role_map: dict[str, str] = Field(
        default_factory=dict,
        description='Claim values to riskstrat roles, e.g. {"R8008": "care_coordinator"}.',
    )
    api_key_days: int = Field(default=90, ge=1, le=730, description="Default life of a key.")
    audit_identify_patients: bool = Field(
        default=False,
        description="Record NHS numbers in the audit trail instead of keyed-hash pseudonyms.",
    )
    max_request_bytes: int = Field(default=16_384, ge=1024)
    pseudonym_key: SecretStr = Field(
        default=SecretStr(_DEV_PSEUDONYM_KEY),
        description="HMAC key used to pseudonymise NHS numbers in the access log.",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    public_base_url: str | None = Field(
        default=None,
        pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~\-/]*)?$",
        description="The address clients reach the service at (scheme, host, port, path), "
        "for absolute URLs such as FHIR fullUrl; default http://HOST:PORT. Never taken from "
        "the request's Host header.",
    )
    trust_forwarded_proto: bool = Field(
        default=False,
        description="Believe X-Forwarded-Proto (set only behind a proxy that overwrites it): "
        "'https' there turns on Strict-Transport-Security.",
    )
    audit_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        le=30,
        description="How long a patient-level read waits for its audit record to commit "
        "before it is refused with a 503 (no data is returned unaudited).",
    )
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
            if self.oidc_issuer and not (self.oidc_audience and self.oidc_jwks):
                raise ValueError(
                    "set RISKSTRAT_OIDC_AUDIENCE and RISKSTRAT_OIDC_JWKS with the issuer"
                )
        self.home = self.home.expanduser().resolve()
        return self

    @property
    def serving_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'serving.db'}"

    @property
    def base_url(self) -> str:
        """Where clients reach the service, without a trailing slash: RISKSTRAT_PUBLIC_BASE_URL,
        else built from the bind address (``host`` and ``port``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        return (self.public_base_url or f"http://{host}:{self.port}").rstrip("/")

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
    def validation_records_dir(self) -> Path:
        """Records of validated extracts (counts and row numbers, no values) and, with
        ``keep_validated_tables``, their validated tables (personal data)."""
        return self.home / "validated"

    @property
    def work_dir(self) -> Path:
        """Scratch space (DuckDB spill files); safe to delete when nothing runs."""
        return self.home / "work"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, created on first use."""
    return Settings()


def acting_user() -> str:
    """Who is acting at the command line, for audit records and promotion decisions:
    ``RISKSTRAT_ACTOR`` when set (a service account, CI), else the login name."""
    return os.environ.get("RISKSTRAT_ACTOR") or getpass.getuser()
