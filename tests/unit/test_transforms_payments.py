"""The payments transforms: every rejection reason, agreement with the generator's records,
typed valid payments and quarantine rows.

Spark is slow per action, so each test checks many cases with one DataFrame and one collect.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from spark_jobs.transforms.cleansing import QUARANTINE_OUTPUT_COLUMNS
from spark_jobs.transforms.payments import (
    CHECKED_COLUMNS,
    VALID_PAYMENT_COLUMNS,
    check_payments,
    rejected_payments,
    valid_payments,
)
from streamops.generator.records import generate, validate

KAFKA_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, "
    "timestamp timestamp, timestampType int"
)
KAFKA_TIME = datetime(2026, 11, 24, 14, 3, 6, tzinfo=UTC)
NOW = datetime(2026, 11, 24, 14, 3, 0, 250_000, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

VALID: dict[str, Any] = {
    "payment_id": "pay-1",
    "order_id": "ord-1",
    "amount": "29.97",
    "status": "captured",
    "event_time": "2026-11-24T14:03:15.120Z",
}


def kafka_frame(
    spark: SparkSession, values: Sequence[bytes | None], partition: int = 0
) -> DataFrame:
    """Records as Spark's Kafka source gives them: record n at offset n."""
    rows = [
        (None, value, "payments", partition, offset, KAFKA_TIME, 0)
        for offset, value in enumerate(values)
    ]
    return spark.createDataFrame(rows, KAFKA_SCHEMA)


def payment(**changes: Any) -> bytes:
    """VALID with ``changes``; a change to ``...`` removes the field."""
    fields = {**VALID, **changes}
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


# (payload, the reason check_payments gives); None = valid.
CASES: list[tuple[bytes | None, str | None]] = [
    (payment(), None),
    (payment(amount=29.97), None),
    (payment(amount=30), None),
    (payment(amount="0.10", status="failed"), None),
    (payment(event_time="2026-11-24T15:03:15.120+01:00", status="authorized"), None),
    (None, "missing_payload"),
    (b"\xff\xfe{}", "invalid_utf8"),
    (b'{"payment_id": "p"', "invalid_json"),
    (payment() + b"}", "invalid_json"),
    (b"[1, 2]", "not_a_json_object"),
    (payment(payment_id=...), "missing_field:payment_id"),
    (payment(payment_id=None), "missing_field:payment_id"),
    (payment(payment_id=7), "payment_id_not_string"),
    (payment(payment_id="  "), "payment_id_empty"),
    (payment(payment_id="p" * 65), "payment_id_too_long"),
    (payment(order_id=...), "missing_field:order_id"),
    (payment(order_id=""), "order_id_empty"),
    (payment(order_id="o" * 65), "order_id_too_long"),
    (payment(amount=...), "missing_field:amount"),
    (payment(amount="n/a"), "amount_not_decimal"),
    (payment(amount="12,50"), "amount_not_decimal"),
    (payment(amount=False), "amount_not_decimal"),
    (payment(amount="-3.00"), "amount_negative"),
    (payment(amount=-3), "amount_negative"),
    (payment(amount="3.001"), "amount_too_many_decimals"),
    (payment(amount=3.001), "amount_too_many_decimals"),
    (payment(amount="1000000000000.00"), "amount_too_large"),
    (payment(status=...), "missing_field:status"),
    (payment(status="CAPTURED"), "unknown_status"),
    (payment(status="refunded"), "unknown_status"),
    (payment(status=1), "unknown_status"),
    (payment(event_time=...), "missing_field:event_time"),
    (payment(event_time="2026-11-24 14:03:15"), "bad_event_time"),
    (payment(event_time="0999-12-31T23:59:59Z"), "event_time_out_of_range"),
    (payment(event_time="2026-11-24T14:08:06Z"), None),
    (payment(event_time="2026-11-24T14:08:06.001Z"), "event_time_in_future"),
    (payment(event_time="9999-12-31T23:59:59Z"), "event_time_in_future"),
]
# Rules of the order_payments columns, not of the contract: the generator's validator accepts.
TABLE_LIMIT_REASONS = {"payment_id_too_long", "amount_too_large", "event_time_out_of_range"}


def test_check_payments_gives_the_first_broken_rule_for_every_case(spark: SparkSession) -> None:
    checked = check_payments(kafka_frame(spark, [payload for payload, _ in CASES]))
    assert tuple(checked.columns) == CHECKED_COLUMNS
    reasons: dict[int, str | None] = dict(checked.select("source_offset", "reason").collect())
    actual = {offset: reasons[offset] for offset in range(len(CASES))}
    assert actual == {offset: reason for offset, (_, reason) in enumerate(CASES)}


def test_the_cases_agree_with_the_generators_validator() -> None:
    disagreements = {}
    for payload, expected in CASES:
        if payload is None:
            continue
        wanted = None if expected in TABLE_LIMIT_REASONS else expected
        actual = validate("payments", payload, received_at=KAFKA_TIME)
        if actual != wanted:
            disagreements[payload] = (wanted, actual)
    assert not disagreements


def test_valid_payments_are_typed_exact_and_in_utc(spark: SparkSession) -> None:
    payloads = [
        payment(payment_id="a", amount=29.97),
        payment(payment_id="b", amount="0.10", event_time="2026-11-24T15:03:15.005+01:00"),
        payment(payment_id="c", amount=7, status="failed"),
        payment(payment_id="d", amount="x"),
    ]
    valid = valid_payments(check_payments(kafka_frame(spark, payloads, partition=1)))
    assert tuple(valid.columns) == VALID_PAYMENT_COLUMNS
    moment = datetime(2026, 11, 24, 14, 3, 15, tzinfo=UTC)
    ms120, ms5 = moment + timedelta(milliseconds=120), moment + timedelta(milliseconds=5)
    expected = spark.createDataFrame(
        [
            (
                "a",
                "ord-1",
                Decimal("29.97"),
                "captured",
                moment + timedelta(milliseconds=120),
                1,
                0,
            ),
            ("b", "ord-1", Decimal("0.10"), "captured", ms5, 1, 1),
            ("c", "ord-1", Decimal("7.00"), "failed", ms120, 1, 2),
        ],
        "payment_id string, order_id string, amount decimal(14,2), status string, "
        "event_time timestamp, source_partition int, source_offset long",
    )
    assertDataFrameEqual(valid.select(*expected.columns), expected)


def test_generated_payments_are_accepted_or_rejected_as_the_generator_made_them(
    spark: SparkSession,
) -> None:
    records = generate(
        "payments", 1500, seed=11, now=NOW, malformed_ratio=0.3, duplicate_ratio=0.05
    )
    checked = check_payments(kafka_frame(spark, [record.value for record in records]))
    rows = {
        row.source_offset: row
        for row in checked.select(
            "source_offset",
            "reason",
            "payment_id",
            "order_id",
            "amount",
            "status",
            F.unix_millis("event_time").alias("event_millis"),
        ).collect()
    }
    kinds = Counter(record.kind for record in records)
    assert kinds["malformed"] > 100 and kinds["valid"] > 100
    wrong: dict[int, tuple[Any, ...]] = {}
    for offset, record in enumerate(records):
        row = rows[offset]
        expected_reason = record.reason if record.kind == "malformed" else None
        if row.reason != expected_reason:
            wrong[offset] = (expected_reason, row.reason, record.value)
            continue
        if record.kind == "malformed":
            continue
        fields = json.loads(record.value, parse_float=Decimal)
        expected = (
            fields["payment_id"],
            fields["order_id"],
            Decimal(str(fields["amount"])),
            fields["status"],
            (datetime.fromisoformat(fields["event_time"]) - EPOCH) // timedelta(milliseconds=1),
        )
        actual = (row.payment_id, row.order_id, row.amount, row.status, row.event_millis)
        if actual != expected:
            wrong[offset] = (expected, actual)
    assert not wrong


def test_rejected_payments_go_to_quarantine_as_the_joins_pipeline(spark: SparkSession) -> None:
    payloads = [payment(), b"\xff{", None, payment(status="pending")]
    rejected = rejected_payments(check_payments(kafka_frame(spark, payloads, partition=3)))

    assert tuple(rejected.columns) == QUARANTINE_OUTPUT_COLUMNS
    expected = spark.createDataFrame(
        [
            ("payments", 3, 1, b"\xff{", "invalid_utf8", "joins"),
            ("payments", 3, 2, None, "missing_payload", "joins"),
            ("payments", 3, 3, payloads[3], "unknown_status", "joins"),
        ],
        "source_topic string, source_partition int, source_offset long, raw_payload binary, "
        "reason string, pipeline string",
    )
    assertDataFrameEqual(rejected.select(*expected.columns), expected)
