"""`streamops install`: put on this machine what the platform needs, and nothing twice.

Runs with the system Python and the standard library alone (phase ``system``: Debian packages and
the two virtual environments, Airflow's ``.venv`` and Spark's ``.venv-spark``), then re-runs itself
inside the Airflow one (phase ``jars``: the Kafka broker and Spark connector jars, resolved with
Maven into the cache folder, and the drivers' class-data archive). Every step checks
first and does nothing when its result is already there.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamops.config import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MAVEN_DIR = Path(__file__).resolve().parent / "maven"

# Debian packages: the servers, the C client the `mariadb` wheel builds against, and the
# toolchain for Kafka and Maven (present on most machines, installed where missing). PostgreSQL
# holds Airflow's metadata; psycopg2-binary and asyncpg bring their own client code.
APT_PACKAGES = (
    "mariadb-server",
    "mariadb-client",
    "redis-server",
    "postgresql",
    "libmariadb-dev",
    "pkg-config",
    "gcc",
    "maven",
    "procps",
    # Headless browser and its WebDriver for the UI and dashboard tests (tests/browser.py).
    "chromium",
    "chromium-driver",
)
JAVA_PACKAGE = "openjdk-17-jdk-headless"
MIN_JAVA_MAJOR = 17

# Spark ships Spark, Scala, Hadoop and logging in pyspark/jars; only these come from the connector.
SPARK_CONNECTOR_ARTIFACTS = (
    "spark-sql-kafka-0-10_2.13",
    "spark-token-provider-kafka-0-10_2.13",
    "kafka-clients",
    "commons-pool2",
)
COMPLETE_MARKER = ".complete"
# The drivers' collector (pipelines.yaml); the class-data archive is recorded under the same one.
DRIVER_GC_OPTION = "-XX:+UseSerialGC"


class InstallError(Exception):
    pass


def say(message: str) -> None:
    print(f"[streamops install] {message}", flush=True)


def run(argv: list[str], **kwargs: object) -> None:
    say("$ " + " ".join(argv))
    result = subprocess.run(argv, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise InstallError(f"`{' '.join(argv)}` failed with exit code {result.returncode}.")


# --- phase "system" --------------------------------------------------------------------------


def missing_apt_packages(packages: tuple[str, ...]) -> list[str]:
    if shutil.which("dpkg-query") is None:
        return []
    missing = []
    for package in packages:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package],
            capture_output=True,
            text=True,
            check=False,
        )
        if "install ok installed" not in result.stdout:
            missing.append(package)
    return missing


def java_major_version() -> int | None:
    if shutil.which("java") is None:
        return None
    result = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    for token in (result.stderr + result.stdout).split():
        token = token.strip('"')
        if token[:1].isdigit():
            major = token.split(".")[0]
            return int(major) if major.isdigit() else None
    return None


def install_system_packages() -> None:
    wanted = list(APT_PACKAGES)
    java = java_major_version()
    if java is None or java < MIN_JAVA_MAJOR:
        wanted.append(JAVA_PACKAGE)
    missing = missing_apt_packages(tuple(wanted))
    if not missing:
        say("Debian packages: all present")
        return
    if shutil.which("apt-get") is None:
        raise InstallError(
            f"These packages are missing and this machine has no apt-get: {', '.join(missing)}. "
            "Install their equivalents with your package manager, then run this again."
        )
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    if sudo and shutil.which("sudo") is None:
        raise InstallError(
            f"Installing {', '.join(missing)} needs root; run `streamops install` as root."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run([*sudo, "apt-get", "update", "-q"], env=env)
    run([*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)


def _requirements_digest() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        path = PROJECT_ROOT / name
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def venv_dir() -> Path:
    """The Airflow environment: Airflow, the Spark provider, the core and the test tools."""
    return Path(os.environ.get("STREAMOPS_VENV_DIR", PROJECT_ROOT / ".venv")).resolve()


def spark_venv_dir() -> Path:
    """The Spark runtime environment: PySpark at the JVM's version, pandas, pyarrow and the core.
    Apart from the Airflow one, because the Spark provider's pyspark-client writes the same
    ``pyspark/`` folder as PySpark (ADR 0006)."""
    default = PROJECT_ROOT / ".venv-spark"
    return Path(os.environ.get("STREAMOPS_SPARK_VENV_DIR", default)).resolve()


# Each environment, the extras it holds (`dev` in both: each runs its half of the tests) and the
# distribution it must not hold: PySpark in Airflow's (an environment made before the split had
# it; pyspark-client writes the same folder), Airflow in Spark's.
ENVIRONMENTS = (
    ("airflow", venv_dir, "airflow,dev", "pyspark"),
    ("spark", spark_venv_dir, "spark,dev", "apache-airflow"),
)


def install_python_packages() -> None:
    for name, folder, extras, foreign in ENVIRONMENTS:
        install_environment(name, folder(), extras, foreign)


def _installed(venv: Path, distribution: str) -> bool:
    pattern = f"lib/python3*/site-packages/{distribution.replace('-', '_')}-*.dist-info"
    return any(venv.glob(pattern))


def install_environment(name: str, venv: Path, extras: str, foreign: str) -> None:
    python = venv / "bin" / "python"
    stamp = venv / ".streamops-requirements"
    digest = _requirements_digest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        say(f"Python packages ({name}): up to date in {venv}")
        return
    if not python.exists():
        run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    if _installed(venv, foreign):
        # pyspark and pyspark-client share files: both go, and the install below brings back
        # the one this environment needs, whole.
        say(f"{venv} holds {foreign}, which belongs to the other environment: removing it")
        run([*pip, "uninstall", "-q", "-y", foreign, "pyspark-client"])
    run([*pip, "install", "-q", "--upgrade", "pip"])
    constraints = PROJECT_ROOT / "constraints.txt"
    constraint_args = ["-c", str(constraints)] if constraints.exists() else []
    run([*pip, "install", "-q", *constraint_args, "-e", f"{PROJECT_ROOT}[{extras}]"])
    stamp.write_text(digest + "\n")


# --- phase "jars" (inside the venv: settings are read the one way the platform reads them) -----


def maven_copy(
    pom: Path, output: Path, properties: dict[str, str], include: tuple[str, ...]
) -> None:
    if (output / COMPLETE_MARKER).exists():
        say(f"jars: present in {output}")
        return
    if shutil.which("mvn") is None:
        raise InstallError("Maven (`mvn`) is missing: run `apt-get install maven` or this again.")
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    argv = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={partial}",
        "-DincludeScope=runtime",
        *[f"-D{key}={value}" for key, value in properties.items()],
    ]
    if include:
        argv.append("-DincludeArtifactIds=" + ",".join(include))
    run(argv)
    # Rename last, so an interrupted download never looks complete.
    (partial / COMPLETE_MARKER).write_text("ok\n")
    shutil.rmtree(output, ignore_errors=True)
    partial.rename(output)


def install_jars() -> None:
    from streamops.config import load_settings
    from streamops.spark_runtime import spark_version

    settings = load_settings()
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    version = spark_version(settings)
    maven_copy(
        MAVEN_DIR / "kafka-broker.pom.xml",
        settings.kafka_jars_dir,
        {"kafka.version": settings.kafka_version},
        (),
    )
    maven_copy(
        MAVEN_DIR / "spark-kafka-connector.pom.xml",
        settings.spark_kafka_jars_dir(version),
        {"spark.version": version},
        SPARK_CONNECTOR_ARTIFACTS,
    )


def install_class_archive() -> None:
    """The drivers' class-data archive: one run of spark_jobs/jobs/warm_classes.py records the
    classes a driver loads, and every job maps them instead of loading them again (about a quarter
    of a cold start, docs/performance.md). An archive this JDK cannot use (another JDK, other
    Spark jars) is made again. Not fatal when it fails: the jobs start without it, only slower."""
    from streamops.config import load_settings
    from streamops.spark_runtime import spark_version

    settings = load_settings()
    archive = settings.spark_class_archive(spark_version(settings))
    spark_submit, env = pyspark_submit(settings)
    if archive.exists():
        if _class_archive_usable(spark_submit, archive, env):
            say(f"class-data archive: present in {archive}")
            return
        say(f"class-data archive: {archive} does not fit this JDK and Spark; making it again")
        archive.unlink()
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    partial.unlink(missing_ok=True)
    say("class-data archive: one short Spark run records the classes a driver loads (~1 min)")
    argv = [
        str(spark_submit),
        "--master",
        "local[2]",
        "--driver-java-options",
        f"{DRIVER_GC_OPTION} -XX:ArchiveClassesAtExit={partial}",
        str(PROJECT_ROOT / "spark_jobs" / "jobs" / "warm_classes.py"),
    ]
    result = subprocess.run(argv, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    if result.returncode != 0 or not partial.exists():
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        say(
            f"class-data archive: not made (exit {result.returncode}); the jobs start without "
            f"it, only slower. The run's last lines:\n{tail}"
        )
        partial.unlink(missing_ok=True)
        return
    partial.rename(archive)
    if not _class_archive_usable(spark_submit, archive, env):
        archive.unlink()
        say("class-data archive: made, but this JDK cannot map it; the jobs start without it")
        return
    say(f"class-data archive: {archive} ({archive.stat().st_size / 2**20:.0f} MiB)")


def pyspark_submit(settings: Settings) -> tuple[Path, dict[str, str]]:
    """The Spark environment's ``spark-submit`` and the environment to run it in, for a run
    outside a pipeline's job (the archive's recording and check, benchmarks/bench_driver_start)."""
    from streamops.spark_runtime import spark_home
    from streamops.supervision.submit import spark_submit_path

    home = spark_home(settings)
    env = {**os.environ, "SPARK_HOME": str(home), "PYSPARK_PYTHON": str(settings.spark_python)}
    return spark_submit_path(home), env


def _class_archive_usable(spark_submit: Path, archive: Path, env: dict[str, str]) -> bool:
    """Whether a driver's JVM maps ``archive``: with ``-Xshare:on`` a JVM that cannot (another
    JDK, other jars on the class path) refuses to start instead of ignoring it."""
    options = f"{DRIVER_GC_OPTION} -Xshare:on -XX:SharedArchiveFile={archive}"
    result = subprocess.run(
        [str(spark_submit), "--driver-java-options", options, "--version"],
        env=env,
        capture_output=True,
        text=True,
    )
    return result.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="streamops install",
        description="Install what is missing: Debian packages, the two Python virtual environments "
        "(Airflow's and Spark's), "
        "the Kafka and Spark connector jars, and the Spark drivers' class-data archive. Does "
        "nothing for what is already there.",
    )
    parser.add_argument("--phase", choices=("all", "system", "jars"), default="all")
    parser.add_argument("--skip-apt", action="store_true", help="do not check Debian packages")
    args = parser.parse_args(argv)
    try:
        if args.phase in ("all", "system"):
            if not args.skip_apt:
                install_system_packages()
            install_python_packages()
        if args.phase == "all":
            python = venv_dir() / "bin" / "python"
            run([str(python), "-m", "streamops.installer", "--phase", "jars"], cwd=PROJECT_ROOT)
        elif args.phase == "jars":
            install_jars()
            install_class_archive()
    except InstallError as exc:
        print(f"streamops install: {exc}", file=sys.stderr)
        return 1
    if args.phase == "all":
        say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
