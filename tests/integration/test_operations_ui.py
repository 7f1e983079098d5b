"""The operations surface on the real stack: the plugin's page and API behind Airflow's login, and
`streamops pipeline` driving the supervision DAGs through Airflow's REST API.

The tests run in file order and share one story: the orders pipeline is started through the CLI,
gets data, runs (its live state is on the page, screenshot in test-artifacts/operations-ui.png),
is stopped through the CLI, and finally shows an open breaker that only a reset clears.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any, TypeVar

import httpx
import pytest

from streamops.airflow_rest import fetch_token
from streamops.config import PROJECT_ROOT, Settings
from streamops.db import connect
from streamops.generator.producer import run_generator
from streamops.supervision import lease as leases
from streamops.supervision.restart import Phase, RestartState
from streamops.supervision.spec import load_specs
from tests.browser import chromium, save_screenshot, wait_for

PIPELINE = "orders"
DAG_ID = f"streamops_supervise_{PIPELINE}"
PAGE_PATH = "/streamops/"
STATUS_PATH = "/streamops/api/pipelines"
# A first Spark batch on a loaded 2-core machine: launch, JVM, Kafka connector, first trigger.
JOB_UP_TIMEOUT_SECONDS = 300
ORDERS_FLOW_SECONDS = 150
T = TypeVar("T")
SNAPSHOT_SCRIPT = """
const rows = {};
for (const tr of document.querySelectorAll("tbody tr[data-pipeline]")) {
  const fields = {}, buttons = {};
  for (const td of tr.querySelectorAll("td[data-field]")) fields[td.dataset.field] = td.innerText;
  for (const b of tr.querySelectorAll("button")) buttons[b.dataset.action] = !b.disabled;
  rows[tr.dataset.pipeline] = {state: tr.dataset.state, fields, buttons};
}
return {rows};
"""


def poll(condition: Callable[[], T | None], what: str, timeout: float, interval: float = 2.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamops", *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=240,
        check=False,
    )


@pytest.fixture(scope="module")
def token(settings: Settings) -> str:
    return fetch_token(
        settings.airflow_url, settings.airflow_admin_user, settings.airflow_admin_password
    )


@pytest.fixture(scope="module")
def airflow(settings: Settings, token: str) -> Iterator[httpx.Client]:
    """Airflow's REST API as an operator sees it: the assertions' source of truth."""
    with httpx.Client(
        base_url=f"{settings.airflow_url}/api/v2",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ) as client:
        poll(
            lambda: client.get(f"/dags/{DAG_ID}").status_code == 200,
            f"the dag-processor to parse {DAG_ID}",
            timeout=180,
        )
        yield client


@pytest.fixture(scope="module")
def plugin(settings: Settings, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=settings.airflow_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as client:
        yield client


@pytest.fixture(scope="module", autouse=True)
def _stop_orders_at_the_end(settings: Settings, airflow: httpx.Client) -> Iterator[None]:
    """Whatever a test left running, the module ends with the orders pipeline stopped."""
    yield
    cli("pipeline", "stop", PIPELINE)
    with closing(connect(settings)) as connection:
        leases.save_restart_state(connection, PIPELINE, RestartState())


def active_runs(airflow: httpx.Client) -> list[dict[str, Any]]:
    response = airflow.get(
        f"/dags/{DAG_ID}/dagRuns", params=[("state", "queued"), ("state", "running")]
    )
    assert response.status_code == 200, response.text
    return list(response.json()["dag_runs"])


def orders_row(plugin: httpx.Client) -> dict[str, Any]:
    response = plugin.get(f"{STATUS_PATH}/{PIPELINE}")
    assert response.status_code == 200, response.text
    return dict(response.json())


# --- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", PAGE_PATH),
        ("GET", STATUS_PATH),
        ("GET", f"{STATUS_PATH}/{PIPELINE}"),
        ("POST", f"{STATUS_PATH}/{PIPELINE}/start"),
        ("POST", f"{STATUS_PATH}/{PIPELINE}/stop"),
        ("POST", f"{STATUS_PATH}/{PIPELINE}/reset-breaker"),
    ],
)
def test_every_route_of_the_plugin_requires_an_airflow_login(
    settings: Settings, method: str, path: str
) -> None:
    url = f"{settings.airflow_url}{path}"
    anonymous = httpx.request(method, url, timeout=30)
    assert anonymous.status_code == 401, anonymous.text
    forged = httpx.request(method, url, headers={"Authorization": "Bearer not.a.token"}, timeout=30)
    assert forged.status_code in (401, 403), forged.text
    # The session cookie of the Airflow UI counts only when Airflow signed it.
    cookie = httpx.request(method, url, headers={"Cookie": "_token=not.a.token"}, timeout=30)
    assert cookie.status_code in (401, 403), cookie.text


def test_a_browser_without_a_session_is_sent_to_the_airflow_login(settings: Settings) -> None:
    page = httpx.get(
        f"{settings.airflow_url}{PAGE_PATH}", headers={"Accept": "text/html"}, timeout=30
    )
    assert page.status_code == 401
    assert "/auth/login" in page.text


def test_the_status_lists_every_pipeline_of_the_specs(
    plugin: httpx.Client, airflow: httpx.Client
) -> None:
    response = plugin.get(STATUS_PATH)
    assert response.status_code == 200, response.text
    rows = {row["name"]: row for row in response.json()["pipelines"]}
    assert set(rows) == set(load_specs())
    for name, row in rows.items():
        assert row["dag_id"] == f"streamops_supervise_{name}"
        assert row["dag_exists"] is True
        assert row["state"] in ("stopped", "failed", "running", "starting"), row
        assert [q["name"] for q in row["queries"]] == list(load_specs()[name].queries)


def test_the_plugin_is_registered_with_its_ui_view(airflow: httpx.Client) -> None:
    plugins = airflow.get("/plugins").json()["plugins"]
    ours = next(p for p in plugins if p["name"] == "streamops_pipelines")
    assert ours["fastapi_apps"][0]["url_prefix"] == "/streamops"
    assert ours["external_views"][0]["url_route"] == "streamops-pipelines"
    assert airflow.get("/plugins/importErrors").json()["total_entries"] == 0


# --- the CLI's errors ---------------------------------------------------------------------------


def test_an_unknown_pipeline_is_named_with_the_known_ones() -> None:
    result = cli("pipeline", "status", "no_such_pipeline")
    assert result.returncode == 1
    assert "No pipeline 'no_such_pipeline'" in result.stderr
    assert PIPELINE in result.stderr


def test_the_cli_says_so_when_airflow_does_not_answer() -> None:
    # Port 9 (discard) has nothing listening on loopback.
    result = cli("pipeline", "list", env={"STREAMOPS_AIRFLOW_PORT": "9"})
    assert result.returncode == 1
    assert "Airflow does not answer" in result.stderr
    assert "streamops up" in result.stderr


# --- start, run, look, stop ---------------------------------------------------------------------


def test_start_through_the_cli_unpauses_and_triggers_the_supervision_dag(
    airflow: httpx.Client,
) -> None:
    airflow.patch(f"/dags/{DAG_ID}", json={"is_paused": True}).raise_for_status()
    result = cli("pipeline", "start", PIPELINE, "--json")
    assert result.returncode == 0, result.stderr
    started = json.loads(result.stdout)
    assert started["action"] == "start"
    assert airflow.get(f"/dags/{DAG_ID}").json()["is_paused"] is False
    runs = active_runs(airflow)
    assert [run["dag_run_id"] for run in runs] == [started["run_id"]]
    # Starting again does not start a second supervisor, nor calls the job that the first one
    # is launching (its pid not yet in the lease) an orphan.
    second = cli("pipeline", "start", PIPELINE, "--json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["run_id"] == started["run_id"]
    assert len(active_runs(airflow)) == 1


@pytest.fixture(scope="module")
def orders_flowing(settings: Settings) -> Iterator[None]:
    """Orders keep arriving while the job runs, so the page shows live rates, not a finished
    backlog."""
    sent: list[Any] = []
    producer = threading.Thread(
        target=lambda: sent.append(
            run_generator(
                "orders",
                bootstrap_servers=settings.kafka_bootstrap_servers,
                rate=40,
                duration=ORDERS_FLOW_SECONDS,
                seed=20261125,
                progress=False,
            )
        ),
        daemon=True,
    )
    producer.start()
    yield
    producer.join(ORDERS_FLOW_SECONDS + 30)
    assert sent and sent[0].failed == 0


def test_the_started_job_reports_live_progress(plugin: httpx.Client, orders_flowing: None) -> None:
    def running_with_batches() -> dict[str, Any] | None:
        row = orders_row(plugin)
        batches = [q["batch_id"] for q in row["queries"]]
        consumed = [q["kafka_lag"] for q in row["queries"]]
        if row["state"] == "running" and None not in batches and None not in consumed:
            return row
        return None

    row = poll(running_with_batches, "orders running with progress", JOB_UP_TIMEOUT_SECONDS, 5)
    assert row["job_pid"] is not None and row["job_alive"] is True
    assert row["active_run_id"] is not None
    assert row["uptime_seconds"] > 0
    assert row["last_batch_at"] is not None
    assert row["kafka_lag"] >= 0
    assert row["breaker"] == "closed"
    assert {q["topics"][0] for q in row["queries"]} == {"orders"}


def test_list_and_status_through_the_cli(plugin: httpx.Client) -> None:
    listed = cli("pipeline", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == set(load_specs())
    assert rows[PIPELINE]["state"] == "running"

    status = cli("pipeline", "status", PIPELINE, "--json")
    assert status.returncode == 0, status.stderr
    row = json.loads(status.stdout)
    assert row["name"] == PIPELINE
    assert row["state"] == "running"
    assert all(q["batch_id"] is not None for q in row["queries"])

    table = cli("pipeline", "status", PIPELINE)
    assert table.returncode == 0, table.stderr
    assert "orders_records" in table.stdout and "orders_revenue" in table.stdout
    assert "running" in table.stdout


def test_the_page_renders_the_live_state_in_chromium(settings: Settings, token: str) -> None:
    with chromium(width=1600, height=700) as driver:
        # Cookies belong to an origin: open Airflow once, then hand over the session the way the
        # Airflow UI keeps it (the `_token` cookie, checked by the api-server on every request).
        driver.get(f"{settings.airflow_url}/api/v2/version")
        driver.add_cookie({"name": "_token", "value": token, "path": "/"})
        driver.get(f"{settings.airflow_url}{PAGE_PATH}")

        def orders_live(_: Any) -> dict[str, Any] | None:
            # One script reads the whole table: the page replaces it every few seconds, so
            # elements found in one call may be gone in the next.
            table = driver.execute_script(SNAPSHOT_SCRIPT)
            row = table["rows"].get(PIPELINE)
            live = row and row["fields"]["input-rate"] not in ("–", "0.0")
            if live and row["state"] == "running":
                return dict(table)
            return None

        table = wait_for(
            driver, orders_live, timeout_seconds=90, message="orders running with live input"
        )
        assert table is not None
        assert set(table["rows"]) == set(load_specs())
        row = table["rows"][PIPELINE]
        assert row["fields"]["uptime"] != "–"
        assert row["fields"]["last-batch"].endswith("ago")
        assert row["fields"]["lag"].isdigit()
        assert row["fields"]["breaker"] == "closed"
        assert float(row["fields"]["processed-rate"]) > 0
        # Buttons are enabled where they make sense: a running pipeline can stop, not start.
        assert row["buttons"] == {
            "start": False,
            "stop": True,
            "restart": True,
            "reset-breaker": False,
        }
        path = save_screenshot(driver, "operations-ui")
    assert path.stat().st_size > 10_000


def test_restart_through_the_cli_replaces_the_supervisor_and_the_job(
    airflow: httpx.Client, plugin: httpx.Client
) -> None:
    before = orders_row(plugin)
    result = cli("pipeline", "restart", PIPELINE, "--json")
    assert result.returncode == 0, result.stderr
    restarted = json.loads(result.stdout)
    assert restarted["action"] == "restart"
    assert restarted["run_id"] != before["active_run_id"]
    old_run = airflow.get(f"/dags/{DAG_ID}/dagRuns/{before['active_run_id']}").json()
    assert old_run["state"] == "failed"
    assert [run["dag_run_id"] for run in active_runs(airflow)] == [restarted["run_id"]]

    def new_job_running() -> dict[str, Any] | None:
        row = orders_row(plugin)
        fresh = row["job_pid"] not in (None, before["job_pid"]) and row["job_alive"] is True
        return row if fresh and row["state"] == "running" else None

    row = poll(new_job_running, "a new orders job after the restart", JOB_UP_TIMEOUT_SECONDS, 5)
    assert row["active_run_id"] == restarted["run_id"]


def test_stop_through_the_cli_pauses_fails_the_run_and_stops_the_job(
    settings: Settings, airflow: httpx.Client, plugin: httpx.Client
) -> None:
    run_id = orders_row(plugin)["active_run_id"]
    result = cli("pipeline", "stop", PIPELINE, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["run_id"] == run_id
    assert airflow.get(f"/dags/{DAG_ID}").json()["is_paused"] is True
    assert airflow.get(f"/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"] == "failed"
    assert active_runs(airflow) == []

    last: dict[str, Any] = {}

    def stopped() -> dict[str, Any] | None:
        last.update(orders_row(plugin))
        gone = last["job_pid"] is None or last["job_alive"] is False
        return dict(last) if gone and last["state"] in ("stopped", "failed") else None

    try:
        row = poll(stopped, "the orders job to stop", timeout=120, interval=3)
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}; last status: {json.dumps(last)}") from None
    assert row["uptime_seconds"] is None
    assert row["input_rows_per_second"] is None

    # The supervisor's on_kill frees the checkpoint, so the next start launches, not reattaches.
    def lease_released() -> bool:
        location = load_specs()[PIPELINE].checkpoint_location(settings.checkpoint_root)
        with closing(connect(settings)) as connection:
            lease = leases.current(connection, location)
        return lease is not None and lease.owner is None

    poll(lease_released, "the supervisor to release the checkpoint's lease", timeout=60)


def test_an_open_breaker_refuses_start_until_it_is_reset(
    settings: Settings, plugin: httpx.Client, airflow: httpx.Client
) -> None:
    with closing(connect(settings)) as connection:
        leases.save_restart_state(
            connection,
            PIPELINE,
            RestartState(
                phase=Phase.BREAKER_OPEN,
                consecutive_failures=5,
                failure_times=(time.time() - 5,),
                breaker_opened_at=time.time(),
                last_failure_reason="failed: the job process exited with 1",
                restarts_total=4,
            ),
        )
    row = orders_row(plugin)
    assert (row["state"], row["breaker"], row["restarts_total"]) == ("breaker_open", "open", 4)

    refused = cli("pipeline", "start", PIPELINE)
    assert refused.returncode == 1
    assert "breaker is open" in refused.stderr
    assert active_runs(airflow) == []
    page_refused = plugin.post(f"{STATUS_PATH}/{PIPELINE}/start")
    assert page_refused.status_code == 409

    reset = cli("pipeline", "reset-breaker", PIPELINE, "--json")
    assert reset.returncode == 0, reset.stderr
    assert "was open" in json.loads(reset.stdout)["message"]
    with closing(connect(settings)) as connection:
        state = leases.load_restart_state(connection, PIPELINE)
    assert (state.phase, state.consecutive_failures, state.restarts_total) == (
        Phase.STOPPED,
        0,
        4,
    )
    assert orders_row(plugin)["breaker"] == "closed"
