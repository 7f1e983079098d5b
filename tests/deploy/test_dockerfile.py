"""The Dockerfile, read as Docker reads it (hadolint is not packaged for Debian bookworm).

Checks the rules that matter here: pinned bases, non-root final stage, a health check, the
pinned dependency install, and the Kafka connector resolved exactly as `streamops install` does.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest

from streamops import installer
from streamops.config import Settings
from tests.deploy.conftest import COMPOSE_ENV_FILE, DOCKERFILE, PROJECT_ROOT, parse_env_file

FINAL_UID = 50000


@dataclass
class Instruction:
    keyword: str
    arguments: str
    line: int
    heredocs: list[str] = field(default_factory=list)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise AssertionError(f"no stage named {name!r}")

    def arg_default(self, stage: Stage, name: str) -> str:
        """An ARG's value in a stage: redeclared ARGs inherit the global default."""
        for instruction in stage.all("ARG"):
            arg_name, _, default = instruction.arguments.partition("=")
            if arg_name == name and default:
                return default
        return self.global_args[name]


def parse_dockerfile(text: str) -> Dockerfile:
    """Instructions with continuations joined and heredoc bodies attached to their instruction."""
    lines = text.splitlines()
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    index = 0
    while index < len(lines):
        start = index
        line = lines[index]
        index += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        logical = line
        while logical.endswith("\\") and index < len(lines):
            nxt = lines[index]
            index += 1
            if nxt.lstrip().startswith("#"):
                continue
            logical = logical[:-1] + " " + nxt.strip()
        keyword, _, arguments = logical.strip().partition(" ")
        instruction = Instruction(keyword.upper(), arguments.strip(), start + 1)
        for marker in re.findall(r"<<-?'?\"?(\w+)'?\"?", arguments):
            body: list[str] = []
            while index < len(lines) and lines[index].strip() != marker:
                body.append(lines[index])
                index += 1
            index += 1  # the terminator
            instruction.heredocs.append("\n".join(body) + "\n")
        if instruction.keyword == "FROM":
            parts = instruction.arguments.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif not stages:
            assert instruction.keyword == "ARG", f"line {start + 1}: only ARG may precede FROM"
            arg_name, _, default = instruction.arguments.partition("=")
            global_args[arg_name] = default
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(global_args, stages)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text())


def _substitute(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m[1], m[0]), value)


def _env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for token in shlex.split(instruction.arguments):
            name, _, value = token.partition("=")
            env[name] = _substitute(value, env)
    return env


def _constraint_pin(package: str) -> str:
    for line in (PROJECT_ROOT / "constraints.txt").read_text().splitlines():
        name, separator, version = line.partition("==")
        if separator and name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned in constraints.txt")


def test_is_multi_stage_with_named_build_stages(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) >= 3
    assert all(stage.name for stage in dockerfile.stages), "name every stage (FROM ... AS name)"


def test_every_base_image_is_pinned(dockerfile: Dockerfile) -> None:
    names = {stage.name for stage in dockerfile.stages}
    for stage in dockerfile.stages:
        if stage.base in names:
            continue  # built on an earlier stage, whose base is checked itself
        image = _substitute(stage.base, dockerfile.global_args)
        assert "$" not in image, f"{stage.base} does not resolve from the global ARGs"
        if "@sha256:" in image:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{image}: no tag"
        assert tag != "latest", f"{image}: latest is not a pin"
        # A full version (3.11.14), not a moving minor tag (3.11).
        assert re.match(r"^\d+\.\d+\.\d+", tag), f"{image}: pin the patch version"


def test_base_python_matches_the_project(dockerfile: Dockerfile) -> None:
    image = _substitute(dockerfile.final.base, dockerfile.global_args)
    assert image.startswith("python:3.11."), image
    assert "bookworm" in image


def test_final_stage_runs_as_the_non_root_uid(dockerfile: Dockerfile) -> None:
    users = dockerfile.final.all("USER")
    assert users, "the final stage has no USER"
    user = users[-1].arguments.split(":")[0]
    assert user not in ("root", "0")
    assert user == str(FINAL_UID)
    # Nothing after the last USER switches back.
    last_user_line = users[-1].line
    assert all(i.line < last_user_line for i in dockerfile.final.all("RUN")), (
        "RUN after USER: root-owned steps belong before it"
    )
    useradd = " ".join(i.arguments for i in dockerfile.final.all("RUN"))
    assert f"--uid {FINAL_UID}" in useradd


def test_final_stage_has_a_health_check(dockerfile: Dockerfile) -> None:
    checks = dockerfile.final.all("HEALTHCHECK")
    assert len(checks) == 1
    assert "NONE" not in checks[0].arguments.upper().split()
    assert "/api/v2/monitor/health" in checks[0].arguments
    assert re.search(r"--interval=\d+s", checks[0].arguments)


def test_installs_the_project_with_the_constraints(dockerfile: Dockerfile) -> None:
    runs = [i.arguments for stage in dockerfile.stages for i in stage.all("RUN")]
    installs = [r for r in runs if "pip install" in r and '-c constraints.txt ".[' in r]
    assert installs, "the project must be installed with `pip install -c constraints.txt .[...]`"
    # Airflow's PostgreSQL drivers come with the project, at the pins of constraints.txt.
    for package in ("psycopg2-binary", "asyncpg"):
        assert re.fullmatch(r"\d+\.\d+\.\d+", _constraint_pin(package)), package
    assert "==" not in installs[0], "pin extra packages in constraints.txt, not in the Dockerfile"


def test_installs_jre_17_headless_in_the_final_stage(dockerfile: Dockerfile) -> None:
    runs = " ".join(i.arguments for i in dockerfile.final.all("RUN"))
    assert "openjdk-17-jre-headless" in runs
    assert "libmariadb3" in runs, "the mariadb package links against Connector/C at run time"


def test_apt_installs_are_lean(dockerfile: Dockerfile) -> None:
    for stage in dockerfile.stages:
        for instruction in stage.all("RUN"):
            if "apt-get install" not in instruction.arguments:
                continue
            assert "--no-install-recommends" in instruction.arguments, instruction.line
            assert "rm -rf /var/lib/apt/lists/*" in instruction.arguments, instruction.line
            assert "apt-get update" in instruction.arguments, instruction.line


def test_connector_is_resolved_like_the_installer(dockerfile: Dockerfile) -> None:
    stage = dockerfile.stage("connector-jars")
    copies = [i.arguments.split() for i in stage.all("COPY")]
    assert ["streamops/maven/spark-kafka-connector.pom.xml", "/build/pom.xml"] in copies
    mvn = next(i.arguments for i in stage.all("RUN") if "mvn " in i.arguments)
    assert "dependency:copy-dependencies" in mvn
    assert "-DincludeScope=runtime" in mvn
    include = re.search(r"-DincludeArtifactIds=(\S+)", mvn)
    assert include, "the connector stage must restrict the artifacts like the installer"
    assert tuple(include[1].split(",")) == installer.SPARK_CONNECTOR_ARTIFACTS
    assert "-Dspark.version=${SPARK_VERSION}" in mvn
    # The connector must match the Spark that pip installs.
    assert dockerfile.arg_default(stage, "SPARK_VERSION") == _constraint_pin("pyspark")


def test_connector_jars_land_where_the_jobs_look(dockerfile: Dockerfile) -> None:
    final = dockerfile.final
    env = _env(final)
    spark_version = dockerfile.arg_default(final, "SPARK_VERSION")
    expected = Settings(cache_dir=Path(env["STREAMOPS_CACHE_DIR"])).spark_kafka_jars_dir(
        spark_version
    )
    copies = [i.arguments.split() for i in final.all("COPY")]
    jar_copies = [c for c in copies if c[0] == "--from=connector-jars"]
    assert len(jar_copies) == 1, "copy the connector jars into the final stage once"
    destination = _substitute(jar_copies[0][2], {"SPARK_VERSION": spark_version})
    assert PurePosixPath(destination) == PurePosixPath(expected)
    # The installer's completion marker, so `streamops install` in the image sees them as done.
    mvn = next(i for i in dockerfile.stage("connector-jars").all("RUN") if "mvn " in i.arguments)
    assert f"/jars/{installer.COMPLETE_MARKER}" in mvn.arguments


def test_copied_sources_exist_and_pass_dockerignore(dockerfile: Dockerfile) -> None:
    patterns = [
        line.strip()
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [
        instruction.arguments.split()[0]
        for stage in dockerfile.stages
        for instruction in stage.all("COPY")
        if not instruction.arguments.startswith("--") and not instruction.heredocs
    ]
    assert sources
    for source in sources:
        if source == ".":
            continue
        assert (PROJECT_ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not _dockerignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    # `benchmarks` is a package of the wheel too: `streamops bench` imports it.
    for needed in ("pyproject.toml", "constraints.txt", "README.md", "streamops/config.py"):
        assert not _dockerignored(needed, patterns), f"{needed} must reach the build"
    assert not _dockerignored("benchmarks/orders/latency.py", patterns), "benchmarks are left out"
    for secret_or_bulk in (".venv/bin/python", ".streamops/airflow/secrets.json", ".git/config"):
        assert _dockerignored(secret_or_bulk, patterns), f"{secret_or_bulk} must stay out"
    assert _dockerignored("benchmarks/results/run/summary.md", patterns), "results must stay out"


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a path is out if it or a parent is."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern[1:] if negate else pattern
        glob = glob.rstrip("/")
        if glob.startswith("**/"):
            matches = any(fnmatch.fnmatch(PurePosixPath(c).name, glob[3:]) for c in candidates)
        else:
            matches = any(fnmatch.fnmatch(c, glob) for c in candidates)
        if matches:
            excluded = not negate
    return excluded


def test_entrypoint_runs_spark_pods_and_passes_other_commands(dockerfile: Dockerfile) -> None:
    final = dockerfile.final
    entrypoint = final.all("ENTRYPOINT")[-1].arguments
    assert "/usr/bin/tini" in entrypoint
    scripts = [h for i in final.all("COPY") for h in i.heredocs]
    assert len(scripts) == 1
    script = scripts[0]
    assert "KubernetesExecutorBackend" in script
    assert "spark-submit" in script and "--deploy-mode client" in script
    assert 'exec "$@"' in script
    syntax = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert syntax.returncode == 0, syntax.stderr


def test_image_paths_are_the_ones_compose_uses(dockerfile: Dockerfile) -> None:
    env = _env(dockerfile.final)
    compose_env = parse_env_file(COMPOSE_ENV_FILE)
    for name in ("STREAMOPS_CACHE_DIR", "STREAMOPS_STATE_DIR", "AIRFLOW__CORE__DAGS_FOLDER"):
        assert compose_env[name] == env[name], name
    destinations = {i.arguments.split()[-1] for i in dockerfile.final.all("COPY")}
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] in destinations
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] in destinations
    assert compose_env["AIRFLOW__CORE__PLUGINS_FOLDER"] == env["AIRFLOW__CORE__PLUGINS_FOLDER"]
    assert env["AIRFLOW_HOME"] == "/opt/airflow"


def test_the_image_carries_the_pipeline_specs_where_the_variable_points(
    dockerfile: Dockerfile,
) -> None:
    """The DAG files and every job's driver read the specs (their query names and checkpoints);
    in the image, outside a source checkout, STREAMOPS_PIPELINES_FILE is how they find them."""
    env = _env(dockerfile.final)
    copies = [i.arguments.split() for i in dockerfile.final.all("COPY")]
    assert ["pipelines.yaml", env["STREAMOPS_PIPELINES_FILE"]] in copies


def test_airflow_and_spark_get_environments_and_stages_of_their_own(
    dockerfile: Dockerfile,
) -> None:
    """pyspark-client (the Spark provider's) and pyspark write one folder (ADR 0006): Airflow's
    environment is built in one stage with the `airflow` extra, Spark's in another with the
    `spark` extra, and the runtime carries both, with Spark found in Spark's."""
    airflow_build = " ".join(i.arguments for i in dockerfile.stage("airflow-build").all("RUN"))
    spark_build = " ".join(i.arguments for i in dockerfile.stage("spark-build").all("RUN"))
    assert '-c constraints.txt ".[airflow]"' in airflow_build and "spark]" not in airflow_build
    assert '-c constraints.txt ".[spark]"' in spark_build and "airflow]" not in spark_build
    copies = [i.arguments for i in dockerfile.final.all("COPY")]
    assert "--from=airflow-build /opt/streamops/venv /opt/streamops/venv" in copies
    assert "--from=spark-build /opt/streamops/spark-venv /opt/streamops/spark-venv" in copies
    env = _env(dockerfile.final)
    assert env["STREAMOPS_VENV_DIR"] == "/opt/streamops/venv"
    assert env["STREAMOPS_SPARK_VENV_DIR"] == "/opt/streamops/spark-venv"
    assert env["SPARK_HOME"].startswith("/opt/streamops/spark-venv/")
    assert env["PYSPARK_PYTHON"] == "/opt/streamops/spark-venv/bin/python"
