"""Airflow 3 as four processes (api-server, scheduler, dag-processor, triggerer).

Their metadata lives in the stack's PostgreSQL (streamops/stack/postgres.py), as in docker-compose
and the Helm chart: SQLite, one writer at a time, failed under concurrent task heartbeats
("Database error" 500s from the API). Everything is configured with AIRFLOW__* environment
variables derived from the streamops settings; docker-compose and the Helm chart set the same
variables.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from streamops.config import PROJECT_ROOT, Settings
from streamops.errors import StreamopsError
from streamops.stack.base import Component, Health
from streamops.supervision.spec import DEFAULT_SPARK_CONN_ID

SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)


def airflow_home(settings: Settings) -> Path:
    return settings.state_dir / "airflow"


def airflow_executable(settings: Settings) -> str:
    """The Airflow environment's ``airflow``: whichever interpreter runs the stack (a test on the
    Spark side too), Airflow runs from its own environment."""
    return str(settings.venv_dir / "bin" / "airflow")


def _secrets(home: Path) -> dict[str, str]:
    """Keys every Airflow process must share (JWTs signed by one are checked by the others).

    Made once per state folder and kept there, so tokens and encrypted connections survive
    `down`/`up`; `reset` discards them with the rest of the state.
    """
    path = home / "secrets.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    from cryptography.fernet import Fernet

    values = {
        "jwt_secret": secrets.token_urlsafe(48),
        "api_secret_key": secrets.token_urlsafe(32),
        "fernet_key": Fernet.generate_key().decode(),
    }
    home.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values))
    path.chmod(0o600)
    return values


def metadata_database_url(settings: Settings) -> str:
    """SQLAlchemy URL of Airflow's metadata database in the stack's PostgreSQL (psycopg2).

    Airflow derives the async URL (asyncpg) from it.
    """
    user = quote(settings.postgres_user, safe="")
    password = quote(settings.postgres_password, safe="")
    return (
        f"postgresql+psycopg2://{user}:{password}@127.0.0.1:{settings.postgres_port}/"
        f"{quote(settings.postgres_database, safe='')}"
    )


# Executor slots. Supervision tasks defer (no slot while a job runs); only maintenance, health and
# training tasks, one per DAG at a time (four DAGs), and a supervisor's restart step hold one, so
# there is one more slot than those DAGs. Each busy slot's worker process costs ~170 MB.
PARALLELISM = 5


def airflow_environment(settings: Settings) -> dict[str, str]:
    """The environment of every Airflow process and CLI call of the local stack."""
    home = airflow_home(settings)
    keys = _secrets(home)
    api_url = settings.airflow_url
    return {
        **os.environ,
        **settings.as_env(),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_database_url(settings),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.airflow_admin_user}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        # DAG files change with a deployment, not by the minute: parse each one every 2 minutes
        # instead of every 30 s (a parse imports the plugins and reads pipelines.yaml).
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "120",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    }


class AirflowDatabase:
    """`airflow db migrate` against the PostgreSQL metadata database: idempotent, run by `up`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def migrate(self, report: Callable[[str], None]) -> None:
        home = airflow_home(self.settings)
        home.mkdir(parents=True, exist_ok=True)
        (self.settings.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        # The admin's password is ours to choose, so `up` can print the login.
        (home / "passwords.json").write_text(
            json.dumps({self.settings.airflow_admin_user: self.settings.airflow_admin_password})
        )
        log = self.settings.state_dir / "logs" / "airflow-db-migrate.log"
        report("airflow: migrating its metadata database")
        with log.open("ab") as handle:
            result = subprocess.run(
                [airflow_executable(self.settings), "db", "migrate"],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=airflow_environment(self.settings),
                check=False,
                timeout=600,
            )
        if result.returncode != 0:
            from streamops.stack.base import tail

            raise StreamopsError(
                f"`airflow db migrate` failed (exit {result.returncode}); the full log is {log}. "
                "If the metadata database is from another Airflow version, `streamops reset` "
                "starts afresh.",
                log_tail=tail(log),
            )

    def ensure_spark_connection(
        self,
        report: Callable[[str], None],
        conn_id: str = DEFAULT_SPARK_CONN_ID,
        master: str | None = None,
    ) -> None:
        """The Spark Connection the supervision launches jobs through (``spark_default``: type
        spark, the settings' master, client mode), as a row of the metadata database when it is
        missing. A row, not an ``AIRFLOW_CONN_*`` variable: operators see and change it in
        Airflow's Connections page, and an existing row (changed there) is left as it is."""
        master = master or self.settings.spark_master
        extra = {"deploy-mode": "client", "spark-binary": "spark-submit"}
        argv = [
            airflow_executable(self.settings),
            "connections",
            "add",
            conn_id,
            "--conn-type",
            "spark",
            "--conn-host",
            master,
            "--conn-description",
            "Where the streamops pipelines' Spark jobs run (master, deploy mode, spark-submit).",
            "--conn-extra",
            json.dumps(extra),
        ]
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=airflow_environment(self.settings),
            check=False,
            timeout=300,
        )
        output = result.stdout + result.stderr
        if "already exists" in output:
            return
        if result.returncode != 0 or "Successfully added" not in output:
            raise StreamopsError(
                f"Creating Airflow's Connection {conn_id} failed "
                f"(exit {result.returncode}): {output.strip()[-2000:]}"
            )
        report(f"airflow: created the Connection {conn_id} ({master})")


class AirflowComponent(Component):
    """One Airflow process; health comes from the api-server's /api/v2/monitor/health."""

    subcommand: tuple[str, ...]
    health_key: str | None = None
    stop_timeout_seconds = 30.0

    def ports(self) -> dict[str, int]:
        return {}

    @property
    def data_dir(self) -> Path:
        return airflow_home(self.settings)

    def command(self) -> list[str]:
        return [airflow_executable(self.settings), *self.subcommand]

    def environment(self) -> dict[str, str]:
        return airflow_environment(self.settings)

    def version(self) -> str:
        from importlib.metadata import version

        return version("apache-airflow")

    def monitor_health(self) -> dict:
        import httpx

        response = httpx.get(f"{self.settings.airflow_url}/api/v2/monitor/health", timeout=3)
        response.raise_for_status()
        return dict(response.json())

    def check_health(self) -> Health:
        body = self.monitor_health()
        status = body.get(self.health_key or "metadatabase", {})
        if status.get("status") != "healthy":
            return Health(False, f"{self.health_key}: {status.get('status')}")
        heartbeat = next((v for k, v in status.items() if k.startswith("latest_")), None)
        return Health(True, f"heartbeat {heartbeat}" if heartbeat else "healthy")


class AirflowApiServer(AirflowComponent):
    name = "airflow-api-server"
    subcommand = ("api-server",)
    health_key = "metadatabase"

    def ports(self) -> dict[str, int]:
        return {"airflow_port": self.settings.airflow_port}


class AirflowScheduler(AirflowComponent):
    name = "airflow-scheduler"
    subcommand = ("scheduler", "--skip-serve-logs")
    health_key = "scheduler"


class AirflowDagProcessor(AirflowComponent):
    name = "airflow-dag-processor"
    subcommand = ("dag-processor",)
    health_key = "dag_processor"


class AirflowTriggerer(AirflowComponent):
    name = "airflow-triggerer"
    subcommand = ("triggerer", "--skip-serve-logs")
    health_key = "triggerer"


AIRFLOW_COMPONENTS: list[type[AirflowComponent]] = [
    AirflowApiServer,
    AirflowScheduler,
    AirflowDagProcessor,
    AirflowTriggerer,
]
