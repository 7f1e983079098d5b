"""Transforms of the orders pipeline: check each Kafka record against the contract's ``orders``
rules (shared/CONTRACT.md), split valid orders from rejected ones, and sum revenue per tumbling
event-time window.

How a payload is read, and why:

* It is parsed once, strictly, with ``try_parse_json`` into a VARIANT. ``from_json`` in its default
  PERMISSIVE mode accepts single quotes (Python's ``str(dict)``) and returns the same all-NULL
  struct for invalid JSON, for ``[...]``, for ``42`` and for ``{}``; ``try_parse_json`` accepts
  standard JSON only and returns NULL for anything else. Duplicate keys make it NULL too, so such
  a record is quarantined as invalid JSON rather than silently resolved one way or the other.
* Jackson stops after the first JSON value and ignores whatever follows (``{...}{...}``,
  ``{...}}``). The payload is therefore parsed as ``[<payload>,"<end mark>"]``: the end mark is
  the second of exactly two elements only when the payload is one complete JSON value.
* A VARIANT keeps each field's JSON type, so ``ORDER_SCHEMA`` reads every field as VARIANT: ``2``
  is BIGINT and ``"2"`` STRING, ``1.5`` is DECIMAL(2,1) and ``9.99`` DECIMAL(3,2), exact, never a
  float. Reading the fields as strings could not tell ``2`` from ``"2"``; reading them as numbers
  would turn ``"abc"`` into a NULL instead of a reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
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
    read_one_json_value,
)
from streamops.contract.orders import check_window_seconds

PIPELINE = "orders"
ORDER_FIELDS = (
    "order_id",
    "customer_id",
    "product_id",
    "quantity",
    "unit_price",
    "currency",
    "event_time",
)
# Every field as the JSON value it is on the wire; check_orders validates and types each one.
ORDER_SCHEMA = StructType(
    [StructField(name, VariantType(), nullable=True) for name in ORDER_FIELDS]
)
DEFAULT_CURRENCY = "EUR"

# Limits of the `orders` table (migrations/0001). MariaDB runs in strict mode, so an over-long or
# out-of-range value would fail the sink's whole batch instead of one record.
ORDER_ID_MAX_LENGTH = 64  # VARCHAR(64), also the contract's limit
CUSTOMER_ID_MAX_LENGTH = 128  # VARCHAR(128)
PRODUCT_ID_MAX_LENGTH = 128  # VARCHAR(128)
QUANTITY_MAX = 2**31 - 1  # INT
UNIT_PRICE_MAX = Decimal("9999999999.99")  # DECIMAL(12,2)
AMOUNT_MAX = Decimal("999999999999.99")  # DECIMAL(14,2)
# DATETIME's range, from 1000-01-01 to the end of 9999, as seconds since the epoch.
EVENT_TIME_MIN_EPOCH_SECONDS = int(datetime(1000, 1, 1, tzinfo=UTC).timestamp())
EVENT_TIME_END_EPOCH_SECONDS = int(datetime(9999, 12, 31, tzinfo=UTC).timestamp()) + 86_400

QUANTITY_TYPE = "int"
UNIT_PRICE_TYPE = DecimalType(12, 2)
AMOUNT_TYPE = DecimalType(14, 2)
REVENUE_TYPE = DecimalType(18, 2)

CHECKED_COLUMNS = (
    *SOURCE_COLUMNS,
    "order_id",
    "customer_id",
    "product_id",
    "quantity",
    "unit_price",
    "currency",
    "amount",
    "event_time",
    "reason",
)
VALID_ORDER_COLUMNS = (
    "order_id",
    "customer_id",
    "product_id",
    "quantity",
    "unit_price",
    "currency",
    "amount",
    "event_time",
    "source_partition",
    "source_offset",
    "kafka_timestamp",
)
REVENUE_COLUMNS = (
    "window_start",
    "window_end",
    "currency",
    "order_count",
    "item_count",
    "revenue",
)

# Text fields count as empty when they hold only whitespace, as Python's str.strip() sees it.
_BLANK = r"(?U)^[\s\x1c-\x1f]*$"
# A decimal string as the contract allows it: no exponent, no sign but `-`, no separators.
_DECIMAL_TEXT = r"^-?[0-9]+(\.[0-9]+)?$"
# ... and one with at most two decimals that are not trailing zeros (`9.990` is 9.99).
_AT_MOST_TWO_DECIMALS = r"^-?[0-9]+(\.[0-9]{1,2}0*)?$"
# parse_json stores every integer that fits a BIGINT as BIGINT, and drops trailing fractional
# zeros from decimals: DECIMAL(p,0) is `2.0` (not an integer on the wire) when p is small, and an
# integer too big for BIGINT, hence for INT, when p is 19 or more.
_HUGE_INTEGER = r"^DECIMAL\((19|[2-9][0-9]),0\)$"
_NUMBER_KINDS = ("BIGINT", "DOUBLE")
_TEXT_FIELDS = ("order_id", "customer_id", "product_id", "currency", "event_time")


def check_orders(
    raw: DataFrame, max_clock_skew_seconds: int = DEFAULT_MAX_CLOCK_SKEW_SECONDS
) -> DataFrame:
    """Every Kafka record with its parsed order fields and ``reason``: NULL for a valid order,
    else the first contract rule it breaks. Columns are :data:`CHECKED_COLUMNS`.

    An order whose event time is more than ``max_clock_skew_seconds`` after its Kafka timestamp
    is rejected as ``event_time_in_future`` (:func:`~spark_jobs.transforms.cleansing.
    event_time_in_future`), so it never reaches the revenue watermark.

    The typed fields (``quantity`` INT, ``unit_price`` DECIMAL(12,2), ``amount`` DECIMAL(14,2),
    ``event_time`` TIMESTAMP, ``currency`` upper case, EUR when absent) are exact where
    ``reason`` is NULL, and best effort, possibly NULL, elsewhere.
    """
    texts = json_record_fields(raw, ORDER_SCHEMA, ORDER_FIELDS, _TEXT_FIELDS)
    read = texts.withColumns(
        {
            "_quantity_long": F.when(
                _kind("quantity") == "BIGINT",
                F.try_variant_get(_value("quantity"), "$", "bigint"),
            ),
            "_quantity_text": F.try_variant_get(_value("quantity"), "$", "string"),
            **_money_read("unit_price"),
            "_event_time": parse_event_time(_string("event_time")),
        }
    )
    typed = read.withColumns(
        {
            **_money_exact("unit_price"),
            "_quantity": F.col("_quantity_long").try_cast(QUANTITY_TYPE),
        }
    ).withColumn("_unit_price", F.col("_unit_price_exact").try_cast(UNIT_PRICE_TYPE))
    # INT × DECIMAL(12,2) is a DECIMAL(23,2): exact, and it cannot overflow.
    priced = typed.withColumn(
        "_amount_exact", F.col("_quantity").cast(DecimalType(10, 0)) * F.col("_unit_price")
    )
    return priced.select(
        *SOURCE_COLUMNS,
        _string("order_id").alias("order_id"),
        _string("customer_id").alias("customer_id"),
        _string("product_id").alias("product_id"),
        F.col("_quantity").alias("quantity"),
        F.col("_unit_price").alias("unit_price"),
        F.when(~_present("currency"), F.lit(DEFAULT_CURRENCY))
        .otherwise(F.upper(_string("currency")))
        .alias("currency"),
        F.col("_amount_exact").try_cast(AMOUNT_TYPE).alias("amount"),
        F.col("_event_time").alias("event_time"),
        first_failing_reason(_order_rules(max_clock_skew_seconds)).alias("reason"),
    )


def valid_orders(checked: DataFrame) -> DataFrame:
    """The valid orders of ``check_orders``, as the ``orders`` table holds them.

    Columns are :data:`VALID_ORDER_COLUMNS`. Duplicates are still there: removing them needs
    state across micro-batches, which is the job's part (``dropDuplicatesWithinWatermark``).
    """
    return checked.where(F.col("reason").isNull()).select(
        F.col("order_id"),
        F.col("customer_id"),
        F.col("product_id"),
        F.col("quantity").cast(QUANTITY_TYPE).alias("quantity"),
        F.col("unit_price").cast(UNIT_PRICE_TYPE).alias("unit_price"),
        F.col("currency"),
        F.col("amount").cast(AMOUNT_TYPE).alias("amount"),
        F.col("event_time"),
        F.col("source_partition"),
        F.col("source_offset"),
        F.col("kafka_timestamp"),
    )


def rejected_orders(checked: DataFrame) -> DataFrame:
    """The rejected records of ``check_orders``, as rows of the ``quarantine`` table."""
    return quarantine_rows(checked, PIPELINE)


def revenue_per_window(
    orders: DataFrame, window_seconds: int = 5, by: Sequence[str] = ("currency",)
) -> DataFrame:
    """Orders, items and revenue per tumbling event-time window and the columns ``by``.

    Columns are ``window_start, window_end``, then ``by``, then ``order_count, item_count,
    revenue`` (:data:`REVENUE_COLUMNS` with the default ``by``); windows are
    ``[window_start, window_end)`` and aligned on the epoch, so 5-second windows start at :00,
    :05, :10... Streaming-safe: one ``groupBy(window, *by)`` aggregation, nothing else, so it
    runs on a watermarked stream.
    """
    check_window_seconds(window_seconds)
    window = F.window("event_time", f"{window_seconds} seconds")
    return (
        orders.groupBy(window.alias("window"), *(F.col(column) for column in by))
        .agg(
            F.count(F.lit(1)).alias("order_count"),
            F.sum("quantity").cast("long").alias("item_count"),
            F.sum("amount").cast(REVENUE_TYPE).alias("revenue"),
        )
        .select(
            F.col("window.start").alias("window_start"),
            F.col("window.end").alias("window_end"),
            *by,
            "order_count",
            "item_count",
            "revenue",
        )
    )


# --- the rules ----------------------------------------------------------------------------------


def _order_rules(max_clock_skew_seconds: int) -> list[tuple[str, Column]]:
    """The contract's rules in the order the generator's validator checks them (record, then
    fields in contract order), each followed by the limits of the table column it lands in, and
    last the receiving clock's."""
    quantity_kind = _kind("quantity")
    currency = _string("currency")
    event_seconds = F.unix_seconds(F.col("_event_time"))
    return [
        ("missing_payload", F.col("raw_payload").isNull()),  # a tombstone
        ("invalid_utf8", ~F.col("_utf8")),
        ("invalid_json", ~F.col("_json_ok")),
        ("not_a_json_object", ~F.coalesce(F.col("_fields").isNotNull(), F.lit(False))),
        *_text_rules("order_id", ORDER_ID_MAX_LENGTH),
        *_text_rules("customer_id", CUSTOMER_ID_MAX_LENGTH),
        *_text_rules("product_id", PRODUCT_ID_MAX_LENGTH),
        ("missing_field:quantity", ~_present("quantity")),
        (
            "quantity_not_integer",
            ~F.coalesce(
                (quantity_kind == "BIGINT") | quantity_kind.rlike(_HUGE_INTEGER), F.lit(False)
            ),
        ),
        (
            "quantity_not_positive",
            F.coalesce(F.col("_quantity_long") < 1, F.col("_quantity_text").startswith("-")),
        ),
        ("quantity_too_large", F.coalesce(F.col("_quantity_long") > QUANTITY_MAX, F.lit(True))),
        *_money_rules("unit_price", UNIT_PRICE_MAX),
        (
            "currency_invalid",
            _present("currency") & ~F.coalesce(currency.rlike("^[A-Za-z]{3}$"), F.lit(False)),
        ),
        ("missing_field:event_time", ~_present("event_time")),
        ("bad_event_time", F.col("_event_time").isNull()),
        (
            "event_time_out_of_range",
            ~event_seconds.between(EVENT_TIME_MIN_EPOCH_SECONDS, EVENT_TIME_END_EPOCH_SECONDS - 1),
        ),
        ("amount_too_large", F.coalesce(F.col("_amount_exact") > AMOUNT_MAX, F.lit(True))),
        (EVENT_TIME_IN_FUTURE, event_time_in_future(F.col("_event_time"), max_clock_skew_seconds)),
    ]


def _text_rules(name: str, max_length: int) -> list[tuple[str, Column]]:
    text = _string(name)
    return [
        (f"missing_field:{name}", ~_present(name)),
        (f"{name}_not_string", _kind(name) != "STRING"),
        (f"{name}_empty", text.rlike(_BLANK)),
        (f"{name}_too_long", F.char_length(text) > max_length),
    ]


def _money_read(name: str) -> dict[str, Column]:
    """A money field (a JSON number or a decimal string) read as ``_<name>_text`` — plain digits
    for BIGINT and DECIMAL, Java's notation (``1.2E7``) for DOUBLE — and ``_<name>_double``."""
    return {
        f"_{name}_text": F.try_variant_get(_value(name), "$", "string"),
        f"_{name}_double": F.when(
            _kind(name) == "DOUBLE", F.try_variant_get(_value(name), "$", "double")
        ),
    }


def _money_exact(name: str) -> dict[str, Column]:
    """``_<name>_exact``: the value of :func:`_money_read`'s text as DECIMAL(38,18), NULL when
    it is no number (or too big for that type: :func:`_money_rules` says which)."""
    return {
        f"_{name}_exact": F.when(
            _is_number(name) | (_kind(name) == "STRING"),
            F.col(f"_{name}_text").try_cast(DecimalType(38, 18)),
        )
    }


def _money_rules(name: str, maximum: Decimal) -> list[tuple[str, Column]]:
    """The rules of a money field read by :func:`_money_read` and :func:`_money_exact`:
    present, a decimal (number or numeric string), not negative, at most two decimals, at most
    ``maximum``."""
    kind, text, exact = _kind(name), F.col(f"_{name}_text"), F.col(f"_{name}_exact")
    return [
        (f"missing_field:{name}", ~_present(name)),
        (
            f"{name}_not_decimal",
            ~F.coalesce(
                _is_number(name) | ((kind == "STRING") & text.rlike(_DECIMAL_TEXT)), F.lit(False)
            ),
        ),
        (f"{name}_negative", F.coalesce(exact < 0, text.startswith("-"))),
        (
            f"{name}_too_many_decimals",
            F.coalesce(
                F.when(
                    kind == "DOUBLE",
                    # 1e-25 rounds to a DECIMAL(38,18) zero: the double round trip catches it.
                    (exact != F.round(exact, 2))
                    | (exact.cast("double") != F.col(f"_{name}_double")),
                ).otherwise(~text.rlike(_AT_MOST_TWO_DECIMALS)),
                # Too big for DECIMAL(38,18): the next rule says so.
                F.lit(False),
            ),
        ),
        (f"{name}_too_large", F.coalesce(exact > maximum, F.lit(True))),
    ]


def json_record_fields(
    raw: DataFrame, schema: StructType, fields: Sequence[str], text_fields: Sequence[str]
) -> DataFrame:
    """``raw`` Kafka rows with each record read once as JSON: ``_record`` (the VARIANT),
    ``_fields`` (its ``schema`` fields when it is an object), every field's JSON type
    (:func:`_kind`: NULL when absent, VOID for JSON null) and each of ``text_fields`` as a
    string (:func:`_string`: NULL unless it is a JSON string), each computed once."""
    parsed = read_one_json_value(raw)
    shaped = parsed.withColumn("_record_kind", F.schema_of_variant("_record")).withColumn(
        "_fields",
        F.when(
            F.col("_record_kind").startswith("OBJECT<"),
            F.try_variant_get("_record", "$", schema.simpleString()),
        ),
    )
    kinds = shaped.withColumns(
        {_kind_column(name): F.schema_of_variant(_value(name)) for name in fields}
    )
    return kinds.withColumns(
        {
            _string_column(name): F.when(
                _kind(name) == "STRING", F.try_variant_get(_value(name), "$", "string")
            )
            for name in text_fields
        }
    )


def _value(name: str) -> Column:
    """The field as a VARIANT: SQL NULL when the key is absent, a variant null for JSON null."""
    return F.col("_fields").getField(name)


def _kind_column(name: str) -> str:
    return f"_kind_{name}"


def _kind(name: str) -> Column:
    """The field's JSON type as schema_of_variant names it: STRING, BIGINT, DECIMAL(p,s), DOUBLE,
    BOOLEAN, OBJECT<...>, ARRAY<...>, VOID for JSON null; NULL when the key is absent."""
    return F.col(_kind_column(name))


def _present(name: str) -> Column:
    """JSON null counts as absent, as in the contract's validator."""
    return F.coalesce(_kind(name) != "VOID", F.lit(False))


def _string_column(name: str) -> str:
    return f"_string_{name}"


def _string(name: str) -> Column:
    """The field's text when it is a JSON string, else NULL (one of :data:`_TEXT_FIELDS`)."""
    return F.col(_string_column(name))


def _is_number(name: str) -> Column:
    kind = _kind(name)
    return kind.isin(*_NUMBER_KINDS) | kind.startswith("DECIMAL(")
