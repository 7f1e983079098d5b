"""streamops.spark_runtime finds Spark from its files, so the core never imports pyspark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamops.errors import StreamopsError
from streamops.spark_runtime import spark_home, spark_version


def test_the_spark_home_is_pysparks_folder_with_a_spark_submit() -> None:
    home = spark_home()
    assert (home / "__init__.py").is_file()
    assert (home / "bin" / "spark-submit").is_file()


def test_the_version_read_from_the_files_is_the_one_pyspark_reports() -> None:
    """Asked of a fresh interpreter, so this test's process never loads pyspark itself."""
    reported = subprocess.run(
        [sys.executable, "-c", "import pyspark; print(pyspark.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert spark_version() == reported


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("__version__: str = '4.3.0'\n", "4.3.0"),
        ('__version__ = "4.2.0.dev1"\n', "4.2.0.dev1"),
    ],
)
def test_a_version_file_in_either_spelling_is_read(tmp_path: Path, text: str, version: str) -> None:
    (tmp_path / "version.py").write_text("# header\n" + text)
    assert spark_version(tmp_path) == version


def test_a_folder_without_a_version_is_an_error_that_says_where(tmp_path: Path) -> None:
    with pytest.raises(StreamopsError, match=r"version\.py"):
        spark_version(tmp_path)
    (tmp_path / "version.py").write_text("nothing = 1\n")
    with pytest.raises(StreamopsError, match="does not say"):
        spark_version(tmp_path)
