"""Retention of the Parquet archive: which day partitions expire (pure), and the deletion itself on
a temporary archive of real Parquet files laid out as spark_jobs/common/archive.py writes them."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from streamops.cli import app
from streamops.config import Settings
from streamops.maintenance.archive import (
    apply_archive_retention,
    local_archive_root,
    partition_day,
    partitions_to_delete,
    retention_cutoff_day,
)

NOW = datetime(2026, 12, 3, 10, 30, tzinfo=UTC)


def test_a_day_expires_once_all_of_it_is_older_than_the_retention() -> None:
    # 30 days before 2026-12-03 10:30 is 2026-11-03 10:30: 11-02 ended before that, 11-03 did not.
    assert retention_cutoff_day(NOW, 30) == date(2026, 11, 3)
    names = ["date=2026-11-03", "date=2026-11-02", "date=2026-12-03", "date=2025-01-01"]
    assert partitions_to_delete(names, NOW, 30) == ["date=2025-01-01", "date=2026-11-02"]


def test_at_midnight_a_day_that_ended_exactly_the_retention_ago_goes() -> None:
    midnight = datetime(2026, 12, 3, tzinfo=UTC)
    assert partitions_to_delete(["date=2026-11-02", "date=2026-11-03"], midnight, 30) == [
        "date=2026-11-02"
    ]
    # With one day: the 1st ended exactly a day before midnight of the 3rd, the 2nd just now.
    days = ["date=2026-12-01", "date=2026-12-02"]
    assert partitions_to_delete(days, midnight, 1) == ["date=2026-12-01"]
    assert partitions_to_delete(days, midnight - timedelta(seconds=1), 1) == []


def test_now_is_read_in_utc() -> None:
    # 01:00 on the 3rd at UTC+02:00 is still the 2nd in UTC.
    eastern = datetime(2026, 12, 3, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert retention_cutoff_day(eastern, 1) == date(2026, 12, 1)
    assert retention_cutoff_day(datetime(2026, 12, 3, 1, 0), 1) == date(2026, 12, 2)


def test_names_that_are_not_days_are_never_selected() -> None:
    names = [
        "date=__HIVE_DEFAULT_PARTITION__",
        "date=2020-13-01",
        "hour=3",
        "_SUCCESS",
        ".spark-staging-1",
        "date=2020-01-01",
    ]
    assert partitions_to_delete(names, NOW, 30) == ["date=2020-01-01"]
    assert partition_day("date=__HIVE_DEFAULT_PARTITION__") is None


def test_retention_must_be_a_day_or_more() -> None:
    with pytest.raises(ValueError, match="1 or more"):
        partitions_to_delete(["date=2020-01-01"], NOW, 0)
    with pytest.raises(ValueError, match="archive_retention_days"):
        Settings(archive_retention_days=0)


def test_local_roots_and_others() -> None:
    assert local_archive_root("/var/lib/streamops/archive") == Path("/var/lib/streamops/archive")
    assert local_archive_root("relative/archive") == Path("relative/archive")
    assert local_archive_root("file:///data/archive") == Path("/data/archive")
    assert local_archive_root("s3a://bucket/archive") is None
    assert local_archive_root("hdfs://namenode:8020/archive") is None


def write_partition(
    root: Path, pipeline: str, day: str, hour: int, batch_id: int, rows: int
) -> None:
    folder = root / pipeline / f"date={day}" / f"hour={hour}" / f"batch_id={batch_id}"
    folder.mkdir(parents=True)
    table = pa.table({"order_id": [f"{day}-{hour}-{i}" for i in range(rows)]})
    pq.write_table(table, folder / "part-00000.snappy.parquet")


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    write_partition(root, "orders", "2026-10-01", 5, 1, 10)
    write_partition(root, "orders", "2026-10-01", 6, 2, 5)
    write_partition(root, "orders", "2026-11-02", 23, 3, 7)
    write_partition(root, "orders", "2026-11-03", 0, 4, 3)
    write_partition(root, "orders", "2026-12-03", 10, 5, 4)
    write_partition(root, "orders", "__HIVE_DEFAULT_PARTITION__", 0, 6, 1)
    write_partition(root, "payments", "2026-09-30", 1, 1, 2)
    (root / "orders" / "_SUCCESS").write_text("")
    return root


def archived_rows(root: Path) -> dict[str, int]:
    dataset = ds.dataset(root, format="parquet", partitioning="hive")
    days = dataset.to_table(columns=["date"]).column("date").to_pylist()
    # Hive's default partition (a null event time) reads back as a null date.
    return {"undated" if day is None else str(day): days.count(day) for day in set(days)}


def test_dry_run_lists_and_keeps_everything(archive: Path) -> None:
    settings = Settings(state_dir=archive.parent, archive_uri=str(archive))
    before = archived_rows(archive / "orders")
    report = apply_archive_retention(settings, dry_run=True, now=NOW)
    assert report["dry_run"] is True
    assert [(d["pipeline"], d["partition"]) for d in report["deleted"]] == [
        ("orders", "date=2026-10-01"),
        ("orders", "date=2026-11-02"),
        ("payments", "date=2026-09-30"),
    ]
    assert archived_rows(archive / "orders") == before
    assert (archive / "payments" / "date=2026-09-30").is_dir()


def test_expired_days_are_deleted_and_reported(archive: Path) -> None:
    settings = Settings(state_dir=archive.parent, archive_uri=str(archive))
    expired = archive / "orders" / "date=2026-10-01"
    expected_bytes = sum(f.stat().st_size for f in expired.rglob("*") if f.is_file())
    report = apply_archive_retention(settings, now=NOW)

    assert report["supported"] is True and report["dry_run"] is False
    assert report["delete_before"] == "2026-11-03" and report["retention_days"] == 30
    first = report["deleted"][0]
    assert first == {
        "pipeline": "orders",
        "partition": "date=2026-10-01",
        "bytes": expected_bytes,
        "files": 2,
    }
    assert report["deleted_partitions"] == 3
    assert report["deleted_bytes"] == sum(d["bytes"] for d in report["deleted"]) > expected_bytes
    assert report["kept_partitions"] == 2
    assert report["unrecognised"] == ["orders/date=__HIVE_DEFAULT_PARTITION__"]
    # What is left reads as a dataset: the kept days whole, the undated records untouched.
    assert archived_rows(archive / "orders") == {
        "2026-11-03": 3,
        "2026-12-03": 4,
        "undated": 1,
    }
    assert not (archive / "payments" / "date=2026-09-30").exists()
    assert not list(archive.glob("*/.expired-*"))
    # A second run finds nothing more.
    again = apply_archive_retention(settings, now=NOW)
    assert (again["deleted_partitions"], again["kept_partitions"]) == (0, 2)


def test_a_run_killed_while_deleting_is_finished_by_the_next(archive: Path) -> None:
    # Killed after the rename and part of the removal: a hidden folder no reader sees.
    hidden = archive / "orders" / ".expired-date=2026-10-01"
    (archive / "orders" / "date=2026-10-01").rename(hidden)
    next(hidden.rglob("*.parquet")).unlink()
    settings = Settings(state_dir=archive.parent, archive_uri=str(archive))
    assert "2026-10-01" not in archived_rows(archive / "orders")
    report = apply_archive_retention(settings, now=NOW)
    assert report["leftovers_removed"] == ["orders/.expired-date=2026-10-01"]
    assert not hidden.exists()


def test_an_object_store_root_is_left_to_its_lifecycle_rule(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, archive_uri="s3a://bucket/archive")
    report = apply_archive_retention(settings, now=NOW)
    assert report["supported"] is False
    assert "lifecycle" in report["reason"] and report["deleted"] == []


def test_a_missing_archive_is_nothing_to_do(tmp_path: Path) -> None:
    report = apply_archive_retention(Settings(state_dir=tmp_path), now=NOW)
    assert report["root"] == str(tmp_path / "archive")
    assert (report["deleted_partitions"], report["kept_partitions"]) == (0, 0)


def test_cli_dry_run_then_delete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    old_day = (datetime.now(UTC) - timedelta(days=40)).date().isoformat()
    today = datetime.now(UTC).date().isoformat()
    write_partition(state / "archive", "orders", old_day, 1, 1, 3)
    write_partition(state / "archive", "orders", today, 1, 2, 3)
    monkeypatch.delenv("STREAMOPS_ARCHIVE_URI", raising=False)
    monkeypatch.setenv("STREAMOPS_ARCHIVE_RETENTION_DAYS", "30")
    runner = CliRunner()
    base = ["--state-dir", str(state), "maintenance", "archive-retention"]

    dry = runner.invoke(app, [*base, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"would delete orders/date={old_day}: 1 file(s)" in dry.output
    assert (state / "archive" / "orders" / f"date={old_day}").is_dir()

    done = runner.invoke(app, [*base, "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert [d["partition"] for d in report["deleted"]] == [f"date={old_day}"]
    assert report["kept_partitions"] == 1
    assert not (state / "archive" / "orders" / f"date={old_day}").exists()
