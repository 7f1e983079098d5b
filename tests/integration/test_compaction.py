"""Compaction against the real MariaDB: totals survive rollups, retention, concurrent writes,
reruns and crashes between steps.

Each test writes its own windows in its own far-past day (before 2000: no other test writes
there) and runs the steps with a ``now`` next to that day and a retention limited to the tables it
fills, so nothing of other tests is rolled, reconciled or removed.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from streamops.config import Settings
from streamops.db import connect
from streamops.maintenance import MaintenanceError, VerificationError
from streamops.maintenance.compaction import (
    STEPS,
    CompactionConfig,
    RetentionPolicy,
    apply_retention,
    ensure_partitions,
    list_partitions,
    rollup,
    run_compaction,
)

FINE = "order_revenue_5s"


def sql(settings: Settings, statement: str, params: tuple = ()) -> list[tuple]:
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        cursor.execute(statement, params)
        rows = list(cursor.fetchall()) if cursor.description else []
        connection.commit()
        return rows


def insert_windows(settings: Settings, start: datetime, count: int, currency: str = "EUR") -> None:
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        cursor.executemany(
            "INSERT INTO order_revenue_5s (window_start, currency, window_end, order_count, "
            "item_count, revenue) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    start + timedelta(seconds=5 * i),
                    currency,
                    start + timedelta(seconds=5 * i + 5),
                    1 + i % 3,
                    2 + i % 5,
                    Decimal("1.25") * (1 + i % 7),
                )
                for i in range(count)
            ],
        )
        connection.commit()


def totals(settings: Settings, table: str, start: datetime, end: datetime) -> tuple:
    return sql(
        settings,
        f"SELECT COUNT(*), COALESCE(SUM(order_count), 0), COALESCE(SUM(item_count), 0), "
        f"COALESCE(SUM(revenue), 0) FROM {table} WHERE window_start >= ? AND window_start < ?",
        (start, end),
    )[0][1:]


def count(settings: Settings, table: str, start: datetime, end: datetime) -> int:
    return int(
        sql(
            settings,
            f"SELECT COUNT(*) FROM {table} WHERE window_start >= ? AND window_start < ?",
            (start, end),
        )[0][0]
    )


def snapshot(settings: Settings, start: datetime, end: datetime) -> list[tuple]:
    return [
        row
        for table in ("order_revenue_5s", "order_revenue_1m", "order_revenue_1h")
        for row in sql(
            settings,
            f"SELECT '{table}', window_start, currency, order_count, item_count, revenue, "
            f"updated_at FROM {table} WHERE window_start >= ? AND window_start < ? "
            "ORDER BY window_start, currency",
            (start, end),
        )
    ]


@pytest.fixture
def day(settings: Settings) -> Iterator[datetime]:
    """A far-past day of this test's own; every revenue row of it is removed afterwards."""
    start = datetime(1990, 1, 1) + timedelta(days=uuid.uuid4().int % 3000)
    yield start
    for table in ("order_revenue_5s", "order_revenue_1m", "order_revenue_1h"):
        sql(
            settings,
            f"DELETE FROM {table} WHERE window_start >= ? AND window_start < ?",
            (start - timedelta(days=1), start + timedelta(days=3)),
        )
    sql(
        settings,
        "DELETE FROM orders WHERE event_time >= ? AND event_time < ?",
        (start - timedelta(days=1), start + timedelta(days=3)),
    )


def config(days_5s: int | None = None, **kwargs) -> CompactionConfig:  # type: ignore[no-untyped-def]
    retention = () if days_5s is None else (RetentionPolicy(FINE, "window_start", days_5s),)
    return CompactionConfig(retention=retention, lock_wait_timeout_seconds=2, **kwargs)


def test_rollups_keep_every_total_under_concurrent_writes_and_a_rerun_changes_nothing(
    settings: Settings, day: datetime
) -> None:
    insert_windows(settings, day, 3 * 720)  # three full hours
    now = day + timedelta(hours=3, minutes=10)
    stop = threading.Event()
    written: list[int] = []

    def stream() -> None:
        # What a live stream does meanwhile: new, not yet final windows, just before `now`.
        at = now - timedelta(minutes=4)
        while not stop.is_set():
            insert_windows(settings, at, 5)
            written.append(5)
            at += timedelta(seconds=25)

    writer = threading.Thread(target=stream)
    writer.start()
    try:
        report = run_compaction(settings, config(), now)
    finally:
        stop.set()
        writer.join()
    assert report["rollup"]["hours_rolled_up"] == 3
    end = day + timedelta(hours=3)
    expected = totals(settings, FINE, day, end)
    assert totals(settings, "order_revenue_1m", day, end) == expected
    assert totals(settings, "order_revenue_1h", day, end) == expected
    first_live = now - timedelta(minutes=4)
    live_end = first_live + timedelta(seconds=5 * sum(written))
    assert count(settings, FINE, first_live, live_end) == sum(written)

    before = snapshot(settings, day, day + timedelta(days=1))
    run_compaction(settings, config(), now)
    assert snapshot(settings, day, day + timedelta(days=1)) == before


def test_retention_deletes_only_verified_rolled_up_hours_in_chunks(
    settings: Settings, day: datetime
) -> None:
    insert_windows(settings, day, 2 * 720)
    end = day + timedelta(hours=2)
    rollup(settings, config(1), day + timedelta(hours=3))
    expected = totals(settings, "order_revenue_1h", day, end)

    report = apply_retention(
        settings, config(1, delete_chunk_rows=200, chunk_pause_seconds=0), day + timedelta(days=2)
    )
    assert report[FINE]["deleted_rows"] == 2 * 720
    assert count(settings, FINE, day, end) == 0
    assert totals(settings, "order_revenue_1h", day, end) == expected
    # The expired hours are not rebuilt from the (now missing) 5-second rows.
    assert rollup(settings, config(1), day + timedelta(days=2))["hours_rolled_up"] == 0
    assert totals(settings, "order_revenue_1h", day, end) == expected


def test_a_mismatch_fails_retention_and_drops_nothing(settings: Settings, day: datetime) -> None:
    insert_windows(settings, day, 720)
    rollup(settings, config(1), day + timedelta(hours=2))
    sql(
        settings,
        "UPDATE order_revenue_1h SET revenue = revenue + 1 WHERE window_start = ?",
        (day,),
    )
    with pytest.raises(VerificationError, match="totals differ"):
        apply_retention(settings, config(1), day + timedelta(days=2))
    assert count(settings, FINE, day, day + timedelta(hours=1)) == 720


def test_a_crash_between_any_two_steps_loses_nothing(settings: Settings, day: datetime) -> None:
    insert_windows(settings, day, 2 * 720)
    insert_windows(settings, day, 100, currency="USD")
    end = day + timedelta(hours=2)
    fine_before = {cur: totals_of(settings, day, end, cur) for cur in ("EUR", "USD")}
    now = day + timedelta(days=2)
    for step in STEPS[:-1]:
        with pytest.raises(MaintenanceError, match="simulated crash"):
            run_compaction(settings, config(1), now, crash_after=step)
    run_compaction(settings, config(1), now)
    assert count(settings, FINE, day, end) == 0
    for currency, expected in fine_before.items():
        rows = sql(
            settings,
            "SELECT SUM(order_count), SUM(item_count), SUM(revenue) FROM order_revenue_1h "
            "WHERE window_start >= ? AND window_start < ? AND currency = ?",
            (day, end, currency),
        )[0]
        assert rows == expected


def totals_of(settings: Settings, start: datetime, end: datetime, currency: str) -> tuple:
    return sql(
        settings,
        f"SELECT SUM(order_count), SUM(item_count), SUM(revenue) FROM {FINE} "
        "WHERE window_start >= ? AND window_start < ? AND currency = ?",
        (start, end, currency),
    )[0]


def test_late_orders_are_reconciled_into_their_windows_and_rollups(
    settings: Settings, day: datetime
) -> None:
    window = day + timedelta(minutes=7, seconds=5)
    insert_windows(settings, window, 1)  # the stream's view: order_count 1, revenue 1.25
    late_ingest = window + timedelta(hours=1)
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        cursor.executemany(
            "INSERT INTO orders (order_id, customer_id, product_id, quantity, unit_price, "
            "currency, amount, event_time, ingested_at) VALUES (?, 'c', 'p', ?, ?, 'EUR', ?, ?, ?)",
            [
                (
                    f"maint-{uuid.uuid4().hex}",
                    2,
                    Decimal("3.00"),
                    Decimal("6.00"),
                    window + timedelta(seconds=1),
                    late_ingest,
                ),
                (
                    f"maint-{uuid.uuid4().hex}",
                    1,
                    Decimal("4.50"),
                    Decimal("4.50"),
                    window + timedelta(seconds=3),
                    late_ingest,
                ),
            ],
        )
        connection.commit()
    report = run_compaction(settings, config(), late_ingest + timedelta(minutes=30))
    assert report["reconcile"]["late_windows"] == 1
    assert sql(
        settings,
        f"SELECT order_count, item_count, revenue FROM {FINE} WHERE window_start = ?",
        (window,),
    ) == [(2, 3, Decimal("10.50"))]
    assert totals(settings, "order_revenue_1h", day, day + timedelta(hours=1)) == (
        2,
        3,
        Decimal("10.50"),
    )


@pytest.fixture
def partitioned_table(settings: Settings) -> Iterator[str]:
    """A private table partitioned like checkpoint_health, so days can be rolled at will."""
    name = f"maint_test_{uuid.uuid4().hex[:8]}"
    sql(
        settings,
        f"CREATE TABLE {name} (id INT NOT NULL, at DATETIME(3) NOT NULL, PRIMARY KEY (id, at)) "
        "PARTITION BY RANGE COLUMNS (at) (PARTITION p_history VALUES LESS THAN "
        "('2000-01-01 00:00:00'), PARTITION p_future VALUES LESS THAN (MAXVALUE))",
    )
    yield name
    sql(settings, f"DROP TABLE IF EXISTS {name}")


def test_partitions_roll_forward_and_old_ones_drop(
    settings: Settings, partitioned_table: str
) -> None:
    cfg = CompactionConfig(
        retention=(RetentionPolicy(partitioned_table, "at", 2, "partition"),),
        partition_days_ahead=2,
    )
    first = datetime(2030, 3, 10, 12)
    assert ensure_partitions(settings, cfg, first) == {
        partitioned_table: ["p20300310", "p20300311", "p20300312"]
    }
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        cursor.executemany(
            f"INSERT INTO {partitioned_table} (id, at) VALUES (?, ?)",
            [(i, first + timedelta(hours=6 * i)) for i in range(12)],
        )
        connection.commit()
    later = first + timedelta(days=3)
    assert ensure_partitions(settings, cfg, later)[partitioned_table] == [
        "p20300313",
        "p20300314",
        "p20300315",
    ]
    assert ensure_partitions(settings, cfg, later) == {}  # a rerun changes nothing
    report = apply_retention(settings, cfg, later)
    # Cutoff 2030-03-11 00:00: p_history and the day of 03-10 go, 03-11 onwards stay.
    assert report[partitioned_table]["dropped_partitions"] == ["p_history", "p20300310"]
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        names = [p.name for p in list_partitions(cursor, partitioned_table)]
        cursor.execute(f"SELECT MIN(at), COUNT(*) FROM {partitioned_table}")
        oldest, count = cursor.fetchone()
    assert names[0] == "p20300311" and names[-1] == "p_future"
    assert oldest >= datetime(2030, 3, 11) and count == 12 - 2


def test_the_compaction_dag_tasks_run_for_real(settings: Settings) -> None:
    """Each task of the DAG, called as Airflow calls it, with a retention that removes nothing."""
    from streamops_airflow.maintenance import CompactionDagSpec, build_compaction_dag

    spec = CompactionDagSpec(
        dag_id="maint_test_compaction",
        config=CompactionConfig(
            retention=(RetentionPolicy("checkpoint_health", "checked_at", 3650, "partition"),)
        ),
    )
    dag = build_compaction_dag(spec)

    def run(task_id: str, **kwargs):  # type: ignore[no-untyped-def]
        return dag.get_task(task_id).python_callable(**kwargs)  # type: ignore[attr-defined]

    run("partitions")
    reconciled = run("reconcile")
    assert set(reconciled) >= {"late_windows", "ranges"}
    assert "hours_rolled_up" in run("rollup", reconciled=reconciled)
    # Only partitions wholly before the ten-year cut-off may go (on a fresh database that is the
    # pre-2000 p_history); a rerun then finds nothing left to drop.
    first = run("retention")["checkpoint_health"]
    assert set(first["dropped_partitions"]) <= {"p_history"}
    again = run("retention")["checkpoint_health"]
    assert again == {"dropped_partitions": [], "cutoff": first["cutoff"]}
    assert "order_revenue_1h" in run("analyze")["analyzed"]
    with closing(connect(settings)) as connection:
        names = [p.name for p in list_partitions(connection.cursor(), "checkpoint_health")]
    today = datetime.now().strftime("p%Y%m%d")
    assert today in names or any(n > today for n in names if n.startswith("p2"))
