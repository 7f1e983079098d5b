"""The orders pipeline under load: throughput with and without its sinks, produce → visible
latency at steady rates, and the floor under the trigger interval. One run, one Spark driver.

The job's two queries (``spark_jobs.jobs.orders``) are built here, in-process, from the job's own
pieces (``check_orders``, ``valid_orders``, ``revenue_per_window``, ``records_writer``,
``windows_writer``, ``OrdersJobConfig``, the ``ProgressPublisher`` listener) on scratch topics,
wired as ``orders.start`` wires them but for the topic, the checkpoints and the trigger.

1. **Throughput.** ``BENCH_ORDERS`` orders (1 % malformed, 1 % duplicates) are produced into a
   scratch topic first; then both queries drain it with ``trigger(availableNow=True)``, once with
   the real sinks (MariaDB, quarantine, Parquet archive, Redis) and once with no-op sinks that still
   force the work (the batch is persisted and counted, the windows collected). Each drain has its
   own checkpoints; ``BENCH_REPEATS`` rounds alternate which goes first; the best round counts.
   A first drain with the real sinks warms the driver up and is discarded (``BENCH_WARM_UP=0``
   skips it).
2. **Latency.** For each rate of ``BENCH_RATES`` (orders/s), the queries run with the job's default
   trigger on a fresh topic while a separate producer process sends at that rate for
   ``BENCH_LATENCY_SECONDS``. Sampled orders are timed from ``produce()`` to the row being visible
   in ``orders`` (polled) and to a ``streamops:orders:updates`` message whose window counts them.
   The windows query's state rows after each batch are kept (``state_series``).
3. **Floor.** One order every two seconds for ``BENCH_FLOOR_SECONDS``, into no-op sinks and then
   into the real ones, followed by up to ``BENCH_IDLE_SECONDS`` with no input: the duration of
   one-order batches, of the empty batches Spark runs to evict state, of an idle trigger's offset
   check, and (from phase 2) the shortest trigger-to-trigger interval under load.

Leaving things as they were: orders use seeds whose order ids (``ord-<seed>-…``) no one else uses,
and event times in a day of 2001 holding no window, so the rows written are deleted afterwards by
order id, topic and window range; Redis writes go to an empty database of the same server; the
topics, checkpoints and archive are scratch and removed. Only ``streamops:orders:updates`` and
``streamops:query:events`` (channels, global to the server) carry the benchmark's messages.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from queue import Empty
from typing import Any

from benchmarks import (
    BenchmarkError,
    empty_redis_db,
    int_env,
    output_dir,
    plots,
    require_services,
)
from spark_jobs.common.runner import stop_between_batches
from streamops.config import Settings

ORDERS_ENV = "BENCH_ORDERS"
DEFAULT_ORDERS = 60_000
REPEATS_ENV = "BENCH_REPEATS"
DEFAULT_REPEATS = 2
RATES_ENV = "BENCH_RATES"
DEFAULT_RATES = (1_000, 10_000)
LATENCY_SECONDS_ENV = "BENCH_LATENCY_SECONDS"
DEFAULT_LATENCY_SECONDS = 10
FLOOR_SECONDS_ENV = "BENCH_FLOOR_SECONDS"
DEFAULT_FLOOR_SECONDS = 10
IDLE_SECONDS_ENV = "BENCH_IDLE_SECONDS"
# At most: Spark reports an idle trigger once per spark.sql.streaming.noDataProgressEventInterval
# (10 s) without data, and the wait ends when every query has.
DEFAULT_IDLE_SECONDS = 15
# 1: drain the throughput topic once, discarded, before measuring; 0: don't.
WARM_UP_ENV = "BENCH_WARM_UP"
NAME = "orders_pipeline"
SINK_NAMES = {"no_op": "no-op sinks", "sinks": "the real sinks"}

# The throughput topic's defects: enough to exercise quarantine and de-duplication.
MALFORMED_RATIO = 0.01
DUPLICATE_RATIO = 0.01
# Phase numbers pick each phase's seed (order ids) and hour of event time.
THROUGHPUT_PHASE, LATENCY_PHASE = 0, 1
SAMPLES_PER_SECOND = 50
POLL_INTERVAL_SECONDS = 0.05
TRICKLE_INTERVAL_SECONDS = 2.0
# Each phase gets an hour of event time in the benchmark's day, so phases cannot share a window.
MAX_PHASE_SECONDS = 1800
MAX_RATES = 10
# Far from any live data: the benchmark's event times fall on one day of this era.
ERA_ORIGIN = datetime(2001, 1, 1, tzinfo=UTC)
ERA_DAYS = 3650
ERA_MARGIN = timedelta(hours=1)
# Seeds from here on never meet the CLI's (small) or the stack generator's (epoch seconds).
SEED_ORIGIN = 3_000_000_000
SEEDS_PER_RUN = 100
DELETE_CHUNK_ROWS = 20_000
# Redis databases the benchmark may borrow, highest first; it takes the first empty one.
READY_TIMEOUT_SECONDS = 180.0


@dataclass(frozen=True)
class Sizes:
    orders: int
    repeats: int
    rates: tuple[int, ...]
    latency_seconds: int
    floor_seconds: int
    idle_seconds: int
    warm_up: bool

    @classmethod
    def from_env(cls) -> Sizes:
        rates = _rates_env()
        sizes = cls(
            orders=int_env(ORDERS_ENV, DEFAULT_ORDERS, minimum=1),
            repeats=int_env(REPEATS_ENV, DEFAULT_REPEATS, minimum=1),
            rates=rates,
            latency_seconds=int_env(LATENCY_SECONDS_ENV, DEFAULT_LATENCY_SECONDS, minimum=1),
            floor_seconds=int_env(FLOOR_SECONDS_ENV, DEFAULT_FLOOR_SECONDS, minimum=1),
            idle_seconds=int_env(IDLE_SECONDS_ENV, DEFAULT_IDLE_SECONDS, minimum=0),
            warm_up=int_env(WARM_UP_ENV, 1, minimum=0) > 0,
        )
        for name, seconds in (
            (LATENCY_SECONDS_ENV, sizes.latency_seconds),
            (FLOOR_SECONDS_ENV, sizes.floor_seconds),
            (IDLE_SECONDS_ENV, sizes.idle_seconds),
        ):
            if seconds > MAX_PHASE_SECONDS:
                raise BenchmarkError(f"{name} is {seconds}; give at most {MAX_PHASE_SECONDS}.")
        return sizes


@dataclass
class Scratch:
    """Everything the run creates, so that all of it can be removed again."""

    stamp: datetime
    folder: Path
    settings: Settings  # the stack's, with scratch checkpoints, archive and Redis database
    era_start: datetime
    seed_origin: int
    topics: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    @property
    def pipeline(self) -> str:
        """What the progress listener records the queries under (query_progress, query_status)."""
        return f"bench_orders_{self.stamp:%Y%m%d%H%M%S}"

    def topic(self, phase: str) -> str:
        return f"bench-orders-pipeline-{self.stamp:%Y%m%d%H%M%S}-{phase}"

    def seed(self, phase_index: int) -> int:
        seed = self.seed_origin + phase_index
        self.seeds.append(seed)
        return seed

    def anchor(self, phase_index: int) -> datetime:
        """Event time of a phase's first order: an hour of the benchmark's day per phase."""
        return self.era_start + timedelta(hours=1 + phase_index)

    def checkpoint(self, label: str) -> Path:
        return self.folder / "checkpoints" / label


def run(settings: Settings) -> dict[str, Any]:
    sizes = Sizes.from_env()
    plots.require_matplotlib()
    output = output_dir()
    require_services(settings, spark=True)
    load: dict[str, list[float]] = {"start": _load()}
    with _scratch(settings) as scratch, _spark(scratch) as spark:
        load["throughput"] = _load()
        throughput = _throughput_phase(spark, scratch, sizes)
        latency = []
        for index, rate in enumerate(sizes.rates):
            load[f"latency_{rate}"] = _load()
            latency.append(_latency_phase(spark, scratch, sizes, rate, index))
        load["floor"] = _load()
        floor = _floor_phase(spark, scratch, sizes, latency)
    ceiling = throughput["sinks"]["best"]["orders_per_second"]
    for entry in latency:
        # A batch takes a fixed time plus a time per order, and with the default trigger the next
        # one holds what arrived meanwhile: batches settle at a finite size only while the rate
        # stays below what the pipeline drains per second. Above it, the backlog only grows.
        entry["below_sinks_throughput"] = entry["target_rate"] < ceiling
    load["end"] = _load()
    results: dict[str, Any] = {
        "sizes": {
            "orders": sizes.orders,
            "repeats": sizes.repeats,
            "rates": list(sizes.rates),
            "latency_seconds": sizes.latency_seconds,
            "floor_seconds": sizes.floor_seconds,
            "idle_seconds": sizes.idle_seconds,
            "warm_up": sizes.warm_up,
        },
        "job_config": _job_config(),
        "spark": {"master": settings.spark_master, "version": _spark_version()},
        "partitions": settings.kafka_partitions,
        # 1, 5 and 15 minute load averages as each phase began. Before the run it is other work
        # on the machine, competing for the same cores; later the benchmark's own processes
        # (Spark, Kafka, MariaDB, the producer) count too.
        "load_average": load,
        "throughput": throughput,
        "latency": latency,
        "floor": floor,
    }
    results["plots"] = _draw(results, output, scratch.stamp)
    return results


# --- the pipeline, built from the job's parts -----------------------------------------------------


def start_pipeline(
    spark: Any,
    settings: Settings,
    topic: str,
    checkpoint: Path,
    *,
    sinks: bool,
    available_now: bool,
) -> list[Any]:
    """``orders.start`` on ``topic``: the same source options, transforms, writers and modes."""
    from spark_jobs.common.source import KafkaSourceOptions, read_kafka_stream
    from spark_jobs.jobs.orders import OrdersJobConfig, records_writer, windows_writer
    from spark_jobs.transforms.orders import check_orders, revenue_per_window, valid_orders

    config = OrdersJobConfig()
    source = KafkaSourceOptions(topic, max_offsets_per_trigger=config.max_offsets_per_trigger)
    checked = check_orders(read_kafka_stream(spark, settings, source))
    windows = revenue_per_window(
        valid_orders(checked)
        .withWatermark("event_time", config.watermark)
        .dropDuplicatesWithinWatermark(["order_id"]),
        config.window_seconds,
    )
    records = (
        checked.writeStream.queryName("orders_records")
        .foreachBatch(records_writer(settings) if sinks else count_records)
        .option("checkpointLocation", str(checkpoint / "records"))
    )
    revenue = (
        windows.writeStream.queryName("orders_revenue")
        .outputMode("update")
        .foreachBatch(windows_writer(settings) if sinks else collect_windows)
        .option("checkpointLocation", str(checkpoint / "revenue"))
    )
    if available_now:
        records = records.trigger(availableNow=True)
        revenue = revenue.trigger(availableNow=True)
    return [records.start(), revenue.start()]


def count_records(batch: Any, batch_id: int) -> None:
    """The records query's no-op sink: every column of the batch computed (persisted), split as
    ``records_writer`` splits it, and counted, but nothing written."""
    from spark_jobs.transforms.orders import rejected_orders, valid_orders

    batch.persist()
    try:
        valid_orders(batch).count()
        rejected_orders(batch).count()
    finally:
        batch.unpersist()


def collect_windows(windows: Any, batch_id: int) -> None:
    """The revenue query's no-op sink: the windows reach the driver, as the Redis writer's do."""
    windows.collect()


# --- phase 1: throughput --------------------------------------------------------------------------


def _produce_all(
    scratch: Scratch, phase: str, phase_index: int, count: int
) -> tuple[str, int, Any]:
    """``count`` orders (with the throughput mix of defects) into a new topic, unthrottled."""
    from streamops.generator.producer import KafkaUnavailableError, run_generator

    topic = _create_topic(scratch, phase)
    seed = scratch.seed(phase_index)
    _log(f"{phase}: producing {count:,} orders into {topic}")
    try:
        summary = run_generator(
            "orders",
            bootstrap_servers=scratch.settings.kafka_bootstrap_servers,
            rate=0,
            count=count,
            seed=seed,
            now=scratch.anchor(phase_index),
            malformed_ratio=MALFORMED_RATIO,
            duplicate_ratio=DUPLICATE_RATIO,
            progress=False,
            target_topic=topic,
        )
    except KafkaUnavailableError as error:
        raise BenchmarkError(str(error)) from error
    if summary.failed:
        raise BenchmarkError(
            f"{summary.failed} of {count} orders were not delivered to {topic}: "
            f"{'; '.join(summary.errors)}."
        )
    return topic, seed, summary


def _throughput_phase(spark: Any, scratch: Scratch, sizes: Sizes) -> dict[str, Any]:
    topic, seed, summary = _produce_all(scratch, "throughput", THROUGHPUT_PHASE, sizes.orders)
    expected = {
        "orders": summary.by_kind["valid"] + summary.by_kind["late"],
        "quarantine": summary.by_kind["malformed"],
        "duplicates": summary.by_kind["duplicate"],
    }

    warm_up = None
    if sizes.warm_up:
        # A fresh driver plans, compiles and loads classes on its first batches, and the JIT
        # keeps compiling for a while after: tens of seconds here, which would otherwise count
        # against whichever drain ran first. The sinks' code path includes the no-op's
        # (persist, count, collect), so one drain with them warms both.
        _log("throughput: warm-up drain with the real sinks (discarded)")
        warm_up = _drain(spark, scratch, topic, "warm-up", sinks=True, orders=sizes.orders)
    runs: dict[str, list[dict[str, Any]]] = {"no_op": [], "sinks": []}
    checks: dict[str, Any] = {}
    for repeat in range(sizes.repeats):
        modes = ("no_op", "sinks") if repeat % 2 == 0 else ("sinks", "no_op")
        for mode in modes:
            if mode == "sinks":
                # Every sinks run inserts new rows, never finds its own from the last round.
                _delete_written(scratch)
            label = f"throughput-{mode}-{repeat}"
            _log(f"throughput: draining with {SINK_NAMES[mode]} (round {repeat + 1})")
            drained = _drain(
                spark, scratch, topic, label, sinks=mode == "sinks", orders=sizes.orders
            )
            runs[mode].append(drained)
            if mode == "sinks":
                checks = _sink_checks(scratch, seed, topic)
    no_op, sinks = _best_run(runs["no_op"]), _best_run(runs["sinks"])
    return {
        "topic_orders": sizes.orders,
        "producer_orders_per_second": round(summary.rate, 1),
        "expected": expected,
        "warm_up_seconds": None if warm_up is None else warm_up["seconds"],
        "written": checks,
        "no_op": {"best": no_op, "runs": runs["no_op"]},
        "sinks": {"best": sinks, "runs": runs["sinks"]},
        # Of the best rounds; what each round gives is in "runs".
        "ratio_sinks_to_no_op": round(sinks["orders_per_second"] / no_op["orders_per_second"], 4),
    }


def _drain(
    spark: Any, scratch: Scratch, topic: str, label: str, *, sinks: bool, orders: int
) -> dict[str, Any]:
    timeout = max(300.0, orders / 500)
    started = time.monotonic()
    queries = start_pipeline(
        spark,
        scratch.settings,
        topic,
        scratch.checkpoint(label),
        sinks=sinks,
        available_now=True,
    )
    ended: dict[str, float] = {}
    try:
        while len(ended) < len(queries):
            for query in queries:
                if query.name not in ended and not query.isActive:
                    ended[query.name] = time.monotonic()
            if time.monotonic() - started > timeout:
                raise BenchmarkError(
                    f"Draining {orders:,} orders took over {timeout:.0f} s; lower {ORDERS_ENV}."
                )
            time.sleep(0.05)
    finally:
        _stop(queries)
    _raise_failures(queries)
    seconds = max(ended.values()) - started
    per_query = {}
    for query in queries:
        batches = [b for b in _progress(query) if b["executed"]]
        per_query[query.name] = {
            "seconds": round(ended[query.name] - started, 3),
            "batches": len(batches),
            "input_rows": sum(b["rows"] for b in batches),
            "batch_seconds_total": round(sum(b["ms"] for b in batches) / 1000, 3),
        }
    return {
        "seconds": round(seconds, 3),
        "orders_per_second": round(orders / seconds, 1),
        "queries": per_query,
    }


def _sink_checks(scratch: Scratch, seed: int, topic: str) -> dict[str, Any]:
    """What the sinks run left in MariaDB and Redis, to hold against what was produced."""
    window_start, window_end = _era(scratch)
    with _database(scratch.settings) as cursor:
        cursor.execute("SELECT COUNT(*) FROM orders WHERE order_id LIKE ?", (_prefix(seed),))
        (orders,) = cursor.fetchone()
        cursor.execute(
            "SELECT COUNT(*) FROM quarantine WHERE source_topic = ? AND pipeline = 'orders'",
            (topic,),
        )
        (quarantine,) = cursor.fetchone()
        cursor.execute(
            "SELECT COALESCE(SUM(order_count), 0) FROM order_revenue_5s "
            "WHERE window_start >= ? AND window_start < ?",
            (window_start, window_end),
        )
        (window_orders,) = cursor.fetchone()
    client = _redis(scratch.settings)
    try:
        totals = client.hgetall("streamops:orders:totals")
    finally:
        client.close()
    redis_orders = sum(int(v) for k, v in totals.items() if k.endswith(b":order_count"))
    return {
        "orders": int(orders),
        "quarantine": int(quarantine),
        "window_order_count": int(window_orders),
        "redis_order_count": redis_orders,
    }


# --- phase 2: latency -----------------------------------------------------------------------------


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


def _latency_phase(
    spark: Any, scratch: Scratch, sizes: Sizes, rate: int, index: int
) -> dict[str, Any]:
    settings = scratch.settings
    topic = _create_topic(scratch, f"latency-{rate}")
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
        _wait_ready(queries)
        windows.start()
        _log(f"latency: producing {rate:,} orders/s for {sizes.latency_seconds} s")
        context = multiprocessing.get_context("spawn")
        messages = context.Queue()
        producer = context.Process(target=produce_paced, args=(paced, messages), daemon=True)
        producer.start()
        try:
            kind, started = messages.get(timeout=60)
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
            _raise_failures(queries)
            if poller.seen_count >= len(samples) and windows.covers(samples):
                break
            time.sleep(0.2)
        # The orders sent after the last sample, too.
        _wait_consumed(queries, paced.count, timeout=max(0.0, drain_deadline - time.monotonic()))
        # The batches that wrote the last rows report their progress once committed; a query
        # stopped before that loses the report (and is interrupted mid-batch). A pipeline that
        # fell behind never settles: it is stopped mid-batch after the drain time.
        _settle(queries, timeout=max(10.0, drain_deadline - time.monotonic()))
    finally:
        if poller is not None:
            poller.stop()
        windows.stop()
        _stop(queries)
    _raise_failures(queries)
    for observer in (poller, windows):
        if observer is not None and observer.error is not None:
            raise BenchmarkError(f"{observer.name} failed: {observer.error!r}")
    progress = {query.name: _progress(query) for query in queries}
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
        "batches": {name: _batch_summary(batches) for name, batches in progress.items()},
        # Last, and long: the state of the stateful query over the phase (a chart of the report).
        "state_series": _state_series(progress),
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

    started = time.time()
    messages.put(("started", started))
    last_produced = started
    for index in range(paced.count):
        due = started + index / paced.rate
        while (wait := due - time.time()) > 0:
            producer.poll(min(wait, 0.05))
        record = next(records)
        fields = json.loads(record.value)
        moment = parse_event_time(fields["event_time"])
        assert moment is not None, "the factory sends valid orders only"
        window = iso_utc(window_floor(moment))
        key = (window, fields["currency"])
        counts[key] = counts.get(key, 0) + 1
        callback: Callable[[Any, Any], None] = on_delivery
        if index % paced.sample_every == 0:
            # index, window, currency, rank in the window, produced at, acknowledged at
            sample = [index, window, fields["currency"], counts[key], 0.0, None]
            samples.append(sample)
            callback = on_sample_delivery(sample)
            sample[4] = time.time()
        while True:
            try:
                producer.produce(
                    paced.topic, value=record.value, key=record.key, on_delivery=callback
                )
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
        self._client = _redis(settings)
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


# --- phase 3: the floor ---------------------------------------------------------------------------


def _floor_phase(
    spark: Any, scratch: Scratch, sizes: Sizes, latency: list[dict[str, Any]]
) -> dict[str, Any]:
    first_phase = LATENCY_PHASE + len(sizes.rates)
    # No-op first: what the engine alone needs per batch, then what the sinks add to it.
    modes = {
        "no_op": _trickle(spark, scratch, sizes, "no_op", first_phase, idle_seconds=0),
        "sinks": _trickle(
            spark, scratch, sizes, "sinks", first_phase + 1, idle_seconds=sizes.idle_seconds
        ),
    }
    lowest = min(latency, key=lambda entry: entry["target_rate"]) if latency else None
    return {
        "trickle_interval_seconds": TRICKLE_INTERVAL_SECONDS,
        **modes,
        "trigger_to_trigger_ms": None
        if lowest is None
        else {
            "rate": lowest["target_rate"],
            **{name: summary["trigger_interval_ms"] for name, summary in lowest["batches"].items()},
        },
    }


def _trickle(
    spark: Any, scratch: Scratch, sizes: Sizes, mode: str, phase: int, *, idle_seconds: int
) -> dict[str, Any]:
    """One order every TRICKLE_INTERVAL_SECONDS into a running pipeline, then ``idle_seconds``
    with none: the duration of batches of one order, of empty batches and of idle triggers."""
    from confluent_kafka import Producer

    from streamops.generator.producer import CLIENT_LOGGER, PRODUCER_CONFIG
    from streamops.generator.records import RecordFactory

    settings = scratch.settings
    topic = _create_topic(scratch, f"floor-{mode}")
    queries = start_pipeline(
        spark,
        settings,
        topic,
        scratch.checkpoint(f"floor-{mode}"),
        sinks=mode == "sinks",
        available_now=False,
    )
    trickle = RecordFactory(
        "orders",
        seed=scratch.seed(phase),
        now=scratch.anchor(phase),
        interval=timedelta(seconds=TRICKLE_INTERVAL_SECONDS),
    )
    producer = Producer(
        {
            **PRODUCER_CONFIG,
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "logger": CLIENT_LOGGER,
        }
    )
    sends = max(1, round(sizes.floor_seconds / TRICKLE_INTERVAL_SECONDS))
    try:
        _wait_ready(queries)
        _log(
            f"floor: one order every {TRICKLE_INTERVAL_SECONDS:g} s for {sizes.floor_seconds} s, "
            f"{SINK_NAMES[mode]}"
        )
        started = time.monotonic()
        for index in range(sends):
            if index:
                time.sleep(max(0.0, started + index * TRICKLE_INTERVAL_SECONDS - time.monotonic()))
            record = next(trickle)
            producer.produce(topic, value=record.value, key=record.key)
            producer.flush(10)
            _raise_failures(queries)
        # Idle right after the last send may only mean the query has not seen it yet.
        _wait_consumed(queries, sends, timeout=READY_TIMEOUT_SECONDS)
        _wait_ready(queries)
        if idle_seconds:
            _log(f"floor: up to {idle_seconds} s without input")
            _wait_idle_reports(queries, idle_seconds)
    finally:
        _stop(queries)
    _raise_failures(queries)
    per_query: dict[str, Any] = {}
    for query in queries:
        batches = _progress(query)
        small = [b for b in batches if b["executed"] and 0 < b["rows"] <= 2]
        # Batch 0 of a new query is empty too, but also plans and compiles everything first.
        empty = [b for b in batches if b["executed"] and b["rows"] == 0 and b["batch_id"] > 0]
        idle = [b for b in batches if not b["executed"]]
        per_query[query.name] = {
            "small_batches": _durations(small),
            "small_batch_max_rows": max((b["rows"] for b in small), default=0),
            "small_batch_parts_median_ms": _parts(small),
            "empty_batches": _durations(empty),
            "idle_checks": _durations(idle),
        }
    return {"orders_sent": sends, "queries": per_query}


# --- Spark progress -------------------------------------------------------------------------------


def _progress(query: Any) -> list[dict[str, Any]]:
    """The query's progress reports. ``executed`` is False for an idle trigger (Spark reports one
    every 10 s with no data: it only looked up the offsets)."""
    reports = []
    for progress in query.recentProgress:
        durations = dict(progress.durationMs or {})
        reports.append(
            {
                "batch_id": int(progress.batchId),
                "rows": int(progress.numInputRows or 0),
                "at": _epoch(progress.timestamp),
                "ms": int(durations.get("triggerExecution", 0)),
                "executed": "addBatch" in durations,
                "durations": durations,
                "state_rows": sum(int(op.numRowsTotal) for op in progress.stateOperators or []),
            }
        )
    return reports


def _state_series(progress: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """State rows after each batch of every query that holds state, in the shape `streamops
    bench` charts (benchmarks/runner.py ``state_series``); seconds from the phase's first batch."""
    first = min((b["at"] for batches in progress.values() for b in batches), default=0.0)
    return {
        name: [
            {
                "elapsed_seconds": round(b["at"] - first, 2),
                "batch_id": b["batch_id"],
                "state_rows": b["state_rows"],
            }
            for b in batches
            if b["executed"]
        ]
        for name, batches in progress.items()
        if any(b["state_rows"] for b in batches)
    }


def _batch_summary(batches: list[dict[str, Any]]) -> dict[str, Any]:
    executed = sorted((b for b in batches if b["executed"]), key=lambda b: b["at"])
    with_data = [b for b in executed if b["rows"] > 0]
    gaps = [(later["at"] - earlier["at"]) * 1000 for earlier, later in pairwise(executed)]
    return {
        "batches": len(executed),
        "rows_median": _round(statistics.median([b["rows"] for b in with_data]))
        if with_data
        else None,
        "rows_max": max((b["rows"] for b in with_data), default=0),
        "duration_ms": _durations(executed),
        "trigger_interval_ms": _stats(gaps),
    }


def _durations(batches: list[dict[str, Any]]) -> dict[str, Any] | None:
    return _stats([float(b["ms"]) for b in batches])


def _parts(batches: list[dict[str, Any]]) -> dict[str, float]:
    names = sorted({name for b in batches for name in b["durations"]})
    return {
        name: _round(statistics.median([b["durations"].get(name, 0) for b in batches]))
        for name in names
        if name != "triggerExecution"
    }


def _stats(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {
        "count": len(values),
        "min": _round(min(values)),
        "median": _round(statistics.median(values)),
        "max": _round(max(values)),
    }


def _wait_ready(queries: list[Any]) -> None:
    """Until every query has nothing left to do (its first batch, or the last input, is done)."""
    if not _settle(queries, READY_TIMEOUT_SECONDS):
        raise BenchmarkError(f"The queries were not idle within {READY_TIMEOUT_SECONDS:g} s.")


def _settle(queries: list[Any], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for every query to be idle; True if they all are."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _raise_failures(queries)
        if all(
            not query.status["isTriggerActive"] and not query.status["isDataAvailable"]
            for query in queries
        ):
            return True
        time.sleep(0.1)
    return False


def _wait_consumed(queries: list[Any], orders: int, timeout: float) -> bool:
    """Until every query's batches have taken in ``orders`` records (or ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    while True:
        _raise_failures(queries)
        if all(
            sum(b["rows"] for b in _progress(query) if b["executed"]) >= orders for query in queries
        ):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _wait_idle_reports(queries: list[Any], timeout: float) -> None:
    """Until every query has reported an idle trigger from now on (or ``timeout`` passed)."""
    known = {query.name: len(_progress(query)) for query in queries}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _raise_failures(queries)
        if all(
            any(not b["executed"] for b in _progress(query)[known[query.name] :])
            for query in queries
        ):
            return
        time.sleep(0.5)


def _raise_failures(queries: list[Any]) -> None:
    for query in queries:
        if not query.isActive:
            error = query.exception()
            if error is not None:
                raise BenchmarkError(f"Query {query.name} failed: {str(error)[:2000]}")


# A pipeline that fell behind runs batch after batch with no gap between them to stop in: wait
# for one batch to end, not for the backlog.
STOP_WAIT_SECONDS = 15.0


def _stop(queries: list[Any]) -> None:
    for query in queries:
        if query.isActive:
            stop_between_batches(query, timeout=STOP_WAIT_SECONDS)


# --- the scratch world and its removal ------------------------------------------------------------


@contextmanager
def _scratch(settings: Settings) -> Iterator[Scratch]:
    stamp = datetime.now(UTC).replace(microsecond=0)
    folder = Path(tempfile.mkdtemp(prefix="streamops-bench-orders-"))
    redis_db = empty_redis_db(settings)
    scratch_settings = settings.model_copy(
        update={
            "redis_db": redis_db,
            "checkpoint_uri": str(folder / "checkpoints"),
            "archive_uri": str(folder / "archive"),
        }
    )
    scratch = Scratch(
        stamp=stamp,
        folder=folder,
        settings=scratch_settings,
        era_start=_free_era(settings, stamp),
        seed_origin=_free_seeds(settings, stamp),
    )
    try:
        yield scratch
    finally:
        _log("cleaning up")
        try:
            _delete_written(scratch)
            with _database(settings) as cursor:
                for table in ("query_progress", "query_status"):
                    cursor.execute(f"DELETE FROM {table} WHERE pipeline = ?", (scratch.pipeline,))
        finally:
            _delete_topics(settings, scratch.topics)
            shutil.rmtree(folder, ignore_errors=True)


def _delete_written(scratch: Scratch) -> None:
    """Every row and key the sinks wrote for the benchmark's seeds, topics and era."""
    window_start, window_end = _era(scratch)
    with _database(scratch.settings) as cursor:
        for seed in scratch.seeds:
            while True:  # in chunks: one huge DELETE holds its locks and undo log for long
                cursor.execute(
                    f"DELETE FROM orders WHERE order_id LIKE ? LIMIT {DELETE_CHUNK_ROWS}",
                    (_prefix(seed),),
                )
                deleted = cursor.rowcount
                cursor.connection.commit()
                if deleted < DELETE_CHUNK_ROWS:
                    break
        for topic in scratch.topics:
            cursor.execute(
                "DELETE FROM quarantine WHERE source_topic = ? AND pipeline = 'orders'", (topic,)
            )
        cursor.execute(
            "DELETE FROM order_revenue_5s WHERE window_start >= ? AND window_start < ?",
            (window_start, window_end),
        )
    client = _redis(scratch.settings)
    try:
        # The database was empty when the run borrowed it: whatever is in it now is ours.
        keys = list(client.scan_iter(count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


def _free_era(settings: Settings, stamp: datetime) -> datetime:
    """A day of the era with no order and no window in it (a margin around it included)."""
    first = int(stamp.timestamp()) // 86_400
    with _database(settings) as cursor:
        for offset in range(20):
            day = ERA_ORIGIN + timedelta(days=(first + offset) % ERA_DAYS)
            low, high = day - ERA_MARGIN, day + timedelta(days=1) + ERA_MARGIN
            cursor.execute(
                "SELECT (SELECT COUNT(*) FROM order_revenue_5s "
                "WHERE window_start >= ? AND window_start < ?) + (SELECT COUNT(*) FROM orders "
                "WHERE event_time >= ? AND event_time < ?)",
                (_naive(low), _naive(high), _naive(low), _naive(high)),
            )
            if cursor.fetchone()[0] == 0:
                return day
    raise BenchmarkError("Found no day of 2001–2010 without orders or windows to use.")


def _free_seeds(settings: Settings, stamp: datetime) -> int:
    """The first of SEEDS_PER_RUN consecutive seeds whose order ids are all unused."""
    with _database(settings) as cursor:
        for attempt in range(20):
            # Ten digits whatever the attempt, so the ids of the run sort as one range.
            origin = SEED_ORIGIN + ((int(stamp.timestamp()) + attempt) % 10**7) * SEEDS_PER_RUN
            cursor.execute(
                "SELECT COUNT(*) FROM orders WHERE order_id >= ? AND order_id < ?",
                (f"ord-{origin}-", f"ord-{origin + SEEDS_PER_RUN}-"),
            )
            if cursor.fetchone()[0] == 0:
                return origin
    raise BenchmarkError("Found no unused range of order ids for the benchmark's seeds.")


def _era(scratch: Scratch) -> tuple[datetime, datetime]:
    low = scratch.era_start - ERA_MARGIN
    return _naive(low), _naive(scratch.era_start + timedelta(days=1) + ERA_MARGIN)


def _create_topic(scratch: Scratch, phase: str) -> str:
    from streamops.errors import StreamopsError
    from streamops.topics import ensure_topics

    topic = scratch.topic(phase)
    try:
        ensure_topics(scratch.settings, (topic,))
    except StreamopsError as error:
        raise BenchmarkError(str(error)) from error
    scratch.topics.append(topic)
    return topic


def _delete_topics(settings: Settings, topics: list[str]) -> None:
    from streamops.topics import admin_client

    if not topics:
        return
    admin = admin_client(settings)  # held until the futures resolve: its end cancels them
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        try:
            future.result(timeout=60)
        except Exception as error:  # leftover scratch topics are untidy, not a failed benchmark
            print(f"warning: could not delete a scratch topic: {error}", file=sys.stderr)


@contextmanager
def _spark(scratch: Scratch) -> Iterator[Any]:
    from spark_jobs.common.listener import ProgressPublisher
    from spark_jobs.common.session import build_spark_session

    # The job's session; a longer progress history so that no batch of a phase is forgotten.
    spark = build_spark_session(
        "streamops-bench-orders",
        scratch.settings,
        {
            "spark.sql.streaming.numRecentProgressUpdates": "2000",
            # Progress bars would interleave with the benchmark's own lines on stderr.
            "spark.ui.showConsoleProgress": "false",
        },
    )
    spark.sparkContext.setLogLevel("ERROR")
    # The job's listener, as in production: it runs on Spark's listener bus for every batch.
    listener = ProgressPublisher(scratch.settings, scratch.pipeline)
    spark.streams.addListener(listener)
    try:
        yield spark
    finally:
        for query in spark.streams.active:
            stop_between_batches(query)
        spark.streams.removeListener(listener)
        listener.close()
        spark.stop()


@contextmanager
def _database(settings: Settings) -> Iterator[Any]:
    """A cursor; committed at the end."""
    from streamops.db import connect

    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        yield cursor
        connection.commit()


def _redis(settings: Settings) -> Any:
    import redis

    return redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)


# --- results --------------------------------------------------------------------------------------


def _draw(results: dict[str, Any], output: Path, stamp: datetime) -> dict[str, str]:
    prefix = f"{NAME}-{stamp:%Y%m%dT%H%M%SZ}"
    throughput = results["throughput"]
    modes = (("no-op sinks", "no_op"), ("real sinks", "sinks"))
    throughput_png = plots.bar_chart(
        output / f"{prefix}-throughput.png",
        title=f"Orders pipeline: draining {throughput['topic_orders']:,} orders",
        labels=[label for label, _ in modes],
        values=[throughput[key]["best"]["orders_per_second"] for _, key in modes],
        runs=[[r["orders_per_second"] for r in throughput[key]["runs"]] for _, key in modes],
        ylabel="orders/s (best round; dots: each round)",
        reference=throughput["no_op"]["best"]["orders_per_second"] / 2,
        reference_label="aim: sinks keep at least half the no-op rate",
        note=f"real/no-op = {throughput['ratio_sinks_to_no_op']:.2f}; "
        f"{_machine_note(results['load_average'])}",
    )
    latency = results["latency"]
    groups = [
        f"{entry['target_rate']:,}/s\n(sent {entry['achieved_rate']:,.0f}/s)" for entry in latency
    ]
    panels = {
        title: {f"p{p}": [entry[key][f"p{p}_ms"] for entry in latency] for p in (50, 95, 99)}
        for title, key in (
            ("visible in MariaDB (orders)", "mariadb_visible"),
            ("window update in Redis", "redis_window"),
        )
    }
    latency_png = plots.grouped_bars(
        output / f"{prefix}-latency.png",
        title="Orders pipeline: produce → visible latency",
        panels=panels,
        groups=groups,
        ylabel="milliseconds",
        reference=1000.0,
        reference_label="aim: p99 < 1 s",
        log_scale=True,
        missing="not visible "
        f"{max(e['waited_after_sending_seconds'] for e in latency):g} s after the last send",
        label=_milliseconds,
        note=_machine_note(results["load_average"]),
    )
    return {"throughput": str(throughput_png), "latency": str(latency_png)}


def _machine_note(load: dict[str, list[float]]) -> str:
    # The 1-minute load before the run is other work sharing the cores; during the run the
    # benchmark's own processes add to it.
    return (
        f"{os.cpu_count()} CPUs, load average {load['start'][0]:.1f} before the run, "
        f"{datetime.now(UTC):%Y-%m-%d}"
    )


def _milliseconds(value: float) -> str:
    return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.0f} ms"


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


def _best_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest round: other work on the machine only ever slows a round down, so the
    fastest is the closest to what the pipeline itself can do."""
    return max(runs, key=lambda run: run["orders_per_second"])


def _job_config() -> dict[str, Any]:
    from dataclasses import asdict

    from spark_jobs.jobs.orders import OrdersJobConfig

    return asdict(OrdersJobConfig())


def _spark_version() -> str:
    import pyspark

    return pyspark.__version__


# --- small helpers --------------------------------------------------------------------------------


def _rates_env() -> tuple[int, ...]:
    text = os.environ.get(RATES_ENV)
    if text is None:
        return DEFAULT_RATES
    try:
        rates = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        rates = ()
    if not rates or len(rates) > MAX_RATES or any(rate < 1 for rate in rates):
        raise BenchmarkError(
            f"{RATES_ENV} is {text!r}; give 1 to {MAX_RATES} orders/s rates, e.g. 1000,10000."
        )
    return rates


def _prefix(seed: int) -> str:
    """LIKE pattern of a seed's order ids (``ord-<seed>-0000001``)."""
    return f"ord-{seed}-%"


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def _round(value: float) -> float:
    return round(float(value), 1)


def _log(message: str) -> None:
    print(f"{NAME} {datetime.now():%H:%M:%S}: {message}", file=sys.stderr, flush=True)
