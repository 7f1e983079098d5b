"""MariaDB upserts for every pipeline's sinks, idempotent by primary key, and the quarantine writer.

Every writer upserts, so a replayed batch (Spark re-runs the last uncommitted batch after a crash)
writes the same rows again and changes nothing: ``on_duplicate="ignore"`` keeps the *first* copy
of a key (``quarantine``, ``orders``), ``on_duplicate="update"`` takes the *latest* values (a
window's aggregate in update output mode, whose absolute values make overwriting idempotent).
The pipelines' own writers are in their modules (``spark_jobs.sinks.orders``, ``.alerts``,
``.joins``, ``.vitals``).

A small batch is written from the driver over one connection; a larger one (a replay, a burst)
goes from the executors straight to MariaDB, one connection per non-empty partition
(:func:`spark_jobs.sinks.write_partitions`). Either way the rows are written in partition order.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from typing import Any, Literal

import mariadb
from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType

from spark_jobs.sinks import DRIVER_WRITE_MAX_ROWS, with_utc_wall_clock_timestamps, write_partitions
from spark_jobs.transforms.cleansing import QUARANTINE_COLUMNS
from streamops.config import Settings
from streamops.faults import kill_point
from streamops.supervision.fence import connect

BatchWriter = Callable[[DataFrame, int], None]
OnDuplicate = Literal["update", "ignore"]
UpsertStrategy = Literal["executemany", "staging"]

# benchmarks/bench_mariadb_upsert.py: 50,000 `orders` rows into a scratch copy of the table,
# MariaDB 10.11 on loopback, 2 vCPUs, median of 3, rows/s as insert (new keys) / update:
#   chunk     executemany ON DUPLICATE KEY    staging table + INSERT … SELECT … ON DUPLICATE KEY
#   1,000     31,600 / 25,700                 27,000 / 21,400
#   5,000     47,700 / 29,300                 39,000 / 29,100
#   20,000    54,900 / 35,800                 47,700 / 33,900
# (A second run: 5,000 → 51,000 / 33,700 against 38,500 / 31,700; 50,000 → 52,800 / 39,900
# against 47,200 / 34,000.) executemany wins every case: the connector's bulk protocol already
# sends a chunk in one round trip, and staging writes every row twice. It is the default.
DEFAULT_STRATEGY: UpsertStrategy = "executemany"
# Chunks above 5,000 rows gained at most ~15 %, within this machine's run-to-run noise, and hold
# their row locks longer.
# Rows per transaction; STREAMOPS_SINK_CHUNK_SIZE overrides it (tests use small chunks to put a
# kill between two chunk commits of one batch).
CHUNK_SIZE_ENV = "STREAMOPS_SINK_CHUNK_SIZE"
# Bytes per chunk, estimated (row_bytes); STREAMOPS_SINK_CHUNK_BYTES overrides it. executemany
# sends a chunk as one packet, and MariaDB refuses a packet over max_allowed_packet (16 MiB by
# default) with the whole batch failing on every retry: 5,000 quarantined records of up to ~2 MB
# each (key and value) would be ~10 GB. A quarter of the default keeps room for the estimate's
# slack; a row larger than the budget still goes, alone in its chunk.
CHUNK_BYTES_ENV = "STREAMOPS_SINK_CHUNK_BYTES"
# A TEXT column holds at most this many bytes (not characters).
TEXT_MAX_BYTES = 65_535
# What a value costs beyond its text or bytes: length prefix, null indicator, and the fixed-size
# values (numbers, dates) that row_bytes does not measure.
VALUE_OVERHEAD_BYTES = 16


def _positive_int_from_env(name: str, default: int, unit: str) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{name}={value!r}: give a whole number of {unit}, 1 or more.")
    return int(value)


def _chunk_size_from_env(default: int = 5_000) -> int:
    return _positive_int_from_env(CHUNK_SIZE_ENV, default, "rows")


def _chunk_bytes_from_env(default: int = 4 * 1024 * 1024) -> int:
    return _positive_int_from_env(CHUNK_BYTES_ENV, default, "bytes")


DEFAULT_CHUNK_SIZE = _chunk_size_from_env()
DEFAULT_CHUNK_BYTES = _chunk_bytes_from_env()

QUARANTINE_TABLE = "quarantine"
QUARANTINE_KEY = ("source_topic", "source_partition", "source_offset")
# Written when the batch has them.
QUARANTINE_OPTIONAL_COLUMNS = (
    "record_key",
    "source_timestamp",
    # A payload or key longer than QUARANTINE_KEEP_BYTES: its size and hash (migration 0014).
    "raw_payload_bytes",
    "raw_payload_sha256",
    "record_key_bytes",
    "record_key_sha256",
)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def upsert_sql(
    table: str,
    key_columns: Sequence[str],
    columns: Sequence[str],
    *,
    on_duplicate: OnDuplicate = "update",
    source: str | None = None,
) -> str:
    """``INSERT … ON DUPLICATE KEY UPDATE`` of ``columns`` into ``table``.

    ``update`` overwrites every non-key column with the new row's value; ``ignore`` keeps the row
    that is there. ``source`` names a table to ``INSERT … SELECT`` from instead of ``VALUES``.
    """
    names = [_quote(column) for column in columns]
    missing = [key for key in key_columns if key not in columns]
    if not key_columns or missing:
        raise ValueError(f"key columns {list(key_columns)} must be among the columns {columns}")
    column_list = ", ".join(names)
    if source is None:
        rows = f"VALUES ({', '.join('?' for _ in columns)})"
    else:
        rows = f"SELECT {column_list} FROM {_quote(source)}"
    target = _quote(table)
    updates = [_quote(c) for c in columns if c not in key_columns]
    # Assigned columns are qualified: with INSERT … SELECT the source has the same names.
    if on_duplicate == "update" and updates:
        # VALUES(col) is how MariaDB 10.11 names the row that was refused; no row alias syntax.
        assignments = ", ".join(f"{target}.{name} = VALUES({name})" for name in updates)
    elif on_duplicate in ("update", "ignore"):
        # A no-op assignment, not INSERT IGNORE: IGNORE would also turn a failed CHECK or a
        # truncated value into a warning and silently drop or mangle the row.
        key = f"{target}.{_quote(key_columns[0])}"
        assignments = f"{key} = {key}"
    else:
        raise ValueError(f"on_duplicate is {on_duplicate!r}; use 'update' or 'ignore'.")
    return f"INSERT INTO {target} ({column_list}) {rows} ON DUPLICATE KEY UPDATE {assignments}"


def row_bytes(row: Sequence[Any]) -> int:
    """About what ``row`` weighs on the wire: the bytes of its text and binary values plus
    :data:`VALUE_OVERHEAD_BYTES` per value. Text counts its UTF-8 bytes (``isascii`` is a flag
    lookup, so only non-ASCII text is encoded to be measured)."""
    size = VALUE_OVERHEAD_BYTES * len(row)
    for value in row:
        if isinstance(value, str):
            size += len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
        elif isinstance(value, bytes | bytearray | memoryview):
            size += len(value)
    return size


def chunk_rows(
    rows: Iterable[Sequence[Any]], chunk_size: int, chunk_bytes: int
) -> Iterator[list[Sequence[Any]]]:
    """``rows`` in order, as lists of at most ``chunk_size`` rows whose :func:`row_bytes` add up
    to at most ``chunk_bytes``; a row heavier than ``chunk_bytes`` makes a chunk alone. Lazy: the
    rows of a chunk are read only when it is asked for."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size is {chunk_size}; give 1 or more rows.")
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes is {chunk_bytes}; give 1 or more bytes.")
    chunk: list[Sequence[Any]] = []
    weight = 0
    for row in rows:
        size = row_bytes(row)
        if chunk and (len(chunk) == chunk_size or weight + size > chunk_bytes):
            yield chunk
            chunk, weight = [], 0
        chunk.append(row)
        weight += size
    if chunk:
        yield chunk


def executemany_in_chunks(
    cursor: mariadb.Cursor,
    statement: str,
    rows: Iterable[Sequence[Any]],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> None:
    """``cursor.executemany(statement, …)`` over ``rows`` cut by :func:`chunk_rows`, inside the
    caller's transaction: for writers that commit several statements together, so that no single
    call is a packet over max_allowed_packet."""
    for chunk in chunk_rows(rows, chunk_size, chunk_bytes):
        cursor.executemany(statement, chunk)


def truncate_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` bytes of UTF-8, on a character boundary.

    For display-only values (a sample message) bound for a column that counts bytes, such as
    TEXT (:data:`TEXT_MAX_BYTES`): in strict mode an over-long value fails the whole statement.
    """
    if len(text) * 4 <= max_bytes:  # no character takes more than 4 bytes
        return text
    if text.isascii():
        return text[:max_bytes]
    # A character cut in two leaves an incomplete sequence at the end, which "ignore" drops.
    return text.encode("utf-8", "surrogatepass")[:max_bytes].decode("utf-8", "ignore")


def upsert_rows(
    settings: Settings,
    table: str,
    key_columns: Sequence[str],
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    on_duplicate: OnDuplicate = "update",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    strategy: UpsertStrategy = DEFAULT_STRATEGY,
) -> int:
    """Upsert ``rows`` (values in the order of ``columns``) by ``key_columns``; return the count.

    Rows are consumed lazily in chunks of at most ``chunk_size`` rows and about ``chunk_bytes``
    bytes (:func:`chunk_rows`), each chunk in its own transaction, over one connection that is
    opened only when there is a first row. A duplicate key within the rows behaves as across
    calls: ``update`` keeps the last copy, ``ignore`` the first.
    """
    if strategy not in ("executemany", "staging"):
        raise ValueError(f"strategy is {strategy!r}; use 'executemany' or 'staging'.")
    chunks = chunk_rows(rows, chunk_size, chunk_bytes)
    chunk = next(chunks, None)
    if chunk is None:
        return 0
    written = 0
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        if strategy == "staging":
            stage = _create_stage(cursor, table, columns)
            insert_stage = f"INSERT INTO {_quote(stage)} ({', '.join(map(_quote, columns))}) "
            insert_stage += f"VALUES ({', '.join('?' for _ in columns)})"
            merge = upsert_sql(table, key_columns, columns, on_duplicate=on_duplicate, source=stage)
        else:
            statement = upsert_sql(table, key_columns, columns, on_duplicate=on_duplicate)
        while chunk is not None:
            try:
                if strategy == "staging":
                    cursor.executemany(insert_stage, chunk)
                    cursor.execute(merge)
                    cursor.execute(f"DELETE FROM {_quote(stage)}")
                else:
                    cursor.executemany(statement, chunk)
                connection.commit()
            except mariadb.Error:
                connection.rollback()
                raise
            written += len(chunk)
            chunk = next(chunks, None)
            if chunk is not None:
                # Test-only: a crash with some of the batch's chunks committed and some not.
                kill_point("mariadb:between_chunks")
    return written


def write_frame(
    frame: DataFrame,
    settings: Settings,
    table: str,
    key_columns: Sequence[str],
    columns: Sequence[str],
    *,
    on_duplicate: OnDuplicate = "update",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    strategy: UpsertStrategy = DEFAULT_STRATEGY,
    driver_max_rows: int = DRIVER_WRITE_MAX_ROWS,
) -> None:
    """Upsert ``columns`` of ``frame`` into ``table``: from the driver when the frame has at most
    ``driver_max_rows`` rows, else from the executors, partition by partition; in chunks of
    :func:`upsert_rows`.

    Timestamps are stored as UTC wall-clock times, binary values as bytes.
    """
    selected = with_utc_wall_clock_timestamps(frame.select(*(F.col(f"`{c}`") for c in columns)))
    binary = tuple(
        index
        for index, field in enumerate(selected.schema.fields)
        if isinstance(field.dataType, BinaryType)
    )
    # Only plain values travel to the executors: Settings pickles, the rest are str and tuples.
    key_columns, columns = tuple(key_columns), tuple(columns)

    def write_partition(partition: Iterator[Row]) -> None:
        upsert_rows(
            settings,
            table,
            key_columns,
            columns,
            (_db_row(row, binary) for row in partition),
            on_duplicate=on_duplicate,
            chunk_size=chunk_size,
            chunk_bytes=chunk_bytes,
            strategy=strategy,
        )

    write_partitions(selected, write_partition, driver_max_rows)


def quarantine_writer(settings: Settings) -> BatchWriter:
    """Rejected records into ``quarantine``, once per Kafka position (the first write stays)."""

    def write(batch: DataFrame, batch_id: int) -> None:
        optional = tuple(c for c in QUARANTINE_OPTIONAL_COLUMNS if c in batch.columns)
        write_frame(
            batch,
            settings,
            QUARANTINE_TABLE,
            QUARANTINE_KEY,
            (*QUARANTINE_COLUMNS, *optional),
            on_duplicate="ignore",
        )

    return write


def _create_stage(cursor: mariadb.Cursor, table: str, columns: Sequence[str]) -> str:
    # Temporary, so it belongs to this connection alone; LIMIT 0 copies the column types but no
    # keys, so a chunk with a repeated key stages fine and the merge decides, as executemany does.
    stage = f"{table}__stage"
    cursor.execute(f"DROP TEMPORARY TABLE IF EXISTS {_quote(stage)}")
    cursor.execute(
        f"CREATE TEMPORARY TABLE {_quote(stage)} AS "
        f"SELECT {', '.join(map(_quote, columns))} FROM {_quote(table)} LIMIT 0"
    )
    return stage


def _db_row(row: Row, binary: tuple[int, ...]) -> tuple[Any, ...]:
    if not binary:
        return tuple(row)
    values = list(row)
    for index in binary:
        # The connector would store a bytearray as the text of its repr.
        if values[index] is not None:
            values[index] = bytes(values[index])
    return tuple(values)


def _quote(identifier: str) -> str:
    # Identifiers cannot be bound as parameters; accept plain names only, then quote them.
    if not _IDENTIFIER.match(identifier):
        raise ValueError(f"{identifier!r} is not a plain table or column name.")
    return f"`{identifier}`"
