"""``foreachBatch`` writers: plain functions ``(batch_df, batch_id) -> None``, idempotent by key.

One module per pipeline (``orders``, ``alerts``, ``joins``, ``vitals``) writes its outputs to
MariaDB (the system of record), Redis (live state) and Kafka; :mod:`spark_jobs.sinks.mariadb`
is the upsert they all use, and the quarantine writer every pipeline shares.

Replaying a batch (Spark re-runs the last uncommitted one after a crash) must leave every store as
the first run left it, so writers set absolute values by key and never add blindly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F
from pyspark.sql.types import TimestampType

__all__ = [
    "DRIVER_WRITE_MAX_ROWS",
    "with_utc_wall_clock_timestamps",
    "write_partitions",
]

# Batches up to this many rows are written from the driver (see write_partitions).
DRIVER_WRITE_MAX_ROWS = 10_000


def write_partitions(
    frame: DataFrame,
    write_partition: Callable[[Iterator[Row]], None],
    driver_max_rows: int = DRIVER_WRITE_MAX_ROWS,
) -> None:
    """``write_partition`` over every row of ``frame``: on the driver, as one partition, when
    ``frame`` has at most ``driver_max_rows`` rows; else on the executors, partition by partition.

    ``foreachPartition`` costs a Spark job whose every task forks a Python worker and unpickles
    the writer: seconds per batch on a loaded 2-core machine, and a worker that boots too slowly
    fails the task. A collect runs in the JVM alone. So the everyday small batch is collected
    (one row more than the limit tells small from large in that same job) and a replay or a burst
    stays distributed. Rows keep their partition order either way: a collect concatenates the
    partitions in order.
    """
    if driver_max_rows > 0:
        head = frame.limit(driver_max_rows + 1).collect()
        if len(head) <= driver_max_rows:
            write_partition(iter(head))
            return
    frame.foreachPartition(write_partition)


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
