"""Transforms of the alerts pipeline's input: one ``error-logs`` CSV line per Kafka record
(``timestamp,level,service,message``, shared/CONTRACT.md) checked, parsed and normalised.

How a line is read, and why:

* RFC 4180 is checked with one regular expression before parsing. Spark's CSV parser is lenient:
  it reads an unterminated quote, a quote in the middle of an unquoted field or a stray character
  after a closing quote as *some* value, so a broken line would pass with a mangled message. The
  expression is written with possessive quantifiers only, so Java's regex engine neither
  backtracks nor recurses per character: a message of megabytes is checked in linear time
  without a stack overflow.
* The number of fields is counted on the same text with the quoted fields removed (commas
  inside quotes do not separate). ``from_csv`` cannot tell ``a,b,c`` from ``a,b,c,`` (both give a
  NULL fourth field) and silently drops a fifth.
* ``from_csv`` with an explicit schema then reads the fields, with ``escape='"'`` so a doubled
  quote is one quote (Spark's default escape is a backslash, which is not RFC 4180). Quoted
  newlines and commas are kept as they are. An empty field is the empty string, never NULL.
* A single trailing line break (``\\n`` or ``\\r\\n``) is ignored, as Python's ``csv`` does.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from spark_jobs.transforms.cleansing import (
    DEFAULT_MAX_CLOCK_SKEW_SECONDS,
    EVENT_TIME_IN_FUTURE,
    SOURCE_COLUMNS,
    event_time_in_future,
    first_failing_reason,
    parse_event_time,
    quarantine_rows,
    read_text,
)
from streamops.contract.error_logs import LEVEL_ALIASES, SERVICE_MAX_LENGTH

PIPELINE = "alerts"
ERROR_LOG_FIELDS = ("timestamp", "level", "service", "message")
ERROR_LOG_SCHEMA = StructType(
    [StructField(name, StringType(), nullable=True) for name in ERROR_LOG_FIELDS]
)
CSV_OPTIONS = {"escape": '"', "quote": '"', "sep": ",", "mode": "PERMISSIVE"}

CHECKED_COLUMNS = (
    *SOURCE_COLUMNS,
    "event_time",
    "level",
    "service",
    "message",
    "reason",
)
VALID_LINE_COLUMNS = (
    "event_time",
    "level",
    "service",
    "message",
    "source_partition",
    "source_offset",
    "kafka_timestamp",
)

# One RFC 4180 field: quoted (any text, quotes doubled) or unquoted (no quote, comma or line break).
_QUOTED = r'"(?:[^"]++|"")*+"'
_UNQUOTED = r'[^",\r\n]*+'
_FIELD = f"(?:{_QUOTED}|{_UNQUOTED})"
_RFC4180_RECORD = f"^{_FIELD}(?:,{_FIELD})*+\\z"
_TRAILING_LINE_BREAK = r"\r?\n\z"
# Blank as Python's str.strip() sees it (the generator's validator), as in the orders pipeline.
_BLANK = r"(?U)^[\s\x1c-\x1f]*$"
_DATETIME_YEARS = (1000, 9999)  # DATETIME's range


def check_error_logs(
    raw: DataFrame, max_clock_skew_seconds: int = DEFAULT_MAX_CLOCK_SKEW_SECONDS
) -> DataFrame:
    """Every Kafka record with its parsed fields and ``reason`` (NULL for a valid line, else the
    first rule it breaks). Columns are :data:`CHECKED_COLUMNS`.

    Reasons, in the order checked: ``invalid_utf8``, ``csv_bad_quoting``,
    ``csv_wrong_column_count``, ``bad_timestamp``, ``timestamp_out_of_range``, ``unknown_level``,
    ``service_empty``, ``service_too_long``, and ``event_time_in_future`` (the timestamp is more
    than ``max_clock_skew_seconds`` after the Kafka timestamp). ``level`` is normalised (upper
    case, ``WARNING`` → ``WARN``, ``FATAL`` → ``CRITICAL``) and ``event_time`` is the UTC instant,
    to the millisecond.
    """
    decoded = read_text(raw).withColumn(
        "_line", F.when(F.col("_utf8"), F.regexp_replace("_text", _TRAILING_LINE_BREAK, ""))
    )
    shaped = decoded.withColumns(
        {
            "_rfc4180": F.coalesce(F.col("_line").rlike(_RFC4180_RECORD), F.lit(False)),
            "_field_count": _field_count(F.col("_line")),
        }
    )
    parsed = shaped.withColumn(
        "_fields",
        F.when(
            F.col("_rfc4180") & (F.col("_field_count") == len(ERROR_LOG_FIELDS)),
            F.from_csv(F.col("_line"), ERROR_LOG_SCHEMA.simpleString(), CSV_OPTIONS),
        ),
    )
    fields = parsed.withColumns(
        {
            f"_{name}": F.coalesce(F.col("_fields").getField(name), F.lit(""))
            for name in ERROR_LOG_FIELDS
        }
    ).withColumns(
        {
            "_event_time": parse_event_time(F.col("_timestamp")),
            "_level": normalise_level(F.col("_level")),
        }
    )
    return fields.select(
        *SOURCE_COLUMNS,
        F.col("_event_time").alias("event_time"),
        F.col("_level").alias("level"),
        F.col("_service").alias("service"),
        F.col("_message").alias("message"),
        first_failing_reason(_line_rules(max_clock_skew_seconds)).alias("reason"),
    )


def valid_lines(checked: DataFrame) -> DataFrame:
    """The valid lines of :func:`check_error_logs`; columns are :data:`VALID_LINE_COLUMNS`."""
    return checked.where(F.col("reason").isNull()).select(*VALID_LINE_COLUMNS)


def rejected_lines(checked: DataFrame) -> DataFrame:
    """The rejected lines of :func:`check_error_logs` as rows of ``quarantine``."""
    return quarantine_rows(checked, PIPELINE)


def normalise_level(level: Column) -> Column:
    """The canonical level of a wire spelling (case-insensitive), NULL for an unknown one.

    No trimming: ``" ERROR"`` is not a level, as in the contract's validator.
    """
    mapping = F.create_map(*(F.lit(part) for pair in LEVEL_ALIASES.items() for part in pair))
    return F.element_at(mapping, F.upper(level))


def _field_count(line: Column) -> Column:
    """Fields of an RFC 4180 line: one more than the commas outside quoted fields."""
    unquoted = F.regexp_replace(line, _QUOTED, "")
    return F.length(unquoted) - F.length(F.replace(unquoted, F.lit(","), F.lit(""))) + 1


def _line_rules(max_clock_skew_seconds: int) -> list[tuple[str, Column]]:
    year = F.year(F.col("_event_time"))
    return [
        ("invalid_utf8", ~F.col("_utf8")),
        ("csv_bad_quoting", ~F.col("_rfc4180")),
        ("csv_wrong_column_count", F.col("_field_count") != len(ERROR_LOG_FIELDS)),
        ("bad_timestamp", F.col("_event_time").isNull()),
        ("timestamp_out_of_range", ~year.between(*_DATETIME_YEARS)),
        ("unknown_level", F.col("_level").isNull()),
        ("service_empty", F.col("_service").rlike(_BLANK)),
        ("service_too_long", F.char_length(F.col("_service")) > SERVICE_MAX_LENGTH),
        (EVENT_TIME_IN_FUTURE, event_time_in_future(F.col("_event_time"), max_clock_skew_seconds)),
    ]
