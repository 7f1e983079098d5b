"""Counting error-log lines and matching the counts against alert rules.

Rules (and so window lengths) change while the query runs, but a streaming aggregation's windows
are fixed when the query starts. So Spark keeps one aggregate, per service, level and *second* of
event time (:func:`per_second_counts`); any tumbling window of ``W`` whole seconds, aligned to
the epoch as Spark's ``window()`` aligns it, is the sum of its ``W`` seconds
(:func:`window_start`), which the sink computes in MariaDB for every length the current rules
use. Matching those window counts against the rules (:func:`match_rules`) is plain Python on the
driver: a micro-batch touches a few hundred windows at most.

An alert is one rule and one window. Its id is a hash of exactly that
(:func:`alert_id`), so the same rule and window always give the same id, in any process, after
any replay; :func:`alert_id_column` computes the same id in Spark.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from streamops.contract.alerts import AlertRule, alert_id
from streamops.contract.times import iso_utc

SECOND_COUNT_COLUMNS = (
    "service",
    "level",
    "second_start",
    "event_count",
    "first_seen",
    "last_seen",
    "sample_message",
)
# Enough to recognise the failure; a traceback of megabytes stays in the logs, not in every alert.
SAMPLE_MESSAGE_MAX_CHARS = 1000


@dataclass(frozen=True)
class WindowCount:
    """One row of ``error_counts``: lines of one service and level in one window."""

    service: str
    level: str
    window_seconds: int
    window_start: datetime
    event_count: int
    first_seen: datetime
    last_seen: datetime
    sample_message: str | None = None


@dataclass(frozen=True)
class Alert:
    """One row of ``alerts``; :meth:`payload` is what goes to Kafka and Redis."""

    alert_id: str
    rule_id: str
    level: str
    service: str | None
    window_start: datetime
    window_end: datetime
    event_count: int
    threshold_count: int
    first_seen: datetime
    last_seen: datetime
    sample_message: str | None

    def payload(self) -> dict[str, object]:
        """Everything that defines the alert's state, and nothing else (no wall-clock time):
        the same state always serialises to the same bytes, so a re-send after a crash is a
        byte-for-byte copy, never a different alert under the same key."""
        return {
            "alert_id": self.alert_id,
            "rule_id": self.rule_id,
            "level": self.level,
            "service": self.service,
            "window_start": iso_utc(self.window_start),
            "window_end": iso_utc(self.window_end),
            "window_seconds": int((self.window_end - self.window_start).total_seconds()),
            "event_count": self.event_count,
            "first_seen": iso_utc(self.first_seen),
            "last_seen": iso_utc(self.last_seen),
            "sample_message": self.sample_message,
        }


def per_second_counts(lines: DataFrame, watermark: str) -> DataFrame:
    """Valid lines counted per service, level and second of event time (a streaming aggregate).

    Columns are :data:`SECOND_COUNT_COLUMNS`. In update mode each micro-batch emits the absolute
    values of every second that changed; the watermark bounds the state (a line older than it is
    dropped from the counts, as every late line is in a windowed aggregate). The sample is the
    message of the earliest line of the second, ties broken by Kafka position, so it does not
    depend on how lines were split into micro-batches.
    """
    order = F.struct("event_time", "source_partition", "source_offset")
    return (
        lines.withWatermark("event_time", watermark)
        .groupBy("service", "level", F.window("event_time", "1 second").alias("second"))
        .agg(
            F.count(F.lit(1)).alias("event_count"),
            F.min("event_time").alias("first_seen"),
            F.max("event_time").alias("last_seen"),
            F.min_by(F.substring("message", 1, SAMPLE_MESSAGE_MAX_CHARS), order).alias(
                "sample_message"
            ),
        )
        .select(
            "service",
            "level",
            F.col("second.start").alias("second_start"),
            "event_count",
            "first_seen",
            "last_seen",
            "sample_message",
        )
    )


def alert_id_column(rule_id: Column, window_start: Column, window_seconds: Column) -> Column:
    """:func:`alert_id` as a Spark column (``window_start`` a TIMESTAMP in the session's UTC)."""
    iso = F.date_format(window_start, "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'")
    key = F.concat_ws("|", rule_id, iso, window_seconds.cast("string"))
    return F.sha2(F.encode(key, "UTF-8"), 256)


def window_lengths(rules: Iterable[AlertRule]) -> list[int]:
    """The distinct window lengths of the enabled rules, sorted."""
    return sorted({rule.window_seconds for rule in rules if rule.enabled})


def rule_matches(rule: AlertRule, count: WindowCount) -> bool:
    """Whether ``count``'s lines are the ones ``rule`` counts (not whether it crossed)."""
    return (
        rule.enabled
        and rule.level == count.level
        and rule.window_seconds == count.window_seconds
        and (rule.service is None or rule.service == count.service)
    )


def match_rules(rules: Sequence[AlertRule], counts: Iterable[WindowCount]) -> list[Alert]:
    """The alerts of ``rules`` over ``counts``: one per rule and window whose count reaches the
    rule's threshold. A rule without a service sums every service's lines in the window (and its
    alert has no service); ``counts`` must then hold every service of the windows concerned.

    The sample message is the one of the earliest line (ties: the service sorting first), so the
    result depends on the counts only, not on their order. Sorted by window start and rule id.
    """
    totals: dict[tuple[str, datetime], list[WindowCount]] = {}
    by_rule = {rule.rule_id: rule for rule in rules}
    for count in counts:
        for rule in rules:
            if rule_matches(rule, count):
                totals.setdefault((rule.rule_id, count.window_start), []).append(count)
    alerts = []
    for (rule_id, start), parts in totals.items():
        rule = by_rule[rule_id]
        event_count = sum(part.event_count for part in parts)
        if event_count < rule.threshold_count:
            continue
        earliest = min(parts, key=lambda part: (part.first_seen, part.service))
        alerts.append(
            Alert(
                alert_id=alert_id(rule.rule_id, start, rule.window_seconds),
                rule_id=rule.rule_id,
                level=rule.level,
                service=rule.service,
                window_start=start,
                window_end=start + timedelta(seconds=rule.window_seconds),
                event_count=event_count,
                threshold_count=rule.threshold_count,
                first_seen=earliest.first_seen,
                last_seen=max(part.last_seen for part in parts),
                sample_message=earliest.sample_message,
            )
        )
    return sorted(alerts, key=lambda alert: (alert.window_start, alert.rule_id))


# --- the first-line path in the JVM (real-time mode) ---------------------------------------------

# The Kafka header that marks an `alerts` record of the first-line path: the feed
# (spark_jobs/sinks/alerts_feed.py) reads only those; the counting path's records carry none.
FIRST_LINE_HEADER = ("streamops-path", "first-line")
_ISO_MS = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"


def first_line_alert_records(lines: DataFrame, rules: DataFrame) -> DataFrame:
    """The Kafka records (``key``, ``value``, ``headers``) of the alerts that ``lines`` open under
    the threshold-1 ``rules``: one per line and matching rule, built in Spark SQL only, so in a
    real-time query no Python worker stands between a line and its record (the rules side is read
    once per batch; docs/pipelines/alerts.md).

    ``lines`` holds valid lines (``event_time`` a TIMESTAMP read in the session's UTC, ``level``,
    ``service``, ``message``); ``rules`` has the columns of ``RULES_SCHEMA``
    (spark_jobs/common/rules_source.py) and is small: it is broadcast, the one join real-time mode
    allows in Spark 4.2. ``key`` is the alert id and
    ``value`` the alert's first state as ``first_line_alerts``
    (spark_jobs/sinks/alerts_realtime.py) gives it (count 1, first and last seen = the line):
    the same JSON as ``encode_alert`` for any message without control
    characters, which JSON may escape in two spellings. Every later matching line of the window
    gives another count-1 record under the same key: real-time mode in Spark 4.2 allows no
    deduplication, so consumers keep the first of each key (the feed does).
    """
    matching = rules.where(F.col("threshold_count") == 1).select(
        "rule_id",
        F.col("level").alias("_rule_level"),
        F.col("service").alias("_rule_service"),
        F.col("window_seconds").cast("int").alias("_window_seconds"),
    )
    micros = F.unix_micros(F.col("event_time"))
    length = F.col("_window_seconds")
    start = F.timestamp_micros(micros - F.pmod(micros, length.cast("long") * 1_000_000))
    end = F.timestamp_micros(F.unix_micros(start) + length.cast("long") * 1_000_000)
    joined = lines.join(
        F.broadcast(matching),
        (F.col("level") == F.col("_rule_level"))
        & (F.col("_rule_service").isNull() | (F.col("_rule_service") == F.col("service"))),
        "inner",
    ).withColumn("_alert_id", alert_id_column(F.col("rule_id"), start, length))
    seen = F.date_format(F.col("event_time"), _ISO_MS)
    # Fields in sorted order: encode_alert sorts its keys.
    payload = F.struct(
        F.col("_alert_id").alias("alert_id"),
        F.lit(1).alias("event_count"),
        seen.alias("first_seen"),
        seen.alias("last_seen"),
        F.col("_rule_level").alias("level"),
        F.col("rule_id"),
        F.substring(F.col("message"), 1, SAMPLE_MESSAGE_MAX_CHARS).alias("sample_message"),
        F.col("_rule_service").alias("service"),
        F.date_format(end, _ISO_MS).alias("window_end"),
        length.alias("window_seconds"),
        F.date_format(start, _ISO_MS).alias("window_start"),
    )
    name, value = FIRST_LINE_HEADER
    header = F.struct(F.lit(name).alias("key"), F.lit(value).cast("binary").alias("value"))
    return joined.select(
        F.col("_alert_id").alias("key"),
        F.to_json(payload, {"ignoreNullFields": "false"}).alias("value"),
        F.array(header).alias("headers"),
    )
