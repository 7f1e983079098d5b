"""`streamops generate` against the real broker: what it sends is what the contract expects."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter

from confluent_kafka import Consumer, TopicPartition

from streamops.config import Settings
from streamops.generator.records import validate


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": uuid.uuid4().hex}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def read_from(settings: Settings, topic: str, start: dict[int, int], expected: int) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": uuid.uuid4().hex,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, o) for p, o in start.items()])
    messages: list = []
    deadline = time.monotonic() + 30
    while len(messages) < expected and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            messages.append(message)
    consumer.close()
    return messages


def test_generated_orders_arrive_and_conform_except_the_malformed_share(settings: Settings) -> None:
    start = end_offsets(settings, "orders")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamops",
            "generate",
            "orders",
            "--count",
            "400",
            "--rate",
            "0",
            "--seed",
            "11",
            "--malformed-ratio",
            "0.25",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sent 400, failed 0" in result.stdout

    messages = read_from(settings, "orders", start, expected=400)
    assert len(messages) == 400
    reasons = Counter(validate("orders", m.value()) is None for m in messages)
    # 25 % malformed, reproducible from the seed: a wide band, never zero, never all.
    assert 60 <= reasons[False] <= 140
    valid = [json.loads(m.value()) for m in messages if validate("orders", m.value()) is None]
    assert all(
        m.key() == o["order_id"].encode()
        for m, o in zip(
            [m for m in messages if validate("orders", m.value()) is None], valid, strict=True
        )
    )


def test_generator_against_a_dead_broker_fails_with_a_clear_error(settings: Settings) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamops", "generate", "orders", "--count", "5", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "STREAMOPS_KAFKA_PORT": "1"},
    )
    assert result.returncode == 1
    assert "did not answer" in result.stderr and "streamops up" in result.stderr
