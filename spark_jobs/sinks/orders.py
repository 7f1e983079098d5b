"""The orders pipeline's sinks: valid orders and revenue windows into MariaDB, the same windows
into Redis for the dashboards.

- ``orders`` keeps the *first* copy of an order_id (``on_duplicate="ignore"``): a repeated
  order_id is a duplicate counted once, and its first ``ingested_at`` stays.
- ``order_revenue_5s`` takes the *latest* values (``on_duplicate="update"``): in update output
  mode Spark emits the full current aggregate of every window that changed, so overwriting with
  those absolute values is idempotent.
- Redis gets each batch's windows through the one writer of the orders' live records
  (``streamops.contract.orders_redis``, which documents the keys).
"""

from __future__ import annotations

from decimal import Decimal

import redis
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_jobs.sinks import with_utc_wall_clock_timestamps
from spark_jobs.sinks.mariadb import BatchWriter, write_frame
from spark_jobs.transforms.orders import REVENUE_COLUMNS, VALID_ORDER_COLUMNS
from streamops.config import Settings
from streamops.contract.orders_redis import (
    CENT,
    DEFAULT_MAX_WINDOWS,
    DEFAULT_WINDOW_TTL_SECONDS,
    OrdersRedisKeys,
    Window,
    write_windows,
)
from streamops.contract.redis_keys import ORDERS_KEY_PREFIX, ORDERS_UPDATES_CHANNEL
from streamops.supervision.fence import redis_client

ORDERS_TABLE = "orders"
ORDERS_KEY = ("order_id",)
# What the writer takes from a batch of valid orders; kafka_timestamp is not stored.
ORDER_COLUMNS = tuple(c for c in VALID_ORDER_COLUMNS if c != "kafka_timestamp")
REVENUE_TABLE = "order_revenue_5s"
REVENUE_KEY = ("window_start", "currency")
WINDOW_COLUMNS = REVENUE_COLUMNS


def orders_writer(settings: Settings) -> BatchWriter:
    """Valid orders into ``orders``: the first copy of an order_id wins, for good.

    Every order of one batch gets the batch's ``ingested_at``. Within a batch, copies of an
    order_id share a Kafka partition (the key is the order_id), so the one with the lowest offset
    is written first and is the one kept.
    """

    def write(batch: DataFrame, batch_id: int) -> None:
        # Evaluated once per query, so every row of the batch carries the same instant.
        stamped = batch.withColumn("ingested_at", F.current_timestamp())
        write_frame(
            stamped,
            settings,
            ORDERS_TABLE,
            ORDERS_KEY,
            (*ORDER_COLUMNS, "ingested_at"),
            on_duplicate="ignore",
        )

    return write


def revenue_writer(settings: Settings) -> BatchWriter:
    """Windows into ``order_revenue_5s``, overwritten with the absolute values of the batch."""

    def write(batch: DataFrame, batch_id: int) -> None:
        write_frame(
            batch, settings, REVENUE_TABLE, REVENUE_KEY, REVENUE_COLUMNS, on_duplicate="update"
        )

    return write


def revenue_redis_writer(
    settings: Settings,
    *,
    channel: str = ORDERS_UPDATES_CHANNEL,
    ttl_seconds: int = DEFAULT_WINDOW_TTL_SECONDS,
    max_windows: int = DEFAULT_MAX_WINDOWS,
    key_prefix: str = ORDERS_KEY_PREFIX,
) -> BatchWriter:
    """A ``foreachBatch`` writer of revenue windows (window_start, window_end, currency,
    order_count, item_count, revenue) into Redis; see the module for the keys."""
    if ttl_seconds < 1 or max_windows < 1:
        raise ValueError(f"ttl_seconds ({ttl_seconds}) and max_windows ({max_windows}) must be ≥ 1")
    keys = OrdersRedisKeys(key_prefix)
    client: redis.Redis | None = None

    def write(batch: DataFrame, batch_id: int) -> None:
        nonlocal client
        # One row per window and currency that changed in this trigger: small, so the driver
        # handles it (Redis needs one transaction per batch anyway).
        rows = with_utc_wall_clock_timestamps(batch.select(*WINDOW_COLUMNS)).collect()
        windows = [
            Window(
                currency=row.currency,
                window_start=row.window_start,
                window_end=row.window_end,
                order_count=int(row.order_count),
                item_count=int(row.item_count),
                revenue=Decimal(row.revenue).quantize(CENT),
            )
            for row in rows
        ]
        if not windows:
            return
        if client is None:
            client = redis_client(settings, socket_timeout=10, socket_connect_timeout=5)
        write_windows(client, keys, windows, batch_id, channel, ttl_seconds, max_windows)

    return write
