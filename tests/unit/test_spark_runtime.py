"""streamops.spark_runtime finds Spark in the Spark environment from its files, so the core
never imports pyspark; and each environment holds the pyspark it should (ADR 0006)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from streamops.config import load_settings
from streamops.errors import StreamopsError
from streamops.spark_runtime import spark_home, spark_version


def test_the_spark_home_is_the_spark_environments_pyspark_with_a_spark_submit() -> None:
    settings = load_settings()
    home = spark_home(settings)
    assert home.is_relative_to(settings.spark_venv_dir)
    assert (home / "__init__.py").is_file()
    assert (home / "bin" / "spark-submit").is_file()


def test_the_version_read_from_the_files_is_the_one_pyspark_reports() -> None:
    """Asked of the Spark environment's interpreter: this process never loads pyspark."""
    settings = load_settings()
    assert spark_version(settings) == _ask(settings.spark_python, "pyspark.__version__")


def test_each_environment_holds_the_pyspark_it_should() -> None:
    """Airflow's holds the Spark provider's pyspark-client and no Spark; Spark's holds PySpark,
    at the version of its own files (and of the JVM: tests/integration/test_spark.py), and no
    Airflow. pyspark and pyspark-client write one folder: never both in one environment."""
    settings = load_settings()
    airflow_python = settings.venv_dir / "bin" / "python"
    assert _distribution(airflow_python, "pyspark-client") == spark_version(settings)
    assert _distribution(airflow_python, "pyspark") is None
    assert _distribution(airflow_python, "apache-airflow-providers-apache-spark") is not None
    assert _ask(airflow_python, "(pathlib.Path(pyspark.__file__).parent / 'jars').exists()") == (
        "False"
    )
    assert _distribution(settings.spark_python, "pyspark") == spark_version(settings)
    assert _distribution(settings.spark_python, "pyspark-client") is None
    assert _distribution(settings.spark_python, "apache-airflow") is None


def test_no_spark_environment_is_an_error_that_names_the_fix(tmp_path: Path) -> None:
    settings = load_settings(spark_venv_dir=tmp_path / "nowhere")
    with pytest.raises(StreamopsError, match="streamops install"):
        spark_home(settings)
    # pyspark-client's folder (no bin/) is not a Spark.
    (tmp_path / "client/lib/python3.11/site-packages/pyspark").mkdir(parents=True)
    with pytest.raises(StreamopsError, match="pyspark-client"):
        spark_home(load_settings(spark_venv_dir=tmp_path / "client"))


def _ask(python: Path, expression: str) -> str:
    script = f"import pathlib, pyspark; print({expression})"
    result = subprocess.run([str(python), "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _distribution(python: Path, name: str) -> str | None:
    script = (
        "import importlib.metadata as m, sys\n"
        "try: print(m.version(sys.argv[1]))\n"
        "except m.PackageNotFoundError: print('-')"
    )
    result = subprocess.run(
        [str(python), "-c", script, name], capture_output=True, text=True, check=True
    )
    version = result.stdout.strip()
    return None if version == "-" else version


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("__version__: str = '4.3.0'\n", "4.3.0"),
        ('__version__ = "4.2.0.dev1"\n', "4.2.0.dev1"),
    ],
)
def test_a_version_file_in_either_spelling_is_read(tmp_path: Path, text: str, version: str) -> None:
    (tmp_path / "version.py").write_text("# header\n" + text)
    assert spark_version(load_settings(), tmp_path) == version


def test_a_folder_without_a_version_is_an_error_that_says_where(tmp_path: Path) -> None:
    with pytest.raises(StreamopsError, match=r"version\.py"):
        spark_version(load_settings(), tmp_path)
    (tmp_path / "version.py").write_text("nothing = 1\n")
    with pytest.raises(StreamopsError, match="does not say"):
        spark_version(load_settings(), tmp_path)
