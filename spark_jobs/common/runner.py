"""Running a job's queries until they stop: graceful on SIGTERM, loud on failure."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from pyspark.errors import StreamingQueryException
from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from streamops.config import Settings

log = logging.getLogger(__name__)

# Test-only fault injection: "QUERY:BATCH" kills this driver with SIGKILL right after that batch's
# sinks wrote and before Spark commits it, once (a marker file remembers it happened).
FAULT_ENV = "STREAMOPS_FAULT_KILL_AFTER_SINK"
FAULT_MARKER_ENV = "STREAMOPS_FAULT_MARKER"
DATA_LOSS_MARKERS = ("failOnDataLoss", "OffsetOutOfRange", "data loss", "KAFKA_DATA_LOSS")
PLATFORM_ALERTS_KEY = "streamops:alerts:platform"


def fault_point(query_name: str, batch_id: int) -> None:
    wanted = os.environ.get(FAULT_ENV)
    if not wanted or wanted != f"{query_name}:{batch_id}":
        return
    marker = Path(os.environ.get(FAULT_MARKER_ENV, f"/tmp/streamops-fault-{query_name}"))
    if marker.exists():
        return
    marker.write_text(f"killed after sinks of {query_name} batch {batch_id}\n")
    os.kill(os.getpid(), signal.SIGKILL)


class _StopRequest:
    requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


def run_queries(
    spark: SparkSession, settings: Settings, pipeline: str, queries: list[StreamingQuery]
) -> int:
    """Wait for the queries; SIGTERM/SIGINT stop them gracefully (exit 0), a failure exits 1."""
    stop = _StopRequest()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("%s: running %s", pipeline, ", ".join(q.name or q.id for q in queries))
    try:
        while not stop.requested:
            # A short wait keeps signals handled between JVM calls, never inside one.
            for query in queries:
                if not query.isActive:
                    query.awaitTermination()  # raises the query's exception if it failed
                    log.warning("%s: query %s stopped on its own", pipeline, query.name)
                    return 1
            time.sleep(1.0)
    except StreamingQueryException as error:
        message = str(error)
        log.error("%s: a query failed: %s", pipeline, message)
        if any(marker in message for marker in DATA_LOSS_MARKERS):
            publish_data_loss_alert(settings, pipeline, message)
        _stop_all(queries)
        return 1
    _stop_all(queries)
    log.info("%s: stopped on request", pipeline)
    return 0


def _stop_all(queries: list[StreamingQuery]) -> None:
    for query in queries:
        try:
            if query.isActive:
                query.stop()
        except Exception:  # stopping is best effort; the process exits next
            log.exception("stopping %s failed", query.name)


def publish_data_loss_alert(settings: Settings, pipeline: str, message: str) -> dict[str, object]:
    """Offsets aged out of Kafka: an alert on the `alerts` topic and in Redis, never silence."""
    import redis
    from confluent_kafka import Producer

    now = datetime.now(UTC)
    alert: dict[str, object] = {
        "alert_id": hashlib.sha256(f"data-loss:{pipeline}:{message}".encode()).hexdigest(),
        "rule_id": "streaming-data-loss",
        "level": "CRITICAL",
        "service": pipeline,
        "window_start": now.isoformat(),
        "window_end": now.isoformat(),
        "event_count": 0,
        "sample_message": message[:1000],
    }
    payload = json.dumps(alert)
    try:
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
        producer.produce("alerts", key=str(alert["alert_id"]).encode(), value=payload.encode())
        producer.flush(10)
    except Exception:
        log.exception("could not publish the data-loss alert to Kafka")
    try:
        client = redis.Redis.from_url(settings.redis_url)
        client.lpush(PLATFORM_ALERTS_KEY, payload)
        client.ltrim(PLATFORM_ALERTS_KEY, 0, 199)
    except Exception:
        log.exception("could not publish the data-loss alert to Redis")
    return alert
