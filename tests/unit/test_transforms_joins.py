"""The joins transforms: the time-bounded left outer join (static and as a stream whose state is
evicted as the watermarks pass), the choice of one payment per order, the product enrichment
and the category windows; and the catalogue's refresh rule.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from spark_jobs.sinks.joins import ProductCatalogue
from spark_jobs.transforms.joins import (
    CATEGORY_REVENUE_COLUMNS,
    ENRICHED_ORDER_COLUMNS,
    ORDER_PAYMENT_COLUMNS,
    best_payment_per_order,
    category_revenue_per_window,
    enrich_with_products,
    join_orders_payments,
    order_side,
    payment_side,
    watermarked_orders,
    watermarked_payments,
)
from streamops.config import load_settings

T0 = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
ORDERS_SCHEMA = (
    "order_id string, product_id string, quantity int, currency string, "
    "amount decimal(14,2), event_time timestamp"
)
PAYMENTS_SCHEMA = (
    "payment_id string, order_id string, amount decimal(14,2), status string, event_time timestamp"
)
PAIRS_SCHEMA = (
    "order_id string, payment_id string, order_amount decimal(14,2), "
    "paid_amount decimal(14,2), currency string, status string, order_time timestamp, "
    "payment_time timestamp, seconds_to_pay decimal(12,3), amount_mismatch boolean"
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def orders_frame(spark: SparkSession, rows: list[tuple[Any, ...]]) -> DataFrame:
    """rows: (order_id, amount, seconds after T0); product SKU-10001, 1 item, EUR."""
    return spark.createDataFrame(
        [(oid, "SKU-10001", 1, "EUR", Decimal(amount), at(s)) for oid, amount, s in rows],
        ORDERS_SCHEMA,
    )


def payments_frame(spark: SparkSession, rows: list[tuple[Any, ...]]) -> DataFrame:
    """rows: (payment_id, order_id, amount, status, seconds after T0)."""
    return spark.createDataFrame(
        [(pid, oid, Decimal(amount), status, at(s)) for pid, oid, amount, status, s in rows],
        PAYMENTS_SCHEMA,
    )


def test_join_matches_within_the_bound_flags_mismatches_and_keeps_unpaid_orders(
    spark: SparkSession,
) -> None:
    orders = orders_frame(
        spark,
        [
            ("paid", "10.00", 0),
            ("short", "10.00", 0),  # paid 9.99: a mismatch
            ("early", "5.00", 0),  # paid 30 s before the order: inside the 1 minute tolerance
            ("too-early", "5.00", 0),  # 61 s before
            ("last-instant", "5.00", 0),  # exactly 15 minutes after
            ("too-late", "5.00", 0),  # 15 minutes and 1 ms after
            ("never", "7.50", 0),
            ("two", "3.00", 0),
        ],
    )
    payments = payments_frame(
        spark,
        [
            ("p1", "paid", "10.00", "captured", 12.5),
            ("p2", "short", "9.99", "authorized", 3.001),
            ("p3", "early", "5.00", "captured", -30),
            ("p4", "too-early", "5.00", "captured", -61),
            ("p5", "last-instant", "5.00", "failed", 900),
            ("p6", "too-late", "5.00", "captured", 900.001),
            ("p7", "two", "3.00", "failed", 5),
            ("p8", "two", "3.00", "captured", 9),
            ("p9", "nobody", "1.00", "captured", 1),  # pays no known order: never emitted
        ],
    )

    pairs = join_orders_payments(order_side(orders), payment_side(payments))

    assert tuple(pairs.columns) == ORDER_PAYMENT_COLUMNS
    d = Decimal

    def paid(oid: str, pid: str, amount: str, paid: str, status: str, s: float) -> tuple:
        return (oid, pid, d(amount), d(paid), "EUR", status, at(0), at(s), d(f"{s:.3f}"),
                amount != paid)  # fmt: skip

    def unpaid(oid: str, amount: str) -> tuple:
        return (oid, None, d(amount), None, "EUR", "unpaid", at(0), None, None, None)

    expected = spark.createDataFrame(
        [
            paid("paid", "p1", "10.00", "10.00", "captured", 12.5),
            paid("short", "p2", "10.00", "9.99", "authorized", 3.001),
            paid("early", "p3", "5.00", "5.00", "captured", -30),
            unpaid("too-early", "5.00"),
            paid("last-instant", "p5", "5.00", "5.00", "failed", 900),
            unpaid("too-late", "5.00"),
            unpaid("never", "7.50"),
            paid("two", "p7", "3.00", "3.00", "failed", 5),
            paid("two", "p8", "3.00", "3.00", "captured", 9),
        ],
        PAIRS_SCHEMA,
    )
    assertDataFrameEqual(pairs, expected)


def test_the_time_bound_is_configurable(spark: SparkSession) -> None:
    orders = orders_frame(spark, [("o", "1.00", 0)])
    payments = payments_frame(spark, [("p", "o", "1.00", "captured", 120)])

    within_a_minute = join_orders_payments(
        order_side(orders), payment_side(payments), pay_within="1 minute"
    )
    within_three = join_orders_payments(
        order_side(orders), payment_side(payments), pay_within="3 minutes"
    )

    assert [r.status for r in within_a_minute.collect()] == ["unpaid"]
    assert [r.status for r in within_three.collect()] == ["captured"]


def test_best_payment_per_order_prefers_status_then_latest_time_then_payment_id(
    spark: SparkSession,
) -> None:
    d = Decimal
    rows = [
        # captured beats a later authorized and a later failed
        ("a", "pa1", d("1.00"), d("1.00"), "EUR", "captured", at(0), at(5), d("5"), False),
        ("a", "pa2", d("1.00"), d("1.00"), "EUR", "authorized", at(0), at(9), d("9"), False),
        ("a", "pa3", d("1.00"), d("2.00"), "EUR", "failed", at(0), at(20), d("20"), True),
        # equal status: the latest payment_time
        ("b", "pb1", d("1.00"), d("1.00"), "EUR", "failed", at(0), at(7), d("7"), False),
        ("b", "pb2", d("1.00"), d("1.50"), "EUR", "failed", at(0), at(8), d("8"), True),
        # equal status and time: the greatest payment_id
        ("c", "pc1", d("1.00"), d("1.00"), "EUR", "captured", at(0), at(3), d("3"), False),
        ("c", "pc2", d("1.00"), d("1.00"), "EUR", "captured", at(0), at(3), d("3"), False),
        # the only row of an unpaid order stays
        ("u", None, d("4.00"), None, "EUR", "unpaid", at(0), None, None, None),
    ]
    pairs = spark.createDataFrame(rows, PAIRS_SCHEMA)

    best = best_payment_per_order(pairs)

    assert tuple(best.columns) == ORDER_PAYMENT_COLUMNS
    expected = spark.createDataFrame([rows[0], rows[4], rows[6], rows[7]], PAIRS_SCHEMA)
    assertDataFrameEqual(best, expected)


@pytest.mark.slow
def test_the_stream_emits_unpaid_orders_once_the_watermark_passes_and_evicts_state(
    spark: SparkSession, tmp_path: Path
) -> None:
    """As the job wires it, on file streams fed in three steps; the query's own progress shows
    the join state growing and then being evicted as the watermarks advance."""
    orders_dir, payments_dir = tmp_path / "orders", tmp_path / "payments"
    orders_dir.mkdir()
    payments_dir.mkdir()
    orders = spark.readStream.schema(ORDERS_SCHEMA).parquet(str(orders_dir))
    payments = spark.readStream.schema(PAYMENTS_SCHEMA).parquet(str(payments_dir))
    pairs = join_orders_payments(
        watermarked_orders(orders, "10 seconds"),
        watermarked_payments(payments, "10 seconds"),
        pay_within="1 minute",
        paid_early_tolerance="5 seconds",
    )
    assert pairs.isStreaming

    def feed(step: int, order_rows: list[tuple], payment_rows: list[tuple]) -> None:
        # One new file per step in each folder: the file sources see them as new input.
        orders_frame(spark, order_rows).coalesce(1).write.mode("append").parquet(str(orders_dir))
        payments_frame(spark, payment_rows).coalesce(1).write.mode("append").parquet(
            str(payments_dir)
        )

    # Step 0: three orders (one sent twice), a payment for one of them (sent twice).
    feed(
        0,
        [("o1", "10.00", 0), ("o2", "20.00", 1), ("o3", "30.00", 2), ("o1", "10.00", 0)],
        [("p1", "o1", "10.00", "captured", 4), ("p1", "o1", "10.00", "captured", 4)],
    )
    query = (
        pairs.writeStream.format("memory")
        .queryName("joins_stream_test")
        .outputMode("append")
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .start()
    )
    try:
        query.processAllAvailable()
        # Step 1: o2's payment, mismatched, and an order; no bound has passed yet.
        feed(1, [("o4", "1.00", 30)], [("p2", "o2", "19.00", "authorized", 40)])
        query.processAllAvailable()
        after_step_1 = spark.table("joins_stream_test").collect()
        state_before = _state_rows(query)
        # Step 2: an order and a payment 10 minutes on move both watermarks past every bound.
        feed(2, [("o9", "1.00", 600)], [("p9", "o9", "1.00", "captured", 601)])
        query.processAllAvailable()
        # The watermarks moved at the end of that batch; Spark runs one more batch without data
        # to evict what they passed, by itself.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (
            spark.table("joins_stream_test").count() < 5 or _state_rows(query) > 2
        ):
            time.sleep(0.5)
        assert query.exception() is None
        result = spark.table("joins_stream_test")
        progress = query.recentProgress
    finally:
        query.stop()
    try:
        # Matches are emitted at once; unpaid orders only once the watermark passed the bound.
        assert {(r.order_id, r.status) for r in after_step_1} == {
            ("o1", "captured"),
            ("o2", "authorized"),
        }
        rows = {r.order_id: r for r in result.collect()}
        assert result.count() == len(rows) == 5, "one row per order"
        assert {oid: r.status for oid, r in rows.items()} == {
            "o1": "captured",
            "o2": "authorized",
            "o3": "unpaid",
            "o4": "unpaid",
            "o9": "captured",
        }
        assert rows["o2"].amount_mismatch is True and rows["o1"].amount_mismatch is False
        assert rows["o2"].seconds_to_pay == Decimal("39.000")
        # State: the join's rows grew while orders waited, then were removed.
        join_ops = [
            op
            for p in progress
            for op in p.stateOperators
            if op.operatorName.startswith("symmetricHashJoin")
        ]
        assert state_before > 0
        # Only o9 and p9 are left. For a left outer join Spark counts in numRowsRemoved the
        # rows it drops from the inner (payments) side, p1 and p2; the orders it drops while
        # emitting them as unpaid show as numRowsTotal going down.
        assert join_ops[-1].numRowsTotal == 2 < state_before
        assert sum(op.numRowsRemoved for op in join_ops) == 2
    finally:
        spark.catalog.dropTempView("joins_stream_test")


def _state_rows(query: Any) -> int:
    return sum(
        op.numRowsTotal
        for op in query.lastProgress.stateOperators
        if op.operatorName.startswith("symmetricHashJoin")
    )


def test_enrichment_names_products_and_marks_unknown_ones(spark: SparkSession) -> None:
    orders = spark.createDataFrame(
        [
            ("o1", "SKU-10001", 2, "EUR", Decimal("19.98"), at(1)),
            ("o2", "SKU-20002", 1, "EUR", Decimal("7.95"), at(59.999)),
            ("o3", "SKU-99999", 3, "USD", Decimal("3.00"), at(60)),
            ("o4", "SKU-10002", 1, "EUR", Decimal("24.90"), at(61)),
        ],
        ORDERS_SCHEMA,
    )
    products = spark.createDataFrame(
        [
            ("SKU-10001", "USB-C charging cable, 1 m", "electronics"),
            ("SKU-10002", "Wireless mouse", "electronics"),
            ("SKU-20002", "Ceramic mug", "coffee"),
        ],
        "product_id string, name string, category string",
    )

    enriched = enrich_with_products(orders, products)

    assert tuple(enriched.columns) == ENRICHED_ORDER_COLUMNS
    assert {(r.order_id, r.product_name, r.category) for r in enriched.collect()} == {
        ("o1", "USB-C charging cable, 1 m", "electronics"),
        ("o2", "Ceramic mug", "coffee"),
        ("o3", None, "unknown"),
        ("o4", "Wireless mouse", "electronics"),
    }

    windows = category_revenue_per_window(enriched)

    assert tuple(windows.columns) == CATEGORY_REVENUE_COLUMNS
    expected = spark.createDataFrame(
        [
            (at(0), at(60), "electronics", "EUR", 1, 2, Decimal("19.98")),
            (at(0), at(60), "coffee", "EUR", 1, 1, Decimal("7.95")),
            (at(60), at(120), "unknown", "USD", 1, 3, Decimal("3.00")),
            (at(60), at(120), "electronics", "EUR", 1, 1, Decimal("24.90")),
        ],
        "window_start timestamp, window_end timestamp, category string, currency string, "
        "order_count long, item_count long, revenue decimal(18,2)",
    )
    assertDataFrameEqual(windows, expected)


def test_catalogue_reloads_when_stale_and_keeps_its_copy_when_a_reload_fails() -> None:
    now = [0.0]
    answers: list[Any] = [
        [("SKU-1", "one", "a")],
        [("SKU-1", "one", "a"), ("SKU-2", "two", "b")],
        RuntimeError("database away"),
    ]
    loads: list[int] = []

    def loader(settings: Any) -> list[tuple[str, str, str]]:
        loads.append(1)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return list(answer)

    catalogue = ProductCatalogue(load_settings(), 30, loader=loader, clock=lambda: now[0])

    assert catalogue.current() == [("SKU-1", "one", "a")]
    now[0] = 29.9
    assert catalogue.current() == [("SKU-1", "one", "a")] and len(loads) == 1
    now[0] = 30
    assert len(catalogue.current()) == 2 and len(loads) == 2
    now[0] = 61
    assert len(catalogue.current()) == 2 and len(loads) == 3  # failed: the last copy stays
    now[0] = 62
    assert len(catalogue.current()) == 2 and len(loads) == 3  # and no retry at every batch


def test_catalogue_without_any_copy_raises() -> None:
    def loader(settings: Any) -> list[tuple[str, str, str]]:
        raise RuntimeError("database away")

    with pytest.raises(RuntimeError, match="database away"):
        ProductCatalogue(load_settings(), 30, loader=loader).current()
    with pytest.raises(ValueError, match="refresh_seconds"):
        ProductCatalogue(load_settings(), 0)
