"""Rotation and pruning of the state folder's logs (streamops.maintenance.logs), on temp files."""

from __future__ import annotations

import gzip
import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from streamops.config import Settings
from streamops.maintenance import logs
from streamops.maintenance.logs import LogPolicy, rotate_in_place, rotate_logs

LINE = 32  # bytes per numbered line the writer appends


def _numbered(start: int, count: int) -> bytes:
    return b"".join(f"{n:0{LINE - 1}d}\n".encode() for n in range(start, start + count))


def _numbers(data: bytes) -> list[int]:
    return [int(line) for line in data.decode().splitlines()]


def _history(path: Path) -> bytes:
    """Every copy of a log, oldest first, then the live file."""
    copies = logs.rotated_copies(path)
    parts = []
    for index in sorted(copies, reverse=True):
        for copy in copies[index]:
            parts.append(
                gzip.decompress(copy.read_bytes())
                if copy.name.endswith(".gz")
                else copy.read_bytes()
            )
    return b"".join(parts) + path.read_bytes()


def _collapse_supported(folder: Path) -> bool:
    probe = folder / "probe"
    probe.write_bytes(b"x" * 3 * 65536)
    with probe.open("r+b") as handle:
        block = os.fstatvfs(handle.fileno()).f_bsize
        supported = logs.collapse_head(handle.fileno(), block)
    probe.unlink()
    return supported


def _settings(state: Path) -> Settings:
    return Settings(state_dir=state)


# --- numbering ---------------------------------------------------------------------------------


def test_rotations_are_numbered_newest_first_and_only_keep_copies_stay(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    for generation in range(4):
        with log.open("ab") as handle:
            handle.write(_numbered(generation * 1000, 1000))
        rotate_in_place(log, keep=2)
        assert log.stat().st_size < os.statvfs(tmp_path).f_bsize
    copies = logs.rotated_copies(log)
    assert sorted(copies) == [1, 2]
    # Whatever stayed in the live file (less than a block) goes out with the next rotation, so
    # .1 may start with the tail of the generation before: judge the copies by their last line.
    assert _numbers(copies[1][0].read_bytes())[-1] // 1000 == 3
    assert _numbers(copies[2][0].read_bytes())[-1] // 1000 == 2
    # The two kept copies and the live file: the newest lines, every one, in order.
    kept = _numbers(_history(log))
    assert kept == list(range(kept[0], 4000))
    assert kept[0] <= 2000


def test_lowering_keep_deletes_the_copies_past_it(tmp_path: Path) -> None:
    log = tmp_path / "kafka.log"
    for index in range(1, 6):
        (tmp_path / f"kafka.log.{index}").write_text(f"copy {index}\n")
    log.write_bytes(_numbered(0, 500))
    deleted = logs.shift_copies(log, keep=3)
    assert sorted(Path(path).name for path, _ in deleted) == [
        "kafka.log.3",
        "kafka.log.4",
        "kafka.log.5",
    ]
    assert (tmp_path / "kafka.log.2").read_text() == "copy 1\n"
    assert (tmp_path / "kafka.log.3").read_text() == "copy 2\n"
    assert not (tmp_path / "kafka.log.1").exists()


def test_a_small_file_is_copied_and_truncated_whole(tmp_path: Path) -> None:
    log = tmp_path / "tiny.log"
    log.write_bytes(b"one line\n")
    result = rotate_in_place(log, keep=3)
    assert result["method"] == "copy-truncate"
    assert (tmp_path / "tiny.log.1").read_bytes() == b"one line\n"
    assert log.read_bytes() == b""


def test_compressed_copies_hold_the_bytes(tmp_path: Path) -> None:
    log = tmp_path / "dashboard.log"
    data = _numbered(0, 5000)
    log.write_bytes(data)
    rotate_in_place(log, keep=3, compress=True)
    copy = tmp_path / "dashboard.log.1.gz"
    assert gzip.decompress(copy.read_bytes()) + log.read_bytes() == data
    log.write_bytes(log.read_bytes() + _numbered(5000, 5000))
    rotate_in_place(log, keep=3, compress=True)
    assert (tmp_path / "dashboard.log.2.gz").exists()
    assert _numbers(_history(log)) == list(range(10_000))


# --- a writer that keeps appending ---------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import os, sys
    path, stop = sys.argv[1], sys.argv[2]
    # As the stack hands a log to a service: opened for appending, one write per line.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    n = 0
    while not os.path.exists(stop):
        os.write(fd, f"{n:031d}\\n".encode())
        n += 1
    os.close(fd)
    print(n)
    """
)


def _rotate_while_writing(tmp_path: Path, rotations: int, threshold: int) -> tuple[Path, int, list]:
    log = tmp_path / "job.log"
    stop = tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(log), str(stop)], stdout=subprocess.PIPE, text=True
    )
    results = []
    try:
        for _ in range(rotations):
            # Wait for the writer to fill the file past the threshold (no clock involved).
            while not log.exists() or log.stat().st_size < threshold:
                assert writer.poll() is None, "the writer died"
            before = log.stat().st_size
            results.append(rotate_in_place(log, keep=rotations + 1))
            # The live file lost (at least) what was moved out of it.
            assert log.stat().st_size < before + threshold
    finally:
        stop.touch()
        out, _ = writer.communicate(timeout=60)
    return log, int(out), results


def test_a_writer_appending_during_rotation_loses_nothing(tmp_path: Path) -> None:
    if not _collapse_supported(tmp_path):
        pytest.skip("this filesystem cannot collapse a range (tmpfs, overlayfs)")
    log, written, results = _rotate_while_writing(tmp_path, rotations=5, threshold=256 * 1024)
    assert [r["method"] for r in results] == ["collapse"] * 5
    assert sorted(logs.rotated_copies(log)) == [1, 2, 3, 4, 5]
    # Every line the writer wrote, exactly once and in order, across .5 ... .1 and the live file.
    assert _numbers(_history(log)) == list(range(written))
    # Each copy holds what was moved, oldest first in the numbering's reverse.
    sizes = [logs.rotated_copies(log)[i][0].stat().st_size for i in range(5, 0, -1)]
    assert sizes == [r["bytes"] for r in results]


def test_copy_truncate_fallback_loses_at_most_the_instant_of_each_truncation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "collapse_head", lambda fd, length: False)
    log, written, results = _rotate_while_writing(tmp_path, rotations=4, threshold=256 * 1024)
    assert [r["method"] for r in results] == ["copy-truncate"] * 4
    numbers = _numbers(_history(log))
    # In order, nothing twice, the last line there, and at most one gap per rotation.
    assert numbers == sorted(set(numbers))
    assert numbers[-1] == written - 1
    gaps = sum(1 for a, b in itertools.pairwise(numbers) if b != a + 1)
    assert gaps <= len(results)
    assert numbers[0] == 0


# --- the whole state folder ---------------------------------------------------------------------


def _state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    (state / "logs").mkdir(parents=True)
    return state


def test_every_log_over_the_limit_is_rotated_and_the_others_left(tmp_path: Path) -> None:
    state = _state(tmp_path)
    big = state / "logs" / "airflow-scheduler.log"
    big.write_bytes(_numbered(0, 100_000))  # 3.2 MB
    small = state / "logs" / "redis.log"
    small.write_bytes(_numbered(0, 10))
    job = state / "pipelines" / "orders" / "token-3.log"
    job.parent.mkdir(parents=True)
    job.write_bytes(_numbered(0, 100_000))
    task = state / "airflow" / "logs" / "dag_id=x" / "run_id=y" / "task_id=z" / "attempt=1.log"
    task.parent.mkdir(parents=True)
    task.write_bytes(_numbered(0, 100_000))
    kafka_own = state / "kafka" / "logs" / "server.log"  # log4j2 rolls it; never touched here
    kafka_own.parent.mkdir(parents=True)
    kafka_own.write_bytes(_numbered(0, 100_000))

    policy = LogPolicy(max_bytes=1024 * 1024, keep=2)
    report = rotate_logs(_settings(state), policy=policy, writers_scan=dict)
    assert sorted(Path(r["path"]) for r in report["rotated"]) == sorted([big, job, task])
    for path in (big, job, task):
        assert path.stat().st_size <= policy.max_bytes
        assert _numbers(_history(path)) == list(range(100_000))
    assert small.stat().st_size == 10 * LINE
    assert kafka_own.stat().st_size == 100_000 * LINE
    assert not list(kafka_own.parent.glob("server.log.*"))


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    state = _state(tmp_path)
    big = state / "logs" / "kafka.log"
    big.write_bytes(_numbered(0, 100_000))
    old = state / "airflow" / "logs" / "dag_id=x" / "attempt=1.log"
    old.parent.mkdir(parents=True)
    old.write_text("old\n")
    os.utime(old, (0, 0))
    report = rotate_logs(
        _settings(state), policy=LogPolicy(max_bytes=1024, keep=2), dry_run=True, writers_scan=dict
    )
    assert [r["path"] for r in report["rotated"]] == [str(big)]
    assert [r["path"] for r in report["deleted"]] == [str(old)]
    assert big.stat().st_size == 100_000 * LINE
    assert old.exists()
    assert not list(big.parent.glob("kafka.log.*"))


def test_old_task_logs_are_deleted_with_their_empty_folders(tmp_path: Path) -> None:
    state = _state(tmp_path)
    root = state / "airflow" / "logs"
    old_run = root / "dag_id=a" / "run_id=old" / "task_id=t"
    new_run = root / "dag_id=a" / "run_id=new" / "task_id=t"
    for folder in (old_run, new_run):
        folder.mkdir(parents=True)
        (folder / "attempt=1.log").write_text("x\n")
    now = 1_000_000_000.0
    os.utime(old_run / "attempt=1.log", (now - 8 * 86_400, now - 8 * 86_400))
    os.utime(new_run / "attempt=1.log", (now - 6 * 86_400, now - 6 * 86_400))
    policy = LogPolicy(max_bytes=1024 * 1024, keep=2, task_log_retention_days=7)
    report = rotate_logs(_settings(state), policy=policy, now=now, writers_scan=dict)
    assert [r["path"] for r in report["deleted"]] == [str(old_run / "attempt=1.log")]
    assert not (root / "dag_id=a" / "run_id=old").exists()
    assert (new_run / "attempt=1.log").exists()
    assert root.is_dir()


def test_launch_logs_beyond_the_newest_tokens_are_deleted(tmp_path: Path) -> None:
    state = _state(tmp_path)
    folder = state / "pipelines" / "orders"
    folder.mkdir(parents=True)
    for token in (1, 2, 3, 9, 10, 11):
        (folder / f"token-{token}.log").write_text(f"{token}\n")
    (folder / "token-2.log.1").write_text("rotated\n")
    (folder / "token-2.log.2.gz").write_bytes(gzip.compress(b"rotated\n"))
    (folder / "exit-123").write_text("0\n")
    policy = LogPolicy(max_bytes=1024 * 1024, keep=2, job_logs_keep=3)
    report = rotate_logs(_settings(state), policy=policy, writers_scan=dict)
    assert sorted(Path(r["path"]).name for r in report["deleted"]) == [
        "token-1.log",
        "token-2.log",
        "token-2.log.1",
        "token-2.log.2.gz",
        "token-3.log",
    ]
    # Numerically newest, not by name: token-9 is older than token-10 and token-11.
    assert sorted(p.name for p in folder.iterdir()) == [
        "exit-123",
        "token-10.log",
        "token-11.log",
        "token-9.log",
    ]


def test_a_log_still_written_is_never_deleted(tmp_path: Path) -> None:
    state = _state(tmp_path)
    folder = state / "pipelines" / "orders"
    folder.mkdir(parents=True)
    for token in (1, 2, 3):
        (folder / f"token-{token}.log").write_text(f"{token}\n")
    policy = LogPolicy(max_bytes=1024 * 1024, keep=2, job_logs_keep=1)
    with (folder / "token-1.log").open("ab"):  # a job of an old token still runs
        report = rotate_logs(_settings(state), policy=policy)
    assert [Path(r["path"]).name for r in report["deleted"]] == ["token-2.log"]
    assert [Path(r["path"]).name for r in report["skipped"]] == ["token-1.log"]
    assert (folder / "token-1.log").exists()


def test_a_log_written_without_o_append_is_skipped_not_cut(tmp_path: Path) -> None:
    state = _state(tmp_path)
    appended = state / "logs" / "appended.log"
    overwritten = state / "logs" / "trigger.log"
    policy = LogPolicy(max_bytes=1024, keep=2)
    # Real /proc: this process holds one file with O_APPEND and one without (Airflow's triggerer
    # opens its trigger logs with "wb").
    with appended.open("ab") as one, overwritten.open("wb") as other:
        one.write(_numbered(0, 1000))
        other.write(_numbered(0, 1000))
        one.flush()
        other.flush()
        report = rotate_logs(_settings(state), policy=policy)
    assert [r["path"] for r in report["rotated"]] == [str(appended)]
    assert [r["path"] for r in report["skipped"]] == [str(overwritten)]
    assert "without O_APPEND" in report["skipped"][0]["reason"]
    assert overwritten.stat().st_size == 1000 * LINE


def test_open_writers_reads_the_flags_from_proc(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    with path.open("ab") as handle:
        info = path.stat()
        found = logs.open_writers()[(info.st_dev, info.st_ino)]
        assert (os.getpid(), found[0][1]) in found
        assert found[0][1] & os.O_APPEND
        handle.write(b"x")


# --- settings ------------------------------------------------------------------------------------


def test_log_settings_have_safe_defaults_and_bounds(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    policy = LogPolicy.from_settings(settings)
    assert policy == LogPolicy(
        max_bytes=50 * 1024 * 1024,
        keep=5,
        compress=False,
        task_log_retention_days=7,
        job_logs_keep=5,
    )
    for bad in ({"log_max_mb": 0}, {"log_keep": 0}, {"task_log_retention_days": 0}):
        with pytest.raises(ValidationError):
            Settings(state_dir=tmp_path, **bad)  # type: ignore[arg-type]


def test_kafka_rolls_its_own_log_by_size() -> None:
    import yaml

    from streamops.stack.kafka import log4j2_config

    config = yaml.safe_load(log4j2_config(Path("/s/kafka/logs"), 1234, 3, compress=True))
    rolling = config["Configuration"]["Appenders"]["RollingFile"]
    assert rolling["fileName"] == "/s/kafka/logs/server.log"
    assert rolling["filePattern"] == "/s/kafka/logs/server.log.%i.gz"
    assert rolling["Policies"]["SizeBasedTriggeringPolicy"]["size"] == "1234"
    assert rolling["DefaultRolloverStrategy"] == {"max": 3, "fileIndex": "min"}
    refs = config["Configuration"]["Loggers"]["Root"]["AppenderRef"]
    assert {"ref": "STDOUT", "level": "WARN"} in refs
    assert {"ref": "SERVER"} in refs
