"""The orders transforms: every rejection reason, typed valid orders, agreement with the
generator's records, and revenue per window in batch, in a stream and in MariaDB's SQL.

Spark is slow per action, so each test checks many cases with one DataFrame and one collect.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from spark_jobs.transforms.cleansing import QUARANTINE_OUTPUT_COLUMNS
from spark_jobs.transforms.orders import (
    CHECKED_COLUMNS,
    REVENUE_COLUMNS,
    VALID_ORDER_COLUMNS,
    check_orders,
    rejected_orders,
    revenue_per_window,
    valid_orders,
)
from streamops.contract.orders import revenue_per_window_sql
from streamops.generator.records import generate, validate

KAFKA_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, "
    "timestamp timestamp, timestampType int"
)
KAFKA_TIME = datetime(2026, 11, 24, 14, 3, 6, tzinfo=UTC)
NOW = datetime(2026, 11, 24, 14, 3, 0, 250_000, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

VALID: dict[str, Any] = {
    "order_id": "ord-1",
    "customer_id": "cust-00001",
    "product_id": "SKU-10001",
    "quantity": 3,
    "unit_price": 9.99,
    "currency": "EUR",
    "event_time": "2026-11-24T14:03:05.120Z",
}


def kafka_frame(
    spark: SparkSession, values: Sequence[bytes | None], partition: int = 0
) -> DataFrame:
    """Records as Spark's Kafka source gives them: record n at offset n."""
    rows = [
        (None, value, "orders", partition, offset, KAFKA_TIME, 0)
        for offset, value in enumerate(values)
    ]
    return spark.createDataFrame(rows, KAFKA_SCHEMA)


def order(**changes: Any) -> bytes:
    """VALID with ``changes``; a change to ``...`` removes the field."""
    fields = {**VALID, **changes}
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


def raw_order(**changes: str) -> bytes:
    """VALID with fields replaced by raw JSON text (numbers json.dumps cannot write)."""
    text = json.dumps(VALID)
    for name, value in changes.items():
        text = re.sub(rf'"{name}": [^,}}]+', f'"{name}": {value}', text)
    return text.encode()


DUPLICATE_KEYS = b'{"order_id": "a", "order_id": "b"}'
HUGE_PRICE_TEXT = order(unit_price="123456789012345678901234567890")
HUGE_PRICE_NUMBER = raw_order(unit_price="1e30")
# (payload, reason): reason None means a valid order.
CASES: list[tuple[bytes | None, str | None]] = [
    # Valid, in the shapes the contract allows.
    (order(), None),
    (order(unit_price="9.99", currency="usd", event_time="2026-11-24T15:03:05.120+01:00"), None),
    (order(currency=...), None),
    (order(currency=None), None),
    (order(unit_price="9.990"), None),
    (raw_order(unit_price="9.990"), None),
    (raw_order(unit_price="1.2e3"), None),
    (raw_order(unit_price="-0.0"), None),
    (order(unit_price=0, quantity=2_147_483_647), None),
    (order(order_id="x" * 64, customer_id="c" * 128, product_id="p" * 128), None),
    (order(order_id=" A1 ", customer_id="kundé-ü"), None),
    (order(coupon="WELCOME", note=None), None),
    (b"  \n" + order() + b"\n ", None),
    # Not a JSON object at all.
    (None, "missing_payload"),
    (b'{"order_id":"ord-\xe9"}', "invalid_utf8"),
    (b"\xff\xfe" + order(), "invalid_utf8"),
    (b"", "invalid_json"),
    (b"   ", "invalid_json"),
    (order()[:-1], "invalid_json"),
    (repr(VALID).encode(), "invalid_json"),
    (order() + b"}", "invalid_json"),
    (order() + order(), "invalid_json"),
    (order() + b', "streamops:end-of-record"', "invalid_json"),
    (order() + b"] trailing", "invalid_json"),
    (raw_order(unit_price="NaN"), "invalid_json"),
    (DUPLICATE_KEYS, "invalid_json"),
    (b"{order_id: 1}", "invalid_json"),
    (json.dumps([VALID]).encode(), "not_a_json_object"),
    (b'"ord-1"', "not_a_json_object"),
    (b"42", "not_a_json_object"),
    (b"null", "not_a_json_object"),
    (b"true", "not_a_json_object"),
    # order_id, customer_id, product_id.
    (order(order_id=...), "missing_field:order_id"),
    (order(order_id=None), "missing_field:order_id"),
    (order(order_id=123), "order_id_not_string"),
    (order(order_id=""), "order_id_empty"),
    (order(order_id="   "), "order_id_empty"),
    (order(order_id="\u3000\t"), "order_id_empty"),
    (order(order_id="x" * 65), "order_id_too_long"),
    (order(customer_id=...), "missing_field:customer_id"),
    (order(customer_id=["c"]), "customer_id_not_string"),
    (order(customer_id=""), "customer_id_empty"),
    (order(customer_id="c" * 129), "customer_id_too_long"),
    (order(product_id=...), "missing_field:product_id"),
    (order(product_id=" "), "product_id_empty"),
    (order(product_id="p" * 129), "product_id_too_long"),
    # quantity.
    (order(quantity=...), "missing_field:quantity"),
    (order(quantity="2"), "quantity_not_integer"),
    (order(quantity="two"), "quantity_not_integer"),
    (order(quantity=1.5), "quantity_not_integer"),
    (raw_order(quantity="2.0"), "quantity_not_integer"),
    (raw_order(quantity="2e0"), "quantity_not_integer"),
    (order(quantity=True), "quantity_not_integer"),
    (order(quantity=0), "quantity_not_positive"),
    (order(quantity=-3), "quantity_not_positive"),
    (order(quantity=-(10**25)), "quantity_not_positive"),
    (order(quantity=2**31), "quantity_too_large"),
    (order(quantity=10**25), "quantity_too_large"),
    # unit_price.
    (order(unit_price=...), "missing_field:unit_price"),
    (order(unit_price=None), "missing_field:unit_price"),
    (order(unit_price="12,50"), "unit_price_not_decimal"),
    (order(unit_price="€19.99"), "unit_price_not_decimal"),
    (order(unit_price="free"), "unit_price_not_decimal"),
    (order(unit_price=""), "unit_price_not_decimal"),
    (order(unit_price=" 9.99"), "unit_price_not_decimal"),
    (order(unit_price="1e2"), "unit_price_not_decimal"),
    (order(unit_price=True), "unit_price_not_decimal"),
    (order(unit_price={"amount": 9.99}), "unit_price_not_decimal"),
    (order(unit_price=-9.99), "unit_price_negative"),
    (order(unit_price="-1.5"), "unit_price_negative"),
    (order(unit_price=9.991), "unit_price_too_many_decimals"),
    (order(unit_price="9.991"), "unit_price_too_many_decimals"),
    (order(unit_price="0.0000000000000000000001"), "unit_price_too_many_decimals"),
    (raw_order(unit_price="9.991e0"), "unit_price_too_many_decimals"),
    (raw_order(unit_price="1e-25"), "unit_price_too_many_decimals"),
    (order(unit_price="10000000000.00"), "unit_price_too_large"),
    (HUGE_PRICE_TEXT, "unit_price_too_large"),
    (HUGE_PRICE_NUMBER, "unit_price_too_large"),
    # currency.
    (order(currency="EURO"), "currency_invalid"),
    (order(currency="€"), "currency_invalid"),
    (order(currency="eu"), "currency_invalid"),
    (order(currency=""), "currency_invalid"),
    (order(currency="E1R"), "currency_invalid"),
    (order(currency=978), "currency_invalid"),
    # event_time.
    (order(event_time=...), "missing_field:event_time"),
    (order(event_time=None), "missing_field:event_time"),
    (order(event_time="24/11/2026 14:03:05"), "bad_event_time"),
    (order(event_time="2026-11-24T14:03:05.120"), "bad_event_time"),
    (order(event_time=1795961885120), "bad_event_time"),
    (order(event_time="yesterday"), "bad_event_time"),
    (order(event_time=""), "bad_event_time"),
    (order(event_time="2026-02-30T14:03:05Z"), "bad_event_time"),
    (order(event_time="0999-12-31T23:59:59.999Z"), "event_time_out_of_range"),
    (order(event_time="9999-12-31T23:30:00-01:00"), "event_time_out_of_range"),
    # The receiving clock: at most 5 minutes (the default skew) after the Kafka timestamp.
    (order(event_time="2026-11-24T14:08:06.000Z"), None),
    (order(event_time="2026-11-24T14:08:06.001Z"), "event_time_in_future"),
    (order(event_time="2026-11-24T15:08:06.001+01:00"), "event_time_in_future"),
    (order(event_time="9999-12-31T23:59:59Z"), "event_time_in_future"),
    # What MariaDB's DECIMAL(14,2) cannot hold.
    (order(quantity=2_147_483_647, unit_price="9999999999.99"), "amount_too_large"),
    # Several faults: the first in contract order wins.
    (order(order_id=..., quantity=0, currency="EURO"), "missing_field:order_id"),
    (order(quantity=0, unit_price="free"), "quantity_not_positive"),
]


def test_check_orders_gives_the_first_broken_rule_for_every_case(spark: SparkSession) -> None:
    checked = check_orders(kafka_frame(spark, [payload for payload, _ in CASES]))

    assert tuple(checked.columns) == CHECKED_COLUMNS
    reasons: dict[int, str | None] = dict(checked.select("source_offset", "reason").collect())
    mismatches = {
        offset: (payload, expected, reasons[offset])
        for offset, (payload, expected) in enumerate(CASES)
        if reasons[offset] != expected
    }
    assert not mismatches


# Reasons for limits of the MariaDB columns, beyond the contract: the generator's validator
# accepts these payloads.
TABLE_LIMIT_REASONS = {
    "customer_id_too_long",
    "product_id_too_long",
    "quantity_too_large",
    "unit_price_too_large",
    "event_time_out_of_range",
    "amount_too_large",
}


def test_the_cases_agree_with_the_generators_validator() -> None:
    """The contract's reasons are the generator's, payload for payload (no Spark needed)."""
    disagreements = {}
    for payload, expected in CASES:
        if payload is None:  # a tombstone: Kafka gives no bytes to validate
            continue
        if payload == DUPLICATE_KEYS:
            # json.loads keeps the last of two equal keys; a record that says two things about
            # one field is quarantined here instead.
            expected = "missing_field:customer_id"
        elif payload in (HUGE_PRICE_TEXT, HUGE_PRICE_NUMBER):
            # Beyond the 28 digits of Python's default decimal context, quantize() fails.
            expected = "unit_price_too_many_decimals"
        received_at: datetime | None = KAFKA_TIME
        if expected in TABLE_LIMIT_REASONS:
            # The table's limit comes first in the job; the validator knows the contract only,
            # and its clock rule would see year 10000 as the future.
            expected, received_at = None, None
        actual = validate("orders", payload, received_at=received_at)
        if actual != expected:
            disagreements[payload] = (expected, actual)
    assert not disagreements


def test_valid_orders_are_typed_exact_and_in_utc(spark: SparkSession) -> None:
    payloads = [
        order(order_id="a", quantity=3, unit_price=9.99),
        order(
            order_id="b",
            quantity=7,
            unit_price="329.99",
            currency="usd",
            event_time="2026-11-24T15:03:05.005+01:00",
        ),
        order(order_id="c", quantity=10, unit_price="0.10", currency=...),
        raw_order(order_id='"d"', quantity="1000", unit_price="1.2e3"),
        order(order_id="e", quantity=0),
    ]
    valid = valid_orders(check_orders(kafka_frame(spark, payloads, partition=2)))

    assert tuple(valid.columns) == VALID_ORDER_COLUMNS
    at = datetime(2026, 11, 24, 14, 3, 5, 120_000, tzinfo=UTC)
    expected = spark.createDataFrame(
        [
            ("a", 3, Decimal("9.99"), "EUR", Decimal("29.97"), at, 0),
            ("b", 7, Decimal("329.99"), "USD", Decimal("2309.93"), at.replace(microsecond=5000), 1),
            ("c", 10, Decimal("0.10"), "EUR", Decimal("1.00"), at, 2),
            ("d", 1000, Decimal("1200.00"), "EUR", Decimal("1200000.00"), at, 3),
        ],
        "order_id string, quantity int, unit_price decimal(12,2), currency string, "
        "amount decimal(14,2), event_time timestamp, source_offset long",
    ).select(
        "order_id",
        F.lit("cust-00001").alias("customer_id"),
        F.lit("SKU-10001").alias("product_id"),
        "quantity",
        "unit_price",
        "currency",
        "amount",
        "event_time",
        F.lit(2).alias("source_partition"),
        "source_offset",
        F.lit(KAFKA_TIME).alias("kafka_timestamp"),
    )
    # Types too: assertDataFrameEqual compares schemas (nullability aside).
    assertDataFrameEqual(valid, expected)


def test_generated_orders_are_accepted_or_rejected_as_the_generator_made_them(
    spark: SparkSession,
) -> None:
    records = generate(
        "orders",
        2000,
        seed=11,
        now=NOW,
        malformed_ratio=0.3,
        duplicate_ratio=0.05,
        late_ratio=0.05,
    )
    checked = check_orders(kafka_frame(spark, [record.value for record in records]))
    rows = {
        row.source_offset: row
        for row in checked.select(
            "source_offset",
            "reason",
            "order_id",
            "quantity",
            "unit_price",
            "currency",
            "amount",
            F.unix_millis("event_time").alias("event_millis"),
        ).collect()
    }

    kinds = Counter(record.kind for record in records)
    assert all(kinds[kind] > 50 for kind in ("valid", "malformed", "duplicate", "late"))
    wrong_reason = {}
    wrong_values = {}
    for offset, record in enumerate(records):
        row = rows[offset]
        expected_reason = record.reason if record.kind == "malformed" else None
        if row.reason != expected_reason or row.reason != validate("orders", record.value):
            wrong_reason[offset] = (record.kind, expected_reason, row.reason, record.value)
        if record.kind == "malformed":
            continue
        fields = json.loads(record.value, parse_float=Decimal)
        unit_price = Decimal(str(fields["unit_price"]))
        expected = (
            fields["order_id"],
            fields["quantity"],
            unit_price,
            fields.get("currency", "EUR").upper(),
            fields["quantity"] * unit_price,
            (datetime.fromisoformat(fields["event_time"]) - EPOCH) // timedelta(milliseconds=1),
        )
        actual = (row.order_id, row.quantity, row.unit_price, row.currency, row.amount)
        if (*actual, row.event_millis) != expected:
            wrong_values[offset] = (expected, (*actual, row.event_millis))
    assert not wrong_reason
    assert not wrong_values


def test_rejected_orders_go_to_quarantine_with_their_bytes(spark: SparkSession) -> None:
    payloads = [order(), b"\xff{", None, order(quantity=0)]
    rejected = rejected_orders(check_orders(kafka_frame(spark, payloads, partition=4)))

    assert tuple(rejected.columns) == QUARANTINE_OUTPUT_COLUMNS
    expected = spark.createDataFrame(
        [
            ("orders", 4, 1, b"\xff{", "invalid_utf8", "orders"),
            ("orders", 4, 2, None, "missing_payload", "orders"),
            ("orders", 4, 3, payloads[3], "quantity_not_positive", "orders"),
        ],
        "source_topic string, source_partition int, source_offset long, raw_payload binary, "
        "reason string, pipeline string",
    )
    assertDataFrameEqual(rejected.select(*expected.columns), expected)


# Orders around the window boundaries at :00 and :05; item counts and revenues by hand.
WINDOWED_ORDERS: list[tuple[str, int, str, str, str]] = [
    # order_id, quantity, unit_price, currency, event_time
    ("w1", 2, "9.99", "EUR", "2026-11-24T14:02:59.999Z"),  # last instant of [14:02:55, 14:03:00)
    ("w2", 1, "10.00", "EUR", "2026-11-24T14:03:00.000Z"),  # first instant of [14:03:00, :05)
    ("w3", 3, "0.01", "EUR", "2026-11-24T15:03:04.999+01:00"),  # 14:03:04.999 UTC
    ("w4", 1, "329.99", "USD", "2026-11-24T14:03:01.500Z"),
    ("w5", 4, "24.90", "EUR", "2026-11-24T14:03:05.000Z"),  # first instant of [14:03:05, :10)
    ("w6", 1, "0.10", "eur", "2026-11-24T15:03:09.999+01:00"),
]


def windowed_payloads() -> list[bytes]:
    return [
        order(order_id=oid, quantity=qty, unit_price=price, currency=cur, event_time=time)
        for oid, qty, price, cur, time in WINDOWED_ORDERS
    ]


def expected_windows(spark: SparkSession) -> DataFrame:
    def at(second: int) -> datetime:
        return datetime(2026, 11, 24, 14, 3, tzinfo=UTC) + timedelta(seconds=second)

    return spark.createDataFrame(
        [
            (at(-5), at(0), "EUR", 1, 2, Decimal("19.98")),
            (at(0), at(5), "EUR", 2, 4, Decimal("10.03")),
            (at(0), at(5), "USD", 1, 1, Decimal("329.99")),
            (at(5), at(10), "EUR", 2, 5, Decimal("99.70")),
        ],
        "window_start timestamp, window_end timestamp, currency string, order_count long, "
        "item_count long, revenue decimal(18,2)",
    )


def test_revenue_per_window_sums_tumbling_event_time_windows(spark: SparkSession) -> None:
    orders = valid_orders(check_orders(kafka_frame(spark, windowed_payloads())))

    windows = revenue_per_window(orders)

    assert tuple(windows.columns) == REVENUE_COLUMNS
    assertDataFrameEqual(windows, expected_windows(spark))


@pytest.mark.slow
def test_revenue_per_window_runs_on_a_watermarked_stream(
    spark: SparkSession, tmp_path: Path
) -> None:
    """As the job wires it: checked stream → valid orders → watermark → de-duplication."""
    payloads = windowed_payloads()
    kafka_frame(spark, [*payloads, payloads[0], b"not json"]).write.parquet(str(tmp_path / "in"))
    stream = spark.readStream.schema(KAFKA_SCHEMA).parquet(str(tmp_path / "in"))
    windows = revenue_per_window(
        valid_orders(check_orders(stream))
        .withWatermark("event_time", "10 seconds")
        .dropDuplicatesWithinWatermark(["order_id"])
    )
    assert windows.isStreaming

    query = (
        windows.writeStream.format("memory")
        .queryName("revenue_per_window_stream_test")
        .outputMode("complete")
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    try:
        query.awaitTermination(120)
        assert query.exception() is None
        assertDataFrameEqual(spark.table("revenue_per_window_stream_test"), expected_windows(spark))
    finally:
        query.stop()
        spark.catalog.dropTempView("revenue_per_window_stream_test")


@pytest.mark.parametrize("window_seconds", [0, -5, 2.5, True])
def test_revenue_windows_must_be_whole_positive_seconds(
    spark: SparkSession, window_seconds: Any
) -> None:
    orders = spark.createDataFrame([], "event_time timestamp, currency string")
    with pytest.raises(ValueError, match="window_seconds"):
        revenue_per_window(orders, window_seconds)
    with pytest.raises(ValueError, match="window_seconds"):
        revenue_per_window_sql("orders", window_seconds)


def test_revenue_per_window_sql_floors_to_the_window_in_datetime_arithmetic() -> None:
    sql = revenue_per_window_sql()

    assert sql.count("?") == 2
    assert "FROM `orders`" in sql
    assert "WHERE event_time >= ? AND event_time < ?" in sql
    assert (
        "MOD(MOD(TIMESTAMPDIFF(MICROSECOND, TIMESTAMP'1970-01-01 00:00:00', event_time), 5000000)"
        " + 5000000, 5000000)"
    ) in sql
    # Time-zone and 2038 safe: no conversion through Unix timestamps.
    assert "UNIX_TIMESTAMP" not in sql and "FROM_UNIXTIME" not in sql
    select = sql.split("FROM (")[0]
    assert re.findall(r"AS (\w+),?$", select, re.MULTILINE) == [
        "order_count",
        "item_count",
        "revenue",
    ]
    assert select.split()[1:3] == ["window_start,", "currency,"]
    assert "60000000" in revenue_per_window_sql("streamops.orders", 60)
    assert "FROM `streamops`.`orders`" in revenue_per_window_sql("streamops.orders", 60)


@pytest.mark.parametrize("table", ["", "orders; DROP TABLE orders", "`orders`", "a.b.c"])
def test_revenue_per_window_sql_takes_plain_table_names_only(table: str) -> None:
    with pytest.raises(ValueError, match="Table name"):
        revenue_per_window_sql(table)


def test_the_clock_skew_is_a_setting_judged_against_the_kafka_timestamp(
    spark: SparkSession,
) -> None:
    """The receiving clock is the record's Kafka timestamp (14:03:06), not the time the test
    runs: a replay days later reaches the same verdicts. Without a timestamp, the batch's time."""
    payloads = [
        order(event_time="2026-11-24T14:03:06.000Z"),
        order(event_time="2026-11-24T14:03:06.001Z"),
        order(event_time="2026-11-24T14:04:06.000Z"),
    ]
    strict = check_orders(kafka_frame(spark, payloads), max_clock_skew_seconds=0)
    lenient = check_orders(kafka_frame(spark, payloads), max_clock_skew_seconds=60)
    assert [r.reason for r in strict.orderBy("source_offset").collect()] == [
        None,
        "event_time_in_future",
        "event_time_in_future",
    ]
    assert [r.reason for r in lenient.orderBy("source_offset").collect()] == [None, None, None]

    untimed = spark.createDataFrame(
        [
            (None, order(event_time="2026-11-24T14:03:05Z"), "orders", 0, 0, None, 0),
            (None, order(event_time="9999-12-31T23:59:59Z"), "orders", 0, 1, None, 0),
        ],
        KAFKA_SCHEMA,
    )
    reasons = [r.reason for r in check_orders(untimed).orderBy("source_offset").collect()]
    assert reasons == [None, "event_time_in_future"]


@pytest.mark.parametrize("skew", [-1, 1.5, True, "300"])
def test_the_clock_skew_must_be_whole_seconds(spark: SparkSession, skew: object) -> None:
    with pytest.raises(ValueError, match="max_clock_skew_seconds"):
        check_orders(kafka_frame(spark, [order()]), max_clock_skew_seconds=skew)  # type: ignore[arg-type]


def test_the_validator_needs_an_aware_receiving_time() -> None:
    with pytest.raises(ValueError, match="naive"):
        validate("orders", order(), received_at=datetime(2026, 11, 24, 14, 3, 6))
    assert validate("orders", order(event_time="9999-12-31T23:59:59Z")) is None
    assert (
        validate("orders", order(event_time="9999-12-31T23:59:59Z"), received_at=KAFKA_TIME)
        == "event_time_in_future"
    )
