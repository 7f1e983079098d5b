"""MariaDB and Redis fed from the Kafka ``alerts`` topic: the first-line path's alerts, once each.

The JVM first-line path of the alerts job (``--realtime-path kafka-sink``) writes the first state
of every threshold-1 alert to the ``alerts`` topic through Spark's Kafka sink, from a real-time
query with no Python in the path (docs/pipelines/alerts.md). Such a query can write Kafka only,
and Spark 4.2 gives it no deduplication: every matching line of a window sends a count-1 record
under the same alert id. The ``alerts_feed`` query reads those records back (those with the
:data:`spark_jobs.transforms.alerts.FIRST_LINE_HEADER` header, never the counting path's) and
puts each alert into MariaDB and Redis **once per alert id**:

* MariaDB ``alerts``: ``INSERT … ON DUPLICATE KEY UPDATE`` of nothing: the first state goes in
  only when no row is there; the counting path's growing counts always win.
* Redis: ``WATCH`` the alert's key; if it exists nothing is written, else the key, the stream
  entry, the channel message and the ``published`` counter go in one ``MULTI``. A replay, or
  the counting path having published first, finds the key and writes nothing.

MariaDB goes first: the counting path publishes an alert only when its state differs from the
``alerts`` row, so once the row is there it does not publish the same first state again. The
payload written to Redis is the state re-encoded by :func:`spark_jobs.sinks.alerts.encode_alert`,
byte for byte what the counting path writes for the same state.

Of several first-line records of one alert in a batch, the one of the earliest line is kept
(ties: the record first on the topic; one alert's records share a key, so a partition), which is
the counting path's first state when it has one line.
A record that is not an alert of this path (unparseable JSON, a count other than 1) is logged
and skipped: it stays on the topic, and this query is not the alert's system of record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import mariadb
import redis
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_jobs.sinks.alerts import (
    ALERT_COLUMNS,
    ALERTS_TABLE,
    DEFAULT_ALERT_TTL_SECONDS,
    DEFAULT_STREAM_MAXLEN,
    alert_row,
    encode_alert,
    fit_sample,
)
from spark_jobs.sinks.mariadb import upsert_sql
from spark_jobs.transforms.alerts import FIRST_LINE_HEADER, Alert
from streamops.config import Settings
from streamops.contract.alerts import alert_id
from streamops.contract.redis_keys import ALERTS_KEY_PREFIX, REALTIME_STATS_KEY, alert_key
from streamops.supervision.fence import connect, redis_client

log = logging.getLogger(__name__)

BatchWriter = Callable[[DataFrame, int], None]


def first_line_records(records: DataFrame) -> DataFrame:
    """The ``alerts`` topic's records of the first-line path (read with ``includeHeaders``), as
    ``payload`` strings."""
    name, value = FIRST_LINE_HEADER
    marked = F.exists(
        F.col("headers"),
        lambda header: (
            (header["key"] == F.lit(name)) & (F.decode(header["value"], "UTF-8") == F.lit(value))
        ),
    )
    return records.where(marked).select(
        F.col("value").cast("string").alias("payload"), "partition", "offset"
    )


def decode_first_line_alert(payload: str) -> Alert:
    """The alert of one first-line record; :class:`ValueError` when it is not one."""
    try:
        data = json.loads(payload)
        start = _instant(data["window_start"])
        seconds = int(data["window_seconds"])
        alert = Alert(
            alert_id=str(data["alert_id"]),
            rule_id=str(data["rule_id"]),
            level=str(data["level"]),
            service=None if data["service"] is None else str(data["service"]),
            window_start=start,
            window_end=_instant(data["window_end"]),
            event_count=int(data["event_count"]),
            threshold_count=1,
            first_seen=_instant(data["first_seen"]),
            last_seen=_instant(data["last_seen"]),
            sample_message=fit_sample(data["sample_message"]),
        )
    except (TypeError, KeyError, ValueError) as error:
        raise ValueError(f"not a first-line alert record ({error!r}): {payload[:200]!r}") from None
    if alert.event_count != 1 or alert.first_seen != alert.last_seen:
        raise ValueError(f"a first-line record holds one line, this one {payload[:200]!r}")
    if alert.window_end - alert.window_start != timedelta(seconds=seconds) or alert.alert_id != (
        alert_id(alert.rule_id, start, seconds)
    ):
        raise ValueError(f"the record's id or window does not add up: {payload[:200]!r}")
    return alert


def first_states(records: Iterable[tuple[str, int, int]]) -> tuple[list[Alert], int]:
    """One alert per id from ``(payload, partition, offset)`` records, the earliest line's (ties:
    the earliest record); and how many records were not first-line alerts."""
    kept: dict[str, tuple[tuple[datetime, int, int], Alert]] = {}
    skipped = 0
    for payload, partition, offset in records:
        try:
            alert = decode_first_line_alert(payload)
        except ValueError as error:
            log.error("alerts feed: skipping the record at %s/%s: %s", partition, offset, error)
            skipped += 1
            continue
        order = (alert.first_seen, partition, offset)
        held = kept.get(alert.alert_id)
        if held is None or order < held[0]:
            kept[alert.alert_id] = (order, alert)
    alerts = [alert for _, alert in kept.values()]
    return sorted(alerts, key=lambda a: (a.window_start, a.rule_id)), skipped


def insert_first_states(settings: Settings, alerts: Sequence[Alert]) -> None:
    """MariaDB ``alerts``: each alert's row unless one is there already."""
    if not alerts:
        return
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        try:
            cursor.executemany(
                upsert_sql(ALERTS_TABLE, ("alert_id",), ALERT_COLUMNS, on_duplicate="ignore"),
                [alert_row(alert) for alert in alerts],
            )
            connection.commit()
        except mariadb.Error:
            connection.rollback()
            raise


class FirstStatePublisher:
    """Redis: each alert's key, stream entry and channel message, once per alert id."""

    def __init__(
        self,
        settings: Settings,
        *,
        key_prefix: str = ALERTS_KEY_PREFIX,
        ttl_seconds: int = DEFAULT_ALERT_TTL_SECONDS,
        stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
    ) -> None:
        self.settings = settings
        self.key_prefix = key_prefix
        self.ttl_seconds = ttl_seconds
        self.stream_maxlen = stream_maxlen
        self.stats_key = REALTIME_STATS_KEY.replace(ALERTS_KEY_PREFIX, key_prefix, 1)
        self._client: redis.Redis | None = None

    def publish(self, alerts: Sequence[Alert]) -> list[Alert]:
        """The alerts this call published (the others' keys were there already)."""
        if self._client is None:
            self._client = redis_client(self.settings, socket_timeout=10, socket_connect_timeout=5)
        return [alert for alert in alerts if self._publish_if_absent(self._client, alert)]

    def _publish_if_absent(self, client: redis.Redis, alert: Alert) -> bool:
        payload = encode_alert(alert)
        key = alert_key(alert.alert_id, self.key_prefix)
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                if pipe.exists(key):
                    return False
                pipe.multi()
                pipe.set(key, payload, ex=self.ttl_seconds)
                pipe.xadd(
                    f"{self.key_prefix}:stream",
                    {"alert_id": alert.alert_id, "alert": payload},
                    maxlen=self.stream_maxlen,
                    approximate=True,
                )
                pipe.publish(f"{self.key_prefix}:live", payload)
                pipe.hincrby(self.stats_key, "published", 1)
                pipe.hset(
                    self.stats_key,
                    mapping={
                        "last_alert_id": alert.alert_id,
                        "last_published_at": datetime.now(UTC).timestamp(),
                    },
                )
                pipe.execute()
            except redis.WatchError:
                return False  # the key appeared meanwhile: the counting path was first
        return True


def alerts_feed_writer(
    settings: Settings, publisher: FirstStatePublisher | None = None
) -> BatchWriter:
    """The ``foreachBatch`` writer of the ``alerts_feed`` query; see the module."""
    publisher = publisher or FirstStatePublisher(settings)

    def write(batch: DataFrame, batch_id: int) -> None:
        records = [
            (row.payload, int(row.partition), int(row.offset))
            for row in first_line_records(batch).collect()
        ]
        alerts, skipped = first_states(records)
        insert_first_states(settings, alerts)
        published = publisher.publish(alerts)
        if alerts or skipped:
            log.info(
                "alerts feed batch %s: %s records, %s alerts, %s published first, %s skipped",
                batch_id,
                len(records),
                len(alerts),
                len(published),
                skipped,
            )

    return write


def _instant(text: Any) -> datetime:
    """A wire timestamp (``2026-11-24T14:03:05.120Z``) as naive UTC."""
    if not isinstance(text, str) or not text.endswith("Z"):
        raise ValueError(f"not a UTC timestamp: {text!r}")
    return datetime.fromisoformat(text[:-1])
