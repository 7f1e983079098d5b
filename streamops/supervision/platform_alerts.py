"""Platform alerts: something is wrong with the platform itself, not with the data.

A pipeline lost offsets to Kafka's retention (the job runner), or crashed so often that its circuit
breaker opened (the supervision hook). Either way one alert goes to the Kafka ``alerts`` topic, in
the shape of the alerts pipeline's messages (../shared/CONTRACT.md), and to the Redis list
``streamops:alerts:platform`` (newest first, trimmed to :data:`PLATFORM_ALERTS_KEPT`), so the
dashboards and whoever consumes ``alerts`` hear of it. Both writes are best effort and logged: the
caller is already handling a failure and must not fail again because Kafka or Redis is away.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import closing
from datetime import UTC, datetime

from streamops.clients import kafka_producer, redis_client
from streamops.config import Settings
from streamops.contract.redis_keys import PLATFORM_ALERTS_KEY

log = logging.getLogger(__name__)

ALERTS_TOPIC = "alerts"
PLATFORM_ALERTS_KEPT = 200
# The sample message is for humans; the contract's column holds this much.
MAX_MESSAGE_CHARS = 1000


def platform_alert(
    *,
    rule_id: str,
    service: str,
    identity: str,
    message: str,
    at: datetime | None = None,
    event_count: int = 0,
    level: str = "CRITICAL",
) -> dict[str, object]:
    """An alert object; ``alert_id`` is deterministic from ``rule_id`` and ``identity``.

    So a writer that retries after a crash sends the same id, and consumers keyed by it (the
    ``alerts`` topic is keyed by ``alert_id``) see one alert, not two.
    """
    moment = (at or datetime.now(UTC)).astimezone(UTC).isoformat()
    return {
        "alert_id": hashlib.sha256(f"{rule_id}:{identity}".encode()).hexdigest(),
        "rule_id": rule_id,
        "level": level,
        "service": service,
        "window_start": moment,
        "window_end": moment,
        "event_count": event_count,
        "sample_message": message[:MAX_MESSAGE_CHARS],
    }


def publish_platform_alert(settings: Settings, alert: dict[str, object]) -> dict[str, object]:
    """Send ``alert`` to the ``alerts`` topic and the Redis list; returns it."""

    payload = json.dumps(alert)
    try:
        producer = kafka_producer(settings)
        producer.produce(ALERTS_TOPIC, key=str(alert["alert_id"]).encode(), value=payload.encode())
        if producer.flush(10) > 0:
            log.error("the platform alert %s was not delivered to Kafka", alert["rule_id"])
    except Exception:
        log.exception("could not publish the platform alert %s to Kafka", alert["rule_id"])
    try:
        client = redis_client(settings, timeout_seconds=2)
        with closing(client), client.pipeline(transaction=True) as pipe:
            pipe.lpush(PLATFORM_ALERTS_KEY, payload)
            pipe.ltrim(PLATFORM_ALERTS_KEY, 0, PLATFORM_ALERTS_KEPT - 1)
            pipe.execute()
    except Exception:
        log.exception("could not publish the platform alert %s to Redis", alert["rule_id"])
    return alert
