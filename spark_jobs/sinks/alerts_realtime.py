"""The optional real-time fast path of the alerts pipeline: first-line alerts in milliseconds.

Spark 4.2's real-time mode (``trigger(realTime=...)``) runs stateless queries with long-running
tasks and millisecond latency, but it accepts neither ``foreachBatch`` nor the stateful
aggregation the counting query needs (docs/pipelines/alerts.md). One kind of rule needs no
state: a rule whose ``threshold_count`` is 1 ("any CRITICAL of payments-api") is crossed by the
first matching line of a window. :class:`FirstLineAlertWriter` is the ``foreach`` writer of a
real-time query over the valid lines that publishes exactly those alerts.

It never competes with the micro-batch path, which stays the system of record:

* The alert is the same alert: the id is the same hash of rule and window, the payload the same
  shape (``event_count`` 1, first and last seen = the line).
* ``SET streamops:alerts:alert:<id> NX`` decides who publishes the first state: only a writer
  that created the key sends it to Kafka, the stream and the channel. The micro-batch path
  writes Redis before Kafka (spark_jobs/sinks/alerts.py), so once it has published a state the
  fast path cannot publish an older one after it. Later lines of the window change nothing here:
  the micro-batch path publishes the growing count and the MariaDB row.
* Nothing depends on the fast path: a crash between ``SET NX`` and the Kafka send loses only
  the head start — the micro-batch path publishes the alert seconds later either way.

Rules are re-read at most every ``refresh_seconds`` when a task opens a partition (real-time
batches are a few seconds long), so rule changes reach this path without a restart too.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

import redis
from pyspark.sql import Row

from spark_jobs.common.rules import RuleCache, first_line_rules
from spark_jobs.sinks.alerts import (
    DEFAULT_ALERT_TTL_SECONDS,
    DEFAULT_STREAM_MAXLEN,
    KAFKA_FLUSH_TIMEOUT_SECONDS,
    encode_alert,
)
from spark_jobs.transforms.alerts import SAMPLE_MESSAGE_MAX_CHARS, Alert
from streamops.clients import kafka_producer
from streamops.config import Settings
from streamops.contract.alerts import AlertRule, alert_id, window_start
from streamops.contract.redis_keys import (
    ALERTS_CHANNEL,
    ALERTS_KEY_PREFIX,
    ALERTS_STREAM,
    REALTIME_STATS_KEY,
)
from streamops.contract.topics import ALERTS_TOPIC
from streamops.supervision.fence import redis_client

log = logging.getLogger(__name__)

# One per Python worker process: the worker outlives many tasks (spark.python.worker.reuse).
# What this path did: `published` (count), `last_alert_id`, `last_published_at` (epoch s), `lines`
# (valid lines its tasks saw) and `already_published` (alerts whose key existed: SET NX lost).
_RULE_CACHES: dict[tuple[str, float], RuleCache] = {}  # (MariaDB address, refresh) → cache


def first_line_alerts(
    rules: list[AlertRule],
    *,
    level: str,
    service: str,
    event_time: datetime,
    message: str | None,
) -> list[Alert]:
    """The alerts one valid line opens under ``rules`` (threshold-1 rules only), as the
    micro-batch path would first publish them: count 1, first and last seen = the line."""
    alerts = []
    for rule in first_line_rules(rules):
        if rule.level != level or (rule.service is not None and rule.service != service):
            continue
        start = window_start(event_time, rule.window_seconds)
        alerts.append(
            Alert(
                alert_id=alert_id(rule.rule_id, start, rule.window_seconds),
                rule_id=rule.rule_id,
                level=rule.level,
                service=rule.service,
                window_start=start,
                window_end=start + timedelta(seconds=rule.window_seconds),
                event_count=1,
                threshold_count=rule.threshold_count,
                first_seen=event_time,
                last_seen=event_time,
                sample_message=None if message is None else message[:SAMPLE_MESSAGE_MAX_CHARS],
            )
        )
    return alerts


class FirstLineAlertWriter:
    """``DataStreamWriter.foreach`` writer over valid lines (``level``, ``service``,
    ``event_time`` as UTC TIMESTAMP_NTZ, ``message``); see the module."""

    def __init__(
        self,
        settings: Settings,
        refresh_seconds: float,
        *,
        key_prefix: str = ALERTS_KEY_PREFIX,
        topic: str = ALERTS_TOPIC,
    ) -> None:
        self.settings = settings
        self.refresh_seconds = refresh_seconds
        self.key_prefix = key_prefix
        self.topic = topic
        self._rules: list[AlertRule] = []
        self._redis: redis.Redis | None = None
        self._producer: Any = None
        self._failures: list[str] = []
        self._lines = 0
        self._already_published = 0
        self.stats_key = REALTIME_STATS_KEY.replace(ALERTS_KEY_PREFIX, key_prefix, 1)

    def open(self, partition_id: int, epoch_id: int) -> bool:

        cache_key = (
            f"{self.settings.mariadb_host}:{self.settings.mariadb_port}",
            self.refresh_seconds,
        )
        cache = _RULE_CACHES.get(cache_key)
        if cache is None:
            cache = _RULE_CACHES[cache_key] = RuleCache(self.settings, self.refresh_seconds)
        self._rules = first_line_rules(cache.current())
        self._redis = redis_client(self.settings, socket_timeout=10, socket_connect_timeout=5)
        self._producer = kafka_producer(
            self.settings,
            {
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 0,
            },
        )
        self._failures = []
        self._lines = self._already_published = 0
        return True

    def process(self, row: Row) -> None:
        self._lines += 1
        if not self._rules or self._redis is None:
            return
        for alert in first_line_alerts(
            self._rules,
            level=row.level,
            service=row.service,
            event_time=row.event_time,
            message=row.message,
        ):
            self._publish_if_first(alert)

    def close(self, error: BaseException | None) -> None:
        try:
            if self._producer is not None:
                remaining = self._producer.flush(KAFKA_FLUSH_TIMEOUT_SECONDS)
                if remaining or self._failures:
                    # Not fatal for the alert (the micro-batch path sends it), but worth a log.
                    log.error(
                        "real-time alerts: %s not delivered, %s still queued: %s",
                        len(self._failures),
                        remaining,
                        self._failures[:3],
                    )
            if self._redis is not None and (self._lines or self._already_published):
                # Once per task, not per line: what reached this path and what it handed over.
                with self._redis.pipeline(transaction=False) as counters:
                    counters.hincrby(self.stats_key, "lines", self._lines)
                    counters.hincrby(self.stats_key, "already_published", self._already_published)
                    counters.execute()
        finally:
            if self._redis is not None:
                self._redis.close()
            self._redis, self._producer = None, None

    def _publish_if_first(self, alert: Alert) -> None:
        assert self._redis is not None
        payload = encode_alert(alert)
        key = f"{self.key_prefix}:alert:{alert.alert_id}"
        if not self._redis.set(key, payload, nx=True, ex=DEFAULT_ALERT_TTL_SECONDS):
            self._already_published += 1  # by this path or by the micro-batch path
            return
        self._producer.produce(
            self.topic,
            key=alert.alert_id.encode(),
            value=payload.encode(),
            on_delivery=self._delivered,
        )
        self._producer.poll(0)
        with self._redis.pipeline(transaction=True) as transaction:
            transaction.xadd(
                f"{self.key_prefix}:stream",
                {"alert_id": alert.alert_id, "alert": payload},
                maxlen=DEFAULT_STREAM_MAXLEN,
                approximate=True,
            )
            transaction.publish(f"{self.key_prefix}:live", payload)
            transaction.hincrby(self.stats_key, "published", 1)
            transaction.hset(
                self.stats_key,
                mapping={"last_alert_id": alert.alert_id, "last_published_at": time.time()},
            )
            transaction.execute()

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self._failures.append(str(error))


__all__ = [
    "ALERTS_CHANNEL",
    "ALERTS_STREAM",
    "REALTIME_STATS_KEY",
    "FirstLineAlertWriter",
    "first_line_alerts",
    "first_line_rules",
]
