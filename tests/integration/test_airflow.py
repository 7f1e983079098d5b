"""Airflow 3 of the local stack: its API, its login, and a DAG run that reaches every service."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from streamops.airflow_rest import AirflowRest
from streamops.config import Settings
from streamops.contract.redis_keys import PLATFORM_HEALTH_KEY
from streamops.disk import state_dir_status
from tests.unit.test_dags import EXPECTED_DAGS


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[AirflowRest]:
    with AirflowRest.login(settings, timeout=30) as client:
        yield client


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


def test_dag_processor_parsed_our_dags_without_import_errors(api: AirflowRest) -> None:
    def parsed() -> set[str]:
        dags = api.request("GET", "/dags", params={"limit": 100}).json()["dags"]
        return {d["dag_id"] for d in dags}

    _wait_for(lambda: parsed() == EXPECTED_DAGS, timeout=120)
    assert parsed() == EXPECTED_DAGS
    assert api.import_errors() == []


def test_health_dag_run_succeeds_and_publishes_to_redis(
    api: AirflowRest, settings: Settings
) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    client.delete(PLATFORM_HEALTH_KEY)
    _, state = api.trigger_and_wait("streamops_platform_health", timeout_seconds=180)
    assert state == "success"
    published = json.loads(client.get(PLATFORM_HEALTH_KEY))
    assert set(published["results"]) == {"kafka", "mariadb", "redis", "disk"}
    assert published["results"]["redis"] == "PONG"
    # The state folder's disk as the task measured it (below 90 % used, or the run would have
    # failed), with the same verdict as `streamops status`.
    disk = published["results"]["disk"]
    assert f"GiB free on the filesystem of {settings.state_dir}" in disk
    assert disk.startswith("disk warning: ") == (state_dir_status(settings.state_dir).level != "ok")
