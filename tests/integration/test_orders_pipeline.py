"""The orders pipeline end to end on real Kafka, Spark, MariaDB and Redis: exactly once, proven.

The job runs as its own driver process (as in production). It is killed with SIGKILL between two
chunk commits of one sink write, then restarted from its checkpoint: the tables must hold exactly
what the topic holds (0 lost, 0 duplicated), and the Redis totals, moved by deltas, must equal the
stored windows.

The other kill points (after the sinks of a batch wrote and before Spark committed it; between the
MariaDB and the Redis write of a revenue batch) and kills of every process of a job are the chaos
suite's (tests/chaos, ``streamops chaos``), on the whole platform under supervision, with the same
checks against the topics (``streamops.chaos.truth``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from spark_jobs.common.runner import FAULT_MARKER_ENV
from spark_jobs.sinks.mariadb import CHUNK_SIZE_ENV
from streamops.config import PROJECT_ROOT, Settings
from streamops.contract.orders import revenue_per_window_sql
from streamops.faults import KILL_AT_ENV
from streamops.generator.producer import run_generator
from streamops.generator.records import generate, parse_event_time, validate
from streamops.maintenance.reconcile import reconcile_revenue_windows
from tests.integration.support import empty_orders_outputs, kill_group, query, wait_until

ORDERS = 3000
SEED = 4242
RATIOS = {"malformed_ratio": 0.1, "duplicate_ratio": 0.1, "late_ratio": 0.05}


def topic_contents(settings: Settings, topic: str = "orders") -> list:
    """Every record ``topic`` still holds, read back from Kafka: the ground truth of what a job
    on a new checkpoint reads (from the log start, which retention moves)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": uuid.uuid4().hex,
            "enable.auto.commit": False,
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    bounds = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
        for p in partitions
    }
    held = sum(end - start for start, end in bounds.values())
    consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in bounds.items()])
    records: list = []
    deadline = time.monotonic() + 60
    while len(records) < held and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            records.append(message)
    consumer.close()
    assert len(records) == held
    return records


def start_job(
    settings: Settings,
    tmp_path: Path,
    extra_env: dict[str, str],
    args: tuple[str, ...] = (),
    log_path: Path | None = None,
) -> subprocess.Popen:
    """The orders job as its own driver, its checkpoints and archive under ``tmp_path``, its
    output appended to ``log_path`` (a new file under ``tmp_path`` by default)."""
    log = (log_path or tmp_path / f"job-{time.time_ns()}.log").open("ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spark_jobs.jobs.orders",
            "--max-offsets-per-trigger",
            "600",
            *args,
        ],
        cwd=PROJECT_ROOT,
        env={
            **os.environ,
            "STREAMOPS_CHECKPOINT_URI": str(tmp_path / "checkpoints"),
            "STREAMOPS_ARCHIVE_URI": str(tmp_path / "archive"),
            **extra_env,
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def reject_reason(message: Any) -> str | None:
    """Why the job rejects an `orders` record, None when it is valid. The record's Kafka timestamp
    (the broker's append time) is the receiving clock of `event_time_in_future`: earlier tests
    leave far-future orders on the topic (the chaos run's year-9999 one)."""
    _, timestamp_ms = message.timestamp()
    received_at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=timestamp_ms)
    return validate("orders", message.value(), received_at=received_at, column_limits=True)


def expected_from_topic(records: list) -> tuple[dict[str, Decimal], set[tuple[int, int]]]:
    """What the orders tables must hold for ``records`` (``topic_contents``): the amount of each
    valid order_id's first copy, and the (partition, offset) of each record to quarantine."""
    expected_orders: dict[str, Decimal] = {}
    expected_rejects: set[tuple[int, int]] = set()
    for message in records:
        if reject_reason(message) is None:
            order = json.loads(message.value())
            amount = Decimal(order["quantity"]) * Decimal(str(order["unit_price"]))
            expected_orders.setdefault(order["order_id"], amount)
        else:
            expected_rejects.add((message.partition(), message.offset()))
    return expected_orders, expected_rejects


def orders_landed(
    settings: Settings, expected_orders: dict[str, Decimal], expected_rejects: set[tuple[int, int]]
) -> bool:
    """Whether `orders` and the orders quarantine hold at least as many rows as expected."""
    (stored,) = query(settings, "SELECT COUNT(*) FROM orders")[0]
    (rejected,) = query(settings, "SELECT COUNT(*) FROM quarantine WHERE pipeline='orders'")[0]
    return stored >= len(expected_orders) and rejected >= len(expected_rejects)


def assert_orders_exactly_once(
    settings: Settings,
    expected_orders: dict[str, Decimal],
    expected_rejects: set[tuple[int, int]],
    topic: str = "orders",
) -> None:
    """`orders` holds each expected order once with its amount, and the quarantine each rejected
    record of ``topic`` once: nothing lost, nothing doubled."""
    rows = query(settings, "SELECT order_id, amount FROM orders")
    assert len(rows) == len(expected_orders), "lost or duplicated orders"
    assert {order_id: Decimal(amount) for order_id, amount in rows} == expected_orders
    rejects = query(
        settings,
        "SELECT source_partition, source_offset FROM quarantine "
        "WHERE pipeline='orders' AND source_topic=?",
        (topic,),
    )
    assert len(rejects) == len(expected_rejects), "lost or duplicated rejects"
    assert set(rejects) == expected_rejects


@pytest.fixture
def empty_order_tables(settings: Settings) -> None:
    empty_orders_outputs(settings)


# Where the driver dies (SIGKILL): between two chunk commits of one sink write (20 rows a chunk),
# the one kill point a write of the default chunk size rarely reaches under the chaos suite.
KILLS = {
    "between_chunk_commits": {KILL_AT_ENV: "mariadb:between_chunks", CHUNK_SIZE_ENV: "20"},
}


@pytest.mark.parametrize("kill", list(KILLS))
def test_exactly_once_across_a_kill(
    settings: Settings, tmp_path: Path, empty_order_tables: None, kill: str
) -> None:
    # One seed per case: the same order_id again minutes later (beyond the watermark) would be a
    # new order to the windows but a duplicate to `orders`, and later tests read the whole topic.
    seed = SEED + list(KILLS).index(kill)
    now = datetime.now(UTC).replace(microsecond=0)
    summary = run_generator(
        "orders",
        bootstrap_servers=settings.kafka_bootstrap_servers,
        rate=0,
        count=ORDERS,
        seed=seed,
        now=now,
        progress=False,
        **RATIOS,
    )
    assert (summary.sent, summary.failed) == (ORDERS, 0)
    kinds = {r.value: r.kind for r in generate("orders", ORDERS, seed=seed, now=now, **RATIOS)}

    # Ground truth from the topic itself (earlier tests' records included).
    records = topic_contents(settings)
    expected_orders, expected_rejects = expected_from_topic(records)
    assert Counter(kinds.values())["malformed"] > 0 and expected_rejects

    marker = tmp_path / "fault-marker"
    crashing = start_job(settings, tmp_path, {**KILLS[kill], FAULT_MARKER_ENV: str(marker)})
    try:
        crashing.wait(timeout=300)
    finally:
        kill_group(crashing)
    assert crashing.returncode == -signal.SIGKILL, "the fault point did not fire"
    assert marker.exists()
    # Either sink may be the one cut between chunks: earlier tests leave records on the topic
    # that this job quarantines (the joins test's, 12 hours ahead, are event_time_in_future).
    written_before_restart = query(
        settings,
        "SELECT (SELECT COUNT(*) FROM orders) + "
        "(SELECT COUNT(*) FROM quarantine WHERE pipeline = 'orders')",
    )[0][0]
    assert written_before_restart > 0, "a sink should have written before the kill"

    job = start_job(settings, tmp_path, {})
    try:
        wait_until(
            lambda: orders_landed(settings, expected_orders, expected_rejects),
            timeout=300,
            what="every record to land",
            job=job,
        )
        time.sleep(8)  # let the revenue query catch up too, then stop gracefully
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=120) == 0
    finally:
        kill_group(job)

    assert_orders_exactly_once(settings, expected_orders, expected_rejects)

    # Windows: every difference from the SQL aggregate over `orders` is explained by records that
    # arrived behind the watermark; after reconciliation there is none.
    start = datetime(2000, 1, 1)
    end = datetime(2100, 1, 1)
    late_times = [
        parse_event_time(json.loads(m.value())["event_time"])
        for m in records
        if kinds.get(m.value(), "late") == "late" and reject_reason(m) is None
    ]
    late_windows = {_window_start(t) for t in late_times if t is not None}
    mismatched = _window_differences(settings, start, end)
    assert mismatched <= late_windows
    # ... and those records are counted: the late metric comes from the query's own progress.
    (dropped,) = query(
        settings,
        "SELECT COALESCE(SUM(rows_dropped_by_watermark), 0) FROM query_progress "
        "WHERE pipeline = 'orders' AND query_name = 'orders_revenue'",
    )[0]
    assert dropped > 0

    # Redis totals are the sum of what the stream wrote to the windows, despite the replay.
    totals = redis.Redis.from_url(settings.redis_url, decode_responses=True).hgetall(
        "streamops:orders:totals"
    )
    for currency, orders, items, revenue in query(
        settings,
        "SELECT currency, SUM(order_count), SUM(item_count), SUM(revenue) "
        "FROM order_revenue_5s GROUP BY currency",
    ):
        assert int(totals[f"{currency}:order_count"]) == orders
        assert int(totals[f"{currency}:item_count"]) == items
        assert Decimal(totals[f"{currency}:revenue"]) == revenue

    reconcile_revenue_windows(settings, start, end)
    assert _window_differences(settings, start, end) == set()


def _window_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment - timedelta(seconds=moment.second % 5, microseconds=moment.microsecond)


def _window_differences(settings: Settings, start: datetime, end: datetime) -> set[datetime]:
    stored = {
        (row[0], row[1]): tuple(row[2:])
        for row in query(
            settings,
            "SELECT window_start, currency, order_count, item_count, revenue "
            "FROM order_revenue_5s WHERE window_start >= ? AND window_start < ?",
            (start, end),
        )
    }
    computed = {
        (row[0], row[1]): tuple(row[2:]) for row in query(settings, _aggregate_sql(), (start, end))
    }
    return {
        key[0] for key in stored.keys() | computed.keys() if stored.get(key) != computed.get(key)
    }


def _aggregate_sql() -> str:
    """window_start, currency, order_count, item_count, revenue for [?, ?) from `orders`."""
    return revenue_per_window_sql("orders", 5)
