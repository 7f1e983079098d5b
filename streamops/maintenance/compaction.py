"""MariaDB compaction: rollups, retention, ANALYZE/OPTIMIZE, each step verified by totals.

The steps, in the order the DAG runs them (each idempotent, so a rerun after a crash between any
two of them finishes the job and changes nothing else):

1. :func:`ensure_partitions` splits ``p_future`` of each partitioned table into daily partitions
   up to ``partition_days_ahead`` days from now.
2. :func:`reconcile_late_windows` recomputes the 5-second windows touched by late orders (orders
   stored long after their window closed, which the streaming aggregate dropped) from ``orders``.
3. :func:`rollup` rebuilds ``order_revenue_1m`` and ``order_revenue_1h`` for every hour holding a
   final 5-second window that changed since the last rollup, one transaction per hour, verified.
4. :func:`apply_retention` removes expired rows: whole daily partitions where the table is
   partitioned, else chunked deletes with a bounded lock wait. Revenue tables are verified against
   the hourly rollup first; a mismatch raises and nothing is removed.
5. :func:`analyze_and_optimize` refreshes statistics of the tables that lost rows and rebuilds
   fragmented ones during the configured off-peak hours.

Every connection uses READ COMMITTED (no gap locks that would hold up the streaming sinks' inserts)
and bounded lock waits, so maintenance waits a few seconds at most and then fails, never blocks a
stream for longer.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import mariadb

from streamops.config import Settings
from streamops.db import connect
from streamops.faults import kill_point
from streamops.maintenance import MaintenanceError, VerificationError, count_rollups
from streamops.maintenance.count_rollups import COUNT_FAMILIES, family_of

log = logging.getLogger(__name__)

ROLLUP_STATE = "rollup_5s_updated_at"
WINDOW_SECONDS = 5
_EPOCH = datetime(1970, 1, 1)
_IDENTIFIER = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_PARTITION_NAME = re.compile(r"^p(\d{8})$")
_LOCK_WAIT_TIMEOUT_ERRNO = 1205
_DEADLOCK_ERRNO = 1213

# How each revenue-bearing table sums to (order_count, item_count, revenue) per hour and currency.
# These sums must agree across tables for every hour that is still held by both, and must not
# change through a maintenance step.
_HOUR_SUMS: dict[str, tuple[str, str]] = {
    "orders": ("event_time", "COUNT(*), CAST(SUM(quantity) AS SIGNED), SUM(amount)"),
    "order_revenue_5s": ("window_start", "SUM(order_count), SUM(item_count), SUM(revenue)"),
    "order_revenue_1m": ("window_start", "SUM(order_count), SUM(item_count), SUM(revenue)"),
    "order_revenue_1h": ("window_start", "SUM(order_count), SUM(item_count), SUM(revenue)"),
}
ROLLUP_TABLE = "order_revenue_1h"

Totals = dict[tuple[datetime, str], tuple[int, int, Decimal]]


@dataclass(frozen=True)
class RetentionPolicy:
    """Rows of ``table`` whose ``time_column`` is older than ``days`` are removed.

    ``method`` is ``"partition"`` (drop whole daily partitions; the table must be RANGE COLUMNS
    partitioned on ``time_column`` by day, as the migrations create it) or ``"delete"`` (chunked
    deletes). ``days=None`` keeps the table forever. Tables in the revenue family are verified
    against ``order_revenue_1h`` before anything is removed.
    """

    table: str
    time_column: str
    days: int | None
    method: str = "delete"

    def __post_init__(self) -> None:
        for name in (self.table, self.time_column):
            if not _IDENTIFIER.match(name):
                raise ValueError(f"{name!r} is not a plain identifier")
        if self.method not in ("partition", "delete"):
            raise ValueError(f"{self.table}: method {self.method!r}; give 'partition' or 'delete'")
        if self.days is not None and self.days < 1:
            raise ValueError(f"{self.table}: retention of {self.days} days; give 1 or more")
        hour_tables = (ROLLUP_TABLE, *(family.hour_table for family in COUNT_FAMILIES))
        if self.table in hour_tables and self.days is not None:
            raise ValueError(f"{self.table} is what its finer tables are verified against")

    @property
    def verified(self) -> bool:
        """Removal is checked against an hour rollup (revenue or a count family)."""
        return self.table in _HOUR_SUMS or family_of(self.table) is not None


DEFAULT_RETENTION: tuple[RetentionPolicy, ...] = (
    RetentionPolicy("order_revenue_5s", "window_start", 7),
    RetentionPolicy("order_revenue_1m", "window_start", 90, "partition"),
    RetentionPolicy("orders", "event_time", 400),
    RetentionPolicy("quarantine", "quarantined_at", 30),
    RetentionPolicy("query_progress", "progress_at", 14),
    RetentionPolicy("checkpoint_health", "checked_at", 14, "partition"),
    RetentionPolicy("error_counts_1s", "second_start", 3),
    RetentionPolicy("error_counts_1m", "window_start", 90, "partition"),
    RetentionPolicy("error_counts", "window_start", 30),
    RetentionPolicy("vitals_readings", "event_time", 30),
    RetentionPolicy("vitals_summary_1m", "window_start", 30),
    # Only the newest batch of a query is ever replayed: a month of these is ample.
    RetentionPolicy("joins_applied_batches", "applied_at", 30),
)


@dataclass(frozen=True)
class CompactionConfig:
    """Every knob of the compaction; the DAG spec carries one (see docs/maintenance.md)."""

    # A 5-second window is final (the stream no longer writes it) this long after it ended: the
    # orders job's watermark is 10 s, so minutes of slack are plenty.
    finality_delay_seconds: int = 300
    # The rollup rereads rows updated this long before its last high-water mark: a row stamped
    # before a commit that landed after the previous run is still picked up.
    rollup_overlap_seconds: int = 600
    # An order is late when it was stored this long after its 5-second window closed (watermark
    # plus window plus slack): the streaming aggregate has dropped it.
    late_after_seconds: int = 30
    # Late orders are looked for among those stored within this lookback.
    reconcile_lookback_seconds: int = 3 * 3600
    retention: tuple[RetentionPolicy, ...] = DEFAULT_RETENTION
    partition_days_ahead: int = 3
    delete_chunk_rows: int = 5000
    chunk_pause_seconds: float = 0.05
    # Row and metadata lock waits of maintenance sessions: give up, never hold a stream up.
    lock_wait_timeout_seconds: int = 5
    lock_wait_retries: int = 3
    # OPTIMIZE rebuilds a table: only in these UTC hours, only when this share of it is free.
    optimize_hours_utc: tuple[int, ...] = (3,)
    optimize_min_free_fraction: float = 0.2
    analyze_tables: tuple[str, ...] = field(
        default=(
            "order_revenue_5s",
            "order_revenue_1m",
            "order_revenue_1h",
            "error_counts_1s",
            "error_counts_1m",
            "error_counts_1h",
            "vitals_readings",
            "vitals_summary_1h",
        )
    )

    def __post_init__(self) -> None:
        if self.finality_delay_seconds < WINDOW_SECONDS:
            raise ValueError("finality_delay_seconds must be at least one 5-second window")
        if self.delete_chunk_rows < 1 or self.lock_wait_timeout_seconds < 1:
            raise ValueError("delete_chunk_rows and lock_wait_timeout_seconds must be >= 1")
        if self.rollup_overlap_seconds < 0:
            raise ValueError("rollup_overlap_seconds must be >= 0")
        if self.partition_days_ahead < 1:
            raise ValueError("partition_days_ahead must be >= 1")
        if any(not 0 <= hour <= 23 for hour in self.optimize_hours_utc):
            raise ValueError("optimize_hours_utc are hours 0-23")
        tables = [policy.table for policy in self.retention]
        if len(tables) != len(set(tables)):
            raise ValueError(f"one retention policy per table, got {tables}")
        days = {policy.table: policy.days for policy in self.retention}
        # What reconciliation rebuilds from, and the rollup a table feeds, must outlive it.
        fine, raw = days.get("order_revenue_5s"), days.get("orders")
        if fine is not None and raw is not None and raw < fine:
            raise ValueError(
                "orders must be kept at least as long as order_revenue_5s: windows are "
                "reconciled from orders"
            )
        for family_fine, family_minute in (
            ("order_revenue_5s", "order_revenue_1m"),
            *((f.fine_table, f.minute_table) for f in COUNT_FAMILIES if f.minute_table),
        ):
            kept_fine, kept_minute = days.get(family_fine), days.get(family_minute)
            if kept_fine is not None and kept_minute is not None and kept_minute < kept_fine:
                raise ValueError(f"{family_minute} must be kept at least as long as {family_fine}")
        for table in self.analyze_tables:
            if not _IDENTIFIER.match(table):
                raise ValueError(f"{table!r} is not a plain identifier")

    def policy(self, table: str) -> RetentionPolicy | None:
        return next((p for p in self.retention if p.table == table), None)


# --- connections ------------------------------------------------------------------------------


@contextmanager
def maintenance_connection(settings: Settings, config: CompactionConfig) -> Iterator[Any]:
    """A connection whose waits are bounded and which takes no gap locks."""
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        wait = int(config.lock_wait_timeout_seconds)
        cursor.execute(f"SET SESSION innodb_lock_wait_timeout = {wait}")
        cursor.execute(f"SET SESSION lock_wait_timeout = {wait}")
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        yield connection


def _retrying(config: CompactionConfig, what: str, action: Any) -> Any:
    """Run ``action()``; on a lock wait timeout or deadlock wait and retry, then give up loudly."""
    for attempt in range(config.lock_wait_retries + 1):
        try:
            return action()
        except mariadb.Error as exc:
            if exc.errno not in (_LOCK_WAIT_TIMEOUT_ERRNO, _DEADLOCK_ERRNO):
                raise
            if attempt == config.lock_wait_retries:
                raise MaintenanceError(
                    f"{what}: still waiting for locks after {attempt + 1} tries of "
                    f"{config.lock_wait_timeout_seconds} s ({exc}). The streams keep their "
                    "locks; this run stops here and the next one resumes."
                ) from exc
            log.warning("%s: lock wait (%s); retrying", what, exc)
            time.sleep(min(2.0**attempt, 10.0))
    raise AssertionError("unreachable")


# --- time helpers -----------------------------------------------------------------------------


def utc_naive(moment: datetime | None = None) -> datetime:
    moment = datetime.now(UTC) if moment is None else moment
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def floor_window(moment: datetime) -> datetime:
    size = timedelta(seconds=WINDOW_SECONDS)
    return moment - (moment - _EPOCH) % size


def merge_windows(windows: Iterable[datetime]) -> list[tuple[datetime, datetime]]:
    """Contiguous 5-second windows merged into ``[start, end)`` ranges, in order."""
    step = timedelta(seconds=WINDOW_SECONDS)
    ranges: list[tuple[datetime, datetime]] = []
    for start in sorted(set(windows)):
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], start + step)
        else:
            ranges.append((start, start + step))
    return ranges


# --- totals -----------------------------------------------------------------------------------


def hour_totals(cursor: Any, table: str, start: datetime, end: datetime) -> Totals:
    """(order_count, item_count, revenue) per (hour, currency) of ``table`` in ``[start, end)``."""
    column, sums = _HOUR_SUMS[table]
    cursor.execute(
        f"SELECT DATE_FORMAT({column}, '%Y-%m-%d %H:00:00') AS hour, currency, {sums} "
        f"FROM {table} WHERE {column} >= ? AND {column} < ? GROUP BY hour, currency",
        (start, end),
    )
    return {
        (datetime.fromisoformat(hour), currency): (int(orders), int(items), Decimal(revenue))
        for hour, currency, orders, items, revenue in cursor.fetchall()
    }


def compare_totals(expected: Totals, actual: Totals, what: str) -> None:
    """Raise :class:`VerificationError` naming the first differing hours."""
    differing = sorted(
        key for key in set(expected) | set(actual) if expected.get(key) != actual.get(key)
    )
    if differing:
        shown = "; ".join(
            f"{hour:%Y-%m-%d %H:00} {currency}: {expected.get((hour, currency))} vs "
            f"{actual.get((hour, currency))}"
            for hour, currency in differing[:5]
        )
        raise VerificationError(
            f"{what}: totals differ in {len(differing)} hour(s) (order_count, item_count, "
            f"revenue): {shown}. Nothing was removed. Reconcile the hours "
            "(docs/maintenance.md, 'verification failed') and rerun."
        )


# --- step 1: partitions -----------------------------------------------------------------------


@dataclass(frozen=True)
class Partition:
    name: str
    # Exclusive upper bound; None for MAXVALUE.
    less_than: datetime | None


def list_partitions(cursor: Any, table: str) -> list[Partition]:
    cursor.execute(
        "SELECT PARTITION_NAME, PARTITION_DESCRIPTION FROM information_schema.PARTITIONS "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND PARTITION_NAME IS NOT NULL "
        "ORDER BY PARTITION_ORDINAL_POSITION",
        (table,),
    )
    partitions = []
    for name, description in cursor.fetchall():
        bound = (
            None if description == "MAXVALUE" else datetime.fromisoformat(description.strip("'"))
        )
        partitions.append(Partition(name, bound))
    return partitions


def partitions_to_add(existing: list[Partition], today: date, days_ahead: int) -> list[date]:
    """Days needing a partition of their own, so that every day up to ``today + days_ahead``
    has one. Only ever appends after the last bounded partition: a day before it (a gap left by
    downtime) is already covered by the partition after it."""
    bounded = [p.less_than for p in existing if p.less_than is not None]
    last_bound = max(bounded).date() if bounded else None
    first = today if last_bound is None else max(today, last_bound)
    return [
        first + timedelta(days=offset)
        for offset in range((today + timedelta(days=days_ahead) - first).days + 1)
    ]


def ensure_partitions(
    settings: Settings, config: CompactionConfig, now: datetime | None = None
) -> dict[str, list[str]]:
    """Create the daily partitions of each partitioned table ahead of time; returns the new ones.

    ``p_future`` (MAXVALUE) is split, which moves only rows already in it: normally none, since
    partitions exist days ahead.
    """
    today = utc_naive(now).date()
    created: dict[str, list[str]] = {}
    with maintenance_connection(settings, config) as connection:
        cursor = connection.cursor()
        for policy in config.retention:
            if policy.method != "partition":
                continue
            days = partitions_to_add(
                list_partitions(cursor, policy.table), today, config.partition_days_ahead
            )
            if not days:
                continue
            parts = ", ".join(
                f"PARTITION p{day:%Y%m%d} VALUES LESS THAN ('{day + timedelta(days=1)} 00:00:00')"
                for day in days
            )
            statement = (
                f"ALTER TABLE {policy.table} REORGANIZE PARTITION p_future INTO "
                f"({parts}, PARTITION p_future VALUES LESS THAN (MAXVALUE))"
            )
            _retrying(
                config, f"partitions of {policy.table}", lambda s=statement: cursor.execute(s)
            )
            created[policy.table] = [f"p{day:%Y%m%d}" for day in days]
            log.info("%s: created partitions %s", policy.table, created[policy.table])
    return created


# --- step 2: reconciliation of late windows ---------------------------------------------------


def find_late_windows(
    cursor: Any, config: CompactionConfig, now: datetime, not_before: datetime | None
) -> list[datetime]:
    """5-second windows holding an order stored ``late_after_seconds`` after the window ended."""
    cursor.execute(
        "SELECT DISTINCT event_time FROM orders "
        "WHERE ingested_at >= ? AND ingested_at > event_time + INTERVAL ? SECOND "
        "AND event_time < ?",
        (
            now - timedelta(seconds=config.reconcile_lookback_seconds),
            config.late_after_seconds + WINDOW_SECONDS,
            now - timedelta(seconds=config.finality_delay_seconds),
        ),
    )
    windows = {floor_window(row[0]) for row in cursor.fetchall()}
    return sorted(w for w in windows if not_before is None or w >= not_before)


def retention_cutoff(policy: RetentionPolicy | None, now: datetime) -> datetime | None:
    """Rows before this are expired; whole hours, so an hour is either all there or all gone."""
    if policy is None or policy.days is None:
        return None
    cutoff = floor_hour(now - timedelta(days=policy.days))
    if policy.method == "partition":
        cutoff = cutoff.replace(hour=0)
    return cutoff


def reconcile_late_windows(
    settings: Settings, config: CompactionConfig, now: datetime | None = None
) -> dict[str, Any]:
    """Recompute windows touched by late orders from ``orders``; returns the ranges reconciled.

    Windows older than ``order_revenue_5s``'s retention are left alone (their hour is already
    rolled up and its 5-second rows may be gone) and counted in ``beyond_retention``.
    """
    from streamops.maintenance.reconcile import reconcile_revenue_windows

    moment = utc_naive(now)
    cutoff = retention_cutoff(config.policy("order_revenue_5s"), moment)
    with maintenance_connection(settings, config) as connection:
        cursor = connection.cursor()
        all_late = find_late_windows(cursor, config, moment, None)
    late = [w for w in all_late if cutoff is None or w >= cutoff]
    ranges = merge_windows(late)
    changed = 0
    for start, end in ranges:
        changed += reconcile_revenue_windows(settings, start, end)
    return {
        "late_windows": len(late),
        "beyond_retention": len(all_late) - len(late),
        "ranges": [[start.isoformat(), end.isoformat()] for start, end in ranges],
        "rows_changed": changed,
    }


# --- step 3: rollups --------------------------------------------------------------------------

_ROLLUP_1M = """
INSERT INTO order_revenue_1m
    (window_start, currency, window_end, order_count, item_count, revenue, source_rows)
SELECT minute, currency, minute + INTERVAL 1 MINUTE, SUM(order_count), SUM(item_count),
       SUM(revenue), COUNT(*)
FROM (
    SELECT CAST(DATE_FORMAT(window_start, '%Y-%m-%d %H:%i:00') AS DATETIME(3)) AS minute,
           currency, order_count, item_count, revenue
    FROM order_revenue_5s WHERE window_start >= ? AND window_start < ?
) AS fine
GROUP BY minute, currency
ON DUPLICATE KEY UPDATE
    window_end = VALUES(window_end), order_count = VALUES(order_count),
    item_count = VALUES(item_count), revenue = VALUES(revenue), source_rows = VALUES(source_rows)
"""
# A minute whose 5-second windows all went away (reconciliation deleted them) loses its row too.
_PRUNE_1M = """
DELETE FROM order_revenue_1m
WHERE window_start >= ? AND window_start < ?
  AND NOT EXISTS (
    SELECT 1 FROM order_revenue_5s AS fine
    WHERE fine.currency = order_revenue_1m.currency
      AND fine.window_start >= order_revenue_1m.window_start
      AND fine.window_start < order_revenue_1m.window_end)
"""
_ROLLUP_1H = """
INSERT INTO order_revenue_1h
    (window_start, currency, window_end, order_count, item_count, revenue, source_rows)
SELECT ?, currency, ? + INTERVAL 1 HOUR, SUM(order_count), SUM(item_count), SUM(revenue),
       COUNT(*)
FROM order_revenue_1m WHERE window_start >= ? AND window_start < ?
GROUP BY currency
ON DUPLICATE KEY UPDATE
    window_end = VALUES(window_end), order_count = VALUES(order_count),
    item_count = VALUES(item_count), revenue = VALUES(revenue), source_rows = VALUES(source_rows)
"""
_PRUNE_1H = """
DELETE FROM order_revenue_1h
WHERE window_start = ?
  AND NOT EXISTS (
    SELECT 1 FROM order_revenue_1m AS m
    WHERE m.currency = order_revenue_1h.currency AND m.window_start >= ? AND m.window_start < ?)
"""


def _read_state(cursor: Any, name: str) -> datetime | None:
    cursor.execute("SELECT value FROM maintenance_state WHERE name = ?", (name,))
    row = cursor.fetchone()
    return None if row is None else row[0]


def _write_state(cursor: Any, name: str, value: datetime) -> None:
    cursor.execute(
        "INSERT INTO maintenance_state (name, value) VALUES (?, ?) "
        "ON DUPLICATE KEY UPDATE value = VALUES(value)",
        (name, value),
    )


def _rolled_up(cursor: Any, hour: datetime) -> bool:
    cursor.execute("SELECT COUNT(*) FROM order_revenue_1h WHERE window_start = ?", (hour,))
    (count,) = cursor.fetchone()
    return bool(count)


def dirty_hours(
    cursor: Any,
    since: datetime | None,
    final_before: datetime,
    extra_windows: Iterable[tuple[datetime, datetime]] = (),
) -> list[datetime]:
    """Hours with a final 5-second window updated since ``since``, plus those of extra ranges."""
    if since is None:
        cursor.execute(
            "SELECT DISTINCT DATE_FORMAT(window_start, '%Y-%m-%d %H:00:00') "
            "FROM order_revenue_5s WHERE window_start < ?",
            (final_before,),
        )
    else:
        cursor.execute(
            "SELECT DISTINCT DATE_FORMAT(window_start, '%Y-%m-%d %H:00:00') "
            "FROM order_revenue_5s WHERE updated_at >= ? AND window_start < ?",
            (since, final_before),
        )
    hours = {datetime.fromisoformat(row[0]) for row in cursor.fetchall()}
    for start, end in extra_windows:
        hour = floor_hour(start)
        while hour < end:
            if hour < final_before:
                hours.add(hour)
            hour += timedelta(hours=1)
    return sorted(hours)


def rollup_hour(
    connection: Any, hour: datetime, final_before: datetime, config: CompactionConfig
) -> None:
    """Rebuild one hour of ``order_revenue_1m`` and ``order_revenue_1h`` from the final 5-second
    windows, verify, commit; on any mismatch roll back and raise."""
    cursor = connection.cursor()
    end = min(hour + timedelta(hours=1), floor_minute(final_before))
    if end <= hour:
        return

    def once() -> None:
        try:
            before = hour_totals(cursor, "order_revenue_5s", hour, end)
            cursor.execute(_ROLLUP_1M, (hour, end))
            cursor.execute(_PRUNE_1M, (hour, end))
            cursor.execute(_ROLLUP_1H, (hour, hour, hour, hour + timedelta(hours=1)))
            cursor.execute(_PRUNE_1H, (hour, hour, hour + timedelta(hours=1)))
            after = hour_totals(cursor, "order_revenue_5s", hour, end)
            compare_totals(before, after, f"order_revenue_5s changed during the rollup of {hour}")
            compare_totals(
                after,
                hour_totals(cursor, "order_revenue_1m", hour, end),
                f"order_revenue_1m vs order_revenue_5s for {hour}",
            )
            if end == hour + timedelta(hours=1):
                compare_totals(
                    hour_totals(cursor, "order_revenue_1m", hour, end),
                    hour_totals(cursor, "order_revenue_1h", hour, end),
                    f"order_revenue_1h vs order_revenue_1m for {hour}",
                )
            kill_point("compaction:rollup:before_commit")
            connection.commit()
            kill_point("compaction:rollup:after_commit")
        except BaseException:
            connection.rollback()
            raise

    _retrying(config, f"rollup of {hour}", once)


def rollup(
    settings: Settings,
    config: CompactionConfig,
    now: datetime | None = None,
    extra_windows: Iterable[tuple[datetime, datetime]] = (),
) -> dict[str, Any]:
    """Roll final 5-second windows up into 1-minute and 1-hour rows, hour by hour; then the
    count families (count_rollups.py: error_counts_1s → 1m → 1h) the same way.

    The high-water mark (``maintenance_state``) moves only after every dirty hour is rolled up
    and verified, so a crash part-way reruns the same hours next time, harmlessly.
    """
    moment = utc_naive(now)
    final_before = floor_window(moment - timedelta(seconds=config.finality_delay_seconds))
    five_second_cutoff = retention_cutoff(config.policy("order_revenue_5s"), moment)
    with maintenance_connection(settings, config) as connection:
        cursor = connection.cursor()
        cursor.execute("SELECT UTC_TIMESTAMP(3)")
        (started_at,) = cursor.fetchone()
        mark = _read_state(cursor, ROLLUP_STATE)
        since = None if mark is None else mark - timedelta(seconds=config.rollup_overlap_seconds)
        hours = dirty_hours(cursor, since, final_before, extra_windows)
        connection.commit()
        rolled, skipped = [], []
        for hour in hours:
            # An expired hour may have lost its 5-second rows already: rebuilding it from what is
            # left would shrink its rollups, so its rollups stay as they are.
            # An hour never rolled up lost nothing yet (retention deletes only what matches
            # its rollup), so it is rolled up however old it is.
            if (
                five_second_cutoff is not None
                and hour + timedelta(hours=1) <= five_second_cutoff
                and _rolled_up(cursor, hour)
            ):
                skipped.append(hour)
                continue
            rollup_hour(connection, hour, final_before, config)
            rolled.append(hour)
        # Windows not final yet were left out; the next run must still see them as changed.
        _write_state(cursor, ROLLUP_STATE, min(started_at, final_before))
        connection.commit()
        counts = {
            family.name: count_rollups.rollup_counts(
                connection,
                family,
                moment,
                config.rollup_overlap_seconds,
                retention_cutoff(config.policy(family.fine_table), moment),
            )
            for family in COUNT_FAMILIES
        }
    return {
        "hours_rolled_up": len(rolled),
        "hours_skipped_beyond_retention": len(skipped),
        "final_before": final_before.isoformat(),
        "count_families": counts,
    }


# --- step 4: retention ------------------------------------------------------------------------


def _oldest(cursor: Any, policy: RetentionPolicy) -> datetime | None:
    cursor.execute(f"SELECT MIN({policy.time_column}) FROM {policy.table}")
    row = cursor.fetchone()
    return None if row is None else row[0]


def verify_against_rollup(cursor: Any, table: str, start: datetime, end: datetime) -> None:
    """Hour totals of ``table`` in ``[start, end)`` equal those of ``order_revenue_1h``."""
    compare_totals(
        hour_totals(cursor, table, start, end),
        hour_totals(cursor, ROLLUP_TABLE, start, end),
        f"{table} vs {ROLLUP_TABLE} for [{start}, {end}) before retention",
    )


def verify_before_removal(
    cursor: Any, table: str, start: datetime, end: datetime
) -> Callable[[], None] | None:
    """Check ``table`` against its hour rollup over ``[start, end)`` (raises on a mismatch) and
    return the check to run after the removal: the rollup itself did not change. None when the
    table has no rollup to be verified against."""
    family = family_of(table)
    if family is not None:
        rolled = count_rollups.verify_against_hours(cursor, family, table, start, end)
        return lambda: count_rollups.compare(
            rolled,
            count_rollups.hour_totals(cursor, family, family.hour_table, start, end),
            f"{family.hour_table} changed during the retention of {table}",
        )
    if table not in _HOUR_SUMS:
        return None
    verify_against_rollup(cursor, table, start, end)
    before = hour_totals(cursor, ROLLUP_TABLE, start, end)
    return lambda: compare_totals(
        before,
        hour_totals(cursor, ROLLUP_TABLE, start, end),
        f"{ROLLUP_TABLE} changed during the retention of {table}",
    )


def _delete_in_chunks(
    connection: Any, policy: RetentionPolicy, cutoff: datetime, config: CompactionConfig
) -> int:
    cursor = connection.cursor()
    statement = (
        f"DELETE FROM {policy.table} WHERE {policy.time_column} < ? "
        f"ORDER BY {policy.time_column} LIMIT {int(config.delete_chunk_rows)}"
    )
    deleted = 0
    while True:

        def chunk() -> int:
            try:
                cursor.execute(statement, (cutoff,))
                count = int(cursor.rowcount)
                kill_point("compaction:retention:chunk_before_commit")
                connection.commit()
                kill_point("compaction:retention:chunk_after_commit")
                return count
            except BaseException:
                connection.rollback()
                raise

        count = _retrying(config, f"retention of {policy.table}", chunk)
        deleted += count
        if count < config.delete_chunk_rows:
            return deleted
        time.sleep(config.chunk_pause_seconds)


def apply_retention(
    settings: Settings, config: CompactionConfig, now: datetime | None = None
) -> dict[str, dict[str, Any]]:
    """Remove expired rows of every table with a retention; returns what went, per table.

    Revenue tables are checked hour by hour against ``order_revenue_1h`` for the whole expired
    range first, and the rollup's totals again afterwards: a mismatch raises before anything of
    that table is removed.
    """
    moment = utc_naive(now)
    report: dict[str, dict[str, Any]] = {}
    with maintenance_connection(settings, config) as connection:
        cursor = connection.cursor()
        for policy in config.retention:
            cutoff = retention_cutoff(policy, moment)
            if cutoff is None:
                continue
            if policy.method == "partition":
                report[policy.table] = _drop_partitions(connection, policy, cutoff, config)
                continue
            oldest = _oldest(cursor, policy)
            connection.commit()
            if oldest is None or oldest >= cutoff:
                report[policy.table] = {"deleted_rows": 0, "cutoff": cutoff.isoformat()}
                continue
            start = _resume_point(cursor, policy.table, floor_hour(oldest), cutoff)
            unchanged = verify_before_removal(cursor, policy.table, start, cutoff)
            if unchanged is not None:
                # Remembered until the deletion is done: see _resume_point.
                _write_state(cursor, f"retention_{policy.table}_from", floor_hour(oldest))
                _write_state(cursor, f"retention_{policy.table}_before", cutoff)
            connection.commit()
            deleted = _delete_in_chunks(connection, policy, cutoff, config)
            if unchanged is not None:
                unchanged()
                cursor.execute(
                    "DELETE FROM maintenance_state WHERE name IN (?, ?)",
                    (f"retention_{policy.table}_from", f"retention_{policy.table}_before"),
                )
                connection.commit()
            report[policy.table] = {"deleted_rows": deleted, "cutoff": cutoff.isoformat()}
            log.info("%s: deleted %d rows before %s", policy.table, deleted, cutoff)
    return report


def _resume_point(cursor: Any, table: str, oldest_hour: datetime, cutoff: datetime) -> datetime:
    """Where verification of ``table`` starts: its oldest hour, unless a run that verified
    ``[from, before)`` was killed while deleting it. That run may have left an hour half deleted,
    which would never verify again (its rollup holds the whole hour); the rest of that verified
    range is only finished off. Rows older than the remembered range are verified as usual."""
    verified_from = _read_state(cursor, f"retention_{table}_from")
    verified_before = _read_state(cursor, f"retention_{table}_before")
    if verified_from is None or verified_before is None or oldest_hour < verified_from:
        return oldest_hour
    return max(oldest_hour, min(verified_before, cutoff))


def _drop_partitions(
    connection: Any, policy: RetentionPolicy, cutoff: datetime, config: CompactionConfig
) -> dict[str, Any]:
    cursor = connection.cursor()
    partitions = list_partitions(cursor, policy.table)
    expired: list[Partition] = []
    lower = datetime(1, 1, 1)
    ranges: list[tuple[datetime, datetime]] = []
    for partition in partitions:
        if partition.less_than is None or partition.less_than > cutoff:
            break
        expired.append(partition)
        ranges.append((lower, partition.less_than))
        lower = partition.less_than
    if not expired:
        return {"dropped_partitions": [], "cutoff": cutoff.isoformat()}
    # One check over the whole expired span: totals are compared hour by hour anyway.
    unchanged = verify_before_removal(cursor, policy.table, ranges[0][0], ranges[-1][1])
    connection.commit()
    names = [p.name for p in expired]
    # Dropping the first partition would leave no home for a straggler older than every bound
    # (it would land in the next day's partition); keeping the names predictable matters less.
    statement = f"ALTER TABLE {policy.table} DROP PARTITION {', '.join(names)}"
    kill_point("compaction:retention:before_drop")
    _retrying(config, f"dropping partitions of {policy.table}", lambda: cursor.execute(statement))
    if unchanged is not None:
        unchanged()
        connection.commit()
    log.info("%s: dropped partitions %s (before %s)", policy.table, names, cutoff)
    return {"dropped_partitions": names, "cutoff": cutoff.isoformat()}


# --- step 5: ANALYZE / OPTIMIZE ---------------------------------------------------------------


def analyze_and_optimize(
    settings: Settings, config: CompactionConfig, now: datetime | None = None
) -> dict[str, list[str]]:
    """ANALYZE the configured tables; OPTIMIZE the fragmented ones during off-peak hours only.

    OPTIMIZE on InnoDB is an online rebuild in MariaDB, but it still reads and rewrites the whole
    table, hence the schedule and the free-space threshold.
    """
    moment = utc_naive(now)
    analyzed, optimized = [], []
    with maintenance_connection(settings, config) as connection:
        cursor = connection.cursor()
        for table in config.analyze_tables:
            cursor.execute(f"ANALYZE TABLE {table}")
            cursor.fetchall()
            analyzed.append(table)
        if moment.hour in config.optimize_hours_utc:
            cursor.execute(
                "SELECT TABLE_NAME, DATA_FREE, DATA_LENGTH + INDEX_LENGTH "
                "FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
            )
            sizes = {name: (int(free or 0), int(used or 0)) for name, free, used in cursor}
            for table in config.analyze_tables:
                free, used = sizes.get(table, (0, 0))
                if used and free / (free + used) >= config.optimize_min_free_fraction:
                    cursor.execute(f"OPTIMIZE TABLE {table}")
                    cursor.fetchall()
                    optimized.append(table)
        connection.commit()
    return {"analyzed": analyzed, "optimized": optimized}


# --- the whole run, for tests and shells ------------------------------------------------------

STEPS = ("partitions", "reconcile", "rollup", "retention", "analyze")


def run_compaction(
    settings: Settings,
    config: CompactionConfig,
    now: datetime | None = None,
    *,
    crash_after: str | None = None,
) -> dict[str, Any]:
    """Every step in order, as the DAG runs them. ``crash_after`` (tests) raises after that step,
    standing in for a task killed between two steps."""
    if crash_after is not None and crash_after not in STEPS:
        raise ValueError(f"crash_after must be one of {STEPS}")
    report: dict[str, Any] = {}

    def done(step: str, result: Any) -> None:
        report[step] = result
        if step == crash_after:
            raise MaintenanceError(f"simulated crash after step {step!r}")

    done("partitions", ensure_partitions(settings, config, now))
    reconciled = reconcile_late_windows(settings, config, now)
    done("reconcile", reconciled)
    done("rollup", rollup(settings, config, now, ranges_of(reconciled)))
    done("retention", apply_retention(settings, config, now))
    done("analyze", analyze_and_optimize(settings, config, now))
    return report


def ranges_of(reconciled: dict[str, Any]) -> list[tuple[datetime, datetime]]:
    """The reconciled ranges of :func:`reconcile_late_windows`'s (JSON-safe) report."""
    return [
        (datetime.fromisoformat(start), datetime.fromisoformat(end))
        for start, end in reconciled.get("ranges", [])
    ]
