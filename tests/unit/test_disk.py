"""The state folder's disk check: thresholds at their edges, and the three places that show it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest
from typer.testing import CliRunner

from streamops.cli import app
from streamops.config import Settings
from streamops.disk import GIB, disk_status, measured_path, state_dir_status
from streamops.errors import StreamopsError
from streamops.platform_health import CHECKS, check_disk


class Usage(NamedTuple):
    total: int
    used: int
    free: int


def usage(used_percent: float, size: int = 1000 * GIB) -> Usage:
    """A filesystem of ``size`` bytes with exactly ``used_percent`` of it used."""
    used = size * round(used_percent * 10) // 1000
    return Usage(size, used, size - used)


@pytest.mark.parametrize(
    ("used_percent", "level"),
    [
        (0, "ok"),
        (79.9, "ok"),
        (80, "warning"),
        (89.9, "warning"),
        (90, "critical"),
        (100, "critical"),
    ],
)
def test_levels_at_the_edges(used_percent: float, level: str) -> None:
    status = disk_status("/state", *usage(used_percent))
    assert status.level == level
    assert status.used_percent == used_percent
    assert f"{used_percent:.1f} % used" in status.message
    assert "/state" in status.message


def test_one_byte_short_of_a_threshold_is_below_it() -> None:
    # 80 % of 1,000,000 bytes is 800,000: one byte less is still ok, shown as 79.9 (not 80.0).
    below = disk_status("/s", 1_000_000, 799_999, 200_001)
    assert (below.level, below.used_percent) == ("ok", 79.9)
    assert disk_status("/s", 1_000_000, 800_000, 200_000).level == "warning"
    assert disk_status("/s", 1_000_000, 899_999, 100_001).level == "warning"
    assert disk_status("/s", 1_000_000, 900_000, 100_000).level == "critical"


def test_a_zero_size_filesystem_is_critical() -> None:
    status = disk_status("/state", 0, 0, 0)
    assert status.level == "critical"
    assert status.used_percent == 100.0
    assert "0 bytes" in status.message and "/state" in status.message


def test_space_reserved_for_root_counts_as_used() -> None:
    # df's figure: used / (used + free available to us); 5 % reserved is in neither.
    status = disk_status("/state", 1000, 760, 190)
    assert status.level == "warning"
    assert status.used_percent == 80.0


def test_the_message_says_what_to_do_once_it_is_not_ok() -> None:
    ok = disk_status("/state", *usage(50))
    assert "GiB free" in ok.message and "maintenance" not in ok.message
    for percent in (80, 95):
        status = disk_status("/state", *usage(percent))
        assert "streamops maintenance archive-retention" in status.message
        assert "retention" in status.message
    assert "(at or over 90 %)" in disk_status("/state", *usage(95)).message
    assert "50.0 GiB free" in disk_status("/state", *usage(95)).message


def test_a_folder_not_created_yet_is_measured_where_it_will_be(tmp_path: Path) -> None:
    missing = tmp_path / "not" / "yet"
    assert measured_path(missing) == tmp_path
    status = state_dir_status(missing)
    assert status.path == str(missing)
    assert status.total_bytes == shutil.disk_usage(tmp_path).total


def fake_disk(monkeypatch: pytest.MonkeyPatch, used_percent: float) -> None:
    monkeypatch.setattr(
        "streamops.disk.shutil.disk_usage", lambda _: usage(used_percent, size=100 * GIB)
    )


def test_health_check_reports_a_warning_and_fails_when_critical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(state_dir=tmp_path)
    assert CHECKS["disk"] is check_disk
    fake_disk(monkeypatch, 50)
    assert check_disk(settings).startswith("50.0 % used")
    fake_disk(monkeypatch, 85)
    assert check_disk(settings).startswith("disk warning: 85.0 % used")
    fake_disk(monkeypatch, 95)
    with pytest.raises(StreamopsError, match=r"disk critical: 95\.0 % used"):
        check_disk(settings)


def test_the_platform_health_dag_checks_the_disk_by_default() -> None:
    from streamops_airflow.dag_factory import HealthCheckSpec

    assert "disk" in HealthCheckSpec(dag_id="h").checks


def status_json(tmp_path: Path) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(app, ["--state-dir", str(tmp_path), "status", "--json"])
    rows = {row["name"]: row for row in json.loads(result.output)}
    return result.exit_code, rows["disk"]


def test_status_shows_the_disk_and_fails_when_critical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_disk(monkeypatch, 85)
    _, disk = status_json(tmp_path)
    assert (disk["level"], disk["healthy"], disk["used_percent"]) == ("warning", True, 85.0)
    assert disk["path"] == str(tmp_path.resolve())
    fake_disk(monkeypatch, 95)
    code, disk = status_json(tmp_path)
    assert (disk["level"], disk["healthy"], code) == ("critical", False, 1)
    table = CliRunner().invoke(app, ["--state-dir", str(tmp_path), "status"])
    assert "disk" in table.output and "critical" in table.output
