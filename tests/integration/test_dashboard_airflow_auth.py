"""The live dashboard behind Airflow's login, on a real Airflow api-server with the plugin.

Not the shared test stack: this module starts its own Redis (with a password, as compose and the
chart run it) and, for each auth manager, its own api-server on a SQLite metadata database (the
api-server alone needs nothing more):

- ``simple``: SimpleAuthManager, as the local stack and compose run it;
- ``fab``: FabAuthManager, as the Helm chart runs it. Its users come from the chart itself: the
  rendered migrate Job's script runs here as it does in the pod (migrate, Connections, then the
  admin and one Viewer from ``airflow.users``), with the passwords in the environment only.

Every route of the mounted dashboard refuses a request without a token (401) or with a forged one
(403), and serves the page, its scripts, the snapshot and the event stream to any logged-in user,
with the bearer token of ``POST /auth/token`` or with the UI's ``_token`` cookie.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from streamops.airflow_rest import fetch_token
from streamops.config import PROJECT_ROOT
from streamops.stack.airflow import SIMPLE_AUTH_MANAGER
from tests.deploy.helm_binary import ensure_helm

# Clear of the main stack's and the shared test stack's ports.
PORTS = range(28080, 28091)
PREFIX = "/streamops-dashboard"
ROUTES = ("/", "/static/app.js", "/api/snapshot", "/api/events", "/healthz")
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
ADMIN = "admin"
VIEWER = "viewer"
START_TIMEOUT_SECONDS = 240
READ_TIMEOUT_SECONDS = 30.0


@pytest.fixture(autouse=True)
def _running_stack() -> None:
    """Replaces the integration tests' shared stack: this module runs its own services."""


def _free_port(taken: set[int]) -> int:
    for port in PORTS:
        if port in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError(f"no free port in {PORTS}")


@pytest.fixture(scope="module")
def ports() -> set[int]:
    return set()


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard-auth")


@dataclass(frozen=True)
class RedisServer:
    port: int
    password: str


@pytest.fixture(scope="module")
def redis_server(state: Path, ports: set[int]) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (`streamops install` installs it)")
    server = RedisServer(_free_port(ports), secrets.token_urlsafe(16))
    folder = state / "redis"
    folder.mkdir()
    config = folder / "redis.conf"
    config.write_text(
        f'port {server.port}\nbind 127.0.0.1\ndir {folder}\nsave ""\nappendonly no\n'
        f"requirepass {server.password}\n"
    )
    process = subprocess.Popen(
        ["redis-server", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    client = redis.Redis(port=server.port, password=server.password)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=20)


@dataclass(frozen=True)
class AirflowServer:
    url: str
    auth_manager: str
    # Login → password of every user the setup created.
    users: dict[str, str]
    setup_output: str


def _render_chart(values: dict[str, Any]) -> list[dict[str, Any]]:
    helm = ensure_helm()
    args = [str(helm), "template", "demo", str(PROJECT_ROOT / "helm" / "streamops")]
    for key, value in values.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    output = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


def _find(manifests: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    for manifest in manifests:
        if manifest["kind"] == kind and manifest["metadata"]["name"].endswith(suffix):
            return manifest
    raise AssertionError(f"no {kind} *{suffix} in the rendered chart")


def _run(args: list[str], env: dict[str, str], log: Path) -> str:
    # A session of its own: no controlling terminal, so a password prompt reads stdin.
    result = subprocess.run(
        args,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        timeout=900,
        check=False,
    )
    output = result.stdout + result.stderr
    log.write_text(output)
    assert result.returncode == 0, (
        f"{args[:3]} failed (exit {result.returncode}):\n{output[-4000:]}"
    )
    return output


def _base_environment(home: Path, port: int, redis_server: RedisServer) -> dict[str, str]:
    dags = home / "dags"
    dags.mkdir(parents=True)
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AIRFLOW", "STREAMOPS_"))
    }
    return {
        **inherited,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # No DAGs: the api-server's plugin is what is under test.
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
        "STREAMOPS_STATE_DIR": str(home / "state"),
        "STREAMOPS_REDIS_HOST": "127.0.0.1",
        "STREAMOPS_REDIS_PORT": str(redis_server.port),
        "STREAMOPS_REDIS_PASSWORD": redis_server.password,
        "PYTHONPATH": str(PROJECT_ROOT),
    }


def _setup_simple(home: Path, env: dict[str, str]) -> tuple[dict[str, str], str]:
    password = secrets.token_urlsafe(12)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({ADMIN: password}))
    env.update(
        {
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        }
    )
    output = _run([_airflow(), "db", "migrate"], env, home / "setup.log")
    return {ADMIN: password}, output


def _setup_fab(home: Path, env: dict[str, str]) -> tuple[dict[str, str], str]:
    """The chart's migrate Job, run here: its script, its auth manager, its users."""
    viewer = {
        "username": VIEWER,
        "role": "Viewer",
        "email": "viewer@example.com",
        "firstName": "Vera",
        "lastName": "Viewer",
        "passwordSecret": {"name": "streamops-users", "key": VIEWER},
    }
    manifests = _render_chart({"airflow.adminUser": ADMIN, "airflow.users": [viewer]})
    config = _find(manifests, "ConfigMap", "-env")["data"]
    job = _find(manifests, "Job", "-airflow-db-migrate")
    container = job["spec"]["template"]["spec"]["containers"][0]
    shell, flag, script = container["args"]
    assert (shell, flag) == ("bash", "-c")
    env_names = {item["name"] for item in container["env"]}
    assert {"STREAMOPS_AIRFLOW_ADMIN_PASSWORD", "STREAMOPS_AIRFLOW_USER_PASSWORD_0"} <= env_names
    users = {ADMIN: secrets.token_urlsafe(12), VIEWER: secrets.token_urlsafe(12)}
    env.update(
        {
            "AIRFLOW__CORE__AUTH_MANAGER": config["AIRFLOW__CORE__AUTH_MANAGER"],
            "STREAMOPS_AIRFLOW_ADMIN_USER": config["STREAMOPS_AIRFLOW_ADMIN_USER"],
            "STREAMOPS_SPARK_MASTER": config["STREAMOPS_SPARK_MASTER"],
            "STREAMOPS_AIRFLOW_ADMIN_PASSWORD": users[ADMIN],
            "STREAMOPS_AIRFLOW_USER_PASSWORD_0": users[VIEWER],
        }
    )
    # The chart's own script, with the PATH of this environment's airflow.
    env["PATH"] = f"{Path(_airflow()).parent}{os.pathsep}{env.get('PATH', '')}"
    output = _run(["bash", "-c", script], env, home / "setup.log")
    # Run again, as on every `helm upgrade`: the users exist, and nothing fails.
    output += _run(["bash", "-c", script], env, home / "setup-again.log")
    return users, output


def _airflow() -> str:
    return str(Path(sys.executable).parent / "airflow")


@pytest.fixture(scope="module", params=["simple", "fab"])
def airflow(
    request: pytest.FixtureRequest, state: Path, ports: set[int], redis_server: RedisServer
) -> Iterator[AirflowServer]:
    home = state / request.param
    port = _free_port(ports)
    env = _base_environment(home, port, redis_server)
    setup = _setup_fab if request.param == "fab" else _setup_simple
    users, output = setup(home, env)
    log = (home / "api-server.log").open("wb")
    process = subprocess.Popen(
        [_airflow(), "api-server", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            assert process.poll() is None, (home / "api-server.log").read_text()[-4000:]
            try:
                if httpx.get(f"{url}/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the api-server did not become healthy"
            time.sleep(1)
        yield AirflowServer(url, env["AIRFLOW__CORE__AUTH_MANAGER"], users, output)
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(timeout=30)
        log.close()


def _token(airflow: AirflowServer, user: str = ADMIN) -> str:
    return fetch_token(airflow.url, user, airflow.users[user])


@dataclass(frozen=True)
class Reply:
    status_code: int
    headers: httpx.Headers
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def _get(airflow: AirflowServer, route: str, **kwargs: Any) -> Reply:
    with (
        httpx.Client(timeout=READ_TIMEOUT_SECONDS) as client,
        client.stream("GET", f"{airflow.url}{PREFIX}{route}", **kwargs) as response,
    ):
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            # The event stream never ends: its first events are enough.
            text = _first_event(response)
        else:
            text = response.read().decode()
        return Reply(response.status_code, response.headers, text)


def _first_event(response: httpx.Response) -> str:
    """The stream up to the end of its ``snapshot`` event."""
    lines: list[str] = []
    deadline = time.monotonic() + READ_TIMEOUT_SECONDS
    for line in response.iter_lines():
        lines.append(line)
        if line == "" and any(seen == "event: snapshot" for seen in lines):
            return "\n".join(lines)
        assert time.monotonic() < deadline, "no snapshot event in time"
    raise AssertionError(f"the stream ended before its snapshot: {lines}")


def test_the_auth_manager_is_the_one_configured(airflow: AirflowServer) -> None:
    # The chart's auth manager is FAB; the simple one only where it is meant (local, compose).
    assert airflow.auth_manager in (SIMPLE_AUTH_MANAGER, FAB_AUTH_MANAGER)
    response = httpx.post(
        f"{airflow.url}/auth/token",
        json={"username": ADMIN, "password": "not-the-password"},
        timeout=READ_TIMEOUT_SECONDS,
    )
    assert response.status_code in (400, 401, 403), response.text


@pytest.mark.parametrize("route", ROUTES)
def test_every_route_refuses_a_request_without_a_login(airflow: AirflowServer, route: str) -> None:
    response = _get(airflow, route)
    assert response.status_code == 401, (route, response.status_code, response.text[:300])
    assert "streamops" not in response.text


@pytest.mark.parametrize("route", ROUTES)
def test_every_route_refuses_a_forged_token(airflow: AirflowServer, route: str) -> None:
    forged = _token(airflow)[:-4] + "AAAA"
    response = _get(airflow, route, headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code in (401, 403), (route, response.status_code)


def test_a_browser_without_a_session_gets_a_link_to_the_login(airflow: AirflowServer) -> None:
    response = _get(airflow, "/", headers={"Accept": "text/html"})
    assert response.status_code == 401
    assert "Log in" in response.text and "login" in response.text
    assert "patient" not in response.text.lower()


def test_a_logged_in_user_gets_the_dashboard(airflow: AirflowServer) -> None:
    headers = {"Authorization": f"Bearer {_token(airflow)}"}
    page = _get(airflow, "/", headers=headers)
    assert page.status_code == 200
    assert "<title>streamops — live</title>" in page.text
    # Relative URLs: they resolve under the mount.
    assert 'src="static/app.js"' in page.text
    script = _get(airflow, "/static/app.js", headers=headers)
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert 'new EventSource("api/events")' in script.text
    assert _get(airflow, "/static/../app.py", headers=headers).status_code == 404

    snapshot = _get(airflow, "/api/snapshot", headers=headers)
    assert snapshot.status_code == 200
    assert {"orders", "alerts", "health", "vitals", "disk"} <= set(snapshot.json())

    events = _get(airflow, "/api/events", headers=headers)
    assert events.status_code == 200
    assert events.headers["content-type"].startswith("text/event-stream")
    assert "event: snapshot" in events.text

    deadline = time.monotonic() + READ_TIMEOUT_SECONDS
    while (health := _get(airflow, "/healthz", headers=headers)).status_code != 200:
        assert time.monotonic() < deadline, health.text  # the Redis subscription, with AUTH
        time.sleep(0.5)
    assert health.json()["redis"] == "PONG"


def test_the_ui_session_cookie_is_a_login_too(airflow: AirflowServer) -> None:
    # What a browser sends after logging in to the UI: the JWT in the `_token` cookie.
    page = _get(airflow, "/", cookies={"_token": _token(airflow)})
    assert page.status_code == 200
    assert "streamops — live" in page.text


def test_the_ui_links_to_the_dashboard(airflow: AirflowServer) -> None:
    response = httpx.get(
        f"{airflow.url}/api/v2/plugins",
        headers={"Authorization": f"Bearer {_token(airflow)}"},
        timeout=READ_TIMEOUT_SECONDS,
    )
    assert response.status_code == 200, response.text
    plugin = next(p for p in response.json()["plugins"] if p["name"] == "streamops_pipelines")
    assert {app["url_prefix"] for app in plugin["fastapi_apps"]} == {"/streamops", PREFIX}
    views = {view["url_route"]: view for view in plugin["external_views"]}
    assert views["streamops-dashboard"]["href"] == "streamops-dashboard/"


def test_fab_users_from_the_chart_log_in_with_their_roles(airflow: AirflowServer) -> None:
    if airflow.auth_manager != FAB_AUTH_MANAGER:
        pytest.skip("the chart's users: FabAuthManager only")
    viewer = {"Authorization": f"Bearer {_token(airflow, VIEWER)}"}
    # Any logged-in user sees the dashboard, a Viewer too ...
    assert _get(airflow, "/", headers=viewer).status_code == 200
    # ... but the role holds elsewhere: a Viewer may not read Connections, the admin may.
    connections = f"{airflow.url}/api/v2/connections"
    assert httpx.get(connections, headers=viewer, timeout=30).status_code == 403
    admin = {"Authorization": f"Bearer {_token(airflow)}"}
    listed = httpx.get(connections, headers=admin, timeout=30)
    assert listed.status_code == 200
    assert "spark_default" in {c["connection_id"] for c in listed.json()["connections"]}
    # The passwords went through the environment only: never in what the setup printed.
    for password in airflow.users.values():
        assert password not in airflow.setup_output
    assert 'User "admin" created with role "Admin"' in airflow.setup_output
    assert "admin already exists in the db" in airflow.setup_output
