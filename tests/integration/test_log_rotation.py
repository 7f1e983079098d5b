"""Logs stay bounded on the real services: Kafka's log4j2 rolls its own log by size, and
`streamops maintenance rotate-logs` rotates a live service's stdout log while it writes.

These tests start their own Kafka and Redis in a temporary state folder on free ports (the
shared test stack, with Airflow, is not needed and not touched) and stop them at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from streamops.config import PROJECT_ROOT, Settings
from streamops.maintenance.logs import rotated_copies
from streamops.stack.kafka import Kafka
from streamops.stack.redis import Redis
from tests.integration.support import free_port

ROLL_BYTES = 8 * 1024
KEEP = 3


@pytest.fixture
def _running_stack() -> None:
    """Overrides the package's autouse fixture: these tests bring their own services."""


@pytest.fixture
def private(settings: Settings, tmp_path: Path) -> Settings:
    """The test settings with a state folder and ports of this test alone."""
    ports = {
        name: free_port()
        for name in (
            "kafka_port",
            "kafka_controller_port",
            "mariadb_port",
            "redis_port",
            "postgres_port",
            "airflow_port",
            "dashboard_port",
        )
    }
    return settings.model_copy(
        update={"state_dir": tmp_path / "state", "log_keep": KEEP, "kafka_heap": "256m", **ports}
    )


class TinyRollKafka(Kafka):
    """The stack's Kafka with a roll size small enough for start-up alone to roll it."""

    @property
    def server_log_max_bytes(self) -> int:
        return ROLL_BYTES


@pytest.fixture
def kafka(private: Settings) -> Iterator[Kafka]:
    component = TinyRollKafka(private)
    component.start()
    try:
        component.wait_healthy()
        yield component
    finally:
        component.stop()


@pytest.fixture
def redis_service(private: Settings) -> Iterator[Redis]:
    component = Redis(private)
    component.start()
    try:
        component.wait_healthy()
        yield component
    finally:
        component.stop()


def test_kafka_rolls_its_own_log_by_size(kafka: Kafka) -> None:
    log = kafka.server_log_dir / "server.log"
    assert log.is_file()
    copies = rotated_copies(log)
    # Start-up alone wrote far more than ROLL_BYTES at INFO: log4j2 rolled, and kept KEEP copies.
    assert sorted(copies) == list(range(1, KEEP + 1)), sorted(copies)
    assert "Kafka Server started" in "".join(
        path.read_text(errors="replace") for paths in copies.values() for path in paths
    ) + log.read_text(errors="replace")
    # The stack's stdout file gets warnings and errors only, not the INFO stream.
    assert " INFO " not in kafka.log_path.read_text(errors="replace")


def _saves(text: str) -> int:
    return text.count("DB saved on disk")


def _all_text(path: Path) -> str:
    copies = rotated_copies(path)
    parts = [p.read_text(errors="replace") for i in sorted(copies, reverse=True) for p in copies[i]]
    return "".join(parts) + path.read_text(errors="replace")


def test_rotate_logs_bounds_a_live_services_stdout_log(
    private: Settings, redis_service: Redis
) -> None:
    log = redis_service.log_path
    client = redis.Redis(host="127.0.0.1", port=private.redis_port)
    try:
        # A long run's worth of log: 3 MiB appended (as the service itself appends), then lines
        # written by Redis itself (each SAVE logs "DB saved on disk").
        with log.open("ab") as handle:
            handle.write(b"filler line of a long run\n" * (3 * 1024 * 1024 // 26))
        for _ in range(3):
            client.save()
        env = {
            **os.environ,
            **private.as_env(),
            "STREAMOPS_LOG_MAX_MB": "1",
        }
        result = subprocess.run(
            [sys.executable, "-m", "streamops", "maintenance", "rotate-logs", "--json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=PROJECT_ROOT,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        rotated = {entry["path"]: entry for entry in report["rotated"]}
        assert str(log) in rotated, report
        assert log.stat().st_size < 1024 * 1024
        assert (log.parent / "redis.log.1").stat().st_size >= 3 * 1024 * 1024 - 4096
        # Redis goes on writing to the same file, at its new end: no hole of zeros.
        for _ in range(2):
            client.save()
        live = log.read_bytes()
        assert b"\0" not in live
        assert _saves(live.decode(errors="replace")) >= 2
        # Nothing Redis wrote was lost: every SAVE's line is in the live file or its copy.
        assert _saves(_all_text(log)) == 5
        assert redis_service.health().healthy
    finally:
        client.close()
