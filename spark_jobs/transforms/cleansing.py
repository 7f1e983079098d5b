"""Cleansing steps every pipeline shares: where a record came from, why it is rejected, and the
shape rejected records take on their way to the ``quarantine`` table.

A pipeline checks each Kafka record against an ordered list of rules, ``(reason, violated)``
pairs, and keeps the first reason that applies; NULL means the record is valid. Valid and rejected
records are then two filters of the same DataFrame, so every record lands in exactly one place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import TimestampType

QUARANTINE_COLUMNS = (
    "source_topic",
    "source_partition",
    "source_offset",
    "raw_payload",
    "reason",
    "pipeline",
)
# What quarantine_rows returns: every column of the quarantine table. record_key and
# source_timestamp are nullable there, and the sink writes them when a batch has them;
# quarantined_at is stamped here so every row of one micro-batch carries the same time.
QUARANTINE_OUTPUT_COLUMNS = (
    *QUARANTINE_COLUMNS,
    "record_key",
    "source_timestamp",
    "quarantined_at",
    "raw_payload_bytes",
    "raw_payload_sha256",
    "record_key_bytes",
    "record_key_sha256",
)
# A quarantined payload or key is kept whole up to this many bytes (every record a broker takes
# at its default 1 MB cap); a longer one (a topic with a raised cap, or a compressed batch that
# inflates) keeps its first bytes, with its size and SHA-256 in ``<column>_bytes`` and
# ``<column>_sha256`` (NULL when kept whole). A row then stays far below MariaDB's
# max_allowed_packet (16 MiB), so no single record can fail its batch on every retry.
QUARANTINE_KEEP_BYTES = 1024 * 1024
# quarantine.pipeline is VARCHAR(64).
PIPELINE_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

# The contract's wire format: extended ISO-8601 with a `T`, optional fraction and a mandatory
# offset (`Z` or ±HH:MM). Spark's string-to-timestamp cast alone would also accept a missing
# offset (read in the session time zone), a space for the `T` or one-digit fields.
_ISO_8601_WITH_OFFSET = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
)


# Where a record came from, as :func:`with_source` names it: the first columns of every checked
# frame, and what the quarantine keeps of a rejected record.
SOURCE_COLUMNS = (
    "source_topic",
    "source_partition",
    "source_offset",
    "raw_payload",
    "record_key",
    "kafka_timestamp",
)


def with_source(raw: DataFrame) -> DataFrame:
    """The Kafka source DataFrame plus the names the sinks use for where each record came from.

    ``raw_payload`` and ``record_key`` stay bytes: a record may be quarantined precisely for not
    being valid UTF-8, and the quarantine keeps it exactly as received.
    """
    return raw.select(
        "*",
        F.col("topic").alias("source_topic"),
        F.col("partition").alias("source_partition"),
        F.col("offset").alias("source_offset"),
        F.col("value").alias("raw_payload"),
        F.col("key").alias("record_key"),
        F.col("timestamp").alias("kafka_timestamp"),
    )


# How far an event time may run ahead of the record's Kafka timestamp (shared/CONTRACT.md: "an
# event time later than the receiving clock plus the configured maximum clock skew is rejected").
# Settings.max_clock_skew_seconds overrides it for the jobs.
DEFAULT_MAX_CLOCK_SKEW_SECONDS = 300
EVENT_TIME_IN_FUTURE = "event_time_in_future"


def event_time_in_future(event_time: Column, max_clock_skew_seconds: int) -> Column:
    """True when ``event_time`` is later than the record's ``kafka_timestamp`` plus the skew.

    The receiving clock is the record's Kafka timestamp, not the time the job runs: the contract
    topics keep the broker's append time (``message.timestamp.type=LogAppendTime``,
    :func:`streamops.topics.ensure_topics`), so a producer cannot move it, and a batch replayed
    after a crash reaches the same verdict as its first run, however much later the replay is.
    A record without a timestamp is judged against the time the batch runs.

    Such a record must never reach a watermark: one order stamped 9999-12-31 moved the orders
    watermark past every window for good, and its 5-s window ended in year 10000, which failed
    every later batch in the Python worker.
    """
    if isinstance(max_clock_skew_seconds, bool) or not isinstance(max_clock_skew_seconds, int):
        raise ValueError(
            f"max_clock_skew_seconds is {max_clock_skew_seconds!r}; give whole seconds."
        )
    if max_clock_skew_seconds < 0:
        raise ValueError(f"max_clock_skew_seconds is {max_clock_skew_seconds}; give 0 or more.")
    received = F.coalesce(F.col("kafka_timestamp").cast(TimestampType()), F.current_timestamp())
    return F.unix_micros(event_time) > F.unix_micros(received) + F.lit(
        max_clock_skew_seconds * 1_000_000
    )


def first_failing_reason(rules: Sequence[tuple[str, Column]]) -> Column:
    """The reason of the first rule whose condition holds, or NULL when the record passes them all.

    Each rule is ``(reason, violated)``, checked in order, so a rule may assume every rule before
    it passed (a range check after the "is it a number" check). A condition that evaluates to
    NULL counts as violated: a rule that forgot about NULLs quarantines records, loudly, instead
    of letting them through silently. Write each condition so that it is never NULL for a record
    the earlier rules let through.
    """
    reasons = [reason for reason, _ in rules]
    if len(set(reasons)) != len(reasons):
        raise ValueError(f"Rule reasons must be unique, got {reasons}.")
    if not rules:
        return F.lit(None).cast("string")
    first_reason, first_violated = rules[0]
    reason = F.when(F.coalesce(first_violated, F.lit(True)), F.lit(first_reason))
    for name, violated in rules[1:]:
        reason = reason.when(F.coalesce(violated, F.lit(True)), F.lit(name))
    return reason


def quarantine_rows(checked: DataFrame, pipeline: str) -> DataFrame:
    """The rejected records of ``checked`` (``reason IS NOT NULL``) as rows of ``quarantine``.

    ``checked`` has the columns of :func:`with_source` and ``reason``. Columns are exactly
    :data:`QUARANTINE_OUTPUT_COLUMNS`.
    """
    if not PIPELINE_NAME_PATTERN.fullmatch(pipeline):
        raise ValueError(
            f"Pipeline name {pipeline!r} does not fit quarantine.pipeline: use 1-64 lower-case "
            "letters, digits, '-' or '_', starting with a letter or digit."
        )
    payload = F.col("raw_payload").cast("binary")
    key = F.col("record_key").cast("binary")
    return checked.where(F.col("reason").isNotNull()).select(
        F.col("source_topic").cast("string").alias("source_topic"),
        F.col("source_partition").cast("int").alias("source_partition"),
        F.col("source_offset").cast("long").alias("source_offset"),
        _kept(payload).alias("raw_payload"),
        F.col("reason").cast("string").alias("reason"),
        F.lit(pipeline).alias("pipeline"),
        _kept(key).alias("record_key"),
        F.col("kafka_timestamp").cast(TimestampType()).alias("source_timestamp"),
        F.current_timestamp().alias("quarantined_at"),
        *_cut_off(payload, "raw_payload"),
        *_cut_off(key, "record_key"),
    )


def _kept(raw: Column) -> Column:
    """``raw`` whole up to :data:`QUARANTINE_KEEP_BYTES`, else its first that many bytes."""
    return F.when(
        F.octet_length(raw) > QUARANTINE_KEEP_BYTES, F.substring(raw, 1, QUARANTINE_KEEP_BYTES)
    ).otherwise(raw)


def _cut_off(raw: Column, name: str) -> tuple[Column, Column]:
    """``<name>_bytes`` and ``<name>_sha256`` of a value longer than it was kept, else NULLs."""
    cut = F.octet_length(raw) > QUARANTINE_KEEP_BYTES
    return (
        F.when(cut, F.octet_length(raw).cast("long")).alias(f"{name}_bytes"),
        F.when(cut, F.sha2(raw, 256)).alias(f"{name}_sha256"),
    )


def parse_event_time(column: Column) -> Column:
    """An ISO-8601 string with an offset as a TIMESTAMP (an instant, shown in the session's UTC).

    NULL when the text is not ``YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`` or names no real
    moment (30 February, 24:00, an offset beyond ±18:00). Kept to the millisecond, as the
    ``DATETIME(3)`` columns store it, so a window computed here and one computed in MariaDB over
    the stored value always agree.
    """
    parsed = F.when(column.rlike(_ISO_8601_WITH_OFFSET), column.try_cast(TimestampType()))
    return F.date_trunc("millisecond", parsed)


# See read_one_json_value. Only a payload that itself contains this mark followed by `]` and more
# text could still slip past, which no producer does by accident.
JSON_END_MARK = "streamops:end-of-record"


def read_text(raw: DataFrame) -> DataFrame:
    """The Kafka records with their source (:func:`with_source`: topic, partition, offset, raw
    payload, key, Kafka timestamp) and the payload as text: ``_utf8`` (the bytes are UTF-8) and
    ``_text``. Only rows with ``_utf8`` may be parsed further: the replacement characters in the
    text of invalid bytes would be arbitrary."""
    sourced = with_source(raw).select(*SOURCE_COLUMNS)
    text = F.col("raw_payload").cast("string")  # wraps the bytes; checked for UTF-8 next
    return sourced.withColumns(
        {"_utf8": F.coalesce(F.is_valid_utf8(text), F.lit(False)), "_text": text}
    )


def read_one_json_value(raw: DataFrame) -> DataFrame:
    """The Kafka records as :func:`read_text` gives them, the payload read as exactly one JSON
    value: ``_json_ok`` and ``_record`` (the VARIANT, NULL unless ``_json_ok``), plus the helper
    column ``_wrapped``.

    ``try_parse_json`` accepts trailing text after the first value (``{"a":1} x``); wrapping the
    payload as ``[<payload>,"<end mark>"]`` and requiring the mark second and nothing third makes
    the parser itself reject it. Invalid UTF-8 never reaches the parser.
    """
    decoded = read_text(raw)
    wrapped = decoded.withColumn(
        "_wrapped",
        F.try_parse_json(
            F.when(
                F.col("_utf8"),
                F.concat(F.lit("["), F.col("_text"), F.lit(f',"{JSON_END_MARK}"]')),
            )
        ),
    )
    one_value = (
        F.col("_wrapped").isNotNull()
        & F.coalesce(F.try_variant_get("_wrapped", "$[1]", "string") == JSON_END_MARK, F.lit(False))
        & F.try_variant_get("_wrapped", "$[2]", "variant").isNull()
    )
    return wrapped.withColumn("_json_ok", one_value).withColumn(
        "_record", F.when(F.col("_json_ok"), F.variant_get("_wrapped", "$[0]", "variant"))
    )
