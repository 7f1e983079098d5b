"""Redis and Kafka clients for streamops, one factory per kind, as ``streamops.db.connect`` is
for MariaDB.

Every client the platform makes comes from here, so the address, the timeouts and where
librdkafka's log goes are decided once. A caller states only what differs for its use (a
consumer's group, a producer's idempotence, a shorter timeout for a page that must answer
fast). The client libraries are imported inside each factory: importing this module costs
nothing, and the dashboard need not load Kafka's nor the CLI Redis'.

A job's sinks take their Redis client from ``streamops.supervision.fence.redis_client``, which
fences it; an unfenced job (tests, benchmarks) gets the one from here.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from streamops.config import Settings

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient

# Seconds a Redis command or connect may take before the caller hears of it: long enough for a
# loaded machine, short enough that a stopped Redis is reported, not waited on.
REDIS_TIMEOUT_SECONDS = 5.0
# librdkafka logs every reconnect attempt, ten a second against a stopped broker (or one still
# starting). Its log goes here, off by default: errors reach the caller as exceptions or reports.
LIBRDKAFKA_LOGGER = logging.getLogger("streamops.librdkafka")
LIBRDKAFKA_LOGGER.addHandler(logging.NullHandler())
LIBRDKAFKA_LOGGER.propagate = False


def redis_client(
    settings: Settings,
    *,
    timeout_seconds: float = REDIS_TIMEOUT_SECONDS,
    decode_responses: bool = False,
    **options: Any,
) -> redis.Redis:
    """A client of the platform's Redis (``settings.redis_url``); no connection is made until the
    first command. ``options`` go to ``redis.Redis`` as they are."""
    import redis

    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        decode_responses=decode_responses,
        **options,
    )


def async_redis_client(
    settings: Settings,
    *,
    timeout_seconds: float = REDIS_TIMEOUT_SECONDS,
    decode_responses: bool = True,
) -> redis.asyncio.Redis:
    """The asyncio form of :func:`redis_client` (the dashboard's)."""
    import redis.asyncio

    return redis.asyncio.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        decode_responses=decode_responses,
    )


def kafka_config(settings: Settings, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """librdkafka settings for the platform's brokers, with ``config`` (librdkafka's dotted
    names, e.g. ``{"linger.ms": 0}``) on top. librdkafka's own timeouts stay its defaults unless
    the caller sets them: a producer's retries and delivery timeout are part of its guarantees,
    not a detail to unify."""
    from streamops.kafka_security import librdkafka_security

    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "logger": LIBRDKAFKA_LOGGER,
        **librdkafka_security(settings),
        **(config or {}),
    }


def kafka_producer(settings: Settings, config: Mapping[str, Any] | None = None) -> Producer:
    from confluent_kafka import Producer

    return Producer(kafka_config(settings, config))


def kafka_consumer(
    settings: Settings,
    group: str,
    config: Mapping[str, Any] | None = None,
    *,
    own_group: bool = True,
) -> Consumer:
    """A consumer that commits nothing, in a group of its own (``<group>-<random>``), or in
    ``group`` itself with ``own_group=False`` (a reader that never subscribes, whose id only
    satisfies the client): the platform's readers look at offsets, they never take a share of a
    topic from a pipeline."""
    from confluent_kafka import Consumer

    settings_for_reader = {
        "group.id": f"{group}-{uuid.uuid4().hex}" if own_group else group,
        "enable.auto.commit": False,
        **(config or {}),
    }
    return Consumer(kafka_config(settings, settings_for_reader))


def kafka_admin(settings: Settings, config: Mapping[str, Any] | None = None) -> AdminClient:
    from confluent_kafka.admin import AdminClient

    return AdminClient(kafka_config(settings, config))
