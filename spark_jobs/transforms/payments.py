"""Transforms of the ``payments`` topic: check each Kafka record against the contract's
``payments`` rules (shared/CONTRACT.md) and split valid payments from rejected ones.

A payload is read exactly as :mod:`spark_jobs.transforms.orders` reads an order (see its module
docstring): parsed once, strictly, as ``[<payload>,"<end mark>"]`` with ``try_parse_json``, every
field kept as the VARIANT it is on the wire, and the orders module's field helpers
(``_kind``, ``_string``, ``_present``, ``_text_rules``, …) applied to the payment's fields, so
both topics refuse the same bad JSON with the same reasons.
"""

from __future__ import annotations

from decimal import Decimal

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DecimalType, StructField, StructType, VariantType

from spark_jobs.transforms.cleansing import (
    DEFAULT_MAX_CLOCK_SKEW_SECONDS,
    EVENT_TIME_IN_FUTURE,
    SOURCE_COLUMNS,
    event_time_in_future,
    first_failing_reason,
    parse_event_time,
    quarantine_rows,
)
from spark_jobs.transforms.orders import (
    EVENT_TIME_END_EPOCH_SECONDS,
    EVENT_TIME_MIN_EPOCH_SECONDS,
    ORDER_ID_MAX_LENGTH,
    _money_exact,
    _money_read,
    _money_rules,
    _present,
    _string,
    _text_rules,
    json_record_fields,
)

PIPELINE = "joins"
PAYMENT_FIELDS = ("payment_id", "order_id", "amount", "status", "event_time")
PAYMENT_SCHEMA = StructType(
    [StructField(name, VariantType(), nullable=True) for name in PAYMENT_FIELDS]
)
PAYMENT_STATUSES = ("authorized", "captured", "failed")

# Limits of the `order_payments` columns a payment lands in (migrations/0001): strict mode would
# fail the join sink's whole batch on one over-long or out-of-range value.
PAYMENT_ID_MAX_LENGTH = 64  # VARCHAR(64)
AMOUNT_MAX = Decimal("999999999999.99")  # DECIMAL(14,2)
AMOUNT_TYPE = DecimalType(14, 2)

CHECKED_COLUMNS = (
    *SOURCE_COLUMNS,
    "payment_id",
    "order_id",
    "amount",
    "status",
    "event_time",
    "reason",
)
VALID_PAYMENT_COLUMNS = (
    "payment_id",
    "order_id",
    "amount",
    "status",
    "event_time",
    "source_partition",
    "source_offset",
    "kafka_timestamp",
)
_TEXT_FIELDS = ("payment_id", "order_id", "status", "event_time")


def check_payments(
    raw: DataFrame, max_clock_skew_seconds: int = DEFAULT_MAX_CLOCK_SKEW_SECONDS
) -> DataFrame:
    """Every Kafka record with its parsed payment fields and ``reason``: NULL for a valid
    payment, else the first contract rule it breaks. Columns are :data:`CHECKED_COLUMNS`.
    An event time more than ``max_clock_skew_seconds`` after the Kafka timestamp is
    ``event_time_in_future``.

    ``amount`` is DECIMAL(14,2) and ``event_time`` a TIMESTAMP, exact where ``reason`` is NULL
    and best effort, possibly NULL, elsewhere.
    """
    texts = json_record_fields(raw, PAYMENT_SCHEMA, PAYMENT_FIELDS, _TEXT_FIELDS)
    read = texts.withColumns(
        {
            **_money_read("amount"),
            "_event_time": parse_event_time(_string("event_time")),
        }
    )
    typed = read.withColumns(_money_exact("amount"))
    return typed.select(
        *SOURCE_COLUMNS,
        _string("payment_id").alias("payment_id"),
        _string("order_id").alias("order_id"),
        F.col("_amount_exact").try_cast(AMOUNT_TYPE).alias("amount"),
        _string("status").alias("status"),
        F.col("_event_time").alias("event_time"),
        first_failing_reason(_payment_rules(max_clock_skew_seconds)).alias("reason"),
    )


def valid_payments(checked: DataFrame) -> DataFrame:
    """The valid payments of :func:`check_payments`; columns :data:`VALID_PAYMENT_COLUMNS`.

    Repeats are still there (a payment sent twice, several payments for one order): the join
    decides what they mean, see :mod:`spark_jobs.transforms.joins`.
    """
    return checked.where(F.col("reason").isNull()).select(
        F.col("payment_id"),
        F.col("order_id"),
        F.col("amount").cast(AMOUNT_TYPE).alias("amount"),
        F.col("status"),
        F.col("event_time"),
        F.col("source_partition"),
        F.col("source_offset"),
        F.col("kafka_timestamp"),
    )


def rejected_payments(checked: DataFrame) -> DataFrame:
    """The rejected records of :func:`check_payments`, as rows of the ``quarantine`` table."""
    return quarantine_rows(checked, PIPELINE)


def _payment_rules(max_clock_skew_seconds: int) -> list[tuple[str, Column]]:
    """The contract's rules in the order the generator's validator checks them (record, then
    fields in contract order), each followed by the limits of the column it lands in, and last
    the receiving clock's."""
    event_seconds = F.unix_seconds(F.col("_event_time"))
    return [
        ("missing_payload", F.col("raw_payload").isNull()),
        ("invalid_utf8", ~F.col("_utf8")),
        ("invalid_json", ~F.col("_json_ok")),
        ("not_a_json_object", ~F.coalesce(F.col("_fields").isNotNull(), F.lit(False))),
        *_text_rules("payment_id", PAYMENT_ID_MAX_LENGTH),
        *_text_rules("order_id", ORDER_ID_MAX_LENGTH),
        *_money_rules("amount", AMOUNT_MAX),
        ("missing_field:status", ~_present("status")),
        # Exact, case included: the contract names three lower-case values.
        (
            "unknown_status",
            ~F.coalesce(_string("status").isin(*PAYMENT_STATUSES), F.lit(False)),
        ),
        ("missing_field:event_time", ~_present("event_time")),
        ("bad_event_time", F.col("_event_time").isNull()),
        (
            "event_time_out_of_range",
            ~event_seconds.between(EVENT_TIME_MIN_EPOCH_SECONDS, EVENT_TIME_END_EPOCH_SECONDS - 1),
        ),
        (EVENT_TIME_IN_FUTURE, event_time_in_future(F.col("_event_time"), max_clock_skew_seconds)),
    ]
