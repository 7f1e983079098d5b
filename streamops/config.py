"""One place for every setting of the platform.

Precedence, highest first: explicit keyword arguments (the CLI's options), environment variables
(``STREAMOPS_<FIELD>``, e.g. ``STREAMOPS_KAFKA_PORT``), a TOML file (``STREAMOPS_CONFIG`` or
``streamops.toml`` in the working directory), then the defaults below. docker-compose and the Helm
chart set the same environment variables, so one name means one thing everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "STREAMOPS_"
CONFIG_FILE_ENV = "STREAMOPS_CONFIG"
DEFAULT_CONFIG_FILE = Path("streamops.toml")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamops"


def config_file_path() -> Path | None:
    """The TOML file settings are read from, if any: ``$STREAMOPS_CONFIG`` must exist when set."""
    explicit = os.environ.get(CONFIG_FILE_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"{CONFIG_FILE_ENV} points at {path}, which is not a file. "
                f"Create it, or unset {CONFIG_FILE_ENV} to use environment variables and defaults."
            )
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


class Settings(BaseSettings):
    """Settings of the local stack, the jobs and the CLI. Every field is ``STREAMOPS_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        frozen=True,
    )

    # --- where things live -------------------------------------------------------------------
    state_dir: Path = Field(
        Path(".streamops"), description="Data, logs and pid files of every local service."
    )
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Downloaded jars (Kafka broker, Spark connector); survives `reset`.",
    )
    venv_dir: Path = Field(
        PROJECT_ROOT / ".venv",
        description="The Airflow environment: Airflow, the Spark provider, the CLI, the dashboard.",
    )
    spark_venv_dir: Path = Field(
        PROJECT_ROOT / ".venv-spark",
        description="The Spark runtime environment: PySpark (the whole Spark: bin/spark-submit, "
        "jars/), pandas, pyarrow and the core. Every job's driver and workers run its Python.",
    )

    # --- Kafka (KRaft, single combined broker/controller locally) -----------------------------
    kafka_version: str = "4.4.0"
    kafka_host: str = "127.0.0.1"
    kafka_port: int = Field(9092, ge=1, le=65535)
    kafka_controller_port: int = Field(9093, ge=1, le=65535)
    kafka_partitions: int = Field(2, ge=1, le=1000, description="Partitions per contract topic.")
    kafka_replication_factor: int = Field(1, ge=1)
    kafka_heap: str = Field("512m", description="Broker JVM heap (-Xmx).")
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How every client (jobs, generators, CLI, Airflow) reaches the brokers. "
        "SASL_* authenticates with SCRAM (kafka_sasl_*); the local stack's broker then listens "
        "with SASL_PLAINTEXT itself (docs/deploy.md).",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = Field(
        "",
        repr=False,
        description="SCRAM password; from the environment or a Secret, never a job argument.",
    )
    max_clock_skew_seconds: int = Field(
        300,
        ge=0,
        le=86_400,
        description="An event time later than its record's Kafka timestamp (the broker's append "
        "time) plus this many seconds is quarantined as event_time_in_future, never windowed.",
    )

    # --- MariaDB (system of record) -----------------------------------------------------------
    mariadb_host: str = "127.0.0.1"
    mariadb_port: int = Field(3306, ge=1, le=65535)
    mariadb_database: str = Field("streamops", pattern=r"^[A-Za-z0-9_]{1,64}$")
    mariadb_user: str = Field("streamops", pattern=r"^[A-Za-z0-9_]{1,32}$")
    mariadb_password: str = "streamops"

    # --- Redis (live state) -------------------------------------------------------------------
    redis_host: str = "127.0.0.1"
    redis_port: int = Field(6379, ge=1, le=65535)
    redis_db: int = Field(0, ge=0, le=15)
    redis_password: str = Field(
        "",
        repr=False,
        description="Password of Redis' default user (requirepass); empty: no AUTH, for a Redis "
        "bound to loopback (the local stack). Compose and the chart set one.",
    )
    redis_maxmemory_mb: int = Field(
        512,
        ge=64,
        le=65_536,
        description="Redis maxmemory (MiB) of the local stack; over it Redis evicts keys with a "
        "TTL (volatile-lru) and refuses writes once only keys without one are left "
        "(docs/redis-keys.md).",
    )

    # --- PostgreSQL (Airflow's metadata; SQLite fails under concurrent heartbeats) ------------
    postgres_port: int = Field(5432, ge=1, le=65535)
    postgres_database: str = Field("airflow", pattern=r"^[A-Za-z0-9_]{1,63}$")
    postgres_user: str = Field("airflow", pattern=r"^[A-Za-z0-9_]{1,63}$")
    postgres_password: str = "airflow"

    # --- Airflow 3 ----------------------------------------------------------------------------
    airflow_host: str = "127.0.0.1"
    airflow_port: int = Field(8080, ge=1, le=65535)
    airflow_admin_user: str = "admin"
    airflow_admin_password: str = "admin"

    # --- live dashboard (streamops/dashboard) -------------------------------------------------
    dashboard_host: str = Field("127.0.0.1", description="Address the dashboard listens on.")
    dashboard_port: int = Field(8090, ge=1, le=65535)

    # --- Spark --------------------------------------------------------------------------------
    # One thread per core; a failed task is tried up to 4 times, as on a cluster (local mode's
    # default is once): a Python worker that boots too slowly on a busy machine (Spark gives it
    # 10 s to connect back) fails one try of a task, not the query.
    spark_master: str = "local[*,4]"
    checkpoint_uri: str | None = Field(
        None, description="Root of the streaming checkpoints (path or URI); <state_dir>/checkpoints"
    )
    archive_uri: str | None = Field(
        None, description="Root of the raw Parquet archive (path or s3a:// URI); <state>/archive"
    )
    archive_retention_days: int = Field(
        30,
        ge=1,
        le=36_500,
        description="Day partitions of the Parquet archive older than this many whole days are "
        "deleted by the compaction DAG (local roots only; docs/maintenance.md).",
    )

    # --- logs under the state folder (docs/operations.md#logs) -------------------------------
    log_max_mb: int = Field(
        50,
        ge=1,
        le=10_240,
        description="A log over this many MiB is rotated (Kafka's log4j2 rolls at this size; "
        "every other log by `streamops maintenance rotate-logs` and the health DAG).",
    )
    log_keep: int = Field(
        5, ge=1, le=100, description="Rotated copies kept per log (<log>.1 is the newest)."
    )
    log_compress: bool = Field(False, description="Gzip rotated copies (<log>.1.gz, ...).")
    task_log_retention_days: int = Field(
        7,
        ge=1,
        le=3_650,
        description="Airflow's task and DAG-processor log files untouched this many days are "
        "deleted.",
    )
    job_logs_keep: int = Field(
        5,
        ge=1,
        le=1_000,
        description="Launch logs kept per pipeline (<state>/pipelines/<name>/token-N.log, the "
        "newest tokens); older ones are deleted unless a process still writes them.",
    )

    # --- start-up -----------------------------------------------------------------------------
    startup_timeout_seconds: float = Field(
        120.0, gt=0, description="How long `up` waits for one service to become healthy."
    )

    @field_validator("state_dir", "cache_dir", "venv_dir", "spark_venv_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _kafka_credentials(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"kafka_security_protocol is {self.kafka_security_protocol}: set "
                "STREAMOPS_KAFKA_SASL_USERNAME and STREAMOPS_KAFKA_SASL_PASSWORD (SCRAM)."
            )
        return self

    @model_validator(mode="after")
    def _distinct_ports(self) -> Settings:
        ports = {
            "kafka_port": self.kafka_port,
            "kafka_controller_port": self.kafka_controller_port,
            "mariadb_port": self.mariadb_port,
            "redis_port": self.redis_port,
            "postgres_port": self.postgres_port,
            "airflow_port": self.airflow_port,
            "dashboard_port": self.dashboard_port,
        }
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if port in seen:
                raise ValueError(
                    f"{name} and {seen[port]} are both {port}; every service needs its own port."
                )
            seen[port] = name
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file_path()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    # --- derived values (never configured twice) ----------------------------------------------
    @property
    def kafka_bootstrap_servers(self) -> str:
        return f"{self.kafka_host}:{self.kafka_port}"

    @property
    def airflow_url(self) -> str:
        return f"http://{self.airflow_host}:{self.airflow_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.dashboard_host}:{self.dashboard_port}"

    @property
    def checkpoint_root(self) -> str:
        return self.checkpoint_uri or str(self.state_dir / "checkpoints")

    @property
    def archive_root(self) -> str:
        return self.archive_uri or str(self.state_dir / "archive")

    @property
    def redis_url(self) -> str:
        """The URL every Redis client connects with, the password included: never log it (use
        :attr:`redis_url_redacted`)."""
        return self._redis_url(quote(self.redis_password, safe=""))

    @property
    def redis_url_redacted(self) -> str:
        """:attr:`redis_url` with the password masked, for messages and tables."""
        return self._redis_url("***" if self.redis_password else "")

    def _redis_url(self, password: str) -> str:
        credentials = f":{password}@" if password else ""
        return f"redis://{credentials}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    @property
    def kafka_jars_dir(self) -> Path:
        return self.cache_dir / f"kafka-{self.kafka_version}"

    def spark_kafka_jars_dir(self, spark_version: str) -> Path:
        return self.cache_dir / f"spark-kafka-{spark_version}"

    @property
    def spark_python(self) -> Path:
        """The Spark environment's interpreter: spark-submit's drivers and Python workers."""
        return self.spark_venv_dir / "bin" / "python"

    def spark_class_archive(self, spark_version: str) -> Path:
        """The drivers' class-data archive (`streamops install`, streamops.supervision.submit). In
        the Spark environment, not the shared cache: it names the jars of that environment's
        PySpark by their paths, and a JVM given another environment's ignores it."""
        folder = self.spark_venv_dir / "share" / "streamops"
        return folder / f"spark-class-archive-{spark_version}.jsa"

    def as_env(self) -> dict[str, str]:
        """These settings as ``STREAMOPS_*`` variables, for child processes (Airflow, jobs)."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is not None:
                env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
        return env


def load_settings(**overrides: Any) -> Settings:
    """Settings from overrides, env and the optional TOML file; a bad value names its variable."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
