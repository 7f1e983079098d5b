"""The orders pipeline's revenue windows in MariaDB SQL: one definition of a window, read by the
job's tests, the reconciliation and the chaos checks alike (CONTRACT.md, ``order_revenue_5s``)."""

from __future__ import annotations

import re

# The contract's revenue window (order_revenue_5s).
REVENUE_WINDOW_SECONDS = 5
# revenue_per_window_sql interpolates the table name, so it must be a plain identifier.
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}(\.[A-Za-z0-9_]{1,64})?$")


def revenue_per_window_sql(
    table: str = "orders", window_seconds: int = REVENUE_WINDOW_SECONDS
) -> str:
    """MariaDB SQL for what ``spark_jobs.transforms.orders.revenue_per_window`` computes, over
    the orders whose ``event_time`` lies in ``[?, ?)``; pass window-aligned bounds so no window
    is cut in two.

    Columns: ``window_start, currency, order_count, item_count, revenue`` (the key first, then
    the values; ``window_end`` is always ``window_start`` plus the window), ordered by the key.

    The window start is pure DATETIME arithmetic in whole microseconds since 1970: the stored
    values are UTC and DATETIME has no time zone, so the result does not depend on the session's
    ``time_zone``. Unlike ``FROM_UNIXTIME(FLOOR(UNIX_TIMESTAMP(t) / 5) * 5)`` it is also right
    after 2038 (where MariaDB 10.11's UNIX_TIMESTAMP gives NULL) and for windows too long for the
    four decimals MariaDB's division keeps. The double MOD floors like Spark, even before 1970.
    """
    check_window_seconds(window_seconds)
    if not _TABLE_NAME.fullmatch(table):
        raise ValueError(
            f"Table name {table!r} is not a plain identifier (letters, digits, '_', "
            "optionally database.table)."
        )
    quoted_table = ".".join(f"`{part}`" for part in table.split("."))
    size = window_seconds * 1_000_000
    offset = (
        f"MOD(MOD(TIMESTAMPDIFF(MICROSECOND, TIMESTAMP'1970-01-01 00:00:00', event_time), {size})"
        f" + {size}, {size})"
    )
    return f"""SELECT window_start,
       currency,
       COUNT(*) AS order_count,
       CAST(SUM(quantity) AS SIGNED) AS item_count,
       CAST(SUM(amount) AS DECIMAL(18,2)) AS revenue
FROM (
    SELECT event_time - INTERVAL {offset} MICROSECOND AS window_start,
           currency,
           quantity,
           amount
    FROM {quoted_table}
    WHERE event_time >= ? AND event_time < ?
) AS placed
GROUP BY window_start, currency
ORDER BY window_start, currency"""


def check_window_seconds(window_seconds: int) -> None:
    """A window length is a whole number of seconds, at least one (a bool is not a number)."""
    if (
        isinstance(window_seconds, bool)
        or not isinstance(window_seconds, int)
        or window_seconds < 1
    ):
        raise ValueError(f"window_seconds is {window_seconds!r}; give a whole number ≥ 1.")
