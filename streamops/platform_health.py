"""Platform health as the application sees it: over the network, with the application's own
credentials, so the same checks run locally, in compose and on Kubernetes."""

from __future__ import annotations

import json
import time

from streamops.clients import redis_client
from streamops.config import Settings
from streamops.contract.redis_keys import PLATFORM_HEALTH_KEY
from streamops.contract.topics import CONTRACT_TOPICS
from streamops.errors import StreamopsError

REDIS_HEALTH_TTL_SECONDS = 900


def check_kafka(settings: Settings) -> str:
    from streamops.topics import admin_client

    try:
        metadata = admin_client(settings).list_topics(timeout=10)
    except Exception as exc:
        raise StreamopsError(f"Kafka at {settings.kafka_bootstrap_servers}: {exc}") from exc
    missing = [t for t in CONTRACT_TOPICS if t not in metadata.topics]
    if missing:
        raise StreamopsError(
            f"Kafka topics missing: {', '.join(missing)}. Run `streamops up` to create them."
        )
    return f"{len(metadata.brokers)} broker(s), contract topics present"


def check_mariadb(settings: Settings) -> str:
    from streamops.db import list_migrations, schema_version

    current, latest = schema_version(settings), len(list_migrations())
    if current < latest:
        raise StreamopsError(
            f"MariaDB schema is at version {current} of {latest}: run `streamops db migrate`."
        )
    return f"schema version {current}"


def check_redis(settings: Settings) -> str:
    import redis

    client = redis_client(settings)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise StreamopsError(f"Redis at {settings.redis_url_redacted}: {exc}") from exc
    finally:
        client.close()
    return "PONG"


def check_disk(settings: Settings) -> str:
    """Free space of the state folder's filesystem: a warning is reported, critical fails."""
    from streamops.disk import state_dir_status

    status = state_dir_status(settings.state_dir)
    if status.level == "critical":
        raise StreamopsError(f"disk critical: {status.message}")
    return status.message if status.level == "ok" else f"disk warning: {status.message}"


CHECKS = {
    "kafka": check_kafka,
    "mariadb": check_mariadb,
    "redis": check_redis,
    "disk": check_disk,
}


def publish_health(settings: Settings, results: dict[str, str]) -> None:
    """Store the latest results in Redis for the dashboard, with a TTL so stale news expires."""

    client = redis_client(settings)
    try:
        client.set(
            PLATFORM_HEALTH_KEY,
            json.dumps({"checked_at": time.time(), "results": results}),
            ex=REDIS_HEALTH_TTL_SECONDS,
        )
    finally:
        client.close()
