"""The orders job run as its own driver and its outputs checked against the topic: shared by
the orders pipeline's tests (Spark side) and the supervision and full-disk tests (Airflow side),
so it imports neither Spark nor Airflow."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streamops.config import PROJECT_ROOT, Settings
from streamops.generator.records import validate
from tests.integration.support import query

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
            str(settings.spark_python),  # the job runs Spark: the Spark environment's Python
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
