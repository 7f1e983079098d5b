"""The joins pipeline end to end on real Kafka, Spark, MariaDB and Redis.

One scenario, in the order it happens:

1. Orders and payments of one generator seed go to Kafka (5 % malformed, 5 % duplicates; the
   last orders get no payment), with event times 12 hours ahead, past every other test's records
   on the shared topics (behind them, the watermark would drop this test's later records as
   late). The job runs with `max_clock_skew_seconds` at its maximum, a day, so these are not
   `event_time_in_future`.
2. The job runs as its own driver and is killed with SIGKILL after the first batch of
   ``joins_category_revenue`` wrote and before Spark committed it.
3. The queries are restarted from the same checkpoints in this process (so their progress
   reports can be read), and catch up: every matched and mismatched order lands.
4. A product is added to ``products`` while the queries run; orders of it, sent a refresh
   interval later, are counted under its category. An order gets three payments in separate
   batches (failed, captured, authorized): the captured one stays.
5. An order whose payment comes 16 minutes late, then an order and a payment 40 minutes on: both
   watermarks pass every bound, the unpaid orders are written, and the join's state rows are
   removed (``numRowsRemoved``), as the progress of the query shows.

Then ``order_payments``, ``category_revenue_1m``, ``quarantine`` and the Redis keys must hold
exactly what the records say: nothing lost, nothing counted twice despite the replay.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from spark_jobs.common.runner import FAULT_ENV, FAULT_MARKER_ENV
from spark_jobs.jobs.joins import JoinsJobConfig, start
from streamops.config import PROJECT_ROOT, Settings, load_settings
from streamops.contract.times import iso_utc
from streamops.generator.producer import UNTHROTTLED_INTERVAL, run_generator
from streamops.generator.records import generate, parse_event_time, validate
from streamops.supervision.spec import load_spec
from tests.integration.support import kill_group, query, wait_until

# The query names the job takes from its spec (pipelines.yaml).
ORDER_PAYMENTS_QUERY = load_spec("joins").query_name_for("order_payments")
CATEGORY_REVENUE_QUERY = load_spec("joins").query_name_for("category_revenue")
SEED = 6061
ORDERS = 600
PAID = 540  # payments for the first 540 orders only: the last 60 stay unpaid
MALFORMED_RATIO = DUPLICATE_RATIO = 0.05
PAY_WITHIN = timedelta(minutes=15)
EARLY_TOLERANCE = timedelta(minutes=1)
RANKING = ("failed", "authorized", "captured")
CATEGORY_BY_PREFIX = {"SKU-1": "electronics", "SKU-2": "coffee", "SKU-3": "office"}
CATEGORY_BY_PREFIX["SKU-4"] = "sports"
REFRESH_SECONDS = 3
# The setting's maximum: this test's event times run 12 hours ahead of the broker's clock.
CLOCK_SKEW_SECONDS = 86_400


# --- reading back -----------------------------------------------------------------------------


def topic_records(settings: Settings, topic: str) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": uuid.uuid4().hex,
            "enable.auto.commit": False,
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in partitions
    }
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    records: list[Any] = []
    deadline = time.monotonic() + 60
    while len(records) < sum(ends.values()) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            records.append(message)
    consumer.close()
    assert len(records) == sum(ends.values())
    return records


# --- what the records say ---------------------------------------------------------------------


class Expected:
    """order_payments rows and category sums computed in Python from the records sent."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.payments: dict[str, dict[str, Any]] = {}
        self.categories: dict[str, str] = {}

    def add_order(self, value: bytes) -> None:
        if validate("orders", value, column_limits=True) is not None:
            return
        fields = json.loads(value, parse_float=Decimal)
        amount = fields["quantity"] * Decimal(str(fields["unit_price"]))
        self.orders.setdefault(
            fields["order_id"],
            {
                **fields,
                "amount": amount,
                "currency": fields.get("currency", "EUR").upper(),
                "time": _naive(parse_event_time(fields["event_time"])),
            },
        )

    def add_payment(self, value: bytes) -> None:
        if validate("payments", value, column_limits=True) is not None:
            return
        fields = json.loads(value, parse_float=Decimal)
        self.payments.setdefault(
            fields["payment_id"],
            {
                **fields,
                "amount": Decimal(str(fields["amount"])),
                "time": _naive(parse_event_time(fields["event_time"])),
            },
        )

    def order_payments(self) -> dict[str, tuple[Any, ...]]:
        """order_id → (payment_id, status, order_amount, paid_amount, seconds, mismatch)."""
        by_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for payment in self.payments.values():
            by_order[payment["order_id"]].append(payment)
        rows: dict[str, tuple[Any, ...]] = {}
        for order_id, order in self.orders.items():
            matches = [
                p
                for p in by_order[order_id]
                if order["time"] - EARLY_TOLERANCE <= p["time"] <= order["time"] + PAY_WITHIN
            ]
            if not matches:
                rows[order_id] = (None, "unpaid", order["amount"], None, None, None)
                continue
            best = max(
                matches, key=lambda p: (RANKING.index(p["status"]), p["time"], p["payment_id"])
            )
            seconds = Decimal((best["time"] - order["time"]) // timedelta(microseconds=1))
            rows[order_id] = (
                best["payment_id"],
                best["status"],
                order["amount"],
                best["amount"],
                (seconds / 1_000_000).quantize(Decimal("0.001")),
                best["amount"] != order["amount"],
            )
        return rows

    def category_revenue(self) -> dict[tuple[datetime, str, str], tuple[int, int, Decimal]]:
        sums: dict[tuple[datetime, str, str], list[Any]] = defaultdict(lambda: [0, 0, Decimal(0)])
        for order in self.orders.values():
            minute = order["time"].replace(second=0, microsecond=0)
            product = order["product_id"]
            category = self.categories.get(product) or CATEGORY_BY_PREFIX.get(
                product[:5], "unknown"
            )
            entry = sums[(minute, category, order["currency"])]
            entry[0] += 1
            entry[1] += order["quantity"]
            entry[2] += order["amount"]
        return {key: (c, i, r) for key, (c, i, r) in sums.items()}


def _naive(moment: datetime | None) -> datetime:
    assert moment is not None
    return moment.astimezone(UTC).replace(tzinfo=None)


def _order(order_id: str, product_id: str, moment: datetime, quantity: int = 2) -> bytes:
    return json.dumps(
        {
            "order_id": order_id,
            "customer_id": "cust-joins",
            "product_id": product_id,
            "quantity": quantity,
            "unit_price": "12.50",
            "currency": "EUR",
            "event_time": iso_utc(moment),
        }
    ).encode()


def _payment(
    payment_id: str, order_id: str, amount: str, moment: datetime, status: str = "captured"
) -> bytes:
    return json.dumps(
        {
            "payment_id": payment_id,
            "order_id": order_id,
            "amount": amount,
            "status": status,
            "event_time": iso_utc(moment),
        }
    ).encode()


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def clean_joins_tables(settings: Settings) -> Iterator[None]:
    def clean() -> None:
        for sql in (
            "DELETE FROM order_payments",
            "DELETE FROM category_revenue_1m",
            "DELETE FROM joins_applied_batches",
            "DELETE FROM quarantine WHERE pipeline = 'joins'",
            "DELETE FROM products WHERE product_id LIKE 'SKU-T%'",
        ):
            query(settings, sql)
        client = redis.Redis.from_url(settings.redis_url)
        for key in client.scan_iter("streamops:joins:*"):
            client.delete(key)

    clean()
    yield
    query(settings, "DELETE FROM products WHERE product_id LIKE 'SKU-T%'")


def _join_state(queries: list[StreamingQuery]) -> list[tuple[int, int]]:
    """(numRowsTotal, numRowsRemoved) of the join operator, per progress report so far."""
    (pairs,) = [q for q in queries if q.name == ORDER_PAYMENTS_QUERY]
    return [
        (op.numRowsTotal, op.numRowsRemoved)
        for progress in pairs.recentProgress
        for op in progress.stateOperators
        if op.operatorName.startswith("symmetricHashJoin")
    ]


# --- the test ---------------------------------------------------------------------------------


def test_matched_mismatched_and_unpaid_orders_land_exactly_once_with_bounded_state(
    settings: Settings, spark: SparkSession, tmp_path: Path, clean_joins_tables: None
) -> None:
    start_at = (datetime.now(UTC) + timedelta(hours=12)).replace(second=0, microsecond=0)
    expected = Expected()
    for topic, count in (("orders", ORDERS), ("payments", PAID)):
        summary = run_generator(
            topic,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            rate=0,
            count=count,
            seed=SEED,
            now=start_at,
            progress=False,
            malformed_ratio=MALFORMED_RATIO,
            duplicate_ratio=DUPLICATE_RATIO,
        )
        assert (summary.sent, summary.failed) == (count, 0)
    generated_payments = generate(
        "payments",
        PAID,
        seed=SEED,
        now=start_at,
        interval=UNTHROTTLED_INTERVAL,  # as run_generator spaces records at rate 0
        malformed_ratio=MALFORMED_RATIO,
        duplicate_ratio=DUPLICATE_RATIO,
    )
    for record in generate(
        "orders",
        ORDERS,
        seed=SEED,
        now=start_at,
        interval=UNTHROTTLED_INTERVAL,  # as run_generator spaces records at rate 0
        malformed_ratio=MALFORMED_RATIO,
        duplicate_ratio=DUPLICATE_RATIO,
    ):
        expected.add_order(record.value)
    for record in generated_payments:
        expected.add_payment(record.value)

    # 2. The job as its own driver, killed between a sink's write and Spark's commit.
    checkpoints = tmp_path / "checkpoints"
    marker = tmp_path / "fault-marker"
    log = (tmp_path / "job.log").open("wb")
    crashing = subprocess.Popen(
        [sys.executable, "-m", "spark_jobs.jobs.joins", "--products-refresh-seconds", "3"],
        cwd=PROJECT_ROOT,
        env={
            **os.environ,
            "STREAMOPS_CHECKPOINT_URI": str(checkpoints),
            "STREAMOPS_MAX_CLOCK_SKEW_SECONDS": str(CLOCK_SKEW_SECONDS),
            FAULT_ENV: f"{CATEGORY_REVENUE_QUERY}:0",
            FAULT_MARKER_ENV: str(marker),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        crashing.wait(timeout=300)
    finally:
        kill_group(crashing)
    assert crashing.returncode == -signal.SIGKILL, "the fault point did not fire"
    window_range = (start_at - timedelta(minutes=5), start_at + timedelta(hours=1))
    (before_restart,) = query(
        settings,
        "SELECT COALESCE(SUM(order_count), 0) FROM category_revenue_1m "
        "WHERE window_start >= ? AND window_start < ?",
        window_range,
    )[0]
    assert before_restart > 0, "batch 0's sink should have written before the kill"

    # 3. Restarted from the same checkpoints, in this process.
    job_settings = load_settings(
        checkpoint_uri=str(checkpoints), max_clock_skew_seconds=CLOCK_SKEW_SECONDS
    )
    config = JoinsJobConfig(products_refresh_seconds=REFRESH_SECONDS)
    queries = start(spark, job_settings, config)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})

    def send(topic: str, key: str, value: bytes) -> None:
        producer.produce(topic, key=key.encode(), value=value)
        producer.flush(30)

    prefix = f"ord-{SEED}-"
    paid_now = {o for o, row in expected.order_payments().items() if row[1] != "unpaid"}

    def stored(sql_filter: str = "") -> dict[str, tuple[Any, ...]]:
        return {
            row[0]: tuple(row[1:])
            for row in query(
                settings,
                "SELECT order_id, payment_id, status, order_amount, paid_amount, seconds_to_pay, "
                "amount_mismatch FROM order_payments WHERE order_id LIKE ?" + sql_filter,
                (f"{prefix}%",),
            )
        }

    try:
        wait_until(
            lambda: len(stored(" AND status <> 'unpaid'")) >= len(paid_now),
            timeout=300,
            what="every paid order to land",
        )
        assert queries[0].exception() is None

        # 4. A product added while the queries run reaches orders sent after its refresh.
        product_id = f"SKU-T{uuid.uuid4().hex[:8]}"
        category = f"test-{product_id[5:]}"
        query(
            settings,
            "INSERT INTO products (product_id, name, category) VALUES (?, 'Test product', ?)",
            (product_id, category),
        )
        expected.categories[product_id] = category
        time.sleep(REFRESH_SECONDS + 2)
        for index in range(5):
            value = _order(
                f"{prefix}new-{index}", product_id, start_at + timedelta(seconds=90 + index)
            )
            expected.add_order(value)
            send("orders", f"{prefix}new-{index}", value)
        wait_until(
            lambda: bool(
                query(settings, "SELECT 1 FROM category_revenue_1m WHERE category = ?", (category,))
            ),
            timeout=120,
            what="the new product's category",
        )
        # The join's first progress report can lag its sink on a loaded machine (the first
        # batch replays every record the topics hold, earlier tests' included).
        wait_until(
            lambda: bool(_join_state(queries)),
            timeout=120,
            what=f"a progress report of {ORDER_PAYMENTS_QUERY}'s join "
            f"({[(q.name, q.isActive, q.exception()) for q in queries]})",
        )
        peak_state = max(total for total, _ in _join_state(queries))

        # Several payments of one order, in separate batches: the best by status rank stays.
        multi = f"{prefix}multi"
        multi_order = _order(multi, "SKU-30001", start_at + timedelta(seconds=95))
        expected.add_order(multi_order)
        send("orders", multi, multi_order)
        for payment_id, status, seconds, kept in (
            ("pay-multi-1", "failed", 100, "pay-multi-1"),
            ("pay-multi-2", "captured", 110, "pay-multi-2"),
            ("pay-multi-3", "authorized", 120, "pay-multi-2"),
        ):
            value = _payment(
                payment_id, multi, "25.00", start_at + timedelta(seconds=seconds), status
            )
            expected.add_payment(value)
            send("payments", multi, value)
            if payment_id != kept:
                time.sleep(10)  # the kept one was written before: nothing to wait for
            else:

                def holds(kept: str = kept) -> bool:
                    return bool(stored().get(multi, (None,))[0] == kept)

                wait_until(holds, timeout=120, what=f"{kept} to be the payment of {multi}")
        assert stored()[multi][:2] == ("pay-multi-2", "captured")

        # 5. A payment beyond the bound, then records 40 minutes on: every bound passes.
        # After every order so far: an order behind the orders watermark would be dropped.
        late_order = _order(f"{prefix}late-payer", "SKU-10001", start_at + timedelta(seconds=100))
        late_payment = _payment(
            "pay-late", f"{prefix}late-payer", "25.00", start_at + timedelta(minutes=18)
        )
        clock_time = start_at + timedelta(minutes=40)
        clock_order = _order(f"{prefix}clock", "SKU-20002", clock_time)
        clock_payment = _payment("pay-clock", f"{prefix}clock", "25.00", clock_time)
        for topic, key, value in (
            ("orders", f"{prefix}late-payer", late_order),
            ("payments", f"{prefix}late-payer", late_payment),
        ):
            send(topic, key, value)
        time.sleep(5)
        for topic, key, value in (
            ("orders", f"{prefix}clock", clock_order),
            ("payments", f"{prefix}clock", clock_payment),
        ):
            send(topic, key, value)
        for value in (late_order, clock_order):
            expected.add_order(value)
        for value in (late_payment, clock_payment):
            expected.add_payment(value)
        want = expected.order_payments()
        wait_until(
            lambda: len(stored()) >= len(want),
            timeout=180,
            what="the unpaid orders to be written as the watermark passes",
        )
        time.sleep(5)  # a last batch may still be evicting
        for q in queries:
            assert q.exception() is None, q.exception()
        state = _join_state(queries)
    finally:
        for q in queries:
            q.stop()

    # order_payments: one row per order, exactly as the records say.
    got = stored()
    assert got == want
    statuses = [row[1] for row in want.values()]
    assert statuses.count("unpaid") >= ORDERS - PAID
    assert want[f"{prefix}late-payer"][1] == "unpaid"
    assert sum(1 for row in want.values() if row[5]) > 0, "no mismatched payment to check"
    assert sum(1 for s in statuses if s != "unpaid") > ORDERS // 2

    # State: the join held rows while orders waited and removed them as the watermark passed.
    assert peak_state > 0
    # numRowsRemoved of a left outer join counts the inner side's rows only: the payments.
    # The orders it drops while writing them unpaid show as numRowsTotal going down.
    assert sum(removed for _, removed in state) >= PAID // 2
    assert state[-1][0] < peak_state // 10

    # category_revenue_1m: every order counted once, despite the replayed batch.
    revenue = {
        (row[0], row[1], row[2]): (int(row[3]), int(row[4]), Decimal(row[5]))
        for row in query(
            settings,
            "SELECT window_start, category, currency, order_count, item_count, revenue "
            "FROM category_revenue_1m WHERE window_start >= ? AND window_start < ?",
            window_range,
        )
    }
    assert revenue == expected.category_revenue()
    assert any(key[1] == category for key in revenue)

    # quarantine: every malformed payment of the seed, at its Kafka position, with its reason.
    reasons = {r.value: r.reason for r in generated_payments if r.kind == "malformed"}
    positions = {
        (m.partition(), m.offset()): reasons[m.value()]
        for m in topic_records(settings, "payments")
        if m.value() in reasons
    }
    assert positions
    quarantined = {
        (row[0], row[1]): row[2]
        for row in query(
            settings,
            "SELECT source_partition, source_offset, reason FROM quarantine "
            "WHERE pipeline = 'joins' AND source_topic = 'payments'",
        )
    }
    assert {k: quarantined.get(k) for k in positions} == positions

    # Redis: the dashboard's keys hold what the tables hold.
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    # The busiest minute of order time: the generator's orders sit just before start_at.
    by_minute = Counter(
        o["time"].replace(second=0, microsecond=0) for o in expected.orders.values()
    )
    minute = by_minute.most_common(1)[0][0]
    counts = client.hgetall(f"streamops:joins:payments:minute:{iso_utc(minute)}")
    (orders_in_minute, unpaid_in_minute, mismatched_in_minute) = query(
        settings,
        "SELECT COUNT(*), SUM(status = 'unpaid'), SUM(COALESCE(amount_mismatch, 0)) "
        "FROM order_payments WHERE order_time >= ? AND order_time < ?",
        (minute, minute + timedelta(minutes=1)),
    )[0]
    assert int(counts["orders"]) == orders_in_minute > 0
    assert int(counts["unpaid"]) == unpaid_in_minute
    assert int(counts["mismatched"]) == mismatched_in_minute
    assert client.zscore("streamops:joins:payments:minutes", iso_utc(minute)) is not None
    window = client.hgetall(f"streamops:joins:category:window:{iso_utc(minute)}")
    for (window_start, name, currency), (count, items, total) in revenue.items():
        if window_start == minute:
            assert int(window[f"{name}:{currency}:order_count"]) == count
            assert int(window[f"{name}:{currency}:item_count"]) == items
            assert Decimal(str(window[f"{name}:{currency}:revenue"])) == total
