"""Which driver JVMs map the class-data archive of `streamops install`."""

from __future__ import annotations

from pathlib import Path

import pyspark
import pytest

from spark_jobs.common.session import GATEWAY_ENV, _with_class_archive
from streamops.config import Settings, load_settings
from streamops.supervision.submit import DRIVER_JAVA_OPTIONS


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        venv_dir=tmp_path / "venv",
        spark_venv_dir=tmp_path / "venv-spark",
        state_dir=tmp_path / "state",
    )


def _record(settings: Settings) -> Path:
    archive = settings.spark_class_archive(pyspark.__version__)
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"archive")
    return archive


def test_a_driver_this_interpreter_starts_maps_the_archive(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(GATEWAY_ENV, raising=False)
    conf = {DRIVER_JAVA_OPTIONS: "-XX:+UseSerialGC", "spark.ui.enabled": "false"}
    assert _with_class_archive(settings, conf) == conf  # none recorded yet: nothing changes
    archive = _record(settings)
    assert _with_class_archive(settings, conf) == {
        DRIVER_JAVA_OPTIONS: f"-XX:+UseSerialGC -XX:SharedArchiveFile={archive}",
        "spark.ui.enabled": "false",
    }
    assert conf[DRIVER_JAVA_OPTIONS] == "-XX:+UseSerialGC"  # the caller's mapping is kept


def test_a_driver_under_spark_submit_is_left_alone(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its JVM runs already; the hook's command line carries the archive.
    _record(settings)
    monkeypatch.setenv(GATEWAY_ENV, "40123")
    assert _with_class_archive(settings, {}) == {}
