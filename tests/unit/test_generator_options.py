"""Generator options and the produce loop, against a fake producer (no Kafka needed)."""

from __future__ import annotations

import io
import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console

from streamops.generator.producer import (
    MAX_REPORTED_ERRORS,
    UNTHROTTLED_INTERVAL,
    GeneratorSummary,
    KafkaUnavailableError,
    run_generator,
    validate_options,
)
from streamops.generator.records import RecordFactory

NOW = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
VALID = {"rate": 100.0, "count": 10, "duration": None}
LATE_POLL_SECONDS = 0.004


# --- validate_options -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"rate": 0.0, "count": 1, "duration": None},
        {"rate": 2.5, "count": None, "duration": 0.5},
        {"rate": 1000, "count": 5, "duration": 60, "malformed_ratio": 0.5, "late_ratio": 0.5},
        {"rate": 1, "count": 1, "duration": None, "duplicate_ratio": 1.0},
    ],
)
def test_valid_options_pass(options: dict[str, Any]) -> None:
    validate_options("orders", **options)


@pytest.mark.parametrize(
    ("topic", "changes", "message"),
    [
        ("clicks", {}, "Unknown topic 'clicks'; use one of: orders, payments, error-logs, "),
        ("alerts", {}, "Unknown topic 'alerts'"),  # an output topic, not something to generate
        ("orders", {"rate": -1.0}, "rate is -1.0; give 0 for as fast as possible"),
        ("orders", {"rate": float("nan")}, "rate is nan"),
        ("orders", {"count": None}, "Neither count nor duration is set"),
        ("orders", {"count": 0}, "count is 0; give a whole number of records ≥ 1"),
        ("orders", {"count": 2.5}, "count is 2.5"),
        ("orders", {"count": None, "duration": 0.0}, "duration is 0.0; give a number of seconds"),
        ("orders", {"duration": -3.0}, "duration is -3.0"),
        ("orders", {"malformed_ratio": 1.2}, "malformed_ratio is 1.2; give a fraction between"),
        ("orders", {"duplicate_ratio": -0.5}, "duplicate_ratio is -0.5"),
        ("orders", {"late_ratio": float("nan")}, "late_ratio is nan"),
        (
            "orders",
            {"malformed_ratio": 0.5, "duplicate_ratio": 0.3, "late_ratio": 0.3},
            "sum to at most 1",
        ),
        ("orders", {"seed": -7}, "seed is -7"),
    ],
)
def test_bad_options_name_the_option_and_the_fix(
    topic: str, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        validate_options(topic, **{**VALID, **changes})
    text = str(raised.value)
    assert text.endswith("."), "one sentence"
    assert text.count(". ") == 0, "one sentence"


# --- run_generator with a fake producer -------------------------------------------------------


class FakeError:
    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


class FakeMessage:
    def __init__(self, value: bytes) -> None:
        self.value = value

    def __len__(self) -> int:
        return len(self.value)


class FakeProducer:
    """Delivers queued records only on a blocking poll, like a broker a few ms away.

    A poll that finds nothing to deliver sleeps at least LATE_POLL_SECONDS: a pacing loop that
    schedules each record from the previous one would drift by that much per record.

    ``capacity`` is the local queue size (BufferError beyond it), ``fail_every`` makes every n-th
    delivery fail, ``stuck`` never delivers (a broker that went away).
    """

    def __init__(
        self,
        config: dict[str, Any],
        *,
        capacity: int = 1000,
        fail_every: int = 0,
        stuck: bool = False,
        reachable: bool = True,
    ) -> None:
        self.config = config
        self.capacity = capacity
        self.fail_every = fail_every
        self.stuck = stuck
        self.reachable = reachable
        self.queue: list[tuple[str, bytes | None, bytes, Any]] = []
        self.delivered: list[tuple[str, bytes | None, bytes]] = []
        self.buffer_errors = 0

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> object:
        if not self.reachable:
            raise RuntimeError("KafkaError{code=_TRANSPORT,val=-195}")
        return object()

    def produce(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, *, on_delivery: Any
    ) -> None:
        assert value is not None
        if len(self.queue) >= self.capacity:
            self.buffer_errors += 1
            raise BufferError("Local: Queue full")
        self.queue.append((topic, key, value, on_delivery))

    def poll(self, timeout: float = -1) -> int:
        if timeout <= 0:
            return 0
        served = 0 if self.stuck else self._deliver()
        if not served:
            # Like librdkafka on a busy machine: a blocking poll may return a few ms late.
            time.sleep(max(timeout, LATE_POLL_SECONDS))
        return served

    def flush(self, timeout: float = -1) -> int:
        if not self.stuck:
            self._deliver()
        return len(self.queue)

    def _deliver(self) -> int:
        served, self.queue = self.queue, []
        for topic, key, value, on_delivery in served:
            self.delivered.append((topic, key, value))
            failed = self.fail_every and len(self.delivered) % self.fail_every == 0
            error = FakeError(f"broker said no to #{len(self.delivered)}") if failed else None
            on_delivery(error, FakeMessage(value))
        return len(served)


def run(
    fake: dict[str, Any] | None = None, **options: Any
) -> tuple[GeneratorSummary, FakeProducer]:
    producers: list[FakeProducer] = []

    def factory(config: dict[str, Any]) -> FakeProducer:
        producers.append(FakeProducer(config, **(fake or {})))
        return producers[0]

    topic = options.pop("topic", "orders")
    arguments: dict[str, Any] = {
        "bootstrap_servers": "127.0.0.1:1",
        "rate": 0,
        "seed": 7,
        "now": NOW,
        "progress": False,
        "producer_factory": factory,
        **options,
    }
    summary = run_generator(topic, **arguments)
    return summary, producers[0]


def test_a_full_queue_delays_records_but_loses_none() -> None:
    summary, producer = run({"capacity": 7}, count=500, malformed_ratio=0.1, duplicate_ratio=0.1)

    assert producer.buffer_errors > 50, "the queue-full path was exercised"
    expected = RecordFactory(
        "orders",
        seed=7,
        now=NOW,
        malformed_ratio=0.1,
        duplicate_ratio=0.1,
        interval=UNTHROTTLED_INTERVAL,
    ).take(500)
    assert producer.delivered == [("orders", r.key, r.value) for r in expected]
    assert (summary.sent, summary.failed, summary.produced) == (500, 0, 500)
    assert summary.by_kind["malformed"] == sum(r.kind == "malformed" for r in expected)
    assert summary.bytes_sent == sum(len(r.value) for r in expected)


def test_delivery_errors_are_counted_with_the_first_messages() -> None:
    summary, _ = run({"fail_every": 10}, count=200)

    assert (summary.sent, summary.failed) == (180, 20)
    assert summary.errors[0] == "broker said no to #10"
    assert len(summary.errors) == MAX_REPORTED_ERRORS


def test_repeated_errors_are_reported_once() -> None:
    summary = GeneratorSummary(topic="orders", target_topic="orders")
    for _ in range(3):
        summary.on_delivery(FakeError("Local: Message timed out"), None)

    assert (summary.failed, summary.errors) == (3, ["Local: Message timed out"])


def test_records_unconfirmed_at_flush_count_as_failed() -> None:
    summary, _ = run({"stuck": True, "capacity": 5}, count=5, flush_timeout=0.01)

    assert (summary.sent, summary.failed, summary.produced) == (0, 5, 5)
    assert "5 records not acknowledged within the 0.01 s flush timeout" in summary.errors


def test_a_stuck_queue_stops_at_the_deadline_without_dropping_records() -> None:
    started = time.monotonic()
    summary, _ = run({"stuck": True, "capacity": 5}, duration=0.3, flush_timeout=0.01)

    assert 0.3 <= time.monotonic() - started < 2.0
    assert summary.produced == 5, "only what the queue accepted was produced"
    assert summary.sent + summary.failed == summary.produced


def test_rate_paces_without_drift() -> None:
    summary, _ = run(rate=400, count=200)

    # Record n is due at n / rate: 199 / 400 s after the start, however late the polls return
    # (a drifting loop would need 200 x 4 ms = 0.8 s).
    assert 0.49 <= summary.elapsed_seconds < 0.7
    assert summary.sent == 200


def test_whichever_of_count_and_duration_comes_first_stops_the_run() -> None:
    by_count, _ = run(rate=1000, count=20, duration=30.0)
    by_duration, _ = run(rate=100, count=10_000, duration=0.3)

    assert by_count.produced == 20 and by_count.elapsed_seconds < 1.0
    assert 25 <= by_duration.produced <= 31
    assert by_duration.elapsed_seconds < 1.5


def test_target_topic_redirects_the_records() -> None:
    summary, producer = run(topic="patient-vitals", count=3, target_topic="scratch")

    assert {topic for topic, _, _ in producer.delivered} == {"scratch"}
    assert (summary.topic, summary.target_topic) == ("patient-vitals", "scratch")


def test_producer_is_configured_for_durable_batched_sends() -> None:
    _, producer = run(count=1, producer_config={"client.id": "test"})

    assert producer.config["bootstrap.servers"] == "127.0.0.1:1"
    assert producer.config["acks"] == "all"
    assert producer.config["enable.idempotence"] is True
    assert producer.config["compression.type"] == "lz4"
    assert producer.config["linger.ms"] == 5
    assert producer.config["client.id"] == "test"


def test_unreachable_kafka_is_a_clear_error() -> None:
    with pytest.raises(KafkaUnavailableError, match=r"Kafka at 127\.0\.0\.1:1 did not answer"):
        run({"reachable": False}, count=1)


def test_bad_options_fail_before_connecting() -> None:
    def factory(config: dict[str, Any]) -> FakeProducer:
        raise AssertionError("no producer for bad options")

    with pytest.raises(ValueError, match="count is 0"):
        run_generator(
            "orders", bootstrap_servers="x:1", rate=1, count=0, seed=1, producer_factory=factory
        )


def test_progress_bar_reports_the_run() -> None:
    output = io.StringIO()
    console = Console(file=output, force_terminal=False, width=160)
    summary, _ = run(count=50, progress=True, console=console)

    assert summary.sent == 50
    assert "orders → orders" in output.getvalue()
    assert "50/50" in output.getvalue()
