"""streamops.clients: one place decides the address, timeouts and log of every Redis and Kafka
client. These build clients without connecting (redis-py and librdkafka connect lazily)."""

from __future__ import annotations

import pytest

from streamops.clients import (
    LIBRDKAFKA_LOGGER,
    REDIS_TIMEOUT_SECONDS,
    async_redis_client,
    kafka_config,
    kafka_consumer,
    redis_client,
)
from streamops.config import Settings


@pytest.fixture
def settings() -> Settings:
    return Settings(
        redis_host="redis.example",
        redis_port=6380,
        redis_db=3,
        kafka_host="kafka.example",
        kafka_port=19092,
    )


def test_redis_client_points_at_the_settings_with_the_default_timeouts(settings: Settings) -> None:
    client = redis_client(settings)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("redis.example", 6380, 3)
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == REDIS_TIMEOUT_SECONDS
    assert kwargs.get("decode_responses", False) is False


def test_redis_client_takes_the_callers_timeout_and_decoding(settings: Settings) -> None:
    kwargs = redis_client(
        settings, timeout_seconds=2, decode_responses=True
    ).connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 2
    assert kwargs["decode_responses"] is True


def test_the_dashboards_async_client_decodes_by_default(settings: Settings) -> None:
    kwargs = async_redis_client(settings).connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("redis.example", 6380, 3)
    assert kwargs["decode_responses"] is True


def test_kafka_config_puts_the_callers_settings_over_the_platforms(settings: Settings) -> None:
    config = kafka_config(settings, {"linger.ms": 0, "logger": None})
    assert config["bootstrap.servers"] == "kafka.example:19092"
    assert config["linger.ms"] == 0
    assert config["logger"] is None  # the caller's word wins
    assert kafka_config(settings)["logger"] is LIBRDKAFKA_LOGGER
    # librdkafka's own timeouts stay its defaults unless a caller sets them.
    assert "socket.timeout.ms" not in kafka_config(settings)


def test_each_consumer_reads_in_a_group_of_its_own_and_commits_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[dict[str, object]] = []

    class RecordingConsumer:
        def __init__(self, config: dict[str, object]) -> None:
            made.append(config)

    import confluent_kafka

    monkeypatch.setattr(confluent_kafka, "Consumer", RecordingConsumer)
    kafka_consumer(settings, "streamops-test")
    kafka_consumer(settings, "streamops-test")
    kafka_consumer(settings, "streamops-ui", own_group=False)
    first, second, named = made
    assert str(first["group.id"]).startswith("streamops-test-")
    assert first["group.id"] != second["group.id"]
    assert first["enable.auto.commit"] is False
    assert named["group.id"] == "streamops-ui"
