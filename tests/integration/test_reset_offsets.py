"""`streamops pipeline reset-offsets` on real Kafka, Spark, MariaDB and Redis.

On a topic of its own (``--topic``; deleting records of the shared `orders` topic would take them
from later tests, and the job would first read every earlier test's orders), the orders job
commits a first load and stops; more orders arrive; Kafka's log start moves past
part of them (``delete_records``, what retention does), so the job fails on data loss and alerts.
The reset moves both query checkpoints (one stateless, one with window state) to the log start,
records the exact lost ranges and alerts; the job then runs again and writes every order Kafka
still has, and none of the deleted ones.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from streamops.config import PROJECT_ROOT, Settings
from streamops.contract.redis_keys import PLATFORM_ALERTS_KEY
from streamops.generator.producer import run_generator
from streamops.maintenance.checkpoints import inspect_checkpoint
from streamops.maintenance.offset_reset import OFFSETS_RESET_RULE_ID
from tests.integration.orders_support import start_job
from tests.integration.support import (
    empty_orders_outputs,
    kill_group,
    own_topic,
    query,
    wait_until,
)

TOPIC = f"orders-reset-{uuid.uuid4().hex[:8]}"


def end_offsets(settings: Settings) -> dict[int, int]:
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": uuid.uuid4().hex}
    )
    try:
        partitions = consumer.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10, cached=False)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def order_ids(settings: Settings, ranges: dict[int, tuple[int, int]]) -> set[str]:
    """The order_id of every record in ``[start, end)`` of each partition (still on the topic)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": uuid.uuid4().hex,
            "enable.auto.commit": False,
        }
    )
    wanted = sum(end - start for start, end in ranges.values())
    consumer.assign([TopicPartition(TOPIC, p, start) for p, (start, _) in ranges.items()])
    ids: set[str] = set()
    seen = 0
    empty_polls = 0
    try:
        while seen < wanted:
            message = consumer.poll(1.0)
            if message is None or message.error():
                empty_polls += 1
                assert empty_polls < 120, f"read {seen} of {wanted} records back from {TOPIC}"
                continue
            if message.offset() < ranges[message.partition()][1]:
                seen += 1
                ids.add(json.loads(message.value())["order_id"])
    finally:
        consumer.close()
    return ids


def committed(checkpoint: Path) -> dict[int, int]:
    return inspect_checkpoint(checkpoint).committed_offsets.get(TOPIC, {})


def produce(settings: Settings, count: int, seed: int) -> None:
    summary = run_generator(
        "orders",
        target_topic=TOPIC,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        rate=0,
        count=count,
        seed=seed,
        now=datetime.now(UTC).replace(microsecond=0),
        progress=False,
    )
    assert (summary.sent, summary.failed) == (count, 0)


def run_until_caught_up(settings: Settings, tmp_path: Path, ends: dict[int, int]) -> None:
    """Run the job until both queries committed the topic up to ``ends``; stop it gracefully."""
    job = start_job(settings, tmp_path, {}, ("--topic", TOPIC))
    try:
        wait_until(
            lambda: all(
                committed(tmp_path / "checkpoints" / "orders" / q) == ends for q in QUERIES
            ),
            timeout=600,
            what="both queries to commit the topic's end offsets",
            job=job,
        )
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=120) == 0
    finally:
        kill_group(job)


QUERIES = ("records", "revenue")


def reset_cli(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamops", "pipeline", "reset-offsets", "orders", *options],
        cwd=PROJECT_ROOT,
        # A wide console: rich wraps at 80 columns when not writing to a terminal.
        env={
            **os.environ,
            "STREAMOPS_CHECKPOINT_URI": str(tmp_path / "checkpoints"),
            "COLUMNS": "400",
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def platform_alerts(settings: Settings, rule_id: str) -> list[dict[str, object]]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        entries = [json.loads(e) for e in client.lrange(PLATFORM_ALERTS_KEY, 0, -1)]
    finally:
        client.close()
    return [e for e in entries if e["rule_id"] == rule_id and e["service"] == "orders"]


@pytest.fixture
def scratch_topic(settings: Settings) -> Iterator[str]:
    """TOPIC, made as the contract's topics are (partitions, LogAppendTime), deleted after."""
    with own_topic(settings, TOPIC) as topic:
        yield topic


def test_reset_offsets_recovers_a_job_whose_offsets_aged_out(
    settings: Settings, tmp_path: Path, scratch_topic: str
) -> None:
    empty_orders_outputs(settings)
    redis.Redis.from_url(settings.redis_url).delete(PLATFORM_ALERTS_KEY)
    produce(settings, 200, seed=9101)
    first_ends = end_offsets(settings)
    run_until_caught_up(settings, tmp_path, first_ends)

    produce(settings, 300, seed=9102)
    ends = end_offsets(settings)
    # Retention takes the first half of what arrived since the commit, on every partition.
    log_start = {p: first_ends[p] + (ends[p] - first_ends[p]) // 2 for p in ends}
    assert all(log_start[p] > first_ends[p] for p in ends), "every partition must lose records"
    lost = {p: log_start[p] - first_ends[p] for p in ends}
    deleted = order_ids(settings, {p: (first_ends[p], log_start[p]) for p in ends})
    kept = order_ids(settings, {p: (log_start[p], ends[p]) for p in ends})
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    requests = [TopicPartition(TOPIC, p, offset) for p, offset in log_start.items()]
    for future in admin.delete_records(requests).values():
        future.result(30)

    failing = start_job(settings, tmp_path, {}, ("--topic", TOPIC))
    try:
        assert failing.wait(timeout=600) != 0
    finally:
        kill_group(failing)
    assert platform_alerts(settings, "streaming-data-loss"), "the data loss was not alerted"
    checkpoints_before = {q: committed(tmp_path / "checkpoints" / "orders" / q) for q in QUERIES}

    refused = reset_cli(tmp_path, "--to", "earliest-available")
    assert refused.returncode != 0 and "--yes" in refused.stdout + refused.stderr
    dry = reset_cli(tmp_path, "--to", "earliest-available", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"({lost[0]} records)" in dry.stdout and "dry run" in dry.stdout
    assert {
        q: committed(tmp_path / "checkpoints" / "orders" / q) for q in QUERIES
    } == checkpoints_before
    assert query(settings, "SELECT COUNT(*) FROM offset_resets")[0][0] == 0

    done = reset_cli(tmp_path, "--to", "earliest-available", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr

    rows = query(
        settings,
        "SELECT query_name, topic, `partition`, from_offset, to_offset, lost_records "
        "FROM offset_resets WHERE pipeline = 'orders' ORDER BY query_name, `partition`",
    )
    assert rows == [
        (name, TOPIC, p, first_ends[p], log_start[p], lost[p])
        for name in ("orders_records", "orders_revenue")
        for p in sorted(ends)
    ]
    (alert,) = platform_alerts(settings, OFFSETS_RESET_RULE_ID)
    assert alert["event_count"] == 2 * sum(lost.values())
    for q in QUERIES:
        assert committed(tmp_path / "checkpoints" / "orders" / q) == log_start
    again = reset_cli(tmp_path, "--to", "earliest-available", "--yes")
    assert again.returncode == 0 and "nothing to do" in again.stdout

    run_until_caught_up(settings, tmp_path, ends)
    stored = {row[0] for row in query(settings, "SELECT order_id FROM orders")}
    assert kept <= stored, "an order Kafka still had was not written after the reset"
    assert not deleted & stored, "an order deleted by retention cannot have been written"
