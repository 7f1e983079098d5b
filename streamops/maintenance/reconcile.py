"""Recomputing ``order_revenue_5s`` from ``orders``, inside MariaDB, and the Redis totals with it.

The streaming aggregate drops orders that arrive behind the watermark; ``orders`` keeps them. The
contract says a final window equals the aggregate over ``orders``, so a reconciliation (an Airflow
task, or by hand) recomputes windows from ``orders`` and overwrites what the stream wrote. The
windows it corrected go to Redis as the stream's would (``spark_jobs.sinks.orders``), so the live
totals keep equal to ``order_revenue_5s`` while the currency's records in Redis are whole:
before, they stayed short by every late order the maintenance counted (the chaos run's totals
check failed on it after an hourly compaction). Each carries its row from before the correction,
so a window older than those Redis tracks moves the totals by the difference too: before, it was
skipped, and after the platform had been down for over an hour the totals stayed short by every
late order of the reconciliation's catch-up (a chaos run found 145 orders missing).
"""

from __future__ import annotations

from contextlib import closing
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import mariadb

from streamops.config import Settings
from streamops.contract.orders import revenue_per_window_sql
from streamops.contract.times import as_utc_naive
from streamops.supervision.fence import connect, redis_client

WINDOW_SECONDS = 5
_EPOCH = datetime(1970, 1, 1)
_STAGE = "reconciled_revenue_5s"

_CREATE_STAGE = f"""
CREATE TEMPORARY TABLE {_STAGE} (
    window_start DATETIME(3)   NOT NULL,
    currency     CHAR(3) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    window_end   DATETIME(3)   NOT NULL,
    order_count  BIGINT        NOT NULL,
    item_count   BIGINT        NOT NULL,
    revenue      DECIMAL(18,2) NOT NULL,
    PRIMARY KEY (window_start, currency)
)
"""
# The same aggregate the pipeline's tests hold the stream to, so there is one definition of a
# window in SQL. Its window start is DATETIME arithmetic: independent of the session time zone,
# exact at window boundaries and valid past 2038, where MariaDB 10.11's UNIX_TIMESTAMP (and so
# FROM_UNIXTIME(FLOOR(UNIX_TIMESTAMP(t) / 5) * 5)) returns NULL.
_AGGREGATE = f"""
INSERT INTO {_STAGE} (window_start, currency, window_end, order_count, item_count, revenue)
SELECT window_start, currency, window_start + INTERVAL {WINDOW_SECONDS} SECOND,
       order_count, item_count, revenue
FROM ({revenue_per_window_sql("orders", WINDOW_SECONDS)}) AS computed
"""
_UPSERT = f"""
INSERT INTO order_revenue_5s (window_start, currency, window_end, order_count, item_count, revenue)
SELECT window_start, currency, window_end, order_count, item_count, revenue FROM {_STAGE}
ON DUPLICATE KEY UPDATE
    window_end = VALUES(window_end),
    order_count = VALUES(order_count),
    item_count = VALUES(item_count),
    revenue = VALUES(revenue)
"""
_CHANGED = f"""
SELECT computed.window_start, computed.currency, computed.window_end, computed.order_count,
       computed.item_count, computed.revenue,
       COALESCE(stored.order_count, 0), COALESCE(stored.item_count, 0),
       COALESCE(stored.revenue, 0)
FROM {_STAGE} AS computed
LEFT JOIN order_revenue_5s AS stored
    ON stored.window_start = computed.window_start AND stored.currency = computed.currency
WHERE stored.window_start IS NULL
   OR stored.window_end <> computed.window_end
   OR stored.order_count <> computed.order_count
   OR stored.item_count <> computed.item_count
   OR stored.revenue <> computed.revenue
"""
_DELETE_EMPTY = f"""
DELETE stored
FROM order_revenue_5s AS stored
LEFT JOIN {_STAGE} AS computed
    ON computed.window_start = stored.window_start AND computed.currency = stored.currency
WHERE stored.window_start >= ? AND stored.window_start < ? AND computed.window_start IS NULL
"""


def reconcile_revenue_windows(settings: Settings, start: datetime, end: datetime) -> int:
    """Make ``order_revenue_5s`` equal the aggregate over ``orders`` for windows in [start, end).

    ``start`` and ``end`` are UTC (naive means UTC) and widen to whole windows, since part of an
    order set would give a wrong total for the whole window. Windows with orders are upserted,
    windows without any order left are deleted, in one transaction. Returns the rows written:
    windows inserted or corrected plus windows deleted (0 when the table already agreed).
    """
    first, stop = window_floor(start), window_ceiling(end)
    if stop <= first:
        return 0
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        try:
            # The aggregate is computed once, into a table only this connection sees, then
            # counted against, merged into and compared with the stored windows.
            cursor.execute(f"DROP TEMPORARY TABLE IF EXISTS {_STAGE}")
            cursor.execute(_CREATE_STAGE)
            cursor.execute(_AGGREGATE, (first, stop))
            cursor.execute(_CHANGED)
            changed = cursor.fetchall()
            cursor.execute(_UPSERT)
            cursor.execute(_DELETE_EMPTY, (first, stop))
            deleted = cursor.rowcount
            connection.commit()
        except mariadb.Error:
            connection.rollback()
            raise
    if changed:
        _write_to_redis(settings, changed)
    return len(changed) + int(deleted)


def _write_to_redis(settings: Settings, rows: list[tuple[Any, ...]]) -> None:
    """The corrected windows into the Redis totals, as a batch without an id. After MariaDB's
    commit: a failure here leaves Redis short as before, and the next reconciliation of these
    windows finds MariaDB already right; the error reaches the maintenance task."""
    from streamops.contract.orders_redis import (
        DEFAULT_MAX_WINDOWS,
        DEFAULT_WINDOW_TTL_SECONDS,
        OrdersRedisKeys,
        Window,
        write_windows,
    )
    from streamops.contract.redis_keys import ORDERS_UPDATES_CHANNEL

    windows = [
        Window(
            currency=str(currency),
            window_start=start,
            window_end=end,
            order_count=int(order_count),
            item_count=int(item_count),
            revenue=Decimal(revenue),
            counted_before=(int(old_orders), int(old_items), Decimal(old_revenue)),
        )
        for (
            start,
            currency,
            end,
            order_count,
            item_count,
            revenue,
            old_orders,
            old_items,
            old_revenue,
        ) in rows
    ]
    client = redis_client(settings, socket_timeout=10, socket_connect_timeout=5)
    try:
        write_windows(
            client,
            OrdersRedisKeys(),
            windows,
            None,
            ORDERS_UPDATES_CHANNEL,
            DEFAULT_WINDOW_TTL_SECONDS,
            DEFAULT_MAX_WINDOWS,
        )
    finally:
        client.close()


def window_floor(moment: datetime, window_seconds: int = WINDOW_SECONDS) -> datetime:
    """Start of the window holding ``moment`` (naive UTC)."""
    moment = as_utc_naive(moment)
    size = timedelta(seconds=window_seconds)
    return moment - (moment - _EPOCH) % size


def window_ceiling(moment: datetime, window_seconds: int = WINDOW_SECONDS) -> datetime:
    """``moment`` if it starts a window, else the start of the next one (naive UTC)."""
    floor = window_floor(moment, window_seconds)
    return floor if floor == as_utc_naive(moment) else floor + timedelta(seconds=window_seconds)
