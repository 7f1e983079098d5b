"""Upserting a batch into MariaDB: batched ``executemany`` of ``INSERT … ON DUPLICATE KEY UPDATE``
against a staging table merged with one ``INSERT … SELECT … ON DUPLICATE KEY UPDATE``.

Both run through :func:`spark_jobs.sinks.mariadb.upsert_rows` (the code the sinks use) into a
scratch copy of ``orders`` (same columns, keys and checks), for two cases: every key new
(``insert``) and every key present with changed values (``update``). Strategies alternate which
goes first in each repeat, so a warming buffer pool favours neither; the median repeat counts.

The baseline is MariaDB's own bulk loader: ``LOAD DATA LOCAL INFILE`` of the same rows from a
tab-separated file into the same kind of scratch table (``REPLACE`` for the update case, which
deletes and re-inserts each row where the sink updates it in place), timed in the rotation of the
sink's own chunk size, from connecting to the commit as the sink is. Writing the file is timed
apart and left out: the loader is the ceiling of getting rows into the table, not a competitor.
``ratio_sink_to_load_data`` is the sink's rows/s (its default strategy and chunk size) over the
loader's, per case. It needs ``local_infile`` on the server (MariaDB's default, which the stack
keeps); the client asks for it on its own connection only.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast, get_args

from benchmarks import BenchmarkError, int_env
from spark_jobs.sinks.mariadb import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_STRATEGY,
    UpsertStrategy,
    upsert_rows,
)
from spark_jobs.sinks.orders import ORDER_COLUMNS, ORDERS_KEY
from streamops.config import Settings
from streamops.db import CONNECT_TIMEOUT_SECONDS, DatabaseUnavailableError, execute

ROWS_ENV = "BENCH_UPSERT_ROWS"
DEFAULT_ROWS = 50_000
REPEATS_ENV = "BENCH_REPEATS"
DEFAULT_REPEATS = 3
CHUNK_SIZES_ENV = "BENCH_UPSERT_CHUNK_SIZES"
DEFAULT_CHUNK_SIZES = (1_000, 5_000, 20_000)
COLUMNS = (*ORDER_COLUMNS, "ingested_at")
STRATEGIES: tuple[UpsertStrategy, ...] = get_args(UpsertStrategy)
LOAD_DATA = "load_data"
CASES = ("insert", "update")


def run(settings: Settings) -> dict[str, Any]:
    rows = int_env(ROWS_ENV, DEFAULT_ROWS)
    repeats = int_env(REPEATS_ENV, DEFAULT_REPEATS)
    chunk_sizes = _chunk_sizes()
    table = f"bench_upsert_orders_{os.getpid()}"
    try:
        execute(settings, f"CREATE TABLE `{table}` LIKE orders")
    except DatabaseUnavailableError as error:
        raise BenchmarkError(str(error)) from error
    try:
        _require_local_infile(settings)
        fresh, changed = _orders(rows, version=0), _orders(rows, version=1)
        with tempfile.TemporaryDirectory(prefix="streamops-bench-upsert-") as folder:
            started = time.perf_counter()
            files = {
                "insert": _write_tsv(Path(folder) / "insert.tsv", fresh),
                "update": _write_tsv(Path(folder) / "update.tsv", changed),
            }
            file_seconds = time.perf_counter() - started
            results, load_data = _measure(
                settings,
                table,
                rows,
                repeats,
                chunk_sizes,
                {"insert": fresh, "update": changed},
                files,
            )
    finally:
        execute(settings, f"DROP TABLE IF EXISTS `{table}`")
    sink = results[f"chunk_{DEFAULT_CHUNK_SIZE}"][DEFAULT_STRATEGY]
    return {
        "rows": rows,
        "repeats": repeats,
        "chunk_sizes": list(chunk_sizes),
        "table": "copy of orders (CREATE TABLE … LIKE orders)",
        "results": results,
        "fastest": _fastest(results),
        "sink_default": {"strategy": DEFAULT_STRATEGY, "chunk_size": DEFAULT_CHUNK_SIZE},
        "load_data": {
            **load_data,
            "statements": {case: _load_data_sql(table, case) for case in CASES},
            # Writing both files, for both cases, once: not part of the loader's rows/s.
            "file_seconds": round(file_seconds, 4),
        },
        "ratio_sink_to_load_data": sink_to_load_data(sink, load_data),
    }


def _measure(
    settings: Settings,
    table: str,
    rows: int,
    repeats: int,
    chunk_sizes: Sequence[int],
    batches: Mapping[str, list[tuple[Any, ...]]],
    files: Mapping[str, Path],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every strategy at every chunk size, and the loader in the rotation of the sink's own chunk
    size; the figures by chunk size, and the loader's."""
    results: dict[str, Any] = {}
    load_data: dict[str, Any] = {}
    for chunk_size in chunk_sizes:
        # The loader has no chunks: measured once, beside the sink as it runs.
        methods = (*STRATEGIES, LOAD_DATA) if chunk_size == DEFAULT_CHUNK_SIZE else STRATEGIES
        timings: dict[str, dict[str, list[float]]] = {
            method: {case: [] for case in CASES} for method in methods
        }
        # What each method left in the table: the same rows, or its rate would not compare.
        digests: dict[str, int] = {}
        for repeat in range(repeats):
            order = methods if repeat % 2 == 0 else tuple(reversed(methods))
            for method in order:
                execute(settings, f"TRUNCATE TABLE `{table}`")
                for case in CASES:
                    started = time.perf_counter()
                    if method == LOAD_DATA:
                        _load_data(settings, table, files[case], case)
                    else:
                        upsert_rows(
                            settings,
                            table,
                            ORDERS_KEY,
                            COLUMNS,
                            batches[case],
                            on_duplicate="update",
                            chunk_size=chunk_size,
                            strategy=cast(UpsertStrategy, method),
                        )
                    timings[method][case].append(time.perf_counter() - started)
                digests[method] = _check_table(settings, table, rows)
        if len(set(digests.values())) > 1:
            raise BenchmarkError(f"The methods left different rows in {table}: {digests}.")
        figures = {
            method: {case: _figures(rows, seconds) for case, seconds in cases.items()}
            for method, cases in timings.items()
        }
        if LOAD_DATA in figures:
            load_data = figures.pop(LOAD_DATA)
        results[f"chunk_{chunk_size}"] = figures
    return results, load_data


def _figures(rows: int, seconds: list[float]) -> dict[str, Any]:
    return {
        "median_seconds": round(statistics.median(seconds), 4),
        "rows_per_second": round(rows / statistics.median(seconds)),
        "runs_seconds": [round(s, 4) for s in seconds],
    }


def sink_to_load_data(
    sink: Mapping[str, Mapping[str, Any]], load_data: Mapping[str, Mapping[str, Any]]
) -> dict[str, float]:
    """Per case, the sink's rows/s over the loader's, from their median seconds for the same
    rows (below 1: the sink is slower)."""
    return {
        case: round(load_data[case]["median_seconds"] / sink[case]["median_seconds"], 4)
        for case in CASES
    }


# --- the baseline: LOAD DATA LOCAL INFILE ---------------------------------------------------------


def _require_local_infile(settings: Settings) -> None:
    """The server must allow LOAD DATA LOCAL; the benchmark never turns it on for the server."""
    ((_, value),) = execute(settings, "SHOW GLOBAL VARIABLES LIKE 'local_infile'")
    if str(value).upper() != "ON":
        raise BenchmarkError(
            "MariaDB's local_infile is OFF, so LOAD DATA LOCAL INFILE (the baseline) is refused; "
            "start the server with local_infile=ON (MariaDB's default) to run this benchmark."
        )


def tsv_field(value: Any) -> str:
    """One value as LOAD DATA reads it by default (tab-separated, backslash escapes, \\N for
    NULL)."""
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _write_tsv(path: Path, rows: Iterable[Sequence[Any]]) -> Path:
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for row in rows:
            out.write("\t".join(tsv_field(value) for value in row) + "\n")
    return path


def _load_data_sql(table: str, case: str) -> str:
    # The update case replaces the rows whose keys exist, as the sink's upsert updates them.
    mode = "REPLACE " if case == "update" else ""
    columns = ", ".join(f"`{column}`" for column in COLUMNS)
    return f"LOAD DATA LOCAL INFILE ? {mode}INTO TABLE `{table}` CHARACTER SET utf8mb4 ({columns})"


def _load_data(settings: Settings, table: str, path: Path, case: str) -> None:
    """The file into ``table`` in one statement and one transaction, on a connection of its own
    (as the sink opens one per batch) that allows LOCAL INFILE for itself only."""
    import mariadb

    try:
        connection = mariadb.connect(
            host=settings.mariadb_host,
            port=settings.mariadb_port,
            user=settings.mariadb_user,
            password=settings.mariadb_password,
            database=settings.mariadb_database,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            autocommit=False,
            local_infile=True,
        )
    except mariadb.Error as error:
        raise BenchmarkError(f"Could not connect to MariaDB for LOAD DATA: {error}") from error
    with closing(connection):
        cursor = connection.cursor()
        cursor.execute(_load_data_sql(table, case), (str(path),))
        connection.commit()


def _orders(count: int, *, version: int) -> list[tuple[Any, ...]]:
    """``count`` valid orders; ``version`` changes every non-key value but keeps the keys."""
    start = datetime(2030, 1, 1)
    rows = []
    for number in range(count):
        quantity = 1 + (number + version) % 5
        unit_price = Decimal(number % 10_000) / 100 + version
        rows.append(
            (
                f"bench-{number:08d}",
                f"customer-{number % 997}",
                f"product-{number % 101}",
                quantity,
                unit_price,
                "EUR" if number % 3 else "USD",
                quantity * unit_price,
                start + timedelta(milliseconds=number * 37 + version),
                number % 2,
                number,
                start + timedelta(seconds=version),
            )
        )
    return rows


def _check_table(settings: Settings, table: str, rows: int) -> int:
    """Every row there in its last version; a digest of their values, to compare methods."""
    columns = ", ".join(f"`{column}`" for column in COLUMNS)
    (count, versions, digest) = execute(
        settings,
        f"SELECT COUNT(*), COUNT(DISTINCT ingested_at), "
        f"COALESCE(SUM(CRC32(CONCAT_WS('|', {columns}))), 0) FROM `{table}`",
    )[0]
    if count != rows or versions != 1:
        raise BenchmarkError(f"{table} holds {count} rows in {versions} versions, not {rows} in 1.")
    return int(digest)


def _fastest(results: dict[str, Any]) -> dict[str, str]:
    fastest = {}
    for case in ("insert", "update"):
        best = min(
            (
                (by_strategy[strategy][case]["median_seconds"], chunk, strategy)
                for chunk, by_strategy in results.items()
                for strategy in by_strategy
            ),
        )
        fastest[case] = f"{best[2]} ({best[1]})"
    return fastest


def _chunk_sizes() -> tuple[int, ...]:
    """The chunk sizes to measure, the sink's own always among them: the ratio is of the sink as
    the pipelines run it."""
    text = os.environ.get(CHUNK_SIZES_ENV)
    if not text:
        return _with_sink_default(DEFAULT_CHUNK_SIZES)
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise BenchmarkError(
            f"{CHUNK_SIZES_ENV} is {text!r}; give whole numbers ≥ 1, e.g. 1000,5000."
        )
    return _with_sink_default(sizes)


def _with_sink_default(sizes: tuple[int, ...]) -> tuple[int, ...]:
    return sizes if DEFAULT_CHUNK_SIZE in sizes else tuple(sorted((*sizes, DEFAULT_CHUNK_SIZE)))
