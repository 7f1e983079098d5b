"""Rollups of count tables: fine rows → 1-minute → 1-hour rows, verified, idempotent.

The revenue tables have their own rollup (compaction.py, with reconciliation from ``orders``);
this module serves the other families, each a :class:`CountFamily` from which the SQL is derived:

* ``error_counts``: the alerts pipeline's ``error_counts_1s`` (per service, level and second) →
  ``error_counts_1m`` → ``error_counts_1h``;
* ``vitals``: every stored reading (``vitals_readings``) → ``vitals_summary_1h`` per patient and
  hour, with each vital sign's count, sum, min and max (the average follows exactly, whatever
  signs each reading omitted); the stream's own ``vitals_summary_1m`` is left as it is.

How:

* a minute row aggregates the fine rows of its minute (each :class:`RollupColumn`) and counts its
  ``source_rows``; an hour row aggregates its minutes (or its fine rows, without a minute table);
* hours are rolled up only once final (the stream no longer writes them), each in one
  transaction: totals of the fine rows before and after, and per hour of every level, must agree
  or the transaction rolls back and the task fails;
* a high-water mark on the fine table's ``updated_at`` (``maintenance_state``) moves only after
  every dirty hour is done, so a killed run redoes the same hours next time, harmlessly;
* retention of the fine table (compaction.py's retention step) deletes only hours whose totals
  equal the hour rollup.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from streamops.faults import kill_point
from streamops.maintenance import VerificationError

log = logging.getLogger(__name__)

CountTotals = dict[tuple[Any, ...], tuple[int, ...]]


@dataclass(frozen=True)
class RollupColumn:
    """A value column of the rollup tables: how it aggregates the fine rows of a minute (or of an
    hour, for a family without a minute table) and how an hour aggregates its minutes."""

    name: str
    from_fine: str
    from_minutes: str


@dataclass(frozen=True)
class CountFamily:
    """A fine table and its rollups: a 1-minute table (optional) and a 1-hour table.

    ``verified`` pairs say what must agree: per hour and key, ``SUM(<fine expression>)`` over the
    fine rows equals ``SUM(<rollup column>)`` over the minute rows and over the hour rows.
    """

    name: str
    fine_table: str
    fine_time: str
    keys: tuple[str, ...]
    columns: tuple[RollupColumn, ...]
    verified: tuple[tuple[str, str], ...]
    hour_table: str
    minute_table: str | None = None
    # A fine row is final this long after its bucket ended (the job's watermark plus slack).
    finality_delay_seconds: int = 600
    # When a fine row was last written: what makes its hour dirty again.
    updated_column: str = "updated_at"

    @property
    def state_name(self) -> str:
        return f"rollup_{self.fine_table}_updated_at"

    def time_column(self, table: str) -> str:
        return self.fine_time if table == self.fine_table else "window_start"

    def sums(self, table: str) -> list[str]:
        """What :func:`hour_totals` sums in ``table``."""
        if table == self.fine_table:
            return [fine for fine, _ in self.verified]
        return [column for _, column in self.verified]


def _summed(column: str) -> RollupColumn:
    return RollupColumn(column, f"SUM({column})", f"SUM({column})")


ERROR_COUNTS = CountFamily(
    name="error_counts",
    fine_table="error_counts_1s",
    fine_time="second_start",
    keys=("service", "level"),
    columns=(
        _summed("event_count"),
        RollupColumn("first_seen", "MIN(first_seen)", "MIN(first_seen)"),
        RollupColumn("last_seen", "MAX(last_seen)", "MAX(last_seen)"),
    ),
    verified=(("event_count", "event_count"),),
    minute_table="error_counts_1m",
    hour_table="error_counts_1h",
    # The alerts job's watermark is 2 minutes: later lines are no longer counted.
    finality_delay_seconds=600,
)
VITAL_SIGNS = (
    "heart_rate",
    "spo2",
    "systolic_bp",
    "diastolic_bp",
    "temperature_c",
    "respiratory_rate",
)
VITALS = CountFamily(
    name="vitals",
    fine_table="vitals_readings",
    fine_time="event_time",
    keys=("patient_id",),
    columns=(
        RollupColumn("reading_count", "COUNT(*)", "SUM(reading_count)"),
        *(
            column
            for vital in VITAL_SIGNS
            for column in (
                # Each sign's own count and sum: a reading may omit any sign, so the average of
                # an hour is sum / count of that sign (vitals_summary_1h computes it).
                RollupColumn(f"{vital}_count", f"COUNT({vital})", f"SUM({vital}_count)"),
                RollupColumn(f"{vital}_sum", f"SUM({vital})", f"SUM({vital}_sum)"),
                RollupColumn(f"{vital}_min", f"MIN({vital})", f"MIN({vital}_min)"),
                RollupColumn(f"{vital}_max", f"MAX({vital})", f"MAX({vital}_max)"),
            )
        ),
    ),
    verified=(("1", "reading_count"),),
    hour_table="vitals_summary_1h",
    # A reading is stored once and never updated.
    updated_column="ingested_at",
    # The vitals job's watermark is 30 s; readings later than that are still stored
    # raw, and the next run rolls their hour up again (it is dirty by ingested_at).
    finality_delay_seconds=900,
)
COUNT_FAMILIES: tuple[CountFamily, ...] = (ERROR_COUNTS, VITALS)


def family_of(table: str) -> CountFamily | None:
    """The family whose fine or minute table is ``table``: its retention is verified against the
    family's hour rollup."""
    return next((f for f in COUNT_FAMILIES if table in (f.fine_table, f.minute_table)), None)


# --- SQL derived from a family ----------------------------------------------------------------


def _bucket(column: str, unit: str) -> str:
    fmt = "%Y-%m-%d %H:%i:00" if unit == "MINUTE" else "%Y-%m-%d %H:00:00"
    return f"CAST(DATE_FORMAT({column}, '{fmt}') AS DATETIME(3))"


def _upsert(family: CountFamily, table: str, select: str) -> str:
    keys = ", ".join(family.keys)
    values = [column.name for column in family.columns]
    updates = ", ".join(f"{c} = VALUES({c})" for c in ("window_end", *values, "source_rows"))
    return (
        f"INSERT INTO {table} (window_start, {keys}, window_end, {', '.join(values)}, "
        f"source_rows) {select} ON DUPLICATE KEY UPDATE {updates}"
    )


def minute_rollup_sql(family: CountFamily) -> str:
    """The minutes of ``[?, ?)`` from the fine rows (a family with a minute table)."""
    assert family.minute_table is not None
    minute = _bucket(family.fine_time, "MINUTE")
    keys = ", ".join(family.keys)
    aggregates = ", ".join(column.from_fine for column in family.columns)
    return _upsert(
        family,
        family.minute_table,
        f"SELECT {minute} AS minute, {keys}, {minute} + INTERVAL 1 MINUTE, {aggregates}, "
        f"COUNT(*) FROM {family.fine_table} "
        f"WHERE {family.fine_time} >= ? AND {family.fine_time} < ? GROUP BY minute, {keys}",
    )


def _prune_sql(family: CountFamily, table: str, source: str, source_time: str) -> str:
    """Rows of ``table`` in ``[?, ?)`` whose source rows all went away go too."""
    match = " AND ".join(f"src.{k} = r.{k}" for k in family.keys)
    return (
        f"DELETE r FROM {table} AS r WHERE r.window_start >= ? AND r.window_start < ? "
        f"AND NOT EXISTS (SELECT 1 FROM {source} AS src WHERE {match} "
        f"AND src.{source_time} >= r.window_start AND src.{source_time} < r.window_end)"
    )


def minute_prune_sql(family: CountFamily) -> str:
    assert family.minute_table is not None
    return _prune_sql(family, family.minute_table, family.fine_table, family.fine_time)


def hour_rollup_sql(family: CountFamily) -> str:
    """The hour ``?`` from its minutes, or from its fine rows when the family has no minutes.
    Parameters: hour start, hour start, range start, range end."""
    keys = ", ".join(family.keys)
    if family.minute_table is not None:
        source, time_column = family.minute_table, "window_start"
        aggregates = ", ".join(column.from_minutes for column in family.columns)
    else:
        source, time_column = family.fine_table, family.fine_time
        aggregates = ", ".join(column.from_fine for column in family.columns)
    return _upsert(
        family,
        family.hour_table,
        f"SELECT ?, {keys}, ? + INTERVAL 1 HOUR, {aggregates}, COUNT(*) FROM {source} "
        f"WHERE {time_column} >= ? AND {time_column} < ? GROUP BY {keys}",
    )


def hour_prune_sql(family: CountFamily) -> str:
    if family.minute_table is not None:
        return _prune_sql(family, family.hour_table, family.minute_table, "window_start")
    return _prune_sql(family, family.hour_table, family.fine_table, family.fine_time)


def hour_totals(
    cursor: Any, family: CountFamily, table: str, start: datetime, end: datetime
) -> CountTotals:
    """The verified sums of ``table`` per hour and key in ``[start, end)``."""
    time_column = family.time_column(table)
    keys = ", ".join(family.keys)
    sums = ", ".join(f"CAST(SUM({expression}) AS SIGNED)" for expression in family.sums(table))
    cursor.execute(
        f"SELECT DATE_FORMAT({time_column}, '%Y-%m-%d %H:00:00') AS hour, {keys}, {sums} "
        f"FROM {table} WHERE {time_column} >= ? AND {time_column} < ? GROUP BY hour, {keys}",
        (start, end),
    )
    width = 1 + len(family.keys)
    return {
        tuple(row[:width]): tuple(int(value) for value in row[width:]) for row in cursor.fetchall()
    }


def compare(expected: CountTotals, actual: CountTotals, what: str) -> None:
    if expected != actual:
        differing = sorted(
            key for key in expected.keys() | actual.keys() if expected.get(key) != actual.get(key)
        )
        raise VerificationError(
            f"{what}: totals differ for {len(differing)} hour(s) and keys, first "
            f"{differing[:3]}: {[expected.get(k) for k in differing[:3]]} vs "
            f"{[actual.get(k) for k in differing[:3]]}"
        )


# --- the rollup step --------------------------------------------------------------------------


def dirty_hours(
    cursor: Any, family: CountFamily, since: datetime | None, final_before: datetime
) -> list[datetime]:
    """Hours holding a final fine row written since ``since`` (every hour when None)."""
    hour = f"DATE_FORMAT({family.fine_time}, '%Y-%m-%d %H:00:00')"
    if since is None:
        cursor.execute(
            f"SELECT DISTINCT {hour} FROM {family.fine_table} WHERE {family.fine_time} < ?",
            (final_before,),
        )
    else:
        cursor.execute(
            f"SELECT DISTINCT {hour} FROM {family.fine_table} "
            f"WHERE {family.updated_column} >= ? AND {family.fine_time} < ?",
            (since, final_before),
        )
    return sorted(datetime.fromisoformat(row[0]) for row in cursor.fetchall())


def rollup_count_hour(
    connection: Any, family: CountFamily, hour: datetime, final_before: datetime
) -> None:
    """Rebuild one hour's minute and hour rows from its final fine rows, verify, commit."""
    cursor = connection.cursor()
    end = min(hour + timedelta(hours=1), final_before.replace(second=0, microsecond=0))
    if end <= hour:
        return
    full_hour = end == hour + timedelta(hours=1)
    try:
        before = hour_totals(cursor, family, family.fine_table, hour, end)
        if family.minute_table is not None:
            cursor.execute(minute_rollup_sql(family), (hour, end))
            cursor.execute(minute_prune_sql(family), (hour, end))
            source, source_end = family.minute_table, end
        else:
            source, source_end = family.fine_table, end
        if family.minute_table is not None or full_hour:
            hour_range = (hour, hour + timedelta(hours=1))
            cursor.execute(hour_rollup_sql(family), (hour, hour, *hour_range))
            cursor.execute(hour_prune_sql(family), hour_range)
        after = hour_totals(cursor, family, family.fine_table, hour, end)
        compare(before, after, f"{family.fine_table} changed during the rollup of {hour}")
        if family.minute_table is not None:
            compare(
                after,
                hour_totals(cursor, family, family.minute_table, hour, end),
                f"{family.minute_table} vs {family.fine_table} for {hour}",
            )
        if full_hour:
            compare(
                hour_totals(cursor, family, source, hour, source_end),
                hour_totals(cursor, family, family.hour_table, hour, end),
                f"{family.hour_table} vs {source} for {hour}",
            )
        kill_point(f"compaction:rollup_counts:{family.name}:before_commit")
        connection.commit()
    except BaseException:
        connection.rollback()
        raise


def rollup_counts(
    connection: Any,
    family: CountFamily,
    now: datetime,
    overlap_seconds: int,
    fine_cutoff: datetime | None,
) -> dict[str, Any]:
    """Roll every dirty final hour of ``family`` up; the mark moves once all are done.

    An hour already rolled up whose fine rows are past retention is left alone: rebuilding it from
    what retention left would shrink it.
    """
    cursor = connection.cursor()
    cursor.execute("SELECT UTC_TIMESTAMP(3)")
    (started_at,) = cursor.fetchone()
    final_before = now - timedelta(seconds=family.finality_delay_seconds)
    cursor.execute("SELECT value FROM maintenance_state WHERE name = ?", (family.state_name,))
    row = cursor.fetchone()
    since = None if row is None else row[0] - timedelta(seconds=overlap_seconds)
    hours = dirty_hours(cursor, family, since, final_before)
    connection.commit()
    rolled, skipped = [], []
    for hour in hours:
        if fine_cutoff is not None and hour + timedelta(hours=1) <= fine_cutoff:
            cursor.execute(
                f"SELECT COUNT(*) FROM {family.hour_table} WHERE window_start = ?", (hour,)
            )
            if cursor.fetchone()[0]:
                skipped.append(hour)
                continue
        rollup_count_hour(connection, family, hour, final_before)
        rolled.append(hour)
    cursor.execute(
        "INSERT INTO maintenance_state (name, value) VALUES (?, ?) "
        "ON DUPLICATE KEY UPDATE value = VALUES(value)",
        (family.state_name, min(started_at, final_before)),
    )
    connection.commit()
    log.info("%s: %d hours rolled up, %d skipped", family.name, len(rolled), len(skipped))
    return {
        "hours_rolled_up": len(rolled),
        "hours_skipped_beyond_retention": len(skipped),
        "final_before": final_before.isoformat(),
    }


def verify_against_hours(
    cursor: Any, family: CountFamily, table: str, start: datetime, end: datetime
) -> CountTotals:
    """Before retention: every hour of ``table`` in ``[start, end)`` equals its hour rollup.
    Returns the hour rollup's totals, which the removal must not change."""
    rolled = hour_totals(cursor, family, family.hour_table, start, end)
    compare(
        hour_totals(cursor, family, table, start, end),
        rolled,
        f"{table} vs {family.hour_table} for [{start}, {end}) before retention",
    )
    return rolled


__all__ = [
    "COUNT_FAMILIES",
    "ERROR_COUNTS",
    "CountFamily",
    "family_of",
    "rollup_counts",
    "verify_against_hours",
]
