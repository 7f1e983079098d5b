"""The wheel, installed away from the repository, with the environment compose and the chart give
the scheduler: the DAGs load, the plugin registers, `streamops bench` lists the benchmarks, and
Spark's environment imports the jobs and the benchmarks.

The wheel is built from a copy of the Docker build context (what .dockerignore admits), as the
image's `pip install .` builds it. Each environment is a fresh venv laid out like the image's
(`/opt/streamops/venv`, `/opt/streamops/spark-venv`): the project's dependencies are linked in from
.venv and .venv-spark (installing them again would take minutes), and streamops itself comes from
the wheel alone. The variables are the image's ENV overlaid with the scheduler's in compose
(its env files and `environment:`) or in the chart (its rendered env, ConfigMaps and Secrets). The
image's files (its COPYs) and the container's mounts are recreated under a temporary root, and
every `/opt/...` path in a variable is moved there.

The build runs in pip's isolated build environment (setuptools and wheel from the package index),
as in the image: the first run needs the network.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import (
    COMPOSE_FILE,
    DOCKERFILE,
    NAMESPACE,
    PROJECT_ROOT,
    RELEASE,
    Manifest,
    find,
    parse_env_file,
)
from tests.deploy.test_dockerfile import _dockerignored, _env, parse_dockerfile

pytestmark = pytest.mark.slow

AIRFLOW_DEPENDENCIES = PROJECT_ROOT / ".venv"
SPARK_DEPENDENCIES = PROJECT_ROOT / ".venv-spark"
# Top-level packages of the wheel (pyproject's package discovery).
PACKAGES = ("streamops", "streamops_airflow", "spark_jobs", "benchmarks")
# Where each package lives in the source tree (streamops_airflow is under plugins/).
PACKAGE_SOURCES = {name: Path(name) for name in PACKAGES} | {
    "streamops_airflow": Path("plugins/streamops_airflow")
}
# Airflow's components: the compose services `airflow-<name>`, the chart's Deployments
# `<release>-streamops-<name>` with a container `<name>`. The scheduler submits the Spark jobs.
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
PLATFORMS = ("compose", "chart")
# The image's base (python:*-slim) sets these; the Dockerfile's PATH extends this one.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Values of the downward API in a pod the test does not run.
FIELD_REFS = {
    "metadata.name": "streamops-scheduler-0",
    "metadata.namespace": NAMESPACE,
    "status.podIP": "127.0.0.1",
    "spec.nodeName": "node-0",
    "spec.serviceAccountName": "streamops",
}
REFERENCES = {
    "configMapRef": "ConfigMap",
    "configMapKeyRef": "ConfigMap",
    "secretRef": "Secret",
    "secretKeyRef": "Secret",
}
PROBE_TIMEOUT_SECONDS = 240
# The wheel alone: its dependencies are linked in already, and nothing comes from an index.
INSTALL_OPTIONS = ("--no-deps", "--no-index", "--no-compile")


# --- the build context and the wheel -------------------------------------------------------------


def _dockerignore_patterns() -> list[str]:
    lines = (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def copy_build_context(destination: Path) -> None:
    """Every file Docker would send as the build context: .dockerignore's rules, last match wins."""
    patterns = _dockerignore_patterns()
    negations = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]

    def could_readmit(folder: str) -> bool:
        return any(any(c in n for c in "*?[") or n.startswith(folder + "/") for n in negations)

    for current, folders, files in os.walk(PROJECT_ROOT):
        relative = Path(current).relative_to(PROJECT_ROOT)
        kept = []
        for folder in sorted(folders):
            path = (relative / folder).as_posix()
            if not _dockerignored(path, patterns) or could_readmit(path):
                kept.append(folder)
        folders[:] = kept
        for name in files:
            path = (relative / name).as_posix()
            if not _dockerignored(path, patterns):
                (destination / path).parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):  # an editor's scratch file, gone
                    shutil.copy2(PROJECT_ROOT / path, destination / path)


@pytest.fixture(scope="module")
def build_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    context = tmp_path_factory.mktemp("build-context")
    copy_build_context(context)
    return context


@pytest.fixture(scope="module")
def wheel(build_context: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    # The build writes build/ and *.egg-info into the folder it builds: the copy, not the repo.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), "."],
        cwd=build_context,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"pip wheel failed:\n{result.stdout[-2000:]}{result.stderr[-4000:]}"
    )
    (built,) = dist.glob("streamops-*.whl")
    return built


# --- clean environments --------------------------------------------------------------------------


def _purelib(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return Path(result.stdout.strip())


def _belongs_to_the_checkout(entry: Path) -> bool:
    """What of a development environment points back at the repository: the editable install of
    streamops (its finder, .pth and metadata), or any .pth that names the checkout."""
    name = entry.name.lower()
    if name.startswith(("__editable__", "streamops")) or entry.stem in PACKAGES:
        return True
    return entry.suffix == ".pth" and str(PROJECT_ROOT) in entry.read_text(errors="replace")


def make_environment(venv: Path, dependencies: Path, wheel: Path) -> Path:
    """A new venv at ``venv`` whose site-packages links every distribution of ``dependencies``
    except streamops, which is installed from ``wheel``. Its site-packages."""
    base_python = dependencies / "bin" / "python"
    assert base_python.is_file(), f"{dependencies} has no Python: run `make install` first"
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(base_python), "-m", "venv", "--without-pip", str(venv)], check=True)
    site_packages = _purelib(venv / "bin" / "python")
    for entry in _purelib(base_python).iterdir():
        if not _belongs_to_the_checkout(entry) and not (site_packages / entry.name).exists():
            (site_packages / entry.name).symlink_to(entry)
    # pip is among the linked distributions; it installs into this environment, whose prefix it is.
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *INSTALL_OPTIONS, str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return site_packages


@dataclass(frozen=True)
class Image:
    """What the Dockerfile's runtime stage sets and copies."""

    env: dict[str, str]
    workdir: str
    copies: list[tuple[str, str]]  # (source in the build context, destination in the image)


@pytest.fixture(scope="module")
def image() -> Image:
    final = parse_dockerfile(DOCKERFILE.read_text()).final
    copies = []
    for instruction in final.all("COPY"):
        if instruction.heredocs or "--from=" in instruction.arguments:
            continue  # the entrypoint; the environments (made here) and the jars (not needed)
        *sources, destination = [t for t in instruction.arguments.split() if not t.startswith("--")]
        copies += [(source, destination) for source in sources]
    workdirs = final.all("WORKDIR")
    assert workdirs, "the runtime stage sets no WORKDIR"
    return Image(_env(final), workdirs[-1].arguments, copies)


@dataclass(frozen=True)
class Environments:
    airflow: Path  # the venv where the image has STREAMOPS_VENV_DIR
    spark: Path  # ... and STREAMOPS_SPARK_VENV_DIR
    airflow_site_packages: Path
    spark_site_packages: Path


@pytest.fixture(scope="module")
def environments(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Environments:
    root = tmp_path_factory.mktemp("venvs")
    airflow = root / "airflow-venv"
    spark = root / "spark-venv"
    return Environments(
        airflow,
        spark,
        make_environment(airflow, AIRFLOW_DEPENDENCIES, wheel),
        make_environment(spark, SPARK_DEPENDENCIES, wheel),
    )


# --- the container, recreated under a temporary root ---------------------------------------------


@dataclass
class Container:
    """One container's file system (under ``root``) and environment, as this machine sees them."""

    root: Path
    venvs: dict[str, Path]  # image path → the venv this test made for it
    env_in_image: dict[str, str]  # the variables with the container's own paths
    env: dict[str, str]  # ... with the paths of this machine
    workdir: Path

    def path(self, image_path: str) -> Path:
        """Where an absolute path of the container is on this machine."""
        for prefix, venv in self.venvs.items():
            if image_path == prefix or image_path.startswith(prefix + "/"):
                return venv / image_path[len(prefix) :].lstrip("/")
        assert image_path.startswith("/"), image_path
        return self.root / image_path.lstrip("/")

    def value(self, text: str) -> str:
        """A variable's value with each absolute `/opt/...` part (PATH-like lists too) moved."""
        parts = text.split(":")
        return ":".join(self.path(p).as_posix() if p.startswith("/opt/") else p for p in parts)

    def python(self, venv: str) -> Path:
        return self.path(self.env_in_image[venv]) / "bin" / "python"


def container(
    image: Image,
    environments: Environments,
    build_context: Path,
    root: Path,
    variables: dict[str, str],
    mount: Callable[[Container], None],
) -> Container:
    """The image's files and ENV, the deployment's ``variables`` over them, its mounts applied."""
    env_in_image = {
        **{k: v.replace("$PATH", BASE_PATH) for k, v in image.env.items()},
        "LANG": "C.UTF-8",
        **variables,
    }
    venvs = {
        env_in_image["STREAMOPS_VENV_DIR"]: environments.airflow,
        env_in_image["STREAMOPS_SPARK_VENV_DIR"]: environments.spark,
    }
    box = Container(root, venvs, env_in_image, {}, root)
    for source, destination in image.copies:
        copied = box.path(destination)
        copied.parent.mkdir(parents=True, exist_ok=True)
        if (build_context / source).is_dir():
            shutil.copytree(build_context / source, copied)
        else:
            shutil.copy2(build_context / source, copied)
    home = "/opt/airflow"  # the image user's home (useradd --home-dir)
    box.path(home).mkdir(parents=True, exist_ok=True)
    mount(box)
    box.env = {name: box.value(value) for name, value in env_in_image.items()}
    box.env.setdefault("HOME", box.path(home).as_posix())
    box.workdir = box.path(image.workdir)
    box.workdir.mkdir(parents=True, exist_ok=True)
    return box


def _interpolate(value: str) -> str:
    """Compose's `${NAME:-default}` with nothing set in the shell: the default, else empty."""
    return re.sub(r"\$\{\w+(?::?[-?]([^}]*))?\}", lambda m: m[1] or "", value)


def _git_ignored(path: Path) -> bool:
    check = ["git", "-C", str(PROJECT_ROOT), "check-ignore", "-q", str(path)]
    return subprocess.run(check, capture_output=True).returncode == 0


def compose_service(
    compose_file: Path, name: str, generated: Path
) -> tuple[dict[str, str], list[Any]]:
    """The variables and volumes of a service, as compose would give them. An env file that
    `make compose-up` generates on first run, git-ignored, is read from ``generated`` when the
    checkout has none."""
    service = yaml.safe_load(compose_file.read_text())["services"][name]
    variables: dict[str, str] = {}
    env_files = service.get("env_file", [])
    for entry in [env_files] if isinstance(env_files, str | dict) else env_files:
        path = entry if isinstance(entry, str) else entry["path"]
        file = compose_file.parent / path
        if not file.is_file():
            assert _git_ignored(file), f"env_file {path} does not exist and is not generated"
            file = generated / file.name
            assert file.is_file(), f"env_file {path}: `make compose-up` would generate it"
        variables |= parse_env_file(file)
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    for name, value in environment.items():
        if value is not None:  # a bare name passes the shell's value: none here
            variables[name] = _interpolate(str(value))
    return variables, service.get("volumes", [])


def _mount_compose_volumes(volumes: list[Any]) -> Callable[[Container], None]:
    def mount(box: Container) -> None:
        for volume in volumes:
            if isinstance(volume, str):
                source, _, rest = volume.partition(":")
                target = rest.split(":")[0]
            else:
                source, target = volume.get("source", ""), volume["target"]
            host = PROJECT_ROOT / source if source.startswith((".", "/")) else None
            destination = box.path(target)
            if host is None:
                destination.mkdir(parents=True, exist_ok=True)  # a named volume
            elif host.is_dir():
                shutil.rmtree(destination, ignore_errors=True)
                shutil.copytree(host, destination)
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.unlink(missing_ok=True)
                shutil.copy2(host, destination)

    return mount


def _object_data(manifests: list[Manifest], kind: str, name: str) -> dict[str, str]:
    manifest = find(manifests, kind, name)
    data = dict(manifest.get("stringData", {}))
    for key, value in manifest.get("data", {}).items():
        data[key] = base64.b64decode(value).decode() if kind == "Secret" else value
    return data


def _reference(source: Manifest) -> tuple[str, Manifest]:
    """(kind, reference) of an envFrom or a valueFrom entry."""
    for key, kind in REFERENCES.items():
        if key in source:
            return kind, source[key]
    raise AssertionError(f"a variable source this test cannot resolve: {source}")


def chart_component(
    manifests: list[Manifest], name: str
) -> tuple[dict[str, str], Callable[[Container], None]]:
    """The variables (env, envFrom) and volume mounts of a component's container, resolved from
    the rendered ConfigMaps and Secrets as the kubelet resolves them."""
    pod = find(manifests, "Deployment", f"{RELEASE}-streamops-{name}")["spec"]["template"]["spec"]
    (component,) = [c for c in pod["containers"] if c["name"] == name]
    variables: dict[str, str] = {}
    for source in component.get("envFrom", []):
        kind, ref = _reference(source)
        prefix = source.get("prefix", "")
        variables |= {prefix + k: v for k, v in _object_data(manifests, kind, ref["name"]).items()}
    for variable in component.get("env", []):
        if "value" in variable:
            variables[variable["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: variables.get(m[1], m[0]), str(variable["value"])
            )
            continue
        source = variable.get("valueFrom", {})
        if "fieldRef" in source:
            variables[variable["name"]] = FIELD_REFS.get(source["fieldRef"]["fieldPath"], "")
            continue
        kind, ref = _reference(source)
        variables[variable["name"]] = _object_data(manifests, kind, ref["name"])[ref["key"]]
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}

    def mount(box: Container) -> None:
        for volume_mount in component.get("volumeMounts", []):
            volume = volumes[volume_mount["name"]]
            destination = box.path(volume_mount["mountPath"])
            files: dict[str, str] | None = None
            if "configMap" in volume or "secret" in volume:
                kind = "ConfigMap" if "configMap" in volume else "Secret"
                spec = volume["configMap"] if kind == "ConfigMap" else volume["secret"]
                data = _object_data(manifests, kind, spec.get("name") or spec["secretName"])
                items = spec.get("items")
                files = {i["path"]: data[i["key"]] for i in items} if items else data
            if "subPath" in volume_mount:
                assert files is not None, f"{volume_mount}: subPath of a {volume}"
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.unlink(missing_ok=True)
                destination.write_text(files[volume_mount["subPath"]])
                continue
            # A mount hides what the image has at its path.
            shutil.rmtree(destination, ignore_errors=True)
            destination.mkdir(parents=True, exist_ok=True)
            for name, content in (files or {}).items():
                (destination / name).parent.mkdir(parents=True, exist_ok=True)
                (destination / name).write_text(content)

    return variables, mount


@pytest.fixture(scope="module")
def compose_generated(environments: Environments, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `make compose-up` generates before compose starts, generated by the wheel's CLI."""
    folder = tmp_path_factory.mktemp("compose-generated")
    streamops = environments.airflow / "bin" / "streamops"
    secrets = folder / "compose.secrets.env"
    result = subprocess.run(
        [str(streamops), "compose-secrets", "--file", str(secrets)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_SECONDS,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return folder


def deployed(
    request: pytest.FixtureRequest,
    platform: str,
    name: str,
    image: Image,
    environments: Environments,
    build_context: Path,
) -> Container:
    """Airflow component ``name`` as compose or the chart deploys it, recreated here."""
    if platform == "compose":
        generated = request.getfixturevalue("compose_generated")
        variables, volumes = compose_service(COMPOSE_FILE, f"airflow-{name}", generated)
        mount = _mount_compose_volumes(volumes)
    else:
        render = request.getfixturevalue("render")
        variables, mount = chart_component(render(), name)
    root = request.getfixturevalue("tmp_path_factory").mktemp(f"{platform}-{name}")
    box = container(image, environments, build_context, root, variables, mount)
    assert not box.workdir.is_relative_to(PROJECT_ROOT)
    return box


@pytest.fixture(
    scope="module",
    params=[(platform, name) for platform in PLATFORMS for name in AIRFLOW_COMPONENTS],
    ids=lambda param: "-".join(param),
)
def airflow_component(
    request: pytest.FixtureRequest,
    image: Image,
    environments: Environments,
    build_context: Path,
) -> Container:
    platform, name = request.param
    return deployed(request, platform, name, image, environments, build_context)


@pytest.fixture(scope="module", params=PLATFORMS)
def scheduler(
    request: pytest.FixtureRequest,
    image: Image,
    environments: Environments,
    build_context: Path,
) -> Container:
    """The scheduler: it runs `spark-submit`, so Spark's environment is used from its env."""
    return deployed(request, request.param, "scheduler", image, environments, build_context)


def run(box: Container, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``argv`` in the container's working folder with exactly its variables."""
    return subprocess.run(
        argv,
        cwd=box.workdir,
        env=box.env,
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_SECONDS,
    )


# --- what the repository says should be there ----------------------------------------------------


def expected_dag_ids(build_context: Path) -> set[str]:
    """The `dag_id="..."` literals of the DAG files, and one supervision DAG per pipeline of the
    repository's pipelines.yaml (the one source of specs for every deployment)."""
    fixed = {
        match
        for path in (build_context / "dags").glob("*.py")
        for match in re.findall(r'dag_id="([\w.-]+)"', path.read_text())
    }
    pipelines = yaml.safe_load((build_context / "pipelines.yaml").read_text())["pipelines"]
    return fixed | {f"streamops_supervise_{name}" for name in pipelines}


def expected_benchmarks(build_context: Path) -> list[str]:
    names = (path.stem for path in (build_context / "benchmarks").glob("bench_*.py"))
    return sorted(name.removeprefix("bench_") for name in names)


def plugin_modules(plugins_folder: Path) -> dict[str, str]:
    """Plugin name → module, for every AirflowPlugin class of the folder's top-level modules."""
    found = {}
    for path in plugins_folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(base, ast.Name) and base.id == "AirflowPlugin" for base in node.bases
            ):
                for statement in node.body:
                    if (
                        isinstance(statement, ast.Assign)
                        and any(getattr(t, "id", None) == "name" for t in statement.targets)
                        and isinstance(statement.value, ast.Constant)
                    ):
                        found[str(statement.value.value)] = path.stem
    return found


def assert_nothing_from_the_checkout(report: dict[str, Any], site_packages: Path) -> None:
    """The interpreter never looked into the repository, and every module of the project is a
    file of the installed wheel (not a link into the checkout)."""
    assert not [p for p in report["sys_path"] if p and Path(p).is_relative_to(PROJECT_ROOT)]
    loaded = {name: file for name, file in report["modules"].items() if file}
    from_checkout = sorted(n for n, f in loaded.items() if Path(f).is_relative_to(PROJECT_ROOT))
    assert not from_checkout, f"modules loaded from the repository: {from_checkout[:20]}"
    ours = {n: f for n, f in loaded.items() if n.split(".")[0] in PACKAGES}
    assert "streamops" in ours
    for name, file in ours.items():
        resolved = Path(file).resolve()
        assert resolved.is_relative_to(site_packages), f"{name} from {file}, not the wheel"
        assert not resolved.is_relative_to(PROJECT_ROOT), f"{name} resolves into the checkout"
    assert Path(report["distribution"]).resolve() == site_packages.resolve()


# --- the probes ----------------------------------------------------------------------------------

AIRFLOW_PROBE = """
import importlib.metadata, json, os, sys
from pathlib import Path

from airflow import plugins_manager
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
plugins_manager.ensure_plugins_loaded()
report = {
    "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
    "dags": {dag_id: str(dag.fileloc) for dag_id, dag in bag.dags.items()},
    "plugin_errors": {str(k): str(v) for k, v in plugins_manager.get_import_errors().items()},
    "plugins": plugins_manager.get_plugin_info(["source", "fastapi_apps", "external_views"]),
    "modules": {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())},
    "sys_path": sys.path,
    "distribution": str(importlib.metadata.distribution("streamops").locate_file("")),
}
Path(sys.argv[1]).write_text(json.dumps(report, default=str))
"""

SPARK_PROBE = """
import importlib.metadata, json, sys
from pathlib import Path

import benchmarks.report
import benchmarks.runner
import spark_jobs.jobs.orders

report = {
    "benchmarks": sorted(benchmarks.runner.discover()),
    "modules": {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())},
    "sys_path": sys.path,
    "distribution": str(importlib.metadata.distribution("streamops").locate_file("")),
}
Path(sys.argv[1]).write_text(json.dumps(report, default=str))
"""


def probe(box: Container, python: Path, code: str, name: str) -> dict[str, Any]:
    script = box.root / f"{name}.py"
    script.write_text(code)
    output = box.root / f"{name}.json"
    result = run(box, [str(python), str(script), str(output)])
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}{result.stderr[-6000:]}"
    report: dict[str, Any] = json.loads(output.read_text())
    return report


# --- the tests -----------------------------------------------------------------------------------


def test_the_wheel_holds_every_file_of_the_packages(build_context: Path, wheel: Path) -> None:
    """Code and data: what the packages hold in the build context is in the wheel (a new SQL
    migration, template or static file not declared as package data would be missing)."""
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    missing = []
    for package, source in PACKAGE_SOURCES.items():
        folder = build_context / source
        assert folder.is_dir(), f"{source} is not in the build context: see .dockerignore"
        for path in folder.rglob("*"):
            if path.is_file() and path.name != "README.md" and "__pycache__" not in path.parts:
                name = PurePosixPath(package, *path.relative_to(folder).parts).as_posix()
                if name not in in_wheel:
                    missing.append(name)
    assert not missing, f"not in the wheel: {missing}"
    assert "benchmarks/runner.py" in in_wheel
    entry_points = next(n for n in in_wheel if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(wheel) as archive:
        assert "streamops = streamops.cli:run" in archive.read(entry_points).decode()


def test_the_dags_and_the_plugin_load_from_the_wheel(
    airflow_component: Container, environments: Environments, build_context: Path
) -> None:
    box = airflow_component
    dags_folder = Path(box.env["AIRFLOW__CORE__DAGS_FOLDER"])
    plugins_folder = Path(box.env["AIRFLOW__CORE__PLUGINS_FOLDER"])
    specs = Path(box.env["STREAMOPS_PIPELINES_FILE"])
    for folder in (dags_folder, plugins_folder, specs):
        assert folder.exists() and not folder.resolve().is_relative_to(PROJECT_ROOT), folder
    report = probe(box, box.python("STREAMOPS_VENV_DIR"), AIRFLOW_PROBE, "airflow-probe")

    assert report["import_errors"] == {}
    assert set(report["dags"]) == expected_dag_ids(build_context)
    assert all(Path(f).is_relative_to(dags_folder) for f in report["dags"].values())

    assert report["plugin_errors"] == {}
    expected_plugins = plugin_modules(plugins_folder)
    assert expected_plugins, "no AirflowPlugin in the plugins folder"
    loaded = {p["name"]: p for p in report["plugins"]}
    assert set(expected_plugins) <= set(loaded), f"registered: {sorted(loaded)}"
    for name, module in expected_plugins.items():
        # Airflow's plugins-folder loader imports the file under its stem: the copy's file.
        assert loaded[name]["source"].endswith(f"/{module}.py"), loaded[name]["source"]
        assert Path(report["modules"][module]) == plugins_folder / f"{module}.py"
        assert loaded[name]["fastapi_apps"] or loaded[name]["external_views"], name
    assert_nothing_from_the_checkout(report, environments.airflow_site_packages)


def test_streamops_bench_runs_from_the_installed_package(
    scheduler: Container, build_context: Path
) -> None:
    """`streamops bench` of Airflow's environment starts `python -m benchmarks.report` in Spark's
    (STREAMOPS_SPARK_VENV_DIR), which finds the benchmarks in the wheel."""
    box = scheduler
    streamops = box.python("STREAMOPS_VENV_DIR").with_name("streamops")
    assert streamops.is_file(), "the wheel's console script is not installed"
    help_text = run(box, [str(streamops), "bench", "--help"])
    assert help_text.returncode == 0, help_text.stderr[-3000:]
    assert "--list" in help_text.stdout
    listed = run(box, [str(streamops), "bench", "--list"])
    assert listed.returncode == 0, listed.stdout[-2000:] + listed.stderr[-4000:]
    names = [line.strip() for line in listed.stdout.splitlines() if line.strip()]
    assert names == expected_benchmarks(build_context)


def test_spark_environment_imports_the_jobs_and_the_benchmarks(
    scheduler: Container, environments: Environments, build_context: Path
) -> None:
    box = scheduler
    report = probe(box, box.python("STREAMOPS_SPARK_VENV_DIR"), SPARK_PROBE, "spark-probe")
    assert report["benchmarks"] == expected_benchmarks(build_context)
    assert {"spark_jobs.jobs.orders", "benchmarks.runner", "pyspark"} <= set(report["modules"])
    assert_nothing_from_the_checkout(report, environments.spark_site_packages)


def test_the_checkout_is_not_what_the_environments_see(environments: Environments) -> None:
    """The check above can fail: the repository's own environment resolves streamops into the
    checkout (its editable install), the test's environments do not."""
    code = "import streamops; print(streamops.__file__)"
    ours = subprocess.run(
        [str(AIRFLOW_DEPENDENCIES / "bin" / "python"), "-c", code],
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(ours.stdout.strip()).is_relative_to(PROJECT_ROOT)
    theirs = subprocess.run(
        [str(environments.airflow / "bin" / "python"), "-c", code],
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(theirs.stdout.strip()).resolve().is_relative_to(environments.airflow_site_packages)
