"""Upserting a batch into MariaDB: batched ``executemany`` of ``INSERT … ON DUPLICATE KEY UPDATE``
against a staging table merged with one ``INSERT … SELECT … ON DUPLICATE KEY UPDATE``.

Both run through :func:`spark_jobs.sinks.mariadb.upsert_rows` (the code the sinks use) into a
scratch copy of ``orders`` (same columns, keys and checks), for two cases: every key new
(``insert``) and every key present with changed values (``update``). Strategies alternate which
goes first in each repeat, so a warming buffer pool favours neither; the median repeat counts.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, get_args

from benchmarks import BenchmarkError, int_env
from spark_jobs.sinks.mariadb import UpsertStrategy, upsert_rows
from spark_jobs.sinks.orders import ORDER_COLUMNS, ORDERS_KEY
from streamops.config import Settings
from streamops.db import DatabaseUnavailableError, execute

ROWS_ENV = "BENCH_UPSERT_ROWS"
DEFAULT_ROWS = 50_000
REPEATS_ENV = "BENCH_REPEATS"
DEFAULT_REPEATS = 3
CHUNK_SIZES_ENV = "BENCH_UPSERT_CHUNK_SIZES"
DEFAULT_CHUNK_SIZES = (1_000, 5_000, 20_000)
COLUMNS = (*ORDER_COLUMNS, "ingested_at")
STRATEGIES: tuple[UpsertStrategy, ...] = get_args(UpsertStrategy)


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
        fresh, changed = _orders(rows, version=0), _orders(rows, version=1)
        results: dict[str, Any] = {}
        for chunk_size in chunk_sizes:
            timings: dict[str, dict[str, list[float]]] = {
                strategy: {"insert": [], "update": []} for strategy in STRATEGIES
            }
            for repeat in range(repeats):
                order = STRATEGIES if repeat % 2 == 0 else tuple(reversed(STRATEGIES))
                for strategy in order:
                    execute(settings, f"TRUNCATE TABLE `{table}`")
                    for case, batch in (("insert", fresh), ("update", changed)):
                        started = time.perf_counter()
                        upsert_rows(
                            settings,
                            table,
                            ORDERS_KEY,
                            COLUMNS,
                            batch,
                            on_duplicate="update",
                            chunk_size=chunk_size,
                            strategy=strategy,
                        )
                        timings[strategy][case].append(time.perf_counter() - started)
                    _check_table(settings, table, rows)
            results[f"chunk_{chunk_size}"] = {
                strategy: {
                    case: {
                        "median_seconds": round(statistics.median(seconds), 4),
                        "rows_per_second": round(rows / statistics.median(seconds)),
                        "runs_seconds": [round(s, 4) for s in seconds],
                    }
                    for case, seconds in cases.items()
                }
                for strategy, cases in timings.items()
            }
    finally:
        execute(settings, f"DROP TABLE IF EXISTS `{table}`")
    return {
        "rows": rows,
        "repeats": repeats,
        "chunk_sizes": list(chunk_sizes),
        "table": "copy of orders (CREATE TABLE … LIKE orders)",
        "results": results,
        "fastest": _fastest(results),
    }


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


def _check_table(settings: Settings, table: str, rows: int) -> None:
    (count, versions) = execute(
        settings, f"SELECT COUNT(*), COUNT(DISTINCT ingested_at) FROM `{table}`"
    )[0]
    if count != rows or versions != 1:
        raise BenchmarkError(f"{table} holds {count} rows in {versions} versions, not {rows} in 1.")


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
    text = os.environ.get(CHUNK_SIZES_ENV)
    if not text:
        return DEFAULT_CHUNK_SIZES
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise BenchmarkError(
            f"{CHUNK_SIZES_ENV} is {text!r}; give whole numbers ≥ 1, e.g. 1000,5000."
        )
    return sizes
