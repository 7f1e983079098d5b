"""``foreachBatch`` writers: plain functions ``(batch_df, batch_id) -> None``, idempotent by key.

- :mod:`spark_jobs.sinks.mariadb`: upserts into the contract's tables (the system of record).
- :mod:`spark_jobs.sinks.redis`: the latest windows and running totals for dashboards.

Replaying a batch (Spark re-runs the last uncommitted one after a crash) must leave every store as
the first run left it, so writers set absolute values by key and never add blindly.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import TimestampType

__all__ = ["as_utc_naive", "iso_utc", "with_utc_wall_clock_timestamps"]


def with_utc_wall_clock_timestamps(frame: DataFrame) -> DataFrame:
    """``frame`` with every TIMESTAMP column as TIMESTAMP_NTZ holding the UTC wall-clock time.

    PySpark turns a TIMESTAMP into a naive ``datetime`` in the *Python process's* local time
    zone, whatever ``spark.sql.session.timeZone`` says; DATETIME columns and Redis keys want UTC.
    A TIMESTAMP_NTZ comes back as the same naive wall-clock time on any machine.
    """
    columns = []
    for field in frame.schema.fields:
        column = F.col(f"`{field.name}`")
        if isinstance(field.dataType, TimestampType):
            # The cast gives the wall clock of the session time zone; converting from that zone
            # (None = the session's) to UTC makes the result independent of the session setting.
            column = F.convert_timezone(None, F.lit("UTC"), column.cast("timestamp_ntz"))
        columns.append(column.alias(field.name))
    return frame.select(*columns)


def as_utc_naive(moment: datetime) -> datetime:
    """``moment`` as a naive UTC datetime; a naive input is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def iso_utc(moment: datetime) -> str:
    """``2026-11-24T14:03:05.120Z``: the contract's wire format, milliseconds, always ``Z``."""
    moment = as_utc_naive(moment)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"
