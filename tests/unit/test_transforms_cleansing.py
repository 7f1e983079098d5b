"""The shared cleansing transforms: source columns, ordered fail-closed rules, quarantine rows and
event-time parsing. Each test builds one small DataFrame and runs one action."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from spark_jobs.transforms.cleansing import (
    QUARANTINE_COLUMNS,
    QUARANTINE_KEEP_BYTES,
    QUARANTINE_OUTPUT_COLUMNS,
    first_failing_reason,
    parse_event_time,
    quarantine_rows,
    with_source,
)

KAFKA_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, "
    "timestamp timestamp, timestampType int"
)
KAFKA_TIME = datetime(2026, 11, 24, 14, 3, 6, 500_000, tzinfo=UTC)


def kafka_frame(spark: SparkSession, values: Sequence[bytes | None]) -> DataFrame:
    """Records as Spark's Kafka source gives them, at offsets 0, 1, 2... of partition 1."""
    rows = [
        (b"key-%d" % offset, value, "orders", 1, offset, KAFKA_TIME, 0)
        for offset, value in enumerate(values)
    ]
    return spark.createDataFrame(rows, KAFKA_SCHEMA)


def test_with_source_names_the_kafka_position_and_keeps_the_bytes(spark: SparkSession) -> None:
    invalid_utf8 = b'{"order_id":"\xe9"}'
    sourced = with_source(kafka_frame(spark, [b"{}", invalid_utf8, None]))

    assert set(kafka_frame(spark, []).columns) < set(sourced.columns)
    expected = spark.createDataFrame(
        [
            ("orders", 1, 0, b"{}", b"key-0", KAFKA_TIME),
            ("orders", 1, 1, invalid_utf8, b"key-1", KAFKA_TIME),
            ("orders", 1, 2, None, b"key-2", KAFKA_TIME),
        ],
        "source_topic string, source_partition int, source_offset long, raw_payload binary, "
        "record_key binary, kafka_timestamp timestamp",
    )
    assertDataFrameEqual(sourced.select(*expected.columns), expected)


def test_first_failing_reason_is_the_first_violated_rule_and_null_counts_as_violated(
    spark: SparkSession,
) -> None:
    frame = spark.createDataFrame(
        [("ok", 5), ("negative", -1), ("too big", 100), ("null", None)], "case string, n int"
    )
    reason = first_failing_reason(
        [
            # Forgets about NULL on purpose: a NULL n must be rejected, not let through.
            ("negative", F.col("n") < 0),
            ("too_big", F.col("n") > 10),
            # Would also match -1 and 100: only the first violated rule counts.
            ("not_five", F.col("n") != 5),
        ]
    )
    checked = frame.select("case", reason.alias("reason"), first_failing_reason([]).alias("none"))

    expected = spark.createDataFrame(
        [
            ("ok", None, None),
            ("negative", "negative", None),
            ("too big", "too_big", None),
            ("null", "negative", None),
        ],
        "case string, reason string, none string",
    )
    assertDataFrameEqual(checked, expected)


def test_first_failing_reason_rejects_ambiguous_reasons() -> None:
    with pytest.raises(ValueError, match="unique"):
        first_failing_reason([("bad", F.lit(True)), ("bad", F.lit(False))])


def test_quarantine_rows_are_the_rejected_records_in_the_quarantine_table_shape(
    spark: SparkSession,
) -> None:
    sourced = with_source(kafka_frame(spark, [b"good", b"\xff\xfe", None]))
    checked = sourced.withColumn(
        "reason",
        F.when(F.col("source_offset") == 1, "invalid_utf8").when(
            F.col("source_offset") == 2, "missing_payload"
        ),
    )

    quarantined = quarantine_rows(checked, "orders")

    assert tuple(quarantined.columns) == QUARANTINE_OUTPUT_COLUMNS
    assert QUARANTINE_OUTPUT_COLUMNS[: len(QUARANTINE_COLUMNS)] == QUARANTINE_COLUMNS
    quarantined = quarantined.withColumn("stamped", F.col("quarantined_at").isNotNull())
    expected = spark.createDataFrame(
        [
            ("orders", 1, 1, b"\xff\xfe", "invalid_utf8", "orders", b"key-1", KAFKA_TIME, True),
            ("orders", 1, 2, None, "missing_payload", "orders", b"key-2", KAFKA_TIME, True),
        ],
        "source_topic string, source_partition int, source_offset long, raw_payload binary, "
        "reason string, pipeline string, record_key binary, source_timestamp timestamp, "
        "stamped boolean",
    )
    assertDataFrameEqual(quarantined.drop("quarantined_at", *CUT_OFF_COLUMNS), expected)
    # Kept whole: nothing was cut off.
    assert quarantined.where(F.coalesce(*CUT_OFF_COLUMNS).isNotNull()).count() == 0


CUT_OFF_COLUMNS = (
    "raw_payload_bytes",
    "raw_payload_sha256",
    "record_key_bytes",
    "record_key_sha256",
)


def test_a_payload_or_key_over_the_keep_limit_keeps_its_head_size_and_hash(
    spark: SparkSession,
) -> None:
    """A record past what MariaDB takes in one packet (a 20 MB payload that a compressed batch
    let through) is quarantined, not a batch that fails on every retry: its first
    QUARANTINE_KEEP_BYTES, its size and its SHA-256. At the limit it is kept whole."""
    huge = bytes(range(256)) * (20 * 1024 * 1024 // 256) + b"tail"
    at_limit = b"k" * QUARANTINE_KEEP_BYTES
    rows = [
        (at_limit, b"x" * QUARANTINE_KEEP_BYTES, "orders", 0, 0, KAFKA_TIME, 0),
        (at_limit + b"!", huge, "orders", 0, 1, KAFKA_TIME, 0),
    ]
    checked = with_source(spark.createDataFrame(rows, KAFKA_SCHEMA)).withColumn(
        "reason", F.lit("invalid_json")
    )

    kept = {
        row.source_offset: row
        for row in quarantine_rows(checked, "orders")
        .select("source_offset", "raw_payload", "record_key", *CUT_OFF_COLUMNS)
        .collect()
    }

    whole = kept[0]
    assert bytes(whole.raw_payload) == b"x" * QUARANTINE_KEEP_BYTES
    assert bytes(whole.record_key) == at_limit
    assert (whole.raw_payload_bytes, whole.raw_payload_sha256) == (None, None)
    assert (whole.record_key_bytes, whole.record_key_sha256) == (None, None)
    cut = kept[1]
    assert bytes(cut.raw_payload) == huge[:QUARANTINE_KEEP_BYTES]
    assert cut.raw_payload_bytes == len(huge)
    assert cut.raw_payload_sha256 == hashlib.sha256(huge).hexdigest()
    assert bytes(cut.record_key) == at_limit
    assert cut.record_key_bytes == QUARANTINE_KEEP_BYTES + 1
    assert cut.record_key_sha256 == hashlib.sha256(at_limit + b"!").hexdigest()


@pytest.mark.parametrize("pipeline", ["", "Orders", "orders!", "x" * 65])
def test_quarantine_rows_rejects_pipeline_names_the_table_cannot_hold(
    spark: SparkSession, pipeline: str
) -> None:
    checked = with_source(kafka_frame(spark, [])).withColumn("reason", F.lit("x"))
    with pytest.raises(ValueError, match="Pipeline name"):
        quarantine_rows(checked, pipeline)


PLUS_ONE = timezone(timedelta(hours=1))
MINUS_HALF_SIX = timezone(-timedelta(hours=5, minutes=30))
EVENT_TIMES: list[tuple[str | None, datetime | None]] = [
    # What the generator emits: UTC with `Z`, and +01:00.
    ("2026-11-24T14:03:05.120Z", datetime(2026, 11, 24, 14, 3, 5, 120_000, tzinfo=UTC)),
    ("2026-11-24T15:03:05.120+01:00", datetime(2026, 11, 24, 14, 3, 5, 120_000, tzinfo=UTC)),
    ("2026-01-01T00:30:00.000+01:00", datetime(2025, 12, 31, 23, 30, tzinfo=UTC)),
    ("2026-11-24T14:03:05Z", datetime(2026, 11, 24, 14, 3, 5, tzinfo=UTC)),
    ("2026-11-24T14:03:05.1-05:30", datetime(2026, 11, 24, 14, 3, 5, 100_000, MINUS_HALF_SIX)),
    ("2026-11-24T14:03:05+00:00", datetime(2026, 11, 24, 14, 3, 5, tzinfo=UTC)),
    # Kept to the millisecond, like DATETIME(3): truncated, never rounded into the next second.
    ("2026-11-24T14:03:04.999999999Z", datetime(2026, 11, 24, 14, 3, 4, 999_000, tzinfo=UTC)),
    ("2026-11-24T14:03:05.123456+01:00", datetime(2026, 11, 24, 14, 3, 5, 123_000, PLUS_ONE)),
    # No offset, or not the contract's form.
    ("2026-11-24T14:03:05.120", None),
    ("2026-11-24 14:03:05.120Z", None),
    ("2026-11-24", None),
    ("24/11/2026 14:03:05", None),
    ("1795961885120", None),
    ("yesterday", None),
    ("", None),
    (None, None),
    ("2026-11-24T14:03:05.120+0100", None),
    ("2026-11-24T14:03:05.120z", None),
    ("2026-11-24T14:03:05.Z", None),
    (" 2026-11-24T14:03:05Z", None),
    # The right form, but no such moment.
    ("2026-02-30T14:03:05Z", None),
    ("2026-11-24T24:00:00Z", None),
    ("2026-11-24T14:60:00Z", None),
    ("2026-11-24T14:03:05+19:00", None),
    ("2026-11-24T14:03:05+01:60", None),
]


def test_parse_event_time_reads_iso_8601_with_an_offset_as_utc(spark: SparkSession) -> None:
    frame = spark.createDataFrame(
        [(index, text) for index, (text, _) in enumerate(EVENT_TIMES)], "index int, text string"
    )
    parsed = frame.select("index", parse_event_time(F.col("text")).alias("event_time"))

    assert parsed.schema["event_time"].dataType.typeName() == "timestamp"
    expected = spark.createDataFrame(
        [(index, moment) for index, (_, moment) in enumerate(EVENT_TIMES)],
        "index int, event_time timestamp",
    )
    assertDataFrameEqual(parsed, expected)
