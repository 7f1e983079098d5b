"""Sinks of the alerts pipeline: per-second and windowed counts in MariaDB, and alerts in MariaDB,
on the Kafka ``alerts`` topic and in Redis (a stream, a key per alert and a pub/sub channel).

:func:`alerts_writer` is the ``foreachBatch`` writer of the per-second aggregate
(:func:`spark_jobs.transforms.alerts.per_second_counts`, update mode). Per micro-batch, on the
driver (a batch changes a few hundred seconds at most):

1. Upsert the changed seconds into ``error_counts_1s`` (absolute values).
2. For every (level, window length) an enabled rule uses, recompute each window the batch
   touched from its seconds, for every service, and upsert it into ``error_counts``.
3. Match the windows against the rules; an alert whose state differs from its ``alerts`` row
   (or has none) is *published*: Redis first (key, stream, channel in one ``MULTI``), then Kafka
   (idempotent producer, flushed, delivery checked), and only then upserted into ``alerts``.
   Redis first: the optional real-time path (spark_jobs/sinks/alerts_realtime.py) publishes an
   alert's first state only if it can create the Redis key, so it never sends an older state
   after this path has sent a newer one.

Why this order is replay-safe: every write is an absolute upsert by key, and an alert id is a
hash of rule and window, so a replayed batch can only rewrite the same rows and ids. ``alerts`` is
written last, so a crash anywhere before it leaves the alert "changed" and the replay publishes
it again: a consumer may see a re-send, byte for byte the same payload (it is a function of the
alert's state alone), never a second alert and never a lost one. A replay after ``alerts`` was
written finds nothing changed and publishes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import mariadb
import redis
from pyspark.sql import DataFrame

from spark_jobs.common.rules import RuleCache
from spark_jobs.sinks import with_utc_wall_clock_timestamps
from spark_jobs.sinks.mariadb import (
    TEXT_MAX_BYTES,
    executemany_in_chunks,
    truncate_utf8,
    upsert_sql,
)
from spark_jobs.transforms.alerts import SECOND_COUNT_COLUMNS, Alert, WindowCount, match_rules
from streamops.clients import kafka_producer
from streamops.config import Settings
from streamops.contract.alerts import AlertRule, window_start
from streamops.contract.redis_keys import (
    ALERTS_CHANNEL,
    ALERTS_KEY_PREFIX,
    ALERTS_STREAM,
    alert_key,
)
from streamops.contract.topics import ALERTS_TOPIC
from streamops.supervision.fence import connect, redis_client

log = logging.getLogger(__name__)

BatchWriter = Callable[[DataFrame, int], None]

# Roughly the last 10,000 alert states; XADD trims with `~`, which is cheap.
DEFAULT_STREAM_MAXLEN = 10_000
DEFAULT_ALERT_TTL_SECONDS = 24 * 3600
KAFKA_FLUSH_TIMEOUT_SECONDS = 30.0

SECONDS_TABLE = "error_counts_1s"
SECONDS_KEY = ("service", "level", "second_start")
WINDOWS_TABLE = "error_counts"
WINDOWS_KEY = ("service", "level", "window_seconds", "window_start")
WINDOW_COLUMNS = (
    "service",
    "level",
    "window_seconds",
    "window_start",
    "window_end",
    "event_count",
    "first_seen",
    "last_seen",
)
ALERTS_TABLE = "alerts"
ALERT_COLUMNS = (
    "alert_id",
    "rule_id",
    "level",
    "service",
    "window_start",
    "window_end",
    "event_count",
    "sample_message",
    "first_seen",
    "last_seen",
)
# What decides whether an alert changed (the rest follows from its id).
_STATE_COLUMNS = ("event_count", "first_seen", "last_seen", "sample_message")
_SELECT_SECONDS = (
    "SELECT service, level, second_start, event_count, first_seen, last_seen, sample_message "
    f"FROM {SECONDS_TABLE} WHERE level = ? AND second_start >= ? AND second_start < ?"
)


@dataclass(frozen=True)
class SecondCount:
    service: str
    level: str
    second_start: datetime
    event_count: int
    first_seen: datetime
    last_seen: datetime
    sample_message: str | None


@dataclass(frozen=True)
class BatchOutcome:
    """What one batch did, for logs, tests and the benchmark."""

    seconds: int
    windows: int
    alerts: list[Alert]
    published: list[Alert]


class AlertPublisher:
    """Kafka ``alerts`` (idempotent producer) and Redis, connected on first use and reused."""

    def __init__(
        self,
        settings: Settings,
        *,
        topic: str = ALERTS_TOPIC,
        stream: str = ALERTS_STREAM,
        channel: str = ALERTS_CHANNEL,
        key_prefix: str = ALERTS_KEY_PREFIX,
        stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
        ttl_seconds: int = DEFAULT_ALERT_TTL_SECONDS,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.stream = stream
        self.channel = channel
        self.key_prefix = key_prefix
        self.stream_maxlen = stream_maxlen
        self.ttl_seconds = ttl_seconds
        self._producer: Any = None
        self._redis: redis.Redis | None = None

    def publish(self, alerts: Sequence[Alert]) -> None:
        if not alerts:
            return
        payloads = [(alert.alert_id, encode_alert(alert)) for alert in alerts]
        self._to_redis(payloads)
        self._to_kafka(payloads)

    def alert_key(self, alert_id: str) -> str:
        return alert_key(alert_id, self.key_prefix)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(KAFKA_FLUSH_TIMEOUT_SECONDS)
            self._producer = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    def _to_kafka(self, payloads: Sequence[tuple[str, str]]) -> None:
        from confluent_kafka import KafkaException

        if self._producer is None:
            # Idempotence: the broker drops the producer's own retries, so a retried send after a
            # timeout never writes a second copy (re-sends after a driver crash remain possible).
            self._producer = kafka_producer(
                self.settings,
                {
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 0,
                    "compression.type": "lz4",
                },
            )
        failures: list[str] = []

        def delivered(error: Any, message: Any) -> None:
            if error is not None:
                failures.append(str(error))

        for alert_id, payload in payloads:
            self._producer.produce(
                self.topic, key=alert_id.encode(), value=payload.encode(), on_delivery=delivered
            )
        remaining = self._producer.flush(KAFKA_FLUSH_TIMEOUT_SECONDS)
        if remaining or failures:
            # Failing the batch makes Spark retry it, and the alerts are still "changed" then.
            raise KafkaException(
                f"{len(failures)} alerts not delivered to {self.topic!r}, {remaining} still "
                f"queued after {KAFKA_FLUSH_TIMEOUT_SECONDS:.0f} s: {failures[:3]}"
            )

    def _to_redis(self, payloads: Sequence[tuple[str, str]]) -> None:
        if self._redis is None:
            self._redis = redis_client(self.settings, socket_timeout=10, socket_connect_timeout=5)
        with self._redis.pipeline(transaction=True) as transaction:
            for alert_id, payload in payloads:
                transaction.set(self.alert_key(alert_id), payload, ex=self.ttl_seconds)
                transaction.xadd(
                    self.stream,
                    {"alert_id": alert_id, "alert": payload},
                    maxlen=self.stream_maxlen,
                    approximate=True,
                )
                transaction.publish(self.channel, payload)
            transaction.execute()


def encode_alert(alert: Alert) -> str:
    """Compact JSON with sorted keys: the same alert state is always the same bytes."""
    return json.dumps(alert.payload(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def alerts_writer(
    settings: Settings,
    rules: RuleCache,
    publisher: AlertPublisher | None = None,
    *,
    on_batch: Callable[[int, BatchOutcome], None] | None = None,
) -> BatchWriter:
    """The ``foreachBatch`` writer of the per-second aggregate; see the module."""
    publisher = publisher or AlertPublisher(settings)

    def write(batch: DataFrame, batch_id: int) -> None:
        rows = with_utc_wall_clock_timestamps(batch.select(*SECOND_COUNT_COLUMNS)).collect()
        seconds = [
            SecondCount(
                service=row.service,
                level=row.level,
                second_start=row.second_start,
                event_count=int(row.event_count),
                first_seen=row.first_seen,
                last_seen=row.last_seen,
                sample_message=fit_sample(row.sample_message),
            )
            for row in rows
        ]
        outcome = write_seconds(settings, rules.current(), publisher, seconds)
        if outcome.published:
            log.info("batch %s: %s alerts published", batch_id, len(outcome.published))
        if on_batch is not None:
            on_batch(batch_id, outcome)

    return write


def write_seconds(
    settings: Settings,
    rules: Sequence[AlertRule],
    publisher: AlertPublisher,
    seconds: Sequence[SecondCount],
) -> BatchOutcome:
    """Steps 1–3 of the module for one batch of changed seconds."""
    if not seconds:
        return BatchOutcome(0, 0, [], [])
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        try:
            # In chunks of one transaction: a replayed backlog changes many seconds, and one
            # executemany over all of them could pass max_allowed_packet.
            executemany_in_chunks(
                cursor,
                upsert_sql(SECONDS_TABLE, SECONDS_KEY, SECOND_COUNT_COLUMNS),
                (_second_row(second) for second in seconds),
            )
            connection.commit()
            windows = _recompute_windows(cursor, rules, seconds)
            executemany_in_chunks(
                cursor,
                upsert_sql(WINDOWS_TABLE, WINDOWS_KEY, WINDOW_COLUMNS),
                (_window_row(window) for window in windows),
            )
            connection.commit()
            alerts = match_rules(rules, windows)
            changed = _changed(cursor, alerts)
            connection.commit()  # ends the read snapshot before the slow part
        except mariadb.Error:
            connection.rollback()
            raise
        publisher.publish(changed)
        if changed:
            try:
                executemany_in_chunks(
                    cursor,
                    upsert_sql(ALERTS_TABLE, ("alert_id",), ALERT_COLUMNS),
                    (alert_row(alert) for alert in changed),
                )
                connection.commit()
            except mariadb.Error:
                connection.rollback()
                raise
    return BatchOutcome(len(seconds), len(windows), alerts, changed)


def _recompute_windows(
    cursor: mariadb.Cursor, rules: Sequence[AlertRule], seconds: Sequence[SecondCount]
) -> list[WindowCount]:
    """Every window (any service) of a rule's (level, length) that holds a changed second."""
    lengths_by_level: dict[str, set[int]] = {}
    for rule in rules:
        if rule.enabled:
            lengths_by_level.setdefault(rule.level, set()).add(rule.window_seconds)
    touched: dict[str, set[tuple[int, datetime]]] = {}
    for second in seconds:
        for length in lengths_by_level.get(second.level, ()):
            touched.setdefault(second.level, set()).add(
                (length, window_start(second.second_start, length))
            )
    windows: list[WindowCount] = []
    for level, keys in sorted(touched.items()):
        low = min(start for _, start in keys)
        high = max(start + timedelta(seconds=length) for length, start in keys)
        # One range read per level; a batch's seconds are close together in event time.
        cursor.execute(_SELECT_SECONDS, (level, low, high))
        stored = [SecondCount(*row) for row in cursor.fetchall()]
        windows.extend(_sum_windows(level, keys, stored))
    return windows


def _sum_windows(
    level: str, keys: Iterable[tuple[int, datetime]], stored: Sequence[SecondCount]
) -> list[WindowCount]:
    wanted = set(keys)
    parts: dict[tuple[str, int, datetime], list[SecondCount]] = {}
    for length in sorted({length for length, _ in wanted}):
        for second in stored:
            start = window_start(second.second_start, length)
            if (length, start) in wanted:
                parts.setdefault((second.service, length, start), []).append(second)
    windows = []
    for (service, length, start), items in sorted(parts.items()):
        earliest = min(items, key=lambda item: item.first_seen)
        windows.append(
            WindowCount(
                service=service,
                level=level,
                window_seconds=length,
                window_start=start,
                event_count=sum(item.event_count for item in items),
                first_seen=earliest.first_seen,
                last_seen=max(item.last_seen for item in items),
                sample_message=earliest.sample_message,
            )
        )
    return windows


def _changed(cursor: mariadb.Cursor, alerts: Sequence[Alert]) -> list[Alert]:
    if not alerts:
        return []
    ids = [alert.alert_id for alert in alerts]
    cursor.execute(
        f"SELECT alert_id, {', '.join(_STATE_COLUMNS)} FROM {ALERTS_TABLE} "
        f"WHERE alert_id IN ({', '.join('?' for _ in ids)})",
        ids,
    )
    stored = {row[0]: tuple(row[1:]) for row in cursor.fetchall()}
    return [
        alert
        for alert in alerts
        if stored.get(alert.alert_id)
        != (alert.event_count, alert.first_seen, alert.last_seen, alert.sample_message)
    ]


def fit_sample(message: str | None) -> str | None:
    # Display only, so cut rather than fail: sample_message is TEXT (65,535 bytes) in
    # error_counts_1s and alerts, and in strict mode a longer value fails the whole batch, on
    # every retry. The transform keeps SAMPLE_MESSAGE_MAX_CHARS characters, which fit; this
    # holds whatever it keeps. Cut here, before anything is compared or published, so MariaDB,
    # Kafka and Redis carry the same text and a replay finds the alert unchanged.
    return None if message is None else truncate_utf8(message, TEXT_MAX_BYTES)


def _second_row(second: SecondCount) -> tuple[Any, ...]:
    return (
        second.service,
        second.level,
        second.second_start,
        second.event_count,
        second.first_seen,
        second.last_seen,
        second.sample_message,
    )


def _window_row(window: WindowCount) -> tuple[Any, ...]:
    return (
        window.service,
        window.level,
        window.window_seconds,
        window.window_start,
        window.window_start + timedelta(seconds=window.window_seconds),
        window.event_count,
        window.first_seen,
        window.last_seen,
    )


def alert_row(alert: Alert) -> tuple[Any, ...]:
    return (
        alert.alert_id,
        alert.rule_id,
        alert.level,
        alert.service,
        alert.window_start,
        alert.window_end,
        alert.event_count,
        alert.sample_message,
        alert.first_seen,
        alert.last_seen,
    )
