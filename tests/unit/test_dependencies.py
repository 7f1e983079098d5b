"""Outages apart from crashes: probing dependencies, reading a failure's cause (no services)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamops.config import Settings
from streamops.supervision import dependencies
from streamops.supervision.dependencies import Outage, causes_in, log_tail, probe, since_launch


def _refuse(message: str):
    def check(settings: Settings) -> None:
        raise ConnectionError(message)

    return check


def _answer(settings: Settings) -> None:
    return None


def test_probe_names_each_dependency_that_does_not_answer() -> None:
    probes = {
        "kafka": _answer,
        "mariadb": _refuse("Can't connect to server on '127.0.0.1' (111)\nmore"),
        "redis": _refuse("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        "disk": _answer,
    }
    outages = probe(Settings(), probes=probes)
    assert outages == [
        Outage("mariadb", "Can't connect to server on '127.0.0.1' (111)"),
        Outage("redis", "Error 111 connecting to 127.0.0.1:6379. Connection refused."),
    ]
    assert str(outages[0]).startswith("mariadb: Can't connect")


def test_probe_is_empty_when_all_answer() -> None:
    assert probe(Settings(), probes=dict.fromkeys(dependencies.DEPENDENCIES, _answer)) == []


def test_a_full_disk_is_an_outage(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    dependencies.probe_disk(settings, min_free_bytes=1)
    with pytest.raises(OSError, match=r"GiB free on .* needed"):
        dependencies.probe_disk(settings, min_free_bytes=2**62)


@pytest.mark.parametrize(
    ("text", "causes"),
    [
        ("mariadb.OperationalError: Can't connect to server on '127.0.0.1' (111)", ["mariadb"]),
        ("mariadb.InterfaceError: Lost connection to server during query", ["mariadb"]),
        ("redis.exceptions.ConnectionError: Error 111 connecting to 127.0.0.1:6379.", ["redis"]),
        (
            "org.apache.kafka.common.errors.TimeoutException: Timed out waiting for a node "
            "assignment. Call: describeTopics",
            ["kafka"],
        ),
        ("java.io.IOException: No space left on device", ["disk"]),
        # A failure of the job's own making names no dependency.
        ("ValueError: window_seconds is 0", []),
        ("java.lang.OutOfMemoryError: Java heap space", []),
        # Kafka's reconnect warning shows up in healthy logs too: not a cause on its own.
        ("WARN NetworkClient: Connection to node 1 could not be established.", []),
    ],
)
def test_causes_are_read_from_the_failure_text(text: str, causes: list[str]) -> None:
    assert causes_in(text) == causes


def test_only_the_latest_launch_in_a_log_counts(tmp_path: Path) -> None:
    log = tmp_path / "token-3.log"
    log.write_text(
        f"{dependencies.LAUNCH_MARK} 100\n"
        "redis.exceptions.ConnectionError: Error 111 connecting to 127.0.0.1:6379.\n"
        f"{dependencies.LAUNCH_MARK} 200\n"
        "ValueError: window_seconds is 0\n"
    )
    latest = since_launch(log_tail(log))
    assert "window_seconds" in latest and "redis" not in latest
    assert causes_in(latest) == []
    # Without a mark (a job launched by an older supervisor) the whole tail is read.
    assert since_launch("no marks here") == "no marks here"


def test_log_tail_reads_the_end_only(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    log.write_bytes(b"a" * 100 + b"\xff" + b"the end")
    assert log_tail(log, size=8) == "\ufffdthe end"
    assert log_tail(tmp_path / "missing.log") == ""
    assert log_tail(None) == ""
