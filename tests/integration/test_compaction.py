"""Compaction against the real MariaDB: totals survive rollups, retention, concurrent writes,
reruns, crashes between steps and a task process killed (SIGKILL) inside a step.

Each test writes its own windows in its own far-past day (before 2000: no other test writes
there) and runs the steps with a ``now`` next to that day and a retention limited to the tables it
fills, so nothing of other tests is rolled, reconciled or removed.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from streamops.config import Settings
from streamops.db import connect, execute
from streamops.faults import KILL_AT_ENV, MARKER_ENV
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
    return execute(
        settings,
        f"SELECT COUNT(*), COALESCE(SUM(order_count), 0), COALESCE(SUM(item_count), 0), "
        f"COALESCE(SUM(revenue), 0) FROM {table} WHERE window_start >= ? AND window_start < ?",
        (start, end),
    )[0][1:]


def count(settings: Settings, table: str, start: datetime, end: datetime) -> int:
    return int(
        execute(
            settings,
            f"SELECT COUNT(*) FROM {table} WHERE window_start >= ? AND window_start < ?",
            (start, end),
        )[0][0]
    )


def snapshot(settings: Settings, start: datetime, end: datetime) -> list[tuple]:
    return [
        row
        for table in ("order_revenue_5s", "order_revenue_1m", "order_revenue_1h")
        for row in execute(
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
        execute(
            settings,
            f"DELETE FROM {table} WHERE window_start >= ? AND window_start < ?",
            (start - timedelta(days=1), start + timedelta(days=3)),
        )
    execute(
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
    execute(
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
    assert_rolled_up_and_removed(settings, day, end, fine_before)


def assert_rolled_up_and_removed(
    settings: Settings, day: datetime, end: datetime, fine_before: dict[str, tuple]
) -> None:
    assert count(settings, FINE, day, end) == 0
    for currency, expected in fine_before.items():
        rows = execute(
            settings,
            "SELECT SUM(order_count), SUM(item_count), SUM(revenue) FROM order_revenue_1h "
            "WHERE window_start >= ? AND window_start < ? AND currency = ?",
            (day, end, currency),
        )[0]
        assert rows == expected


KILL_POINTS = (
    "compaction:rollup:before_commit",
    "compaction:rollup:after_commit",
    "compaction:retention:chunk_before_commit",
    "compaction:retention:chunk_after_commit",
)


def _compaction_process(now: datetime) -> None:
    """A task's process: the whole compaction with the test's config (spawned, so it is killed
    alone, with its own MariaDB connections)."""
    from streamops.config import load_settings

    run_compaction(load_settings(), config(1, delete_chunk_rows=500), now)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_task_killed_mid_step_loses_nothing(
    settings: Settings, day: datetime, point: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 of the process inside a step (a transaction open, or between two chunks), then
    the retry Airflow would make: every total intact, the fine rows removed only once rolled up."""
    insert_windows(settings, day, 2 * 720)
    insert_windows(settings, day, 100, currency="USD")
    end = day + timedelta(hours=2)
    fine_before = {cur: totals_of(settings, day, end, cur) for cur in ("EUR", "USD")}
    now = day + timedelta(days=2)
    marker = tmp_path / "killed"
    monkeypatch.setenv(KILL_AT_ENV, point)
    monkeypatch.setenv(MARKER_ENV, str(marker))
    process = multiprocessing.get_context("spawn").Process(target=_compaction_process, args=(now,))
    process.start()
    process.join(timeout=180)
    if process.is_alive():
        process.kill()
        pytest.fail(f"the compaction did not reach {point} in 180 s")
    assert process.exitcode == -signal.SIGKILL, f"not killed at {point}: exit {process.exitcode}"
    assert marker.read_text() == f"killed at {point}\n"
    # Whatever the killed process left: the rolled-up hours and the fine rows still hold every
    # order between them, counted once.
    rolled = {cur: hour_totals_of(settings, day, end, cur) for cur in ("EUR", "USD")}
    for currency, expected in fine_before.items():
        fine_now = totals_of(settings, day, end, currency)
        assert fine_now == expected or rolled[currency] == expected, (
            f"after a kill at {point}, neither the fine rows nor the rollup hold all of {currency}"
        )
    monkeypatch.delenv(KILL_AT_ENV)
    run_compaction(settings, config(1, delete_chunk_rows=500), now)
    assert_rolled_up_and_removed(settings, day, end, fine_before)


def hour_totals_of(settings: Settings, start: datetime, end: datetime, currency: str) -> tuple:
    return execute(
        settings,
        "SELECT SUM(order_count), SUM(item_count), SUM(revenue) FROM order_revenue_1h "
        "WHERE window_start >= ? AND window_start < ? AND currency = ?",
        (start, end, currency),
    )[0]


def totals_of(settings: Settings, start: datetime, end: datetime, currency: str) -> tuple:
    return execute(
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
    assert execute(
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
    execute(
        settings,
        f"CREATE TABLE {name} (id INT NOT NULL, at DATETIME(3) NOT NULL, PRIMARY KEY (id, at)) "
        "PARTITION BY RANGE COLUMNS (at) (PARTITION p_history VALUES LESS THAN "
        "('2000-01-01 00:00:00'), PARTITION p_future VALUES LESS THAN (MAXVALUE))",
    )
    yield name
    execute(settings, f"DROP TABLE IF EXISTS {name}")


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
    from streamops_airflow.dag_factory import CompactionDagSpec, build_compaction_dag

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


# --- count families: error_counts_1s → error_counts_1m → error_counts_1h -----------------------

COUNT_TABLES = ("error_counts_1s", "error_counts_1m", "error_counts_1h")


@pytest.fixture
def count_day(settings: Settings) -> Iterator[datetime]:
    """A far-past day of error counts of this test's own, removed afterwards."""
    start = datetime(1990, 1, 1) + timedelta(days=uuid.uuid4().int % 3000)
    yield start
    for table in COUNT_TABLES:
        column = "second_start" if table == "error_counts_1s" else "window_start"
        execute(
            settings,
            f"DELETE FROM {table} WHERE {column} >= ? AND {column} < ?",
            (start - timedelta(days=1), start + timedelta(days=3)),
        )


def insert_seconds(settings: Settings, start: datetime, seconds: int) -> None:
    """Two services × two levels, one row every 7 seconds each, counts 1..5."""
    rows = []
    for index in range(0, seconds, 7):
        at = start + timedelta(seconds=index)
        for service in ("api", "db"):
            for level in ("ERROR", "WARN"):
                rows.append(
                    (service, level, at, 1 + index % 5, at, at + timedelta(milliseconds=900))
                )
    with closing(connect(settings)) as connection:
        connection.cursor().executemany(
            "INSERT INTO error_counts_1s (service, level, second_start, event_count, first_seen, "
            "last_seen) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        connection.commit()


def count_totals(settings: Settings, table: str, start: datetime, end: datetime) -> list[tuple]:
    column = "second_start" if table == "error_counts_1s" else "window_start"
    return execute(
        settings,
        f"SELECT service, level, CAST(SUM(event_count) AS SIGNED), MIN(first_seen), "
        f"MAX(last_seen) FROM {table} WHERE {column} >= ? AND {column} < ? "
        "GROUP BY service, level ORDER BY service, level",
        (start, end),
    )


def count_config(days_1s: int | None = None) -> CompactionConfig:
    retention = (
        () if days_1s is None else (RetentionPolicy("error_counts_1s", "second_start", days_1s),)
    )
    return CompactionConfig(retention=retention, lock_wait_timeout_seconds=2)


def test_error_counts_roll_up_per_minute_and_hour_and_a_rerun_changes_nothing(
    settings: Settings, count_day: datetime
) -> None:
    insert_seconds(settings, count_day, 2 * 3600)
    end = count_day + timedelta(hours=2)
    fine = count_totals(settings, "error_counts_1s", count_day, end)
    now = count_day + timedelta(days=2)
    report = rollup(settings, count_config(), now)
    assert report["count_families"]["error_counts"]["hours_rolled_up"] >= 2
    assert count_totals(settings, "error_counts_1m", count_day, end) == fine
    assert count_totals(settings, "error_counts_1h", count_day, end) == fine
    # 120 minutes and 2 hours per service and level, each minute summing its own seconds.
    assert execute(
        settings,
        "SELECT COUNT(*), SUM(source_rows) FROM error_counts_1m "
        "WHERE window_start >= ? AND window_start < ?",
        (count_day, end),
    )[0] == (4 * 120, len(range(0, 2 * 3600, 7)) * 4)
    before = execute(
        settings,
        "SELECT window_start, service, level, event_count, updated_at FROM error_counts_1h "
        "WHERE window_start >= ? AND window_start < ? ORDER BY 1, 2, 3",
        (count_day, end),
    )
    assert len(before) == 2 * 4
    rollup(settings, count_config(), now, [(count_day, end)])
    assert (
        execute(
            settings,
            "SELECT window_start, service, level, event_count, updated_at FROM error_counts_1h "
            "WHERE window_start >= ? AND window_start < ? ORDER BY 1, 2, 3",
            (count_day, end),
        )
        == before
    )


def test_error_count_seconds_are_removed_only_once_verified_against_their_hours(
    settings: Settings, count_day: datetime
) -> None:
    insert_seconds(settings, count_day, 3600)
    end = count_day + timedelta(hours=1)
    fine = count_totals(settings, "error_counts_1s", count_day, end)
    now = count_day + timedelta(days=2)
    rollup(settings, count_config(), now)
    # A tampered hour: retention refuses and removes nothing.
    execute(
        settings,
        "UPDATE error_counts_1h SET event_count = event_count + 1 "
        "WHERE window_start = ? AND service = 'api' AND level = 'ERROR'",
        (count_day,),
    )
    with pytest.raises(VerificationError, match="totals differ"):
        apply_retention(settings, count_config(1), now)
    assert count_totals(settings, "error_counts_1s", count_day, end) == fine
    execute(
        settings,
        "UPDATE error_counts_1h SET event_count = event_count - 1 "
        "WHERE window_start = ? AND service = 'api' AND level = 'ERROR'",
        (count_day,),
    )
    report = apply_retention(settings, count_config(1), now)
    assert report["error_counts_1s"]["deleted_rows"] == len(range(0, 3600, 7)) * 4
    assert count_totals(settings, "error_counts_1s", count_day, end) == []
    assert count_totals(settings, "error_counts_1h", count_day, end) == fine


# --- vitals: every reading → vitals_summary_1h ---------------------------------------------------

VITALS_OF_A_READING = ("heart_rate", "spo2", "temperature_c")


@pytest.fixture
def vitals_day(settings: Settings) -> Iterator[datetime]:
    start = datetime(1990, 1, 1) + timedelta(days=uuid.uuid4().int % 3000)
    yield start
    for table, column in (("vitals_readings", "event_time"), ("vitals_summary_1h", "window_start")):
        execute(
            settings,
            f"DELETE FROM {table} WHERE {column} >= ? AND {column} < ?",
            (start - timedelta(days=1), start + timedelta(days=3)),
        )


def test_vitals_readings_roll_up_per_patient_and_hour_with_exact_averages(
    settings: Settings, vitals_day: datetime
) -> None:
    rows = []
    for index in range(0, 2 * 3600, 13):
        at = vitals_day + timedelta(seconds=index)
        for patient in ("p-1", "p-2"):
            # Every third reading omits spo2: its hour average must not count those readings.
            spo2 = None if index % 3 == 0 else 90.0 + index % 9
            rows.append((patient, at, 60.0 + index % 40, spo2, 36.0 + (index % 20) / 10))
    with closing(connect(settings)) as connection:
        connection.cursor().executemany(
            "INSERT INTO vitals_readings (patient_id, event_time, heart_rate, spo2, "
            "temperature_c) VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        connection.commit()
    end = vitals_day + timedelta(hours=2)
    now = vitals_day + timedelta(days=2)
    report = rollup(settings, count_config(), now)
    assert report["count_families"]["vitals"]["hours_rolled_up"] >= 2
    expected = execute(
        settings,
        "SELECT DATE_FORMAT(event_time, '%Y-%m-%d %H:00:00'), patient_id, COUNT(*), "
        "COUNT(spo2), ROUND(AVG(spo2), 6), MIN(spo2), MAX(spo2), ROUND(AVG(heart_rate), 6), "
        "COUNT(systolic_bp) FROM vitals_readings WHERE event_time >= ? AND event_time < ? "
        "GROUP BY 1, 2 ORDER BY 1, 2",
        (vitals_day, end),
    )
    summary = execute(
        settings,
        "SELECT DATE_FORMAT(window_start, '%Y-%m-%d %H:00:00'), patient_id, reading_count, "
        "spo2_count, ROUND(spo2_avg, 6), spo2_min, spo2_max, ROUND(heart_rate_avg, 6), "
        "systolic_bp_count FROM vitals_summary_1h WHERE window_start >= ? AND window_start < ? "
        "ORDER BY 1, 2",
        (vitals_day, end),
    )
    assert summary == expected and len(summary) == 4
    assert all(row[3] < row[2] and row[8] == 0 for row in summary)

    # Retention removes the readings only as far as the hours hold them.
    report = apply_retention(
        settings,
        CompactionConfig(retention=(RetentionPolicy("vitals_readings", "event_time", 1),)),
        now,
    )
    assert report["vitals_readings"]["deleted_rows"] == len(rows)
    assert execute(
        settings,
        "SELECT ROUND(spo2_avg, 6) FROM vitals_summary_1h WHERE window_start >= ? "
        "AND window_start < ? ORDER BY window_start, patient_id",
        (vitals_day, end),
    ) == [(row[4],) for row in expected]
