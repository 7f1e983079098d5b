"""The pure parts of `streamops pipeline reset-offsets`: lost ranges, the rewrite of a checkpoint's
offsets entries (on a temp dir laid out as Spark lays it out), checksums, and when it asks."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

from streamops.maintenance import offset_reset
from streamops.maintenance.checkpoints import inspect_checkpoint
from streamops.maintenance.offset_reset import (
    Decision,
    LostRange,
    OffsetResetError,
    advance_offsets_text,
    apply_plan,
    backup_offsets,
    decide,
    hadoop_crc,
    lost_ranges,
    plan_query,
    query_checkpoints,
)

METADATA = (
    '{"batchWatermarkMs":1796296713208,"batchTimestampMs":1796296735213,'
    '"conf":{"spark.sql.shuffle.partitions":"2"}}'
)


def offsets_entry(*sources: str) -> str:
    return "\n".join(["v1", METADATA, *sources])


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.with_name(f".{path.name}.crc").write_bytes(hadoop_crc(text.encode()))


def checkpoint(root: Path, entries: dict[int, str], committed: list[int]) -> Path:
    write(root / "metadata", '{"id":"7b1c"}')
    for batch, text in entries.items():
        write(root / "offsets" / str(batch), text)
    for batch in committed:
        write(root / "commits" / str(batch), 'v1\n{"nextBatchWatermarkMs":0}')
    return root


def test_lost_ranges_are_the_partitions_below_the_log_start() -> None:
    committed = {"orders": {0: 100, 1: 50, 2: 7}, "other": {0: 3}}
    watermarks = {"orders": {0: (120, 400), 1: (50, 90)}, "other": {0: (0, 3)}}

    ranges = lost_ranges("orders_records", committed, watermarks)

    # Partition 1 is exactly at its log start, 2 is gone from Kafka: neither lost anything.
    assert ranges == [LostRange("orders_records", "orders", 0, 100, 120)]
    assert ranges[0].lost_records == 20


def test_advance_keeps_the_metadata_and_other_sources_byte_for_byte() -> None:
    text = offsets_entry('{"orders":{"1":60,"0":100}}', "-", '{"payments":{"0":5}}')

    after = advance_offsets_text(text, {"orders": {0: 120}})

    assert after.split("\n") == [
        "v1",
        METADATA,
        '{"orders":{"1":60,"0":120}}',
        "-",
        '{"payments":{"0":5}}',
    ]
    assert advance_offsets_text(text, {"orders": {0: 90}}) == text  # never moves back


def test_advance_refuses_an_entry_that_is_not_v1() -> None:
    with pytest.raises(Exception, match="version v1"):
        advance_offsets_text("v2\n{}\n{}", {"orders": {0: 1}})


def test_hadoop_crc_is_a_crc32_per_512_bytes_after_the_header() -> None:
    data = b"123456789" + bytes(600)

    crc = hadoop_crc(data)

    assert crc[:8] == b"crc\x00" + struct.pack(">i", 512)
    assert struct.unpack(">II", crc[8:]) == (
        zlib.crc32(data[:512]),
        zlib.crc32(data[512:]),
    )
    assert zlib.crc32(b"123456789") == 0xCBF43926  # the check value of the CRC-32 Hadoop uses


def test_the_rewrite_moves_the_committed_and_the_planned_entry_only(tmp_path: Path) -> None:
    path = checkpoint(
        tmp_path / "orders" / "records",
        {
            3: offsets_entry('{"orders":{"0":40,"1":30}}'),
            4: offsets_entry('{"orders":{"0":100,"1":50}}'),
            5: offsets_entry('{"orders":{"0":180,"1":95}}'),  # planned, never committed
        },
        committed=[3, 4],
    )
    watermarks = {"orders": {0: (120, 400), 1: (40, 95)}}
    untouched = (path / "offsets" / "3").read_bytes()

    plan = plan_query("orders_records", path, watermarks)

    assert plan.ranges == [LostRange("orders_records", "orders", 0, 100, 120)]
    assert [r.path.name for r in plan.rewrites] == ["4"]  # 5 is already past the log start
    backup = backup_offsets(plan)
    apply_plan(plan)

    assert (path / "offsets" / "4").read_text().split("\n")[2] == '{"orders":{"0":120,"1":50}}'
    assert (path / "offsets" / "3").read_bytes() == untouched
    for batch in ("4", "5"):
        data = (path / "offsets" / batch).read_bytes()
        assert (path / "offsets" / f".{batch}.crc").read_bytes() == hadoop_crc(data)
    snapshot = inspect_checkpoint(path)
    assert snapshot.problems == []
    assert snapshot.committed_offsets == {"orders": {0: 120, 1: 50}}
    assert json.loads((backup / "offsets" / "4").read_text().split("\n")[2]) == {
        "orders": {"0": 100, "1": 50}
    }
    assert not list(path.rglob("*.tmp"))
    assert plan_query("orders_records", path, watermarks).ranges == []


def test_a_planned_entry_below_the_log_start_moves_too(tmp_path: Path) -> None:
    path = checkpoint(
        tmp_path / "q",
        {
            0: offsets_entry('{"orders":{"0":10}}'),
            1: offsets_entry('{"orders":{"0":30}}'),
        },
        committed=[0],
    )

    plan = plan_query("q", path, {"orders": {0: (50, 60)}})
    apply_plan(plan)

    assert plan.lost_records == 40
    for batch in ("0", "1"):
        assert (path / "offsets" / batch).read_text().endswith('{"orders":{"0":50}}')


def test_a_file_changed_after_planning_is_not_overwritten(tmp_path: Path) -> None:
    path = checkpoint(tmp_path / "q", {0: offsets_entry('{"orders":{"0":10}}')}, committed=[0])
    plan = plan_query("q", path, {"orders": {0: (50, 60)}})
    write(path / "offsets" / "0", offsets_entry('{"orders":{"0":11}}'))

    with pytest.raises(OffsetResetError, match="changed since the plan"):
        apply_plan(plan)
    assert (path / "offsets" / "0").read_text().endswith('{"orders":{"0":11}}')


def test_an_unreadable_checkpoint_is_not_rewritten(tmp_path: Path) -> None:
    path = checkpoint(tmp_path / "q", {0: "v1\n{"}, committed=[0])

    with pytest.raises(OffsetResetError, match="unreadable files"):
        plan_query("q", path, {"orders": {0: (50, 60)}})


@pytest.mark.parametrize(
    ("lost", "dry_run", "yes", "interactive", "expected"),
    [
        (0, False, False, False, Decision.NOTHING),
        (0, True, True, True, Decision.NOTHING),
        (5, True, True, True, Decision.DRY_RUN),
        (5, True, False, False, Decision.DRY_RUN),
        (5, False, True, False, Decision.APPLY),
        (5, False, False, True, Decision.ASK),
        (5, False, False, False, Decision.REFUSE_NO_TTY),
    ],
)
def test_when_it_asks(
    lost: int, dry_run: bool, yes: bool, interactive: bool, expected: Decision
) -> None:
    assert decide(lost_records=lost, dry_run=dry_run, yes=yes, interactive=interactive) == expected


def test_query_checkpoints_are_laid_out_as_the_jobs_do() -> None:
    assert query_checkpoints("file:///c/orders", ("orders_records",), "orders") == {
        "orders_records": Path("/c/orders/records")
    }
    with pytest.raises(OffsetResetError, match="local checkpoints only"):
        query_checkpoints("s3a://bucket/orders", ("orders_records",), "orders")


class _Spec:
    name = "orders"


def _run(
    monkeypatch: pytest.MonkeyPatch,
    plans: list[offset_reset.QueryPlan],
    *,
    dry_run: bool = False,
    yes: bool = False,
    interactive: bool = False,
    answer: bool = False,
) -> tuple[list[str], list[str]]:
    """The command's flow with its I/O (lease, Kafka, MariaDB, alert) replaced by records of the
    calls: only what it decides is under test here; tests/integration/test_reset_offsets.py runs
    it for real."""
    calls: list[str] = []
    said: list[str] = []
    monkeypatch.setattr(offset_reset, "refuse_while_running", lambda *_: calls.append("check"))
    monkeypatch.setattr(offset_reset, "plan_pipeline", lambda *_: plans)
    monkeypatch.setattr(offset_reset, "apply_plan", lambda plan: calls.append("apply"))
    monkeypatch.setattr(offset_reset, "backup_offsets", lambda *_: Path("/b"))
    monkeypatch.setattr(offset_reset, "record_resets", lambda *_: calls.append("record") or 1)
    monkeypatch.setattr(offset_reset, "publish_reset_alert", lambda *_: calls.append("alert"))

    class Lease:
        def __init__(self, *_: object) -> None:
            pass

        def __enter__(self) -> None:
            calls.append("lease")

        def __exit__(self, *_: object) -> None:
            calls.append("release")

    monkeypatch.setattr(offset_reset, "_HeldLease", Lease)
    offset_reset.reset_offsets(
        object(),  # type: ignore[arg-type]
        _Spec(),  # type: ignore[arg-type]
        dry_run=dry_run,
        yes=yes,
        interactive=interactive,
        confirm=lambda _: answer,
        say=said.append,
        reset_by="tester",
    )
    return calls, said


def _lossy_plan() -> offset_reset.QueryPlan:
    plan = offset_reset.QueryPlan("orders_records", Path("/c/orders/records"), 4)
    plan.ranges = [LostRange("orders_records", "orders", 0, 100, 120)]
    plan.rewrites = [offset_reset.FileRewrite(Path("/c/orders/records/offsets/4"), "a", "b")]
    return plan


def test_the_flow_applies_records_and_alerts_under_the_lease_with_yes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls, said = _run(monkeypatch, [_lossy_plan()], yes=True)

    assert calls == ["check", "lease", "apply", "record", "release", "alert"]
    assert any("orders[0] offsets 100..119 (20 records)" in line for line in said)


def test_the_flow_changes_nothing_on_a_dry_run_or_without_loss(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls, said = _run(monkeypatch, [_lossy_plan()], dry_run=True, yes=True)
    assert calls == ["check"] and said[-1] == "dry run: nothing was changed."

    clean = offset_reset.QueryPlan("orders_records", Path("/c"), 4)
    calls, said = _run(monkeypatch, [clean], yes=True)
    assert calls == ["check"] and "nothing to do" in said[-1]


def test_the_flow_refuses_without_a_terminal_or_a_yes(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OffsetResetError, match="pass --yes"):
        _run(monkeypatch, [_lossy_plan()], interactive=False)
    with pytest.raises(OffsetResetError, match="not confirmed"):
        _run(monkeypatch, [_lossy_plan()], interactive=True, answer=False)
    calls, _ = _run(monkeypatch, [_lossy_plan()], interactive=True, answer=True)
    assert "apply" in calls
