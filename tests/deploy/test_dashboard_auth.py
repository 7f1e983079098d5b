"""Authentication as the chart and compose ship it: the chart runs Airflow's FabAuthManager (no
SimpleAuthManager anywhere), creates its users from Secrets without a password on any argv, and
the dashboard, which shows patient vitals, is reachable only through the api-server, where every
route of it requires Airflow's login (tests/integration/test_dashboard_airflow_auth.py runs it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import HelmError, Manifest

FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
DASHBOARD_PORT = 8090
VIEWER = {
    "username": "alice",
    "role": "Viewer",
    "email": "alice@example.com",
    "firstName": "Alice",
    "lastName": "Doe",
    "passwordSecret": {"name": "streamops-users", "key": "alice"},
}
Render = Callable[..., list[Manifest]]


def _find(manifests: list[Manifest], kind: str, suffix: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{kind} *{suffix}: {[m['metadata']['name'] for m in found]}"
    return found[0]


def _pod_specs(manifests: list[Manifest]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for manifest in manifests:
        spec = manifest.get("spec", {})
        if manifest["kind"] in ("Deployment", "StatefulSet", "Job"):
            specs.append((manifest["metadata"]["name"], spec["template"]["spec"]))
    return specs


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def test_the_chart_runs_the_fab_auth_manager(default_manifests: list[Manifest]) -> None:
    env = _find(default_manifests, "ConfigMap", "-env")["data"]
    assert env["AIRFLOW__CORE__AUTH_MANAGER"] == FAB_AUTH_MANAGER
    rendered = yaml.safe_dump_all(default_manifests)
    assert "SimpleAuthManager" not in rendered
    assert "SIMPLE_AUTH_MANAGER" not in rendered
    assert "passwords.json" not in rendered


def test_the_api_server_writes_no_passwords_file(default_manifests: list[Manifest]) -> None:
    pod = _find(default_manifests, "Deployment", "-api-server")["spec"]["template"]["spec"]
    names = [container["name"] for container in _containers(pod)]
    assert "write-passwords-file" not in names
    assert names[-1] == "api-server"


def test_the_dashboard_has_no_server_of_its_own(default_manifests: list[Manifest]) -> None:
    for manifest in default_manifests:
        name = manifest["metadata"]["name"]
        assert "dashboard" not in name, f"{manifest['kind']} {name}"
        if manifest["kind"] == "Service":
            ports = {port["port"] for port in manifest["spec"]["ports"]}
            assert DASHBOARD_PORT not in ports, name
    for name, pod in _pod_specs(default_manifests):
        for container in _containers(pod):
            command = " ".join([*container.get("command", []), *container.get("args", [])])
            assert "streamops.dashboard" not in command, f"{name}/{container['name']}"
    env = _find(default_manifests, "ConfigMap", "-env")["data"]
    assert "STREAMOPS_DASHBOARD_PORT" not in env


def test_the_migrate_job_creates_the_admin_from_the_secret(
    default_manifests: list[Manifest],
) -> None:
    job = _find(default_manifests, "Job", "-airflow-db-migrate")
    container = job["spec"]["template"]["spec"]["containers"][0]
    shell, flag, script = container["args"]
    assert (shell, flag) == ("bash", "-c")
    assert "airflow users create" in script
    assert 'create_user Admin "$STREAMOPS_AIRFLOW_ADMIN_USER"' in script
    # The password reaches the CLI's prompt on stdin, never its argv.
    assert "--password" not in script and "-p " not in script
    assert 'printf \'%s\\n%s\\n\' "${!6}" "${!6}" |' in script
    assert script.index("airflow db migrate") < script.index("create_user Admin")
    env = {item["name"]: item for item in container["env"]}
    admin = env["STREAMOPS_AIRFLOW_ADMIN_PASSWORD"]
    assert "value" not in admin
    assert admin["valueFrom"]["secretKeyRef"]["key"] == "admin-password"
    config = _find(default_manifests, "ConfigMap", "-env")["data"]
    assert config["STREAMOPS_AIRFLOW_ADMIN_USER"] == "admin"


def test_extra_users_get_their_role_and_their_own_secret(render: Render) -> None:
    manifests = render({"airflow.users": [VIEWER]})
    job = _find(manifests, "Job", "-airflow-db-migrate")
    container = job["spec"]["template"]["spec"]["containers"][0]
    script = container["args"][2]
    assert (
        "create_user 'Viewer' 'alice' 'alice@example.com' 'Alice' 'Doe' "
        "STREAMOPS_AIRFLOW_USER_PASSWORD_0" in " ".join(script.split())
    )
    env = {item["name"]: item for item in container["env"]}
    assert env["STREAMOPS_AIRFLOW_USER_PASSWORD_0"]["valueFrom"] == {
        "secretKeyRef": {"name": "streamops-users", "key": "alice"}
    }
    # Only the Job learns the users' passwords.
    for name, pod in _pod_specs(manifests):
        if name.endswith("-airflow-db-migrate"):
            continue
        for item in _containers(pod):
            names = {e["name"] for e in item.get("env", [])}
            assert "STREAMOPS_AIRFLOW_USER_PASSWORD_0" not in names, f"{name}/{item['name']}"


@pytest.mark.parametrize(
    "user",
    [
        {**VIEWER, "role": "Superuser"},
        {**VIEWER, "username": "it's"},
        {key: value for key, value in VIEWER.items() if key != "passwordSecret"},
        {**VIEWER, "password": "inline"},
    ],
    ids=["unknown-role", "quote-in-username", "no-password-secret", "inline-password"],
)
def test_the_schema_rejects_bad_users(render: Render, user: dict[str, Any]) -> None:
    with pytest.raises(HelmError) as error:
        render({"airflow.users": [user]})
    assert "values don't meet the specifications of the schema" in error.value.output, json.dumps(
        user
    )


def test_compose_has_no_dashboard_service(compose: dict[str, Any]) -> None:
    # Reached at the api-server's /streamops-dashboard/, behind the same login as Airflow's UI.
    for name, service in compose["services"].items():
        command = service.get("command", [])
        text = command if isinstance(command, str) else " ".join(command)
        assert "streamops.dashboard" not in text, name
        for port in service.get("ports", []):
            assert port.split(":")[-1] != str(DASHBOARD_PORT), f"{name}: {port}"
    assert "dashboard" not in compose["services"]


def test_every_route_of_the_mounted_dashboard_requires_the_login() -> None:
    """The plugin's dashboard app: each route depends on Airflow's get_user, and nothing is
    mounted beside the routes (a mounted app would skip the dependencies)."""
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.routing import APIRoute
    from streamops_airflow.ui.dashboard_app import app

    paths = set()
    for route in app.routes:
        assert isinstance(route, APIRoute), f"{route!r} is not a route with dependencies"
        calls = {dependency.call for dependency in route.dependant.dependencies}
        assert get_user in calls, route.path
        paths.add(route.path)
    assert paths == {"/", "/static/{name}", "/healthz", "/api/snapshot", "/api/events"}
