"""Airflow's metadata lives in the stack's PostgreSQL, and holds up under concurrent writers."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import psycopg2

from streamops.airflow_rest import NO_RETRY, AirflowRest
from streamops.config import Settings
from streamops.stack import Stack
from streamops.stack.airflow import airflow_environment, airflow_executable


def test_postgresql_is_a_healthy_component(stack: Stack) -> None:
    status = stack.component("postgresql").status()
    assert status.health.healthy, status.health.detail
    assert status.health.detail.startswith("accepting connections (PostgreSQL")


def test_airflow_itself_reports_postgresql_metadata(settings: Settings) -> None:
    result = subprocess.run(
        [airflow_executable(settings), "config", "get-value", "database", "sql_alchemy_conn"],
        env=airflow_environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    url = urlsplit(result.stdout.strip().splitlines()[-1])
    assert url.scheme == "postgresql+psycopg2"
    assert (url.hostname, url.port) == ("127.0.0.1", settings.postgres_port)


def test_airflow_tables_and_dags_are_in_postgresql(settings: Settings) -> None:
    connection = psycopg2.connect(
        host="127.0.0.1",
        port=settings.postgres_port,
        user=settings.postgres_user,
        password=settings.postgres_password,
        dbname=settings.postgres_database,
        connect_timeout=5,
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
            tables = {row[0] for row in cursor.fetchall()}
            cursor.execute("SELECT count(*) FROM job WHERE job_type = 'SchedulerJob'")
            (scheduler_jobs,) = cursor.fetchone()
    finally:
        connection.close()
    assert {"alembic_version", "dag", "dag_run", "task_instance", "job"} <= tables
    assert scheduler_jobs >= 1, "the running scheduler heartbeats into this database"
    assert not (settings.state_dir / "airflow" / "airflow.db").exists()


def test_concurrent_writes_through_the_api_do_not_fail(settings: Settings) -> None:
    """What SQLite could not take: many writers at once (here PATCHes, beside the heartbeats)."""
    dag_id = "streamops_platform_health"
    # No retry: a single 500 must fail the test, not be smoothed over.
    with AirflowRest.login(settings, timeout=30, retry=NO_RETRY) as api:
        dag = api.dag(dag_id)
        assert dag is not None
        was_paused = bool(dag["is_paused"])

        def toggle(index: int) -> None:
            api.set_paused(dag_id, index % 2 == 0)

        try:
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(toggle, range(40)))
        finally:
            api.set_paused(dag_id, was_paused)
        assert api.dag(dag_id)["is_paused"] is was_paused  # type: ignore[index]
