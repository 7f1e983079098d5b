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
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from spark_jobs.common.runner import FAULT_MARKER_ENV
from spark_jobs.sinks.mariadb import CHUNK_SIZE_ENV
from streamops.config import Settings
from streamops.contract.orders import revenue_per_window_sql
from streamops.faults import KILL_AT_ENV
from streamops.generator.producer import run_generator
from streamops.generator.records import generate, parse_event_time
from streamops.maintenance.reconcile import reconcile_revenue_windows
from tests.integration.orders_support import (
    RATIOS,
    assert_orders_exactly_once,
    expected_from_topic,
    orders_landed,
    reject_reason,
    start_job,
    topic_contents,
)
from tests.integration.support import empty_orders_outputs, kill_group, query, wait_until

ORDERS = 3000
SEED = 4242


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
