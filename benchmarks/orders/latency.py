"""Phase 2: produce → visible latency at steady rates."""

from __future__ import annotations

import json
import math
import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from queue import Empty
from typing import Any

from benchmarks import BenchmarkError
from benchmarks.orders.queries import (
    batch_reports,
    batch_summary,
    raise_failures,
    settle,
    state_series,
    stop_queries,
    wait_consumed,
    wait_ready,
)
from benchmarks.orders.scratch import create_topic, redis_client
from benchmarks.orders.support import LATENCY_PHASE, Scratch, Sizes, log, start_pipeline
from streamops.config import Settings

SAMPLES_PER_SECOND = 50
POLL_INTERVAL_SECONDS = 0.05


@dataclass(frozen=True)
class PacedRun:
    """What the producer process sends: ``rate`` orders/s for ``seconds``, every
    ``sample_every``-th one timed."""

    bootstrap_servers: str
    topic: str
    rate: int
    seconds: int
    seed: int
    anchor: datetime
    sample_every: int

    def order_id(self, index: int) -> str:
        return f"ord-{self.seed}-{index:07d}"

    @property
    def count(self) -> int:
        return self.rate * self.seconds


def latency_phase(
    spark: Any, scratch: Scratch, sizes: Sizes, rate: int, index: int
) -> dict[str, Any]:
    settings = scratch.settings
    topic = create_topic(scratch, f"latency-{rate}")
    paced = PacedRun(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=topic,
        rate=rate,
        seconds=sizes.latency_seconds,
        seed=scratch.seed(LATENCY_PHASE + index),
        anchor=scratch.anchor(LATENCY_PHASE + index),
        sample_every=max(1, rate // SAMPLES_PER_SECOND),
    )
    windows = WindowWatcher(settings)
    queries = start_pipeline(
        spark,
        settings,
        topic,
        scratch.checkpoint(f"latency-{rate}"),
        sinks=True,
        available_now=False,
    )
    poller: VisibilityPoller | None = None
    try:
        wait_ready(queries)
        windows.start()
        log(f"latency: producing {rate:,} orders/s for {sizes.latency_seconds} s")
        context = multiprocessing.get_context("spawn")
        messages = context.Queue()
        producer = context.Process(target=produce_paced, args=(paced, messages), daemon=True)
        producer.start()
        try:
            # The producer builds every record first (a few thousand a second).
            kind, started = messages.get(timeout=60 + paced.count / 1000)
            if kind != "started":
                raise BenchmarkError(f"The producer process failed to start: {started}")
            poller = VisibilityPoller(settings, paced, started)
            poller.start()
            kind, produced = messages.get(timeout=sizes.latency_seconds * 3 + 60)
            if kind != "done":
                raise BenchmarkError(f"The producer process failed: {produced}")
        except Empty as error:
            raise BenchmarkError("The producer process did not report back in time.") from error
        finally:
            producer.join(timeout=30)
            if producer.is_alive():
                producer.kill()
        drain_timeout = max(15.0, float(sizes.latency_seconds))
        drain_deadline = time.monotonic() + drain_timeout
        samples = produced["samples"]
        while time.monotonic() < drain_deadline:
            raise_failures(queries)
            if poller.seen_count >= len(samples) and windows.covers(samples):
                break
            time.sleep(0.2)
        # The orders sent after the last sample, too.
        wait_consumed(queries, paced.count, timeout=max(0.0, drain_deadline - time.monotonic()))
        # The batches that wrote the last rows report their progress once committed; a query
        # stopped before that loses the report (and is interrupted mid-batch). A pipeline that
        # fell behind never settles: it is stopped mid-batch after the drain time.
        settle(queries, timeout=max(10.0, drain_deadline - time.monotonic()))
    finally:
        if poller is not None:
            poller.stop()
        windows.stop()
        stop_queries(queries)
    raise_failures(queries)
    for observer in (poller, windows):
        if observer is not None and observer.error is not None:
            raise BenchmarkError(f"{observer.name} failed: {observer.error!r}")
    progress = {query.name: batch_reports(query) for query in queries}
    assert poller is not None, "set before the producer reported"
    return _latency_results(paced, produced, poller, windows, progress, drain_timeout)


def _latency_results(
    paced: PacedRun,
    produced: dict[str, Any],
    poller: VisibilityPoller,
    windows: WindowWatcher,
    progress: dict[str, list[dict[str, Any]]],
    drain_timeout: float,
) -> dict[str, Any]:
    samples = produced["samples"]
    to_row, to_stamp, to_window, to_ack = [], [], [], []
    for sample in samples:
        index, window, currency, rank, produced_at, acked_at = sample
        seen = poller.seen.get(index)
        to_row.append(seen[0] - produced_at if seen else math.inf)
        if seen and seen[1] is not None:
            to_stamp.append(seen[1] - produced_at)
        to_window.append(windows.first_seen(window, currency, rank) - produced_at)
        if acked_at is not None:
            to_ack.append(acked_at - produced_at)
    fifth = max(1, len(to_row) // 5)
    first, last = _percentile(to_row[:fifth], 50), _percentile(to_row[-fifth:], 50)
    return {
        "target_rate": paced.rate,
        "achieved_rate": round(produced["achieved_rate"], 1),
        "producer_behind_schedule_max_ms": produced["behind_schedule_max_ms"],
        "produced": produced["produced"],
        "acked": produced["acked"],
        "failed": produced["failed"],
        "seconds": paced.seconds,
        "samples": len(samples),
        "sample_every": paced.sample_every,
        "poll_interval_ms": round(POLL_INTERVAL_SECONDS * 1000),
        # How long the benchmark waited after the last send for the samples still missing.
        "waited_after_sending_seconds": drain_timeout,
        "mariadb_visible": _summary(to_row),
        # ingested_at is stamped when the batch's write starts: the wait for a batch, before the
        # rows are written and committed.
        "mariadb_ingested_at": _summary(to_stamp),
        "redis_window": _summary(to_window),
        "producer_ack": _summary(to_ack),
        # Orders wait longer and longer behind a pipeline that falls behind; a short run also
        # shows the first batches of a new query, which are smaller and quicker.
        "first_fifth_p50_ms": None if first is None else round(first * 1000),
        "last_fifth_p50_ms": None if last is None else round(last * 1000),
        # Orders the records query had taken in when it was stopped.
        "processed": sum(b["rows"] for b in progress["orders_records"] if b["executed"]),
        "batches": {name: batch_summary(batches) for name, batches in progress.items()},
        # Last, and long: the state of the stateful query over the phase (a chart of the report).
        "state_series": state_series(progress),
    }


def produce_paced(paced: PacedRun, messages: Any) -> None:
    """The producer process: sends ``paced.count`` orders on a fixed schedule, reports samples.

    It runs in its own process so that its Python loop does not compete with the driver's
    ``foreachBatch`` code for one interpreter lock; a real producer is another process too.
    """
    try:
        messages.put(("done", _produce_paced(paced, messages)))
    except Exception as error:  # reported to the parent, which raises BenchmarkError
        messages.put(("error", repr(error)))


def _produce_paced(paced: PacedRun, messages: Any) -> dict[str, Any]:
    from confluent_kafka import Producer

    from streamops.contract.times import iso_utc
    from streamops.generator.producer import CLIENT_LOGGER, PRODUCER_CONFIG
    from streamops.generator.records import RecordFactory, parse_event_time
    from streamops.maintenance.reconcile import window_floor

    producer = Producer(
        {
            **PRODUCER_CONFIG,
            "bootstrap.servers": paced.bootstrap_servers,
            "logger": CLIENT_LOGGER,
        }
    )
    producer.list_topics(timeout=10)
    records = RecordFactory(
        "orders", seed=paced.seed, now=paced.anchor, interval=timedelta(seconds=1 / paced.rate)
    )
    counts: dict[tuple[str, str], int] = {}
    samples: list[list[Any]] = []
    tally = {"acked": 0, "failed": 0}

    def on_delivery(error: Any, message: Any) -> None:
        tally["failed" if error is not None else "acked"] += 1

    def on_sample_delivery(sample: list[Any]) -> Callable[[Any, Any], None]:
        def report(error: Any, message: Any) -> None:
            on_delivery(error, message)
            if error is None:
                sample[5] = time.time()

        return report

    # Every record is built before the clock starts: at 10,000 orders/s the loop has 100 µs per
    # order, and building one (JSON, event time, window) takes longer than that in Python.
    prepared: list[tuple[bytes, bytes | None, list[Any] | None]] = []
    for index in range(paced.count):
        record = next(records)
        fields = json.loads(record.value)
        moment = parse_event_time(fields["event_time"])
        assert moment is not None, "the factory sends valid orders only"
        window = iso_utc(window_floor(moment))
        key = (window, fields["currency"])
        counts[key] = counts.get(key, 0) + 1
        sample = None
        if index % paced.sample_every == 0:
            # index, window, currency, rank in the window, produced at, acknowledged at
            sample = [index, window, fields["currency"], counts[key], 0.0, None]
            samples.append(sample)
        prepared.append((record.value, record.key, sample))

    started = time.time()
    messages.put(("started", started))
    last_produced = started
    # How far behind its schedule the loop fell at worst: a producer that cannot keep the rate
    # sends bursts to catch up, and the pipeline sees those, not a steady rate.
    behind_max = 0.0
    for index, (value, record_key, sample) in enumerate(prepared):
        due = started + index / paced.rate
        while (wait := due - time.time()) > 0:
            producer.poll(min(wait, 0.05))
        behind_max = max(behind_max, -wait)
        callback: Callable[[Any, Any], None] = on_delivery
        if sample is not None:
            callback = on_sample_delivery(sample)
            sample[4] = time.time()
        while True:
            try:
                producer.produce(paced.topic, value=value, key=record_key, on_delivery=callback)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        last_produced = time.time()
    unconfirmed = producer.flush(30)
    elapsed = last_produced - started
    return {
        "produced": paced.count,
        "acked": tally["acked"],
        "failed": tally["failed"] + unconfirmed,
        "achieved_rate": paced.count / elapsed if elapsed > 0 else 0.0,
        "behind_schedule_max_ms": round(behind_max * 1000, 1),
        "samples": samples,
    }


class VisibilityPoller(threading.Thread):
    """Polls ``orders`` for the sampled order ids the producer should have sent by now.

    A row found by a query issued at ``t`` was committed before ``t``: ``t`` is the time seen,
    late by at most one poll interval plus the query.
    """

    def __init__(self, settings: Settings, paced: PacedRun, started: float) -> None:
        super().__init__(name="visibility-poller", daemon=True)
        self.settings = settings
        self.paced = paced
        self.started = started
        # sample index -> (seen at, ingested_at) in epoch seconds
        self.seen: dict[int, tuple[float, float | None]] = {}
        self.error: BaseException | None = None
        self._stop_requested = threading.Event()

    @property
    def seen_count(self) -> int:
        return len(self.seen)

    def stop(self) -> None:
        self._stop_requested.set()
        self.join(timeout=10)

    def run(self) -> None:
        try:
            self._poll()
        except BaseException as error:  # raised by the phase once it is over
            self.error = error

    def _poll(self) -> None:
        from streamops.db import connect

        paced = self.paced
        pending = list(range(0, paced.count, paced.sample_every))
        with closing(connect(self.settings)) as connection:
            connection.autocommit = True  # every poll sees what is committed now
            cursor = connection.cursor()
            while pending and not self._stop_requested.is_set():
                issued = time.time()
                # Orders the schedule says were produced by now (a little ahead is harmless).
                sent = (issued - self.started + 0.1) * paced.rate
                due = [index for index in pending if index <= sent][:1000]
                if due:
                    marks = ", ".join("?" for _ in due)
                    cursor.execute(
                        f"SELECT order_id, ingested_at FROM orders WHERE order_id IN ({marks})",
                        tuple(paced.order_id(index) for index in due),
                    )
                    for order_id, ingested_at in cursor.fetchall():
                        index = int(order_id.rsplit("-", 1)[1])
                        stamp = ingested_at.replace(tzinfo=UTC).timestamp() if ingested_at else None
                        self.seen[index] = (issued, stamp)
                    found = self.seen
                    pending = [index for index in pending if index not in found]
                time.sleep(max(0.0, POLL_INTERVAL_SECONDS - (time.time() - issued)))


class WindowWatcher(threading.Thread):
    """Timestamps every window update the Redis sink publishes on ``streamops:orders:updates``."""

    def __init__(self, settings: Settings) -> None:
        from streamops.contract.redis_keys import ORDERS_UPDATES_CHANNEL

        super().__init__(name="window-watcher", daemon=True)
        # key (window_start, currency) -> [(received at, order_count)], in arrival order
        self.updates: dict[tuple[str, str], list[tuple[float, int]]] = {}
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._stop_requested = threading.Event()
        self._client = redis_client(settings)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        # Subscribed before the queries produce anything, so no update is missed.
        self._pubsub.subscribe(ORDERS_UPDATES_CHANNEL)

    def stop(self) -> None:
        self._stop_requested.set()
        if self.is_alive():
            self.join(timeout=10)
        self._pubsub.close()
        self._client.close()

    def run(self) -> None:
        try:
            self._listen()
        except BaseException as error:  # raised by the phase once it is over
            self.error = error

    def _listen(self) -> None:
        while not self._stop_requested.is_set():
            message = self._pubsub.get_message(timeout=0.1)
            if message is None:
                continue
            received = time.time()
            try:
                body = json.loads(message["data"])
            except (TypeError, ValueError):
                continue
            with self._lock:
                for window in body.get("windows", []):
                    key = (window["window_start"], window["currency"])
                    self.updates.setdefault(key, []).append((received, int(window["order_count"])))

    def first_seen(self, window: str, currency: str, rank: int) -> float:
        """When the window first counted ``rank`` orders (inf: never, within the run)."""
        with self._lock:
            for received, count in self.updates.get((window, currency), []):
                if count >= rank:
                    return received
        return math.inf

    def covers(self, samples: Sequence[Sequence[Any]]) -> bool:
        return all(math.isfinite(self.first_seen(s[1], s[2], s[3])) for s in samples)


def _summary(seconds: list[float]) -> dict[str, Any]:
    """Percentiles in ms; a sample never seen counts as infinitely late (None when it decides)."""
    result: dict[str, Any] = {"count": len(seconds)}
    result["not_visible"] = sum(1 for value in seconds if not math.isfinite(value))
    for p in (50, 95, 99):
        value = _percentile(seconds, p)
        result[f"p{p}_ms"] = None if value is None else round(value * 1000, 1)
    finite = [value for value in seconds if math.isfinite(value)]
    result["max_ms"] = round(max(finite) * 1000, 1) if finite else None
    return result


def _percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no values or when it falls on an unseen sample."""
    if not values:
        return None
    ordered = sorted(values)
    value = ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]
    return value if math.isfinite(value) else None
