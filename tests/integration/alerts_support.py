"""The alerts pipeline's integration tests' helpers: lines and rules in, alerts and batches out."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from streamops.config import PROJECT_ROOT, Settings
from tests.integration.support import execute, query, wait_until

REFRESH_SECONDS = 3
WINDOW_SECONDS = 60
# Tests that add lines to a window after a restart: on a loaded machine minutes may pass, and
# with the default 2-minute watermark those lines would be late (dropped, as designed).
PATIENT_WATERMARK = ("--watermark", "30 minutes")


def add_rule(settings: Settings, rule_id: str, service: str, threshold: int) -> None:
    execute(
        settings,
        "INSERT INTO alert_rules (rule_id, level, service, window_seconds, threshold_count) "
        "VALUES (?, 'ERROR', ?, ?, ?)",
        (rule_id, service, WINDOW_SECONDS, threshold),
    )


def csv_line(*fields: str) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(fields)
    return buffer.getvalue().removesuffix("\r\n").encode()


def produce(
    settings: Settings,
    service: str,
    count: int,
    level: str = "error",
    moment: datetime | None = None,
) -> datetime:
    """``count`` lines of one service, all at the same event time (so in one window): ``moment``
    (naive UTC), or now. Returns it, naive UTC."""
    moment = (moment.replace(tzinfo=UTC) if moment else datetime.now(UTC)).replace(microsecond=0)
    stamp = moment.isoformat().replace("+00:00", "Z")
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for index in range(count):
        message = f'Timeout calling db, attempt {index}\n  detail: "pool, exhausted"'
        producer.produce(
            "error-logs", key=service.encode(), value=csv_line(stamp, level, service, message)
        )
    assert producer.flush(10) == 0
    return moment.replace(tzinfo=None)


def produce_raw(settings: Settings, payloads: list[bytes]) -> list[tuple[int, int]]:
    """Kafka (partition, offset) of each payload, in the order given (deliveries of different
    partitions are reported in any order)."""
    positions: dict[int, tuple[int, int]] = {}
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})

    def delivered(index: int) -> Callable[[object, Message], None]:
        def report(error: object, message: Message) -> None:
            assert error is None, error
            positions[index] = (message.partition(), message.offset())

        return report

    for index, payload in enumerate(payloads):
        producer.produce("error-logs", value=payload, on_delivery=delivered(index))
    assert producer.flush(10) == 0
    return [positions[index] for index in range(len(payloads))]


def alerts_on_topic(settings: Settings, ids: set[str]) -> list[tuple[str, dict]]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": uuid.uuid4().hex,
            "enable.auto.commit": False,
        }
    )
    partitions = consumer.list_topics("alerts", timeout=10).topics["alerts"].partitions
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition("alerts", p), timeout=10)[1]
        for p in partitions
    }
    consumer.assign([TopicPartition("alerts", p, 0) for p in partitions])
    seen = 0
    found: list[tuple[str, dict]] = []
    deadline = time.monotonic() + 30
    while seen < sum(ends.values()) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        seen += 1
        key = message.key().decode()
        if key in ids:
            found.append((key, json.loads(message.value())))
    consumer.close()
    return found


def start_job(
    settings: Settings,
    folder: Path,
    extra_env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
) -> subprocess.Popen:
    log = (folder / f"job-{time.time_ns()}.log").open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spark_jobs.jobs.alerts",
            "--rules-refresh-seconds",
            str(REFRESH_SECONDS),
            *extra_args,
        ],
        cwd=PROJECT_ROOT,
        env={
            **os.environ,
            "STREAMOPS_CHECKPOINT_URI": str(folder / "checkpoints"),
            **(extra_env or {}),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def alert_rows(settings: Settings, rule_id: str) -> list[tuple]:
    return query(
        settings,
        "SELECT alert_id, service, window_start, event_count FROM alerts WHERE rule_id = ?",
        (rule_id,),
    )


# The counting query's trigger in the real-time test: slow, so the real-time path publishes first.
COUNTING_TRIGGER_SECONDS = 150


def realtime_batches(settings: Settings) -> int:
    rows = query(
        settings,
        "SELECT COUNT(*) FROM query_progress "
        "WHERE pipeline = 'alerts' AND query_name = 'alerts_realtime'",
    )
    return int(rows[0][0])


def counts_batches(settings: Settings) -> int:
    rows = query(
        settings,
        "SELECT COUNT(*) FROM query_progress "
        "WHERE pipeline = 'alerts' AND query_name = 'alerts_counts'",
    )
    return int(rows[0][0])


def last_counts_trigger(settings: Settings) -> datetime | None:
    """When the counting query's newest finished batch was triggered (UTC, naive)."""
    rows = query(
        settings,
        "SELECT MAX(progress_at) FROM query_progress "
        "WHERE pipeline = 'alerts' AND query_name = 'alerts_counts'",
    )
    return rows[0][0]


def wait_for_counting_lull(
    settings: Settings, job: subprocess.Popen, trigger_seconds: float, lull_seconds: float
) -> None:
    """Return when the counting query's next trigger is at least ``lull_seconds`` away, waiting
    out its next batch when it is nearer: a line sent then is the real-time path's alone to
    publish first (the next counting batch plans its offsets only at that trigger)."""
    while True:
        last = last_counts_trigger(settings)
        now = datetime.now(UTC).replace(tzinfo=None)
        if last is not None and (last - now).total_seconds() + trigger_seconds >= lull_seconds:
            return
        before = counts_batches(settings)
        wait_until(
            lambda before=before: counts_batches(settings) > before,
            trigger_seconds + 150,
            "the counting query's next batch",
            job,
        )
