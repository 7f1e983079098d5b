"""What the phases of the orders pipeline benchmark share: its sizes, the bookkeeping of its
scratch run, the pipeline itself (the orders job's own start, with the benchmark's overrides) and
small helpers."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from benchmarks import BenchmarkError, int_env
from spark_jobs.common.runner import BatchWriter, JobOverrides
from spark_jobs.jobs import orders
from spark_jobs.transforms.orders import rejected_orders, valid_orders
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

# Phase numbers pick each phase's seed (order ids) and hour of event time.
THROUGHPUT_PHASE, LATENCY_PHASE = 0, 1
# Each phase gets an hour of event time in the benchmark's day, so phases cannot share a window.
MAX_PHASE_SECONDS = 1800
MAX_RATES = 10


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


# --- the pipeline: the orders job's own start -----------------------------------------------------


def start_pipeline(
    spark: SparkSession,
    settings: Settings,
    topic: str,
    checkpoint: Path,
    *,
    sinks: bool,
    available_now: bool,
) -> list[StreamingQuery]:
    """The orders job's queries, started by its own ``orders.start`` (source, transforms, sinks,
    modes and query names as the supervised job has them) on ``topic``, checkpointed under
    ``checkpoint``; without ``sinks`` into the no-op sinks, with ``available_now`` until the
    topic is drained."""
    overrides = JobOverrides(
        checkpoint_location=str(checkpoint),
        trigger={"availableNow": True} if available_now else None,
        sinks={} if sinks else NO_OP_SINKS,
    )
    return orders.start(spark, settings, orders.OrdersJobConfig(topic=topic), overrides)


def count_records(batch: DataFrame, batch_id: int) -> None:
    """The records query's no-op sink: every column of the batch computed (persisted), split as
    ``records_writer`` splits it, and counted, but nothing written."""
    batch.persist()
    try:
        valid_orders(batch).count()
        rejected_orders(batch).count()
    finally:
        batch.unpersist()


def collect_windows(windows: DataFrame, batch_id: int) -> None:
    """The revenue query's no-op sink: the windows reach the driver, as the Redis writer's do."""
    windows.collect()


# By query role: the baseline of ``ratio_sinks_to_no_op``, the same work with nothing written.
NO_OP_SINKS: dict[str, BatchWriter] = {"records": count_records, "revenue": collect_windows}


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


def order_id_pattern(seed: int) -> str:
    """LIKE pattern of a seed's order ids (``ord-<seed>-0000001``)."""
    return f"ord-{seed}-%"


def naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def epoch_seconds(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def one_decimal(value: float) -> float:
    return round(float(value), 1)


def log(message: str) -> None:
    print(f"{NAME} {datetime.now():%H:%M:%S}: {message}", file=sys.stderr, flush=True)
