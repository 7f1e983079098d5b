"""Checkpoint health from files alone: Spark's checkpoint layout built in tmp dirs, no Spark."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from streamops.maintenance.checkpoints import (
    CheckpointCorruptError,
    CheckpointThresholds,
    PreviousCheck,
    alerts_for,
    evaluate,
    find_stale_temp_files,
    inspect_checkpoint,
    lost_offsets,
    missing_partitions,
    offsets_past_end,
    parse_commit,
    parse_offsets,
    partition_lag,
    worst,
)

NOW = 1_800_000_000.0
QUERY_ID = "64be0719-0e73-4990-852f-63c1cfcaab9b"
BATCH_METADATA = json.dumps(
    {"batchWatermarkMs": 0, "batchTimestampMs": 1795603566374, "conf": {"a": "b"}}
)


def offsets_text(offsets: dict[str, dict[str, int]]) -> str:
    return f"v1\n{BATCH_METADATA}\n{json.dumps(offsets)}"


def build_checkpoint(
    root: Path,
    offsets: list[dict[str, dict[str, int]]],
    committed: int,
    *,
    age_seconds: float = 10.0,
) -> Path:
    """A checkpoint like Spark writes it: ``offsets`` per batch, batches 0..committed committed."""
    (root / "offsets").mkdir(parents=True)
    (root / "commits").mkdir()
    (root / "sources" / "0").mkdir(parents=True)
    (root / "state" / "0" / "0").mkdir(parents=True)
    (root / "metadata").write_text(json.dumps({"id": QUERY_ID}))
    (root / "sources" / "0" / "0").write_bytes(b'\x00v1\n{"orders":{"0":0,"1":0}}')
    (root / "state" / "0" / "0" / "1.delta").write_bytes(b"x" * 100)
    for batch, batch_offsets in enumerate(offsets):
        path = root / "offsets" / str(batch)
        path.write_text(offsets_text(batch_offsets))
        (root / "offsets" / f".{batch}.crc").write_bytes(b"crc")
        os.utime(path, (NOW - age_seconds, NOW - age_seconds))
        if batch <= committed:
            commit = root / "commits" / str(batch)
            commit.write_text('v1\n{"nextBatchWatermarkMs":0}')
            os.utime(commit, (NOW - age_seconds, NOW - age_seconds))
    return root


def test_offsets_file_gives_kafka_offsets_per_topic_and_partition() -> None:
    entry = parse_offsets(offsets_text({"orders": {"0": 1125, "1": 1120}}) + "\n-")
    assert entry.kafka == {"orders": {0: 1125, 1: 1120}}
    assert entry.batch_timestamp_ms == 1795603566374


@pytest.mark.parametrize(
    "text",
    ["", "v1\n", f"v1\n{BATCH_METADATA}", offsets_text({"orders": {"0": 1}})[:-5], "garbage"],
)
def test_partial_offsets_files_are_corrupt(text: str) -> None:
    with pytest.raises(CheckpointCorruptError):
        parse_offsets(text)


def test_commit_file() -> None:
    assert parse_commit('v1\n{"nextBatchWatermarkMs":1795600654080}') == 1795600654080
    with pytest.raises(CheckpointCorruptError):
        parse_commit("v1\n")


def test_inspect_reads_last_commit_uncommitted_batches_and_sizes(tmp_path: Path) -> None:
    root = build_checkpoint(
        tmp_path / "cp",
        [{"orders": {"0": 5, "1": 5}}, {"orders": {"0": 10, "1": 8}}, {"orders": {"0": 12}}],
        committed=1,
        age_seconds=600,
    )
    snapshot = inspect_checkpoint(root, NOW)
    assert snapshot.query_id == QUERY_ID
    assert (snapshot.last_offsets_batch, snapshot.last_committed_batch) == (2, 1)
    assert snapshot.uncommitted_batches == 1
    assert snapshot.committed_offsets == {"orders": {0: 10, 1: 8}}
    assert snapshot.state_bytes == 100
    assert snapshot.checkpoint_bytes > snapshot.state_bytes
    assert snapshot.problems == []


def test_truncated_metadata_and_offsets_are_problems_not_crashes(tmp_path: Path) -> None:
    root = build_checkpoint(tmp_path / "cp", [{"orders": {"0": 5}}], committed=0)
    (root / "metadata").write_text('{"id": "64be07')
    (root / "offsets" / "0").write_text("v1\n")
    problems = inspect_checkpoint(root, NOW).problems
    assert any("metadata" in p for p in problems)
    assert any("offsets/0" in p for p in problems)


def test_a_corrupt_newest_commit_falls_back_to_the_one_before(tmp_path: Path) -> None:
    root = build_checkpoint(
        tmp_path / "cp", [{"orders": {"0": 5}}, {"orders": {"0": 9}}], committed=1
    )
    (root / "commits" / "1").write_text("")
    snapshot = inspect_checkpoint(root, NOW)
    assert snapshot.last_committed_batch == 0
    assert snapshot.committed_offsets == {"orders": {0: 5}}
    assert any("commits/1" in p for p in snapshot.problems)


def test_only_old_temp_files_and_orphan_checksums_are_stale(tmp_path: Path) -> None:
    root = build_checkpoint(tmp_path / "cp", [{"orders": {"0": 5}}], committed=0)
    old_tmp = root / "offsets" / ".1.3f2a.tmp"
    young_tmp = root / "offsets" / ".2.9c1b.tmp"
    orphan_crc = root / "commits" / ".7.crc"
    for path in (old_tmp, young_tmp, orphan_crc):
        path.write_bytes(b"x")
    for path in (old_tmp, orphan_crc, root / "offsets" / ".0.crc"):
        os.utime(path, (NOW - 7200, NOW - 7200))
    os.utime(young_tmp, (NOW - 60, NOW - 60))
    assert find_stale_temp_files(root, NOW, 3600) == sorted([old_tmp, orphan_crc])


def test_lag_and_lost_offsets_per_partition() -> None:
    committed = {"orders": {0: 10, 1: 8}}
    watermarks = {"orders": {0: (0, 15), 1: (12, 20), 2: (3, 7)}}
    assert partition_lag(committed, watermarks) == {"orders": {0: 5, 1: 12, 2: 4}}
    assert lost_offsets(committed, watermarks) == {"orders": {1: 4}}


def test_an_offset_at_the_end_is_caught_up_and_one_past_it_is_flagged() -> None:
    committed = {"orders": {0: 15, 1: 21, 2: 0}}
    watermarks = {"orders": {0: (0, 15), 1: (12, 20), 2: (0, 0)}}
    assert offsets_past_end(committed, watermarks) == {"orders": {1: 1}}
    assert missing_partitions(committed, watermarks) == {}
    # Past the end is not also "lost": the log start (12) is below the offset.
    assert lost_offsets(committed, watermarks) == {}


def test_a_recreated_topic_is_past_the_end_but_not_lost() -> None:
    """Deleted and recreated: every partition starts again at 0, far below the checkpoint."""
    committed = {"orders": {0: 1125, 1: 1120}}
    watermarks = {"orders": {0: (0, 3), 1: (0, 0)}}
    assert offsets_past_end(committed, watermarks) == {"orders": {0: 1122, 1: 1120}}
    assert lost_offsets(committed, watermarks) == {}
    assert partition_lag(committed, watermarks) == {"orders": {0: 0, 1: 0}}


def test_partitions_that_kafka_no_longer_has_are_missing() -> None:
    committed = {"orders": {0: 5, 1: 5, 2: 5}, "payments": {0: 1}, "vitals": {0: 2}}
    # orders came back with one partition, payments is gone, vitals was not asked about.
    watermarks: dict[str, dict[int, tuple[int, int]]] = {
        "orders": {0: (0, 9)},
        "payments": {},
    }
    assert missing_partitions(committed, watermarks) == {"orders": [1, 2], "payments": [0]}
    assert offsets_past_end(committed, watermarks) == {}


def test_a_recreated_topic_is_critical_with_what_to_do(tmp_path: Path) -> None:
    found = evaluate(
        inspect_checkpoint(
            build_checkpoint(tmp_path / "cp", [{"orders": {"0": 10, "1": 4}}], committed=0), NOW
        ),
        {"orders": {0: (0, 2)}},
        None,
        CheckpointThresholds(),
        NOW,
        "failed",
    )
    by_name = {f.finding: f for f in found}
    assert by_name["offsets_past_end"].severity == "critical"
    assert "deleted and recreated" in by_name["offsets_past_end"].detail
    assert "{'orders': {0: 8}}" in by_name["offsets_past_end"].detail
    assert "`streamops pipeline stop <pipeline>`" in by_name["offsets_past_end"].detail
    assert by_name["partitions_missing"].severity == "critical"
    assert "{'orders': [1]}" in by_name["partitions_missing"].detail
    assert worst(found) == "critical"
    alerts = alerts_for(
        {
            "pipeline": "orders",
            "query_name": "orders_records",
            "checked_at": "2026-11-25T10:05:00+00:00",
            "findings": [
                {"finding": f.finding, "severity": f.severity, "detail": f.detail} for f in found
            ],
        },
        CheckpointThresholds(),
    )
    assert {"checkpoint-offsets-past-end", "checkpoint-partitions-missing"} <= {
        a["rule_id"] for a in alerts
    }


def test_a_caught_up_checkpoint_has_no_recreated_topic_finding(tmp_path: Path) -> None:
    found = _findings(tmp_path, 10, "running", watermarks={"orders": {0: (0, 10)}})
    assert not {"offsets_past_end:critical", "partitions_missing:critical"} & found
    assert "offsets_past_end:critical" in _findings(
        tmp_path / "b", 10, "running", watermarks={"orders": {0: (0, 9)}}
    )


def _findings(tmp_path: Path, committed_age: float, state: str | None, **kwargs) -> set[str]:  # type: ignore[no-untyped-def]
    root = build_checkpoint(
        tmp_path / "cp", [{"orders": {"0": 10}}], committed=0, age_seconds=committed_age
    )
    snapshot = inspect_checkpoint(root, NOW)
    watermarks = kwargs.pop("watermarks", {"orders": {0: (0, 50)}})
    found = evaluate(
        snapshot, watermarks, kwargs.pop("previous", None), CheckpointThresholds(), NOW, state
    )
    return {f"{f.finding}:{f.severity}" for f in found}


def test_running_query_without_commits_for_too_long_is_stalled(tmp_path: Path) -> None:
    assert "stalled:critical" in _findings(tmp_path, 900, "running")
    assert "stalled:critical" not in _findings(tmp_path / "b", 30, "running")


def test_stopped_query_with_growing_lag(tmp_path: Path) -> None:
    found = _findings(tmp_path, 900, "stopped", previous=PreviousCheck(20, None, None))
    assert {"stopped_with_lag:warning", "lag_growing:warning"} <= found
    assert "stalled:critical" not in found


def test_committed_offsets_below_log_start_are_data_lost(tmp_path: Path) -> None:
    found = _findings(tmp_path, 10, "running", watermarks={"orders": {0: (25, 50)}})
    assert "data_lost:critical" in found


def test_size_growth_against_the_previous_check(tmp_path: Path) -> None:
    root = build_checkpoint(tmp_path / "cp", [{"orders": {"0": 10}}], committed=0)
    snapshot = inspect_checkpoint(root, NOW)
    thresholds = CheckpointThresholds(growth_min_bytes=10)
    grown = evaluate(snapshot, {}, PreviousCheck(0, 20, 10), thresholds, NOW)
    assert {f.finding for f in grown} == {"checkpoint_growth"}
    same = evaluate(snapshot, {}, PreviousCheck(0, snapshot.checkpoint_bytes, 100), thresholds, NOW)
    assert same == []


def test_missing_checkpoint_is_only_information(tmp_path: Path) -> None:
    found = evaluate(
        inspect_checkpoint(tmp_path / "none", NOW), {}, None, CheckpointThresholds(), NOW
    )
    assert worst(found) == "info"


def test_alerts_are_contract_shaped_and_stable_within_their_period() -> None:
    result = {
        "pipeline": "orders",
        "query_name": "orders_records",
        "checked_at": "2026-11-25T10:05:00+00:00",
        "findings": [
            {"finding": "data_lost", "severity": "critical", "detail": "lost"},
            {"finding": "temp_files_removed", "severity": "info", "detail": "1"},
        ],
    }
    alerts = alerts_for(result, CheckpointThresholds())
    assert [a["rule_id"] for a in alerts] == ["checkpoint-data-lost"]
    assert alerts[0]["level"] == "CRITICAL"
    assert set(alerts[0]) == {
        "alert_id",
        "rule_id",
        "level",
        "service",
        "window_start",
        "window_end",
        "event_count",
        "sample_message",
    }
    later = alerts_for(
        {**result, "checked_at": "2026-11-25T10:55:00+00:00"}, CheckpointThresholds()
    )
    assert later[0]["alert_id"] == alerts[0]["alert_id"]
