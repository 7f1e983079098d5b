"""Airflow 3 of the local stack: its API, its login, and a DAG run that reaches every service."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import redis

from streamops.config import Settings
from streamops.health import REDIS_HEALTH_KEY
from tests.unit.test_dags import EXPECTED_DAGS


@pytest.fixture(scope="module")
def api(settings: Settings) -> httpx.Client:
    token = httpx.post(
        f"{settings.airflow_url}/auth/token",
        json={"username": settings.airflow_admin_user, "password": settings.airflow_admin_password},
        timeout=10,
    )
    assert token.status_code in (200, 201), token.text
    return httpx.Client(
        base_url=f"{settings.airflow_url}/api/v2",
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        timeout=10,
    )


def test_health_and_version_answer(settings: Settings) -> None:
    health = httpx.get(f"{settings.airflow_url}/api/v2/monitor/health", timeout=10).json()
    for component in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert health[component]["status"] == "healthy", health
    version = httpx.get(f"{settings.airflow_url}/api/v2/version", timeout=10).json()
    assert version["version"].startswith("3.")


def test_the_printed_login_works_and_a_wrong_one_does_not(settings: Settings) -> None:
    wrong = httpx.post(
        f"{settings.airflow_url}/auth/token",
        json={"username": settings.airflow_admin_user, "password": "not-the-password"},
        timeout=10,
    )
    assert wrong.status_code == 401
    anonymous = httpx.get(f"{settings.airflow_url}/api/v2/dags", timeout=10)
    assert anonymous.status_code == 401


def _wait_for(predicate, timeout: float, interval: float = 1.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def test_dag_processor_parsed_our_dags_without_import_errors(api: httpx.Client) -> None:
    def parsed() -> set[str]:
        return {d["dag_id"] for d in api.get("/dags").json()["dags"]}

    _wait_for(lambda: parsed() == EXPECTED_DAGS, timeout=120)
    assert parsed() == EXPECTED_DAGS
    assert api.get("/importErrors").json()["total_entries"] == 0


def test_health_dag_run_succeeds_and_publishes_to_redis(
    api: httpx.Client, settings: Settings
) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    client.delete(REDIS_HEALTH_KEY)
    run = api.post(
        "/dags/streamops_platform_health/dagRuns",
        json={"logical_date": None, "dag_run_id": f"test-{time.time_ns()}"},
    )
    assert run.status_code in (200, 201), run.text
    run_id = run.json()["dag_run_id"]

    def finished() -> str | None:
        state = api.get(f"/dags/streamops_platform_health/dagRuns/{run_id}").json()["state"]
        return state if state in ("success", "failed") else None

    assert _wait_for(finished, timeout=180, interval=2) == "success"
    published = json.loads(client.get(REDIS_HEALTH_KEY))
    assert set(published["results"]) == {"kafka", "mariadb", "redis"}
    assert published["results"]["redis"] == "PONG"
