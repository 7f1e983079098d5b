"""The contract's Kafka topics, created idempotently."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from streamops.clients import kafka_admin
from streamops.config import Settings
from streamops.contract.topics import CONTRACT_TOPICS
from streamops.errors import StreamopsError

# Every topic stamps records with the broker's clock when it appends them, whatever the producer
# says: the jobs judge "event time in the future" against that timestamp (the contract's
# "receiving clock"), so a producer cannot move it and a replay reaches the same verdict
# (spark_jobs/transforms/cleansing.event_time_in_future).
TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}


def admin_client(settings: Settings) -> AdminClient:
    return kafka_admin(settings, {"socket.timeout.ms": 5000})


def ensure_topics(
    settings: Settings, topics: tuple[str, ...] = CONTRACT_TOPICS, timeout: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet, with :data:`TOPIC_CONFIG`, and set that config on
    those that do (a topic created before it, or by hand); returns the names created."""
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise StreamopsError(
            f"Kafka is not reachable at {settings.kafka_bootstrap_servers} ({exc}). "
            "Start it with `streamops up` and check `streamops logs kafka`."
        ) from exc
    _configure_existing(admin, [t for t in topics if t in existing], timeout)
    missing = [t for t in topics if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                topic,
                num_partitions=settings.kafka_partitions,
                replication_factor=settings.kafka_replication_factor,
                config=dict(TOPIC_CONFIG),
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
                _configure_existing(admin, [topic], timeout)
                continue
            raise StreamopsError(f"Could not create Kafka topic {topic!r}: {exc}") from exc
    return created


def topic_config(settings: Settings, topic: str, timeout: float = 30.0) -> dict[str, str]:
    """The values of :data:`TOPIC_CONFIG`'s keys that ``topic`` has now."""
    admin = admin_client(settings)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        entries = admin.describe_configs([resource], request_timeout=timeout)[resource].result()
    except KafkaException as exc:
        raise StreamopsError(f"Could not read the config of Kafka topic {topic!r}: {exc}") from exc
    return {name: entries[name].value for name in TOPIC_CONFIG if name in entries}


def _configure_existing(admin: AdminClient, topics: list[str], timeout: float) -> None:
    if not topics:
        return
    resources = [
        ConfigResource(
            ConfigResource.Type.TOPIC,
            topic,
            incremental_configs=[
                ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
                for name, value in TOPIC_CONFIG.items()
            ],
        )
        for topic in topics
    ]
    # Idempotent: setting a value a topic already has changes nothing.
    futures = admin.incremental_alter_configs(resources, request_timeout=timeout)
    for resource, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            raise StreamopsError(
                f"Could not set {TOPIC_CONFIG} on Kafka topic {resource.name!r}: {exc}. "
                "The jobs judge event times against the broker's append time; set it by hand "
                "with kafka-configs.sh --alter --add-config."
            ) from exc


def validate_topic(topic: str, allowed: tuple[str, ...] = CONTRACT_TOPICS) -> str:
    if topic not in allowed:
        raise StreamopsError(
            f"Unknown topic {topic!r}. The contract's topics are: {', '.join(allowed)}."
        )
    return topic
