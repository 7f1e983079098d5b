"""Send generated records to Kafka at a steady rate, counting what the broker acknowledged.

``run_generator`` is what ``streamops generate TOPIC`` runs. A record counts as *sent* only once
its delivery report says the broker has it (``acks=all``); one that fails, or is still unconfirmed
when the final flush times out, counts as *failed*, and the CLI exits non-zero when any did.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from streamops.clients import LIBRDKAFKA_LOGGER
from streamops.generator.records import (
    RECORD_KINDS,
    GeneratedRecord,
    RecordFactory,
    check_ratios,
    check_seed,
    check_topic,
)

log = logging.getLogger(__name__)
# What matters reaches the user once through the error callback, not librdkafka's own log.
CLIENT_LOGGER = LIBRDKAFKA_LOGGER

PRODUCER_CONFIG: Mapping[str, Any] = {
    "linger.ms": 5,  # small batches: keeps latency low at dashboard rates, batches when unthrottled
    "compression.type": "lz4",
    "enable.idempotence": True,  # a retried batch is not written twice
    "acks": "all",
    # Give up on a record after 30 s instead of librdkafka's 5 minutes: a generator against a dead
    # broker should report failures while the user is still watching.
    "delivery.timeout.ms": 30_000,
}
# Event-time spacing when unthrottled. It must not outrun the wall clock: event times in the
# future would push the pipeline's watermark ahead and make the next paced run look late. 10 µs
# is 100,000 records/s, more than one generator process sends.
UNTHROTTLED_INTERVAL = timedelta(microseconds=10)
REACHABLE_TIMEOUT_SECONDS = 10.0
FLUSH_TIMEOUT_SECONDS = 30.0
# How long to wait for delivery reports before retrying a record the full local queue refused.
QUEUE_FULL_POLL_SECONDS = 0.1
MAX_REPORTED_ERRORS = 5
PROGRESS_REFRESH_SECONDS = 0.1


class KafkaUnavailableError(RuntimeError):
    """The brokers did not answer a metadata request: nothing was produced."""


class ProducerLike(Protocol):
    """The part of ``confluent_kafka.Producer`` the generator uses (tests pass a fake)."""

    def produce(
        self, topic: str, value: bytes | None = ..., key: bytes | None = ..., *, on_delivery: Any
    ) -> None: ...
    def poll(self, timeout: float = ...) -> int: ...
    def flush(self, timeout: float = ...) -> int: ...
    def list_topics(self, topic: str | None = ..., timeout: float = ...) -> Any: ...


def _kafka_producer(config: dict[str, Any]) -> ProducerLike:
    from confluent_kafka import Producer  # deferred: the options can be checked without it

    producer: ProducerLike = Producer(config)
    return producer


@dataclass
class GeneratorSummary:
    """What one run produced. ``sent`` and ``failed`` come from delivery reports."""

    topic: str
    target_topic: str
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)  # the first few distinct error messages
    by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECORD_KINDS, 0))
    bytes_sent: int = 0  # acknowledged value bytes, keys excluded
    elapsed_seconds: float = 0.0
    interrupted: bool = False  # stopped by Ctrl-C before count or duration was reached
    started: float = field(default=0.0, repr=False)  # time.monotonic() when sending began

    @property
    def produced(self) -> int:
        """Records handed to the producer; ``sent + failed`` once the run is over."""
        return sum(self.by_kind.values())

    @property
    def rate(self) -> float:
        """Acknowledged records per second."""
        return self.sent / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def megabytes_per_second(self) -> float:
        """Acknowledged value MiB per second, as Kafka's own perf tools count them."""
        if self.elapsed_seconds <= 0:
            return 0.0
        return self.bytes_sent / self.elapsed_seconds / (1024 * 1024)

    def on_delivery(self, error: Any, message: Any) -> None:
        """The delivery report callback: the broker has the record, or gave up on it."""
        if error is not None:
            self.record_failure(str(error))
        else:
            self.sent += 1
            self.bytes_sent += len(message)  # the value's length

    def record_failure(self, message: str, count: int = 1) -> None:
        self.failed += count
        # A dead broker fails thousands of records with one message: keep distinct ones.
        if len(self.errors) < MAX_REPORTED_ERRORS and message not in self.errors:
            self.errors.append(message)

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "target_topic": self.target_topic,
            "sent": self.sent,
            "failed": self.failed,
            "errors": list(self.errors),
            "by_kind": dict(self.by_kind),
            "produced": self.produced,
            "bytes_sent": self.bytes_sent,
            "elapsed_seconds": self.elapsed_seconds,
            "interrupted": self.interrupted,
            "records_per_second": self.rate,
            "megabytes_per_second": self.megabytes_per_second,
        }


def validate_options(
    topic: str,
    *,
    rate: float,
    count: int | None,
    duration: float | None,
    seed: int = 0,
    malformed_ratio: float = 0.0,
    duplicate_ratio: float = 0.0,
    late_ratio: float = 0.0,
) -> None:
    """Raise ValueError naming the first bad option and how to fix it; no I/O."""
    check_topic(topic)
    if not (math.isfinite(rate) and rate >= 0):
        raise ValueError(
            f"rate is {rate}; give 0 for as fast as possible or a positive number of records "
            "per second."
        )
    if count is None and duration is None:
        raise ValueError(
            "Neither count nor duration is set; give at least one of them "
            "(--count N or --duration SECONDS)."
        )
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"count is {count!r}; give a whole number of records ≥ 1.")
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration is {duration}; give a number of seconds > 0.")
    check_seed(seed)
    check_ratios(malformed_ratio, duplicate_ratio, late_ratio)


def run_generator(
    topic: str,
    *,
    bootstrap_servers: str,
    rate: float,
    count: int | None = None,
    duration: float | None = None,
    seed: int,
    malformed_ratio: float = 0.0,
    duplicate_ratio: float = 0.0,
    late_ratio: float = 0.0,
    progress: bool = True,
    console: Console | None = None,
    now: datetime | None = None,
    target_topic: str | None = None,
    producer_config: Mapping[str, Any] | None = None,
    flush_timeout: float = FLUSH_TIMEOUT_SECONDS,
    producer_factory: Callable[[dict[str, Any]], ProducerLike] = _kafka_producer,
) -> GeneratorSummary:
    """Produce ``topic`` records until ``count`` are handed over or ``duration`` seconds pass.

    ``rate`` is records per second, 0 for unthrottled. ``now`` anchors event times (default: the
    current time), so the same seed, rate and ``now`` give the same bytes. ``target_topic`` sends
    the records somewhere else than ``topic`` (benchmarks use scratch topics). Raises ValueError
    for bad options and KafkaUnavailableError when no broker answers.
    """
    validate_options(
        topic,
        rate=rate,
        count=count,
        duration=duration,
        seed=seed,
        malformed_ratio=malformed_ratio,
        duplicate_ratio=duplicate_ratio,
        late_ratio=late_ratio,
    )
    records = RecordFactory(
        topic,
        seed=seed,
        now=now or datetime.now(UTC),
        malformed_ratio=malformed_ratio,
        duplicate_ratio=duplicate_ratio,
        late_ratio=late_ratio,
        # Event times advance with the send schedule, so a paced run's events happen "now".
        interval=timedelta(seconds=1 / rate) if rate > 0 else UNTHROTTLED_INTERVAL,
    )
    summary = GeneratorSummary(topic=topic, target_topic=target_topic or topic)
    config = {
        **PRODUCER_CONFIG,
        **(producer_config or {}),
        "bootstrap.servers": bootstrap_servers,
        "error_cb": _ClientErrorLog(),
        "logger": CLIENT_LOGGER,
    }
    producer = producer_factory(config)
    _require_reachable(producer, bootstrap_servers)

    with _progress_bar(count, console, enabled=progress) as bar:
        task = bar.add_task(
            f"{topic} → {summary.target_topic}", total=count, sent=0, failed=0, rate=0.0
        )

        def show(elapsed: float) -> None:
            bar.update(
                task,
                completed=summary.produced,
                sent=summary.sent,
                failed=summary.failed,
                rate=summary.produced / elapsed if elapsed > 0 else 0.0,
            )

        try:
            _send(producer, records, summary, rate=rate, count=count, duration=duration, show=show)
        except KeyboardInterrupt:
            # Ctrl-C stops producing; what is in flight is still flushed and counted below.
            summary.interrupted = True
        unconfirmed = producer.flush(flush_timeout)
        if unconfirmed:
            summary.record_failure(
                f"{unconfirmed} records not acknowledged within the {flush_timeout:g} s flush "
                "timeout",
                count=unconfirmed,
            )
        summary.elapsed_seconds = time.monotonic() - summary.started
        show(summary.elapsed_seconds)
    return summary


def _send(
    producer: ProducerLike,
    records: RecordFactory,
    summary: GeneratorSummary,
    *,
    rate: float,
    count: int | None,
    duration: float | None,
    show: Callable[[float], None],
) -> None:
    """Produce until ``count`` records are handed over or ``duration`` has passed."""
    start = summary.started = time.monotonic()
    deadline = start + duration if duration is not None else math.inf
    next_show = start
    while count is None or summary.produced < count:
        # Each send time is fixed from the start, so late wake-ups never add up to a drift.
        due = start + summary.produced / rate if rate > 0 else start
        if due >= deadline or not _wait_until(producer, due, deadline):
            return
        record = next(records)
        if not _produce(producer, summary.target_topic, record, summary.on_delivery, deadline):
            return
        summary.by_kind[record.kind] += 1
        producer.poll(0)  # serve delivery reports as they arrive, without blocking
        moment = time.monotonic()
        if moment >= deadline:
            return
        if moment >= next_show:
            show(moment - start)
            next_show = moment + PROGRESS_REFRESH_SECONDS


def _wait_until(producer: ProducerLike, due: float, deadline: float) -> bool:
    """Serve delivery reports until ``due``; False when the deadline comes first."""
    while (remaining := due - time.monotonic()) > 0:
        if time.monotonic() >= deadline:
            return False
        producer.poll(min(remaining, deadline - time.monotonic(), 0.05))
    return True


def _produce(
    producer: ProducerLike,
    topic: str,
    record: GeneratedRecord,
    on_delivery: Callable[[Any, Any], None],
    deadline: float,
) -> bool:
    """Hand one record to the producer, waiting while its local queue is full.

    False only when the deadline passes before the queue had room; the record was then never
    produced, so it is in no count rather than silently lost.
    """
    while True:
        try:
            producer.produce(topic, value=record.value, key=record.key, on_delivery=on_delivery)
            return True
        except BufferError:
            # The local queue is full: delivery reports free room, then the same record goes again.
            producer.poll(QUEUE_FULL_POLL_SECONDS)
            if time.monotonic() >= deadline:
                return False


def _require_reachable(producer: ProducerLike, bootstrap_servers: str) -> None:
    try:
        producer.list_topics(timeout=REACHABLE_TIMEOUT_SECONDS)
    except Exception as error:  # KafkaException; caught broadly so a fake producer may raise too
        raise KafkaUnavailableError(
            f"Kafka at {bootstrap_servers} did not answer within {REACHABLE_TIMEOUT_SECONDS:g} s "
            f"({error}); start the stack with `streamops up` or point STREAMOPS_KAFKA_HOST and "
            "STREAMOPS_KAFKA_PORT at a running broker."
        ) from error


class _ClientErrorLog:
    """Logs each kind of client error once per run.

    librdkafka retries connection errors by itself and undelivered records are counted through
    their delivery reports, so these are context for the user, not something to repeat.
    """

    def __init__(self) -> None:
        self._seen: set[object] = set()

    def __call__(self, error: Any) -> None:
        kind = error.code() if hasattr(error, "code") else str(error)
        if kind not in self._seen:
            self._seen.add(kind)
            log.warning("Kafka client: %s", error)


def _progress_bar(count: int | None, console: Console | None, *, enabled: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn() if count is not None else TextColumn("{task.completed:,} produced"),
        TextColumn("acked [green]{task.fields[sent]:,}[/] failed [red]{task.fields[failed]:,}[/]"),
        TextColumn("{task.fields[rate]:,.0f} rec/s"),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
    )
