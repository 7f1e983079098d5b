"""Redis sink of the orders pipeline: each batch's revenue windows through the one writer of the
orders' live records (``streamops.contract.orders_redis``, which documents the keys)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import redis
from pyspark.sql import DataFrame

from spark_jobs.sinks import with_utc_wall_clock_timestamps
from spark_jobs.transforms.orders import REVENUE_COLUMNS
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
from streamops.pipelines.fence import redis_client

BatchWriter = Callable[[DataFrame, int], None]
WINDOW_COLUMNS = REVENUE_COLUMNS


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
