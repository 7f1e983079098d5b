"""``foreachBatch`` writers of the joins pipeline, idempotent under replay, and the product
catalogue the enrichment reads.

``order_payments`` (one row per order), from the stream-stream join:
    Per batch, :func:`~spark_jobs.transforms.joins.best_payment_per_order` picks one row per
    order; the executors then write each row in two statements of one transaction: an
    ``INSERT`` that only adds a missing order, and an ``UPDATE … WHERE`` the new row beats the
    stored one (by status rank, then payment_time, then payment_id). A plain ``ON DUPLICATE KEY
    UPDATE`` cannot express "replace every column only if the new row wins": its assignments run
    left to right and each later one would see the columns already replaced. Equal rows never
    win, so a replayed batch changes nothing, and batches applied in any order end at the same
    row. Then, per 1-minute window of order time the batch touched, the counts are recomputed
    from the table (the system of record) and written to Redis as absolute values.

``category_revenue_1m``, from the enriched orders:
    A batch's sums per window, category and currency are *added* to the table, so a replay must
    not add them twice: the batch is recorded in ``joins_applied_batches`` (by query id and batch
    id) in the same transaction as the additions, and a batch already recorded adds nothing.
    Adding, rather than keeping per-window state in Spark, keeps the stream stateless apart from
    de-duplication; the cost is that a batch's sums are final once written (a product added to
    the catalogue later does not move revenue already counted as ``unknown``).

Redis keys are listed with types and TTLs in docs/redis-keys.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import mariadb
import redis
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType
from redis.typing import EncodableT, FieldT

from spark_jobs.common.refresh import RefreshingCopy
from spark_jobs.sinks import with_utc_wall_clock_timestamps, write_partitions
from spark_jobs.sinks.mariadb import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_CHUNK_SIZE,
    chunk_rows,
    executemany_in_chunks,
    upsert_sql,
)
from spark_jobs.transforms.joins import (
    CATEGORY_REVENUE_COLUMNS,
    ORDER_PAYMENT_COLUMNS,
    PRODUCT_COLUMNS,
    UNPAID,
    best_payment_per_order,
    category_revenue_per_window,
    enrich_with_products,
)
from streamops.config import Settings
from streamops.contract.joins import STATUS_RANKING
from streamops.contract.redis_keys import JOINS_KEY_PREFIX
from streamops.contract.times import iso_utc
from streamops.supervision.fence import connect, redis_client

log = logging.getLogger(__name__)

BatchWriter = Callable[[DataFrame, int], None]

ORDER_PAYMENTS_TABLE = "order_payments"
CATEGORY_REVENUE_TABLE = "category_revenue_1m"
APPLIED_BATCHES_TABLE = "joins_applied_batches"
CATEGORY_REVENUE_SINK = "category_revenue_1m"
# 1-minute windows kept in Redis: one day of payment minutes, three hours of category windows.
DEFAULT_MAX_PAYMENT_MINUTES = 1440
DEFAULT_MAX_CATEGORY_WINDOWS = 180
# A safety net: trimmed keys are deleted at once; the TTL clears them if the job stops.
DEFAULT_KEY_TTL_SECONDS = 24 * 3600
DEFAULT_PRODUCTS_REFRESH_SECONDS = 60.0
MINUTE = timedelta(minutes=1)
# The local property Spark's stream execution thread carries, read inside foreachBatch.
QUERY_ID_PROPERTY = "sql.streaming.queryId"

_RANK_SQL = "FIELD(status, " + ", ".join(f"'{name}'" for name in STATUS_RANKING) + ")"
_INSERT_ORDER_PAYMENT = upsert_sql(
    ORDER_PAYMENTS_TABLE, ("order_id",), ORDER_PAYMENT_COLUMNS, on_duplicate="ignore"
)
_UPDATED_COLUMNS = tuple(c for c in ORDER_PAYMENT_COLUMNS if c != "order_id")
# Parameters: the new values, the order_id, then (rank, rank, payment_time, payment_time,
# payment_id) of the new row. A NULL on either side of a comparison never lets a row win.
_REPLACE_IF_BETTER = (
    f"UPDATE {ORDER_PAYMENTS_TABLE} SET "
    + ", ".join(f"{column} = ?" for column in _UPDATED_COLUMNS)
    + f" WHERE order_id = ? AND ({_RANK_SQL} < ? OR ({_RANK_SQL} = ? AND "
    "(payment_time < ? OR (payment_time = ? AND payment_id < ?))))"
)
_PAYMENT_MINUTE_COUNTS = f"""
SELECT window_start,
       COUNT(*) AS orders,
       SUM(status <> '{UNPAID}') AS matched,
       SUM(COALESCE(amount_mismatch, 0)) AS mismatched,
       SUM(status = '{UNPAID}') AS unpaid,
       SUM(status = 'captured') AS captured,
       SUM(status = 'authorized') AS authorized,
       SUM(status = 'failed') AS failed,
       CAST(AVG(seconds_to_pay) AS DECIMAL(12,3)) AS avg_seconds_to_pay
FROM (
    SELECT order_time - INTERVAL (SECOND(order_time) * 1000000 + MICROSECOND(order_time))
               MICROSECOND AS window_start,
           status, amount_mismatch, seconds_to_pay
    FROM {ORDER_PAYMENTS_TABLE}
    WHERE order_time >= ? AND order_time < ?
) AS minutes
GROUP BY window_start
"""
_ADD_CATEGORY_REVENUE = (
    f"INSERT INTO {CATEGORY_REVENUE_TABLE} (window_start, category, currency, window_end, "
    "order_count, item_count, revenue) VALUES (?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE "
    f"{CATEGORY_REVENUE_TABLE}.order_count = {CATEGORY_REVENUE_TABLE}.order_count "
    "+ VALUES(order_count), "
    f"{CATEGORY_REVENUE_TABLE}.item_count = {CATEGORY_REVENUE_TABLE}.item_count "
    "+ VALUES(item_count), "
    f"{CATEGORY_REVENUE_TABLE}.revenue = {CATEGORY_REVENUE_TABLE}.revenue + VALUES(revenue)"
)
_RECORD_BATCH = (
    f"INSERT INTO {APPLIED_BATCHES_TABLE} (sink, query_id, batch_id, row_count) VALUES (?, ?, ?, ?)"
)
_DUPLICATE_KEY_ERRNO = 1062
# ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT: the transaction was rolled back and may be re-run.
_RETRY_ERRNOS = frozenset({1213, 1205})
DEADLOCK_ATTEMPTS = 5
_PRODUCT_SCHEMA = StructType([StructField(name, StringType(), False) for name in PRODUCT_COLUMNS])


# --- the product catalogue --------------------------------------------------------------------


def load_products(settings: Settings) -> list[tuple[str, str, str]]:
    """Every ``products`` row as ``(product_id, name, category)``, ordered by product_id."""
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        cursor.execute("SELECT product_id, name, category FROM products ORDER BY product_id")
        return [(str(p), str(n), str(c)) for p, n, c in cursor]


class ProductCatalogue(RefreshingCopy[list[tuple[str, str, str]]]):
    """``products``, re-read from MariaDB when the copy in hand is older than
    ``refresh_seconds``, so catalogue changes reach new orders without a restart.

    Read on the driver inside ``foreachBatch`` (the catalogue is small) and handed to Spark as
    a DataFrame that the enrichment broadcasts. A failed reload keeps the last copy and logs,
    so a MariaDB hiccup does not stop the stream; with no copy at all it raises.
    """

    def __init__(
        self,
        settings: Settings,
        refresh_seconds: float = DEFAULT_PRODUCTS_REFRESH_SECONDS,
        *,
        loader: Callable[[Settings], list[tuple[str, str, str]]] = load_products,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            settings,
            refresh_seconds,
            loader,
            what="product catalogue",
            describe=lambda products: f"{len(products)} products",
            clock=clock,
        )

    def current(self) -> list[tuple[str, str, str]]:
        return list(self.value())

    def frame(self, spark: SparkSession) -> DataFrame:
        """The catalogue as a DataFrame of :data:`PRODUCT_COLUMNS`."""
        return spark.createDataFrame(self.current(), _PRODUCT_SCHEMA)


# --- order_payments ---------------------------------------------------------------------------


@dataclass(frozen=True)
class JoinsRedisKeys:
    prefix: str = JOINS_KEY_PREFIX

    def payment_minute(self, window_start: str) -> str:
        return f"{self.prefix}:payments:minute:{window_start}"

    @property
    def payment_minutes(self) -> str:
        return f"{self.prefix}:payments:minutes"

    @property
    def payments_latest(self) -> str:
        return f"{self.prefix}:payments:latest"

    def category_window(self, window_start: str) -> str:
        return f"{self.prefix}:category:window:{window_start}"

    @property
    def category_windows(self) -> str:
        return f"{self.prefix}:category:windows"


def order_payments_writer(
    settings: Settings,
    *,
    key_prefix: str = JOINS_KEY_PREFIX,
    max_minutes: int = DEFAULT_MAX_PAYMENT_MINUTES,
    ttl_seconds: int = DEFAULT_KEY_TTL_SECONDS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> BatchWriter:
    """Join output (:data:`ORDER_PAYMENT_COLUMNS`) into ``order_payments`` and the Redis
    counts per minute of order time; see the module."""
    keys = JoinsRedisKeys(key_prefix)
    client: redis.Redis | None = None

    def write(batch: DataFrame, batch_id: int) -> None:
        nonlocal client
        best = with_utc_wall_clock_timestamps(best_payment_per_order(batch)).persist()
        try:
            write_order_payments(best, settings, chunk_size)
            summary = best.agg(
                F.count(F.lit(1)).alias("rows"),
                F.sum(F.when(F.col("status") != UNPAID, 1).otherwise(0)).alias("matched"),
                F.sum(F.when(F.col("amount_mismatch"), 1).otherwise(0)).alias("mismatched"),
                F.sum(F.when(F.col("status") == UNPAID, 1).otherwise(0)).alias("unpaid"),
            ).collect()[0]
            # The cast keeps the UTC wall clock of the NTZ column (the session zone is UTC).
            minute = F.date_trunc("minute", F.col("order_time")).cast("timestamp_ntz")
            minutes = [
                row.minute for row in best.select(minute.alias("minute")).distinct().collect()
            ]
        finally:
            best.unpersist()
        if not minutes:
            return
        counts = payment_minute_counts(settings, minutes)
        if client is None:
            client = redis_client(settings, socket_timeout=10, socket_connect_timeout=5)
        latest: dict[FieldT, EncodableT] = {
            "batch_id": str(batch_id),
            "written_at": f"{time.time():.3f}",
            "rows": str(summary.rows),
            "matched": str(summary.matched),
            "mismatched": str(summary.mismatched),
            "unpaid": str(summary.unpaid),
        }
        write_payment_minutes(client, keys, counts, latest, max_minutes, ttl_seconds)

    return write


def write_order_payments(frame: DataFrame, settings: Settings, chunk_size: int) -> None:
    """Insert missing orders and replace stored rows the new ones beat, partition by partition
    (a small batch from the driver: :func:`spark_jobs.sinks.write_partitions`).

    ``frame`` holds one row per order_id, timestamps as UTC wall-clock TIMESTAMP_NTZ.
    """
    selected = frame.select(*ORDER_PAYMENT_COLUMNS)

    def write_partition(partition: Iterator[Row]) -> None:
        chunks = chunk_rows((tuple(row) for row in partition), chunk_size, DEFAULT_CHUNK_BYTES)
        chunk = next(chunks, None)
        if chunk is None:
            return
        with closing(connect(settings)) as connection:
            cursor = connection.cursor()
            # Partitions write at once, each row by its key: no reader needs the gap locks
            # REPEATABLE READ would take on the secondary indexes, and they invite deadlocks.
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            while chunk is not None:
                _write_chunk(connection, chunk)
                chunk = next(chunks, None)

    write_partitions(selected, write_partition)


def _write_chunk(connection: mariadb.Connection, chunk: Sequence[Sequence[Any]]) -> None:
    """One transaction; retried when InnoDB picks it as a deadlock victim (it is idempotent)."""
    cursor = connection.cursor()
    for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
        try:
            cursor.executemany(_INSERT_ORDER_PAYMENT, chunk)
            cursor.executemany(_REPLACE_IF_BETTER, [_replace_params(r) for r in chunk])
            connection.commit()
            return
        except mariadb.Error as error:
            connection.rollback()
            if getattr(error, "errno", None) not in _RETRY_ERRNOS or attempt == DEADLOCK_ATTEMPTS:
                raise
            log.warning("order_payments chunk: %s; retrying (attempt %s)", error, attempt)
            time.sleep(0.1 * attempt)


def _replace_params(row: Sequence[Any]) -> tuple[Any, ...]:
    values = dict(zip(ORDER_PAYMENT_COLUMNS, row, strict=True))
    status = values["status"]
    rank = STATUS_RANKING.index(status) + 1 if status in STATUS_RANKING else 0
    return (
        *(values[c] for c in _UPDATED_COLUMNS),
        values["order_id"],
        rank,
        rank,
        values["payment_time"],
        values["payment_time"],
        values["payment_id"],
    )


def payment_minute_counts(settings: Settings, minutes: Sequence[datetime]) -> list[dict[str, Any]]:
    """The counts of ``order_payments`` per minute of order time, for the given minute starts
    (naive UTC): one dict per minute that has rows."""
    wanted = set(minutes)
    first, last = min(wanted), max(wanted)
    with closing(connect(settings)) as connection:
        cursor = connection.cursor(dictionary=True)
        cursor.execute(_PAYMENT_MINUTE_COUNTS, (first, last + MINUTE))
        return [row for row in cursor if row["window_start"] in wanted]


def write_payment_minutes(
    client: redis.Redis,
    keys: JoinsRedisKeys,
    counts: Sequence[dict[str, Any]],
    latest: dict[FieldT, EncodableT],
    max_minutes: int,
    ttl_seconds: int,
) -> None:
    """Overwrite each minute's hash with its absolute counts, index it, trim, in one MULTI."""
    with client.pipeline(transaction=True) as transaction:
        for row in counts:
            member = iso_utc(row["window_start"])
            mapping: dict[FieldT, EncodableT] = {
                "window_start": member,
                "window_end": iso_utc(row["window_start"] + MINUTE),
                **{
                    name: _redis_number(row[name])
                    for name in (
                        "orders",
                        "matched",
                        "mismatched",
                        "unpaid",
                        "captured",
                        "authorized",
                        "failed",
                        "avg_seconds_to_pay",
                    )
                },
                "batch_id": latest["batch_id"],
            }
            transaction.hset(keys.payment_minute(member), mapping=mapping)
            transaction.expire(keys.payment_minute(member), ttl_seconds)
            transaction.zadd(keys.payment_minutes, {member: _epoch(row["window_start"])})
        transaction.hset(keys.payments_latest, mapping=latest)
        transaction.execute()
    _trim(client, keys.payment_minutes, keys.payment_minute, max_minutes)


# --- category_revenue_1m ----------------------------------------------------------------------


def category_revenue_writer(
    settings: Settings,
    catalogue: ProductCatalogue,
    checkpoint_location: str,
    *,
    window_seconds: int = 60,
    key_prefix: str = JOINS_KEY_PREFIX,
    max_windows: int = DEFAULT_MAX_CATEGORY_WINDOWS,
    ttl_seconds: int = DEFAULT_KEY_TTL_SECONDS,
) -> BatchWriter:
    """Valid, de-duplicated orders enriched with the catalogue and added per window, category
    and currency to ``category_revenue_1m`` exactly once; then the windows' absolute values
    to Redis. See the module. ``checkpoint_location`` is the query's own checkpoint."""
    keys = JoinsRedisKeys(key_prefix)
    client: redis.Redis | None = None
    query_id: str | None = None

    def write(batch: DataFrame, batch_id: int) -> None:
        nonlocal client, query_id
        if query_id is None:
            query_id = streaming_query_id(batch, checkpoint_location)
        products = catalogue.frame(batch.sparkSession)
        sums = with_utc_wall_clock_timestamps(
            category_revenue_per_window(enrich_with_products(batch, products), window_seconds)
        ).collect()
        if not sums:
            return
        add_category_revenue(settings, query_id, batch_id, sums)
        windows = sorted({row.window_start for row in sums})
        stored = category_windows(settings, windows)
        if client is None:
            client = redis_client(settings, socket_timeout=10, socket_connect_timeout=5)
        write_category_windows(client, keys, windows, stored, batch_id, max_windows, ttl_seconds)

    return write


def streaming_query_id(batch: DataFrame, checkpoint_location: str) -> str:
    """The id of the streaming query running this ``foreachBatch`` call.

    Spark keeps it in the checkpoint's ``metadata`` file from the first start on, so it stays
    the same across restarts and changes with a fresh checkpoint. The stream execution thread
    also carries it as a local property; the file is the fallback when the property does not
    reach this thread, read through Spark so that any checkpoint URI works.
    """
    spark = batch.sparkSession
    query_id = spark.sparkContext.getLocalProperty(QUERY_ID_PROPERTY)
    if not query_id:
        metadata = spark.read.text(f"{checkpoint_location}/metadata").first()
        query_id = json.loads(metadata[0])["id"] if metadata is not None else None
    if not query_id:
        raise RuntimeError(f"No streaming query id in {checkpoint_location}/metadata.")
    return str(query_id)


def add_category_revenue(
    settings: Settings, query_id: str, batch_id: int, sums: Sequence[Row]
) -> bool:
    """Add a batch's sums, once: False (and nothing added) when the batch was applied before."""
    rows = [tuple(row[c] for c in _ADD_COLUMNS) for row in sums]
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        try:
            cursor.execute(_RECORD_BATCH, (CATEGORY_REVENUE_SINK, query_id, batch_id, len(rows)))
        except mariadb.IntegrityError as error:
            connection.rollback()
            if getattr(error, "errno", None) == _DUPLICATE_KEY_ERRNO:
                log.info(
                    "batch %s of query %s was applied before; adding nothing", batch_id, query_id
                )
                return False
            raise
        try:
            executemany_in_chunks(cursor, _ADD_CATEGORY_REVENUE, rows)
            connection.commit()
        except mariadb.Error:
            connection.rollback()
            raise
    return True


_ADD_COLUMNS = (
    "window_start",
    "category",
    "currency",
    "window_end",
    "order_count",
    "item_count",
    "revenue",
)
assert set(_ADD_COLUMNS) == set(CATEGORY_REVENUE_COLUMNS)


def category_windows(settings: Settings, windows: Sequence[datetime]) -> list[dict[str, Any]]:
    """Every stored row of ``category_revenue_1m`` for the given window starts (naive UTC)."""
    if not windows:
        return []
    placeholders = ", ".join("?" for _ in windows)
    with closing(connect(settings)) as connection:
        cursor = connection.cursor(dictionary=True)
        cursor.execute(
            "SELECT window_start, window_end, category, currency, order_count, item_count, "
            f"revenue FROM {CATEGORY_REVENUE_TABLE} WHERE window_start IN ({placeholders}) "
            "ORDER BY window_start, category, currency",
            tuple(windows),
        )
        return list(cursor)


def write_category_windows(
    client: redis.Redis,
    keys: JoinsRedisKeys,
    windows: Sequence[datetime],
    stored: Sequence[dict[str, Any]],
    batch_id: int,
    max_windows: int,
    ttl_seconds: int,
) -> None:
    """Replace each window's hash with the stored rows of that window, in one MULTI."""
    by_window: dict[datetime, list[dict[str, Any]]] = {window: [] for window in windows}
    for row in stored:
        by_window.setdefault(row["window_start"], []).append(row)
    with client.pipeline(transaction=True) as transaction:
        for window, rows in by_window.items():
            if not rows:
                continue
            member = iso_utc(window)
            mapping: dict[FieldT, EncodableT] = {
                "window_start": member,
                "window_end": iso_utc(rows[0]["window_end"]),
                "batch_id": str(batch_id),
            }
            for row in rows:
                field = f"{row['category']}:{row['currency']}"
                mapping[f"{field}:order_count"] = str(row["order_count"])
                mapping[f"{field}:item_count"] = str(row["item_count"])
                mapping[f"{field}:revenue"] = str(Decimal(row["revenue"]).quantize(Decimal("0.01")))
            key = keys.category_window(member)
            transaction.delete(key)
            transaction.hset(key, mapping=mapping)
            transaction.expire(key, ttl_seconds)
            transaction.zadd(keys.category_windows, {member: _epoch(window)})
        transaction.execute()
    _trim(client, keys.category_windows, keys.category_window, max_windows)


# --- helpers ----------------------------------------------------------------------------------


def _trim(client: redis.Redis, index: str, key_of: Callable[[str], str], keep: int) -> None:
    """Keep the newest ``keep`` members of the sorted set ``index``; delete the others' hashes."""
    with client.pipeline(transaction=True) as transaction:
        transaction.zrange(index, 0, -(keep + 1))
        transaction.zremrangebyrank(index, 0, -(keep + 1))
        trimmed, _ = transaction.execute()
    if trimmed:
        client.delete(*(key_of(_text(member)) for member in trimmed))


def _epoch(moment: datetime) -> float:
    return moment.replace(tzinfo=UTC).timestamp()


def _redis_number(value: Any) -> str:
    return "" if value is None else str(value)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
