"""Round-trips against the real services the stack started."""

from __future__ import annotations

import time
import uuid

import mariadb
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from streamops.config import Settings
from streamops.contract.topics import CONTRACT_TOPICS
from streamops.db import connect
from streamops.topics import admin_client


def consume_all(settings: Settings, topic: str, expected: int, timeout: float = 30.0) -> list:
    """Read a topic from the start until `expected` messages arrived or the time is up."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            messages.append(message)
    finally:
        consumer.close()
    return messages


def test_contract_topics_exist_with_configured_partitions(settings: Settings) -> None:
    metadata = admin_client(settings).list_topics(timeout=10)
    for topic in CONTRACT_TOPICS:
        assert topic in metadata.topics, topic
        assert len(metadata.topics[topic].partitions) == settings.kafka_partitions


def test_a_record_produced_to_each_topic_is_consumed_back(settings: Settings) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "acks": "all"})
    marker = uuid.uuid4().hex
    delivered: list[tuple[str, int, int]] = []

    def on_delivery(err, msg) -> None:  # type: ignore[no-untyped-def]
        assert err is None, err
        delivered.append((msg.topic(), msg.partition(), msg.offset()))

    for topic in CONTRACT_TOPICS:
        producer.produce(
            topic, key=marker.encode(), value=f"{topic}:{marker}".encode(), on_delivery=on_delivery
        )
    assert producer.flush(30) == 0
    assert len(delivered) == len(CONTRACT_TOPICS)

    for topic, partition, offset in delivered:
        consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "group.id": f"test-{uuid.uuid4()}",
                "enable.auto.commit": False,
            }
        )
        consumer.assign([TopicPartition(topic, partition, offset)])
        message = None
        deadline = time.monotonic() + 20
        while message is None and time.monotonic() < deadline:
            candidate = consumer.poll(0.5)
            if candidate is not None and not candidate.error():
                message = candidate
        consumer.close()
        assert message is not None, f"nothing consumed back from {topic}"
        assert message.key() == marker.encode()
        assert message.value() == f"{topic}:{marker}".encode()


def test_redis_round_trip(settings: Settings) -> None:
    client = redis.Redis(host=settings.redis_host, port=settings.redis_port, db=settings.redis_db)
    key = f"test:{uuid.uuid4()}"
    client.hset(key, mapping={"revenue": "12.50", "orders": 3})
    client.expire(key, 60)
    assert client.hgetall(key) == {b"revenue": b"12.50", b"orders": b"3"}
    assert 0 < client.ttl(key) <= 60


def test_mariadb_round_trip_as_the_application_user(settings: Settings) -> None:
    conn = connect(settings)
    try:
        cursor = conn.cursor()
        cursor.execute("CREATE TEMPORARY TABLE t (id INT PRIMARY KEY, amount DECIMAL(12,2))")
        cursor.executemany("INSERT INTO t VALUES (?, ?)", [(1, "2.50"), (2, "0.10")])
        cursor.execute("SELECT SUM(amount) FROM t")
        (total,) = cursor.fetchone()
        assert str(total) == "2.60"
        cursor.execute("SELECT @@session.time_zone, @@global.time_zone")
        assert cursor.fetchone()[1] == "+00:00"
    finally:
        conn.close()


def test_application_user_cannot_reach_other_databases(settings: Settings) -> None:
    conn = connect(settings)
    try:
        cursor = conn.cursor()
        try:
            cursor.execute("SELECT COUNT(*) FROM mysql.user")
        except mariadb.Error as exc:
            assert "denied" in str(exc).lower()
        else:
            raise AssertionError("the application user can read mysql.user")
    finally:
        conn.close()
