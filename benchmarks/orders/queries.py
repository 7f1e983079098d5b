"""Watching the benchmark's streaming queries: their progress reports, waits and stop."""

from __future__ import annotations

import statistics
import time
from itertools import pairwise
from typing import Any

from benchmarks import BenchmarkError
from benchmarks.orders.support import epoch_seconds, one_decimal
from spark_jobs.common.runner import stop_between_batches

# How long the queries may take to be idle: their first batch, or the last input, done.
READY_TIMEOUT_SECONDS = 180.0


def batch_reports(query: Any) -> list[dict[str, Any]]:
    """The query's progress reports. ``executed`` is False for an idle trigger (Spark reports one
    every 10 s with no data: it only looked up the offsets)."""
    reports = []
    for progress in query.recentProgress:
        parts_ms = dict(progress.durationMs or {})
        reports.append(
            {
                "batch_id": int(progress.batchId),
                "rows": int(progress.numInputRows or 0),
                "at": epoch_seconds(progress.timestamp),
                "ms": int(parts_ms.get("triggerExecution", 0)),
                "executed": "addBatch" in parts_ms,
                "durations": parts_ms,
                "state_rows": sum(int(op.numRowsTotal) for op in progress.stateOperators or []),
            }
        )
    return reports


def state_series(progress: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """State rows after each batch of every query that holds state, in the shape `streamops
    bench` charts (benchmarks/runner.py ``state_series``); seconds from the phase's first batch."""
    first = min((b["at"] for batches in progress.values() for b in batches), default=0.0)
    return {
        name: [
            {
                "elapsed_seconds": round(b["at"] - first, 2),
                "batch_id": b["batch_id"],
                "state_rows": b["state_rows"],
            }
            for b in batches
            if b["executed"]
        ]
        for name, batches in progress.items()
        if any(b["state_rows"] for b in batches)
    }


def batch_summary(batches: list[dict[str, Any]]) -> dict[str, Any]:
    executed = sorted((b for b in batches if b["executed"]), key=lambda b: b["at"])
    with_data = [b for b in executed if b["rows"] > 0]
    gaps = [(later["at"] - earlier["at"]) * 1000 for earlier, later in pairwise(executed)]
    return {
        "batches": len(executed),
        "rows_median": one_decimal(statistics.median([b["rows"] for b in with_data]))
        if with_data
        else None,
        "rows_max": max((b["rows"] for b in with_data), default=0),
        "duration_ms": durations(executed),
        "trigger_interval_ms": stats(gaps),
    }


def durations(batches: list[dict[str, Any]]) -> dict[str, Any] | None:
    return stats([float(b["ms"]) for b in batches])


def median_parts(batches: list[dict[str, Any]]) -> dict[str, float]:
    names = sorted({name for b in batches for name in b["durations"]})
    return {
        name: one_decimal(statistics.median([b["durations"].get(name, 0) for b in batches]))
        for name in names
        if name != "triggerExecution"
    }


def stats(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {
        "count": len(values),
        "min": one_decimal(min(values)),
        "median": one_decimal(statistics.median(values)),
        "max": one_decimal(max(values)),
    }


def wait_ready(queries: list[Any]) -> None:
    """Until every query has nothing left to do (its first batch, or the last input, is done)."""
    if not settle(queries, READY_TIMEOUT_SECONDS):
        raise BenchmarkError(f"The queries were not idle within {READY_TIMEOUT_SECONDS:g} s.")


def settle(queries: list[Any], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for every query to be idle; True if they all are."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raise_failures(queries)
        if all(
            not query.status["isTriggerActive"] and not query.status["isDataAvailable"]
            for query in queries
        ):
            return True
        time.sleep(0.1)
    return False


def wait_consumed(queries: list[Any], orders: int, timeout: float) -> bool:
    """Until every query's batches have taken in ``orders`` records (or ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    while True:
        raise_failures(queries)
        if all(
            sum(b["rows"] for b in batch_reports(query) if b["executed"]) >= orders
            for query in queries
        ):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def wait_idle_reports(queries: list[Any], timeout: float) -> None:
    """Until every query has reported an idle trigger from now on (or ``timeout`` passed)."""
    known = {query.name: len(batch_reports(query)) for query in queries}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raise_failures(queries)
        if all(
            any(not b["executed"] for b in batch_reports(query)[known[query.name] :])
            for query in queries
        ):
            return
        time.sleep(0.5)


def raise_failures(queries: list[Any]) -> None:
    for query in queries:
        if not query.isActive:
            error = query.exception()
            if error is not None:
                raise BenchmarkError(f"Query {query.name} failed: {str(error)[:2000]}")


# A pipeline that fell behind runs batch after batch with no gap between them to stop in: wait
# for one batch to end, not for the backlog.
STOP_WAIT_SECONDS = 15.0


def stop_queries(queries: list[Any]) -> None:
    for query in queries:
        if query.isActive:
            stop_between_batches(query, timeout=STOP_WAIT_SECONDS)
