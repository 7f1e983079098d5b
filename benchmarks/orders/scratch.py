"""The scratch world of a run (topics, checkpoints, a Redis database, order ids and event
times no one else uses), the Spark session, and the removal of everything afterwards."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks import BenchmarkError, empty_redis_db
from benchmarks.orders.support import Scratch, log, naive_utc, order_id_pattern
from spark_jobs.common.runner import stop_between_batches
from streamops.config import Settings

# Far from any live data: the benchmark's event times fall on one day of this era.
ERA_ORIGIN = datetime(2001, 1, 1, tzinfo=UTC)
ERA_DAYS = 3650
ERA_MARGIN = timedelta(hours=1)
# Seeds from here on never meet the CLI's (small) or the stack generator's (epoch seconds).
SEED_ORIGIN = 3_000_000_000
SEEDS_PER_RUN = 100
DELETE_CHUNK_ROWS = 20_000


@contextmanager
def scratch_world(settings: Settings) -> Iterator[Scratch]:
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
        log("cleaning up")
        try:
            delete_written(scratch)
            with database(settings) as cursor:
                for table in ("query_progress", "query_status"):
                    cursor.execute(f"DELETE FROM {table} WHERE pipeline = ?", (scratch.pipeline,))
        finally:
            _delete_topics(settings, scratch.topics)
            shutil.rmtree(folder, ignore_errors=True)


def delete_written(scratch: Scratch) -> None:
    """Every row and key the sinks wrote for the benchmark's seeds, topics and era."""
    window_start, window_end = era_range(scratch)
    with database(scratch.settings) as cursor:
        for seed in scratch.seeds:
            while True:  # in chunks: one huge DELETE holds its locks and undo log for long
                cursor.execute(
                    f"DELETE FROM orders WHERE order_id LIKE ? LIMIT {DELETE_CHUNK_ROWS}",
                    (order_id_pattern(seed),),
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
    client = redis_client(scratch.settings)
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
    with database(settings) as cursor:
        for offset in range(20):
            day = ERA_ORIGIN + timedelta(days=(first + offset) % ERA_DAYS)
            low, high = day - ERA_MARGIN, day + timedelta(days=1) + ERA_MARGIN
            cursor.execute(
                "SELECT (SELECT COUNT(*) FROM order_revenue_5s "
                "WHERE window_start >= ? AND window_start < ?) + (SELECT COUNT(*) FROM orders "
                "WHERE event_time >= ? AND event_time < ?)",
                (naive_utc(low), naive_utc(high), naive_utc(low), naive_utc(high)),
            )
            if cursor.fetchone()[0] == 0:
                return day
    raise BenchmarkError("Found no day of 2001–2010 without orders or windows to use.")


def _free_seeds(settings: Settings, stamp: datetime) -> int:
    """The first of SEEDS_PER_RUN consecutive seeds whose order ids are all unused."""
    with database(settings) as cursor:
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


def era_range(scratch: Scratch) -> tuple[datetime, datetime]:
    low = scratch.era_start - ERA_MARGIN
    return naive_utc(low), naive_utc(scratch.era_start + timedelta(days=1) + ERA_MARGIN)


def create_topic(scratch: Scratch, phase: str) -> str:
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
def spark_session(scratch: Scratch) -> Iterator[Any]:
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
def database(settings: Settings) -> Iterator[Any]:
    """A cursor; committed at the end."""
    from streamops.db import connect

    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        yield cursor
        connection.commit()


def redis_client(settings: Settings) -> Any:
    import redis

    return redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
