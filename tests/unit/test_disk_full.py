"""A full disk: reading it out of a failure, the free space rule, the job's exit code, and the
supervisor's reading of that code (no Spark, no services)."""

from __future__ import annotations

import errno
import logging
import shutil
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest
from pyspark.errors import StreamingQueryException

from spark_jobs.common import disk_full, runner
from spark_jobs.common.disk_full import disk_full_cause, startup_disk_full
from spark_jobs.common.restarts import RestartPolicy
from streamops.config import Settings
from streamops.disk import GIB, MIB, full_below_bytes, human_bytes, is_full, local_path
from streamops.errors import DISK_FULL_MARK, EXIT_DISK_FULL
from streamops.supervision import dependencies
from streamops.supervision.job_health import HealthStatus, StallBounds, classify_health

Usage = namedtuple("Usage", "total used free")
ENOSPC_JAVA = "java.io.IOException: No space left on device"


class FakeThrowable:
    """What Py4J hands over for a Java throwable: toString, getCause, getSuppressed."""

    def __init__(self, text: str, cause: Any = None, suppressed: tuple[Any, ...] = ()) -> None:
        self.text, self.cause, self.suppressed = text, cause, list(suppressed)

    def toString(self) -> str:
        return self.text

    def getCause(self) -> Any:
        return self.cause

    def getSuppressed(self) -> list[Any]:
        return self.suppressed


class Captured(Exception):
    """Like pyspark's CapturedException: a short description, the JVM's trace, the throwable."""

    def __init__(self, desc: str, stack_trace: str = "", origin: Any = None) -> None:
        super().__init__(desc)
        self._desc, self._stackTrace, self._origin = desc, stack_trace, origin


# --- reading the failure ---------------------------------------------------------------------


def test_a_python_enospc_is_a_full_disk() -> None:
    error = OSError(errno.ENOSPC, "No space left on device")
    assert disk_full_cause(error) == "OSError: [Errno 28] No space left on device"


def test_the_cause_is_found_down_the_python_chain() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("the archive write failed") from inner
    except RuntimeError as outer:
        assert disk_full_cause(outer) == "OSError: [Errno 28] No space left on device"


def test_the_cause_is_found_in_a_foreach_batch_traceback_text() -> None:
    # A Python writer's failure reaches the driver as one Java exception with the traceback.
    error = Captured(
        "[STREAM_FAILED] Query [id = 1] terminated with exception: "
        "[FOREACH_BATCH_USER_FUNCTION_ERROR] An error occurred in the user provided function.\n"
        "py4j.protocol.Py4JJavaError: An error occurred while calling o126.parquet.\n"
        "Caused by: org.apache.hadoop.fs.FSError: java.io.IOException: No space left on device"
    )
    assert disk_full_cause(error) == (
        "Caused by: org.apache.hadoop.fs.FSError: java.io.IOException: No space left on device"
    )


def test_the_cause_is_found_in_the_jvm_stack_trace_alone() -> None:
    error = Captured("[STREAM_FAILED] terminated", stack_trace=f"at x.y\nCaused by: {ENOSPC_JAVA}")
    assert disk_full_cause(error) == f"Caused by: {ENOSPC_JAVA}"


def test_the_cause_is_found_among_java_causes_and_suppressed_exceptions() -> None:
    deepest = FakeThrowable(ENOSPC_JAVA)
    suppressed = FakeThrowable("org.apache.hadoop.fs.FSError: wrapper", cause=deepest)
    origin = FakeThrowable(
        "org.apache.spark.SparkException: [TASK_WRITE_FAILED] Task failed while writing rows",
        cause=FakeThrowable("ParquetCloseResourceException: Unable to close resource"),
        suppressed=(suppressed,),
    )
    assert disk_full_cause(Captured("[STREAM_FAILED] terminated", origin=origin)) == ENOSPC_JAVA


def test_a_py4j_error_s_java_exception_is_read() -> None:
    class Py4JLike(Exception):
        java_exception = FakeThrowable("x", cause=FakeThrowable("Disk quota exceeded"))

    assert disk_full_cause(Py4JLike("An error occurred while calling o1.start")) == (
        "Disk quota exceeded"
    )


def test_a_cycle_of_java_causes_ends() -> None:
    first = FakeThrowable("java.lang.RuntimeException: a")
    first.cause = FakeThrowable("java.lang.RuntimeException: b", cause=first)
    assert disk_full_cause(Captured("terminated", origin=first)) is None


def test_a_broken_gateway_is_not_a_full_disk() -> None:
    class Gone:
        def toString(self) -> str:
            raise ConnectionError("the Java gateway is gone")

    assert disk_full_cause(Captured("terminated", origin=Gone())) is None


@pytest.mark.parametrize(
    "text",
    [
        "mariadb.OperationalError: Can't connect to server on '127.0.0.1' (111)",
        "java.io.IOException: Stream closed",
        "the device space dashboard",
    ],
)
def test_other_failures_are_not_a_full_disk(text: str) -> None:
    assert disk_full_cause(RuntimeError(text)) is None


# --- the free space rule ---------------------------------------------------------------------


def test_full_means_below_256_mib_or_5_percent_of_a_small_filesystem() -> None:
    assert full_below_bytes(100 * GIB) == 256 * MIB
    assert full_below_bytes(48 * MIB) == int(48 * MIB * 0.05)
    assert full_below_bytes(0) == 1
    assert is_full(100 * GIB, 256 * MIB - 1)
    assert not is_full(100 * GIB, 256 * MIB)
    assert is_full(48 * MIB, 0)
    assert not is_full(48 * MIB, 40 * MIB)


def test_sizes_read_as_people_write_them() -> None:
    assert [human_bytes(n) for n in (0, 812, 4096, int(2.4 * MIB), 17 * GIB)] == [
        "0 B",
        "812 B",
        "4 KiB",
        "2.4 MiB",
        "17.0 GiB",
    ]


def test_local_roots_are_paths_and_remote_ones_are_not_measured() -> None:
    assert local_path("/srv/checkpoints") == Path("/srv/checkpoints")
    assert local_path("file:///srv/archive") == Path("/srv/archive")
    assert local_path("file:/srv/archive") == Path("/srv/archive")
    assert local_path("s3a://bucket/archive") is None


def test_the_supervisor_probes_the_archive_too_with_the_job_s_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        state_dir=tmp_path / "state",
        checkpoint_uri=str(tmp_path / "cp"),
        archive_uri=f"file://{tmp_path / 'archive'}",
    )
    assert dependencies.disk_paths(settings) == [
        tmp_path / "state",
        tmp_path / "cp",
        tmp_path / "archive",
    ]
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(48 * MIB, 47 * MIB, MIB))
    with pytest.raises(OSError, match=r"1\.0 MiB free on .*\(at least 2\.4 MiB needed\)"):
        dependencies.probe_disk(settings)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(48 * MIB, 8 * MIB, 40 * MIB))
    dependencies.probe_disk(settings)


# --- the job: no start on a full disk, exit 74 on a write that meets one --------------------


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        checkpoint_uri=str(tmp_path / "cp"),
        archive_uri=str(tmp_path / "archive"),
    )


def test_a_job_does_not_start_on_a_full_filesystem_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    monkeypatch.setattr(disk_full.shutil, "disk_usage", lambda p: Usage(48 * MIB, 48 * MIB, 0))
    message = startup_disk_full(settings, "orders")
    assert message is not None
    # One filesystem holds both roots: named once, with its free space and the threshold.
    assert f"0 B free of 48.0 MiB on {tmp_path / 'cp' / 'orders'} (checkpoints, archive; " in (
        message
    )
    assert "full below 2.4 MiB" in message
    assert f"exit {EXIT_DISK_FULL}" in message and "docs/operations.md#a-full-disk" in message
    monkeypatch.setattr(
        disk_full.shutil, "disk_usage", lambda p: Usage(48 * MIB, 8 * MIB, 40 * MIB)
    )
    assert startup_disk_full(settings, "orders") is None


def test_a_remote_root_is_not_measured(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path, checkpoint_uri="s3a://b/cp", archive_uri="s3a://b/archive"
    )
    assert disk_full.write_spaces(settings, "orders") == []
    assert startup_disk_full(settings, "orders") is None


class FakeQuery:
    def __init__(self, name: str, error: BaseException | None) -> None:
        self.name, self.id, self.runId = name, name, f"{name}-run"
        self.error = error
        self.stopped = False

    @property
    def isActive(self) -> bool:
        return self.error is None and not self.stopped

    @property
    def status(self) -> dict[str, bool]:
        return {"isTriggerActive": False}

    def exception(self) -> BaseException | None:
        return self.error

    def awaitTermination(self) -> None:
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self.stopped = True

    def lastProgress(self) -> None:
        return None

    @property
    def _jsq(self) -> FakeQuery:
        return self


class FakeWriter:
    def __init__(self, query: FakeQuery | None = None, start_error: Exception | None = None):
        self.query, self.start_error = query, start_error

    def start(self) -> FakeQuery:
        if self.start_error is not None:
            raise self.start_error
        assert self.query is not None
        return self.query


class FakeStatus:
    def track(self, query: Any) -> None: ...
    def untrack(self, query: Any) -> None: ...
    def poll(self) -> None: ...


def _run(tmp_path: Path, writers: list[FakeWriter], monkeypatch: pytest.MonkeyPatch) -> Any:
    alerts: list[tuple[str, str]] = []
    monkeypatch.setattr(
        runner,
        "_publish_pipeline_alert",
        lambda settings, pipeline, rule_id, message: alerts.append((rule_id, message)),
    )
    monkeypatch.setattr(runner, "STAGGER_SECONDS", 0.0)
    monkeypatch.setattr(runner.time, "sleep", lambda seconds: None)
    slots = [runner._Slot(writer) for writer in writers]  # type: ignore[arg-type]
    code = runner._run_until_stopped(
        object(),  # type: ignore[arg-type]  # the listener bus: drained best effort
        _settings(tmp_path),
        "orders",
        slots,
        runner._StopRequest(),
        FakeStatus(),  # type: ignore[arg-type]
        RestartPolicy(),
    )
    return code, alerts, slots


def test_a_query_failing_on_a_full_disk_stops_the_job_with_exit_74(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    failure = StreamingQueryException(
        message=f"[STREAM_FAILED] Query terminated with exception: {ENOSPC_JAVA}"
    )
    other = FakeQuery("orders_revenue", None)
    failed = FakeQuery("orders_records", failure)
    writers = [FakeWriter(other), FakeWriter(failed)]
    with caplog.at_level(logging.ERROR, logger="spark_jobs"):
        code, alerts, _ = _run(tmp_path, writers, monkeypatch)
    assert code == EXIT_DISK_FULL
    assert other.stopped, "the other query is stopped too"
    [line] = [r.getMessage() for r in caplog.records if DISK_FULL_MARK in r.getMessage()]
    assert line.startswith(f"{DISK_FULL_MARK} the orders job stopped its queries: ")
    assert ENOSPC_JAVA in line and str(tmp_path / "cp" / "orders") in line and "free of" in line
    assert [rule for rule, _ in alerts] == [runner.DISK_FULL_RULE_ID]


def test_any_other_query_failure_still_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failure = StreamingQueryException(message="[STREAM_FAILED] java.lang.ArithmeticException")
    code, alerts, _ = _run(tmp_path, [FakeWriter(FakeQuery("q", failure))], monkeypatch)
    assert (code, alerts) == (1, [])


def test_a_query_that_cannot_start_on_a_full_disk_exits_74_and_other_start_errors_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_error = Captured("An error occurred while calling o88.start", f"Caused by: {ENOSPC_JAVA}")
    code, alerts, _ = _run(tmp_path, [FakeWriter(start_error=start_error)], monkeypatch)
    assert code == EXIT_DISK_FULL and len(alerts) == 1
    with pytest.raises(ValueError, match="bad option"):
        _run(tmp_path, [FakeWriter(start_error=ValueError("bad option"))], monkeypatch)


# --- the supervisor: exit 74 is an outage of the disk ----------------------------------------


def test_exit_74_reads_as_a_full_disk_not_a_crash() -> None:
    health = classify_health(
        alive=False,
        exit_code=EXIT_DISK_FULL,
        query_states={},
        now=10.0,
        process_start_epoch=1.0,
        bounds=StallBounds(heartbeat_max_age_seconds=60, startup_grace_seconds=120),
    )
    assert health.status is HealthStatus.FAILED
    assert "full disk (exit 74)" in health.detail


# --- what streamops writes itself -------------------------------------------------------------


def test_an_atomic_write_replaces_the_whole_file(tmp_path: Path) -> None:
    from streamops.disk import write_atomically

    target = tmp_path / "kafka.pid"
    target.write_text('{"pid": 1}')
    write_atomically(target, '{"pid": 2}')
    assert target.read_text() == '{"pid": 2}'
    assert [p.name for p in tmp_path.iterdir()] == ["kafka.pid"]


def test_an_atomic_write_on_a_full_disk_leaves_the_old_file_and_no_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamops import disk

    target = tmp_path / "kafka.pid"
    target.write_text('{"pid": 1}')

    def no_space(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(disk.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        disk.write_atomically(target, '{"pid": 2}')
    assert target.read_text() == '{"pid": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["kafka.pid"]
