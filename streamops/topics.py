"""The contract's Kafka topics, created idempotently."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streamops.config import CONTRACT_TOPICS, Settings
from streamops.errors import StreamopsError

# librdkafka logs every reconnect attempt, ten a second against a stopped broker (or one still
# starting). Its log goes here, off by default: errors reach the caller as exceptions or reports.
LIBRDKAFKA_LOGGER = logging.getLogger("streamops.librdkafka")
LIBRDKAFKA_LOGGER.addHandler(logging.NullHandler())
LIBRDKAFKA_LOGGER.propagate = False


def admin_client(settings: Settings) -> AdminClient:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "socket.timeout.ms": 5000,
        "logger": LIBRDKAFKA_LOGGER,
    }
    return AdminClient(config)


def ensure_topics(
    settings: Settings, topics: tuple[str, ...] = CONTRACT_TOPICS, timeout: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise StreamopsError(
            f"Kafka is not reachable at {settings.kafka_bootstrap_servers} ({exc}). "
            "Start it with `streamops up` and check `streamops logs kafka`."
        ) from exc
    missing = [t for t in topics if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                topic,
                num_partitions=settings.kafka_partitions,
                replication_factor=settings.kafka_replication_factor,
            )
            for topic in missing
        ],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    created = []
    for topic, future in futures.items():
        try:
            future.result()
            created.append(topic)
        except KafkaException as exc:
            # Another `up` may have created it between our listing and our request.
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise StreamopsError(f"Could not create Kafka topic {topic!r}: {exc}") from exc
    return created


def validate_topic(topic: str, allowed: tuple[str, ...] = CONTRACT_TOPICS) -> str:
    if topic not in allowed:
        raise StreamopsError(
            f"Unknown topic {topic!r}. The contract's topics are: {', '.join(allowed)}."
        )
    return topic
