"""Fixtures of the deployment tests: a pinned helm (built once), chart rendering, parsed files.

Nothing here needs Docker or a Kubernetes cluster: the chart is rendered with `helm template` and
validated against the Kubernetes JSON schemas; compose is validated against the Compose schema.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.helm_binary import ensure_helm

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = PROJECT_ROOT / "helm" / "streamops"
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yaml"
COMPOSE_ENV_FILE = PROJECT_ROOT / "deploy" / "compose.env"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
# The newest Kubernetes release kubernetes-validate has schemas for; the chart renders for it.
KUBE_VERSION = "1.37.0"
RELEASE = "demo"
NAMESPACE = "streamops"

Manifest = dict[str, Any]


@pytest.fixture(scope="session")
def helm(pytestconfig: pytest.Config) -> Path:
    """The helm binary; the first run on a machine builds it (minutes), with progress shown."""
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")

    def report(message: str) -> None:
        if reporter is not None:
            reporter.write_line(f"[tests/deploy] {message}")
        else:  # pragma: no cover - pytest always has a terminal reporter when run normally
            print(f"[tests/deploy] {message}", flush=True)

    if capture is not None:
        with capture.global_and_fixture_disabled():
            return ensure_helm(report)
    return ensure_helm(report)


class HelmError(Exception):
    def __init__(self, returncode: int, output: str) -> None:
        super().__init__(output)
        self.returncode = returncode
        self.output = output


def run_helm(helm: Path, *args: str) -> str:
    result = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        raise HelmError(result.returncode, result.stdout + result.stderr)
    return result.stdout


def _set_args(values: dict[str, Any]) -> list[str]:
    # --set-json keeps types exact (a string "1" stays a string, lists stay lists).
    args: list[str] = []
    for key, value in values.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


@pytest.fixture(scope="session")
def render(helm: Path) -> Callable[..., list[Manifest]]:
    """`helm template` with dotted-key values, parsed; identical calls are rendered once."""
    cache: dict[str, list[Manifest]] = {}

    def _render(
        values: dict[str, Any] | None = None, *, show_only: str | None = None
    ) -> list[Manifest]:
        key = json.dumps([values or {}, show_only], sort_keys=True)
        if key not in cache:
            args = [
                "template",
                RELEASE,
                str(CHART_DIR),
                "--namespace",
                NAMESPACE,
                "--kube-version",
                KUBE_VERSION,
                *_set_args(values or {}),
            ]
            if show_only:
                args += ["--show-only", show_only]
            output = run_helm(helm, *args)
            cache[key] = [doc for doc in yaml.safe_load_all(output) if doc]
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def default_manifests(render: Callable[..., list[Manifest]]) -> list[Manifest]:
    return render()


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text()))


@pytest.fixture(scope="session")
def compose_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What a compose container gets: deploy/compose.env, then the secrets file that
    `make compose-up` generates (made here in a temporary folder, as on a first run)."""
    from streamops.compose_secrets import ensure_secrets_file

    secrets_file = tmp_path_factory.mktemp("compose") / "compose.secrets.env"
    ensure_secrets_file(secrets_file, COMPOSE_ENV_FILE)
    committed = parse_env_file(COMPOSE_ENV_FILE)
    generated = parse_env_file(secrets_file)
    overlap = sorted(set(committed) & set(generated))
    assert not overlap, f"set in deploy/compose.env and generated as secrets: {overlap}"
    return {**committed, **generated}


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as compose reads them (no quotes or expansion are used in ours)."""
    env: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, separator, value = stripped.partition("=")
        assert separator, f"{path}:{number}: not KEY=VALUE: {line!r}"
        assert name not in env, f"{path}:{number}: {name} is set twice"
        env[name] = value
    return env


def pod_specs(manifests: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    """(kind/name, pod spec) of every workload in the manifests."""
    for manifest in manifests:
        kind = manifest["kind"]
        name = f"{kind}/{manifest['metadata']['name']}"
        if kind in ("Deployment", "StatefulSet", "Job"):
            yield name, manifest["spec"]["template"]["spec"]
        elif kind == "Pod":
            yield name, manifest["spec"]


def containers(spec: Manifest) -> list[Manifest]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    for manifest in manifests:
        if manifest["kind"] == kind and manifest["metadata"]["name"] == name:
            return manifest
    available = sorted(f"{m['kind']}/{m['metadata']['name']}" for m in manifests)
    raise AssertionError(f"{kind}/{name} not rendered; rendered: {available}")


def spark_pod_templates(manifests: list[Manifest]) -> dict[str, Manifest]:
    """The driver and executor pod templates stored in the spark ConfigMap, parsed."""
    config_map = find(manifests, "ConfigMap", f"{RELEASE}-streamops-spark")
    return {
        key: yaml.safe_load(value)
        for key, value in config_map["data"].items()
        if key.endswith("-pod-template.yaml")
    }
