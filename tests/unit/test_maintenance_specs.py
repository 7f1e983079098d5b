"""The maintenance DAG specs and factories, without any service: settings, validation, shape."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from streamops_airflow.dag_factory import (
    CheckpointHealthDagSpec,
    CompactionDagSpec,
    build_checkpoint_health_dag,
    build_compaction_dag,
)

from streamops.config import Settings
from streamops.maintenance.checkpoints import (
    CheckpointTarget,
    CheckpointThresholds,
    default_targets,
)
from streamops.maintenance.compaction import (
    CompactionConfig,
    Partition,
    RetentionPolicy,
    merge_windows,
    partitions_to_add,
)
from streamops.maintenance.count_rollups import (
    ERROR_COUNTS,
    VITALS,
    family_of,
    hour_rollup_sql,
    minute_rollup_sql,
)
from streamops.supervision.spec import load_specs, parse_specs


def test_defaults_hourly_compaction_and_five_minute_checks() -> None:
    assert CompactionDagSpec(dag_id="c").schedule == "17 * * * *"
    assert CheckpointHealthDagSpec(dag_id="h").schedule == "*/5 * * * *"


def test_compaction_dag_runs_its_steps_in_order() -> None:
    dag = build_compaction_dag(CompactionDagSpec(dag_id="c", retries=3))
    order = ["partitions", "reconcile", "rollup", "retention", "analyze"]
    assert {t.task_id for t in dag.tasks} == {*order, "archive_retention"}
    for before, after in itertools.pairwise(order):
        assert before in dag.get_task(after).upstream_task_ids
    # The archive's retention touches no table: it waits for nothing and holds nothing up.
    archive = dag.get_task("archive_retention")
    assert archive.upstream_task_ids == set() and archive.downstream_task_ids == set()
    assert all(t.retries == 3 and t.owner == "streamops" for t in dag.tasks)
    assert dag.max_active_runs == 1


def test_checkpoint_dag_defaults_to_every_query_of_every_pipeline() -> None:
    targets = CheckpointHealthDagSpec(dag_id="h").resolved_targets()
    specs = load_specs()
    assert [(t.pipeline, t.query_name) for t in targets] == [
        (spec.name, query) for spec in specs.values() for query in spec.queries
    ]
    # Relative to the checkpoint root of the process that runs the check, where the job wrote.
    assert CheckpointTarget("orders", "orders_records", "orders/records", 5.0) in targets
    assert (
        CheckpointTarget("joins", "joins_order_payments", "joins/order_payments", 10.0) in targets
    )
    dag = build_checkpoint_health_dag(CheckpointHealthDagSpec(dag_id="h"))
    assert {t.task_id for t in dag.tasks} == {"check"}


def test_checkpoint_targets_follow_the_spec_s_own_root_and_the_jobs_layout(
    settings: Settings,
) -> None:
    specs = parse_specs(
        {
            "pipelines": {
                "orders": {
                    "job_module": "spark_jobs.jobs.orders",
                    "queries": ["orders_records", "orders_revenue"],
                    "checkpoint_root": "/mnt/ckpt/",
                },
                "vitals": {"job_module": "spark_jobs.jobs.vitals", "queries": ["vitals_signal"]},
            }
        }
    )
    targets = default_targets(specs)
    assert targets == (
        CheckpointTarget("orders", "orders_records", "/mnt/ckpt/orders/records"),
        CheckpointTarget("orders", "orders_revenue", "/mnt/ckpt/orders/revenue"),
        CheckpointTarget("vitals", "vitals_signal", "vitals/signal"),
    )
    # Each target's folder is the one the job's context gives its query.
    for target in targets:
        spec = specs[target.pipeline]
        expected = spec.query_checkpoint(target.query_name, settings.checkpoint_root)
        assert str(target.location(settings)) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"finality_delay_seconds": 1}, "finality"),
        ({"delete_chunk_rows": 0}, "delete_chunk_rows"),
        ({"optimize_hours_utc": (24,)}, "hours"),
        (
            {
                "retention": (
                    RetentionPolicy("orders", "event_time", 3),
                    RetentionPolicy("order_revenue_5s", "window_start", 7),
                )
            },
            "orders must be kept",
        ),
        (
            {
                "retention": (
                    RetentionPolicy("quarantine", "quarantined_at", 3),
                    RetentionPolicy("quarantine", "quarantined_at", 4),
                )
            },
            "one retention policy per table",
        ),
    ],
)
def test_bad_compaction_settings_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CompactionConfig(**kwargs)


def test_retention_policy_validation() -> None:
    with pytest.raises(ValueError, match="identifier"):
        RetentionPolicy("orders; DROP TABLE x", "event_time", 3)
    with pytest.raises(ValueError, match="method"):
        RetentionPolicy("orders", "event_time", 3, "truncate")
    with pytest.raises(ValueError, match="verified against"):
        RetentionPolicy("order_revenue_1h", "window_start", 3)
    assert RetentionPolicy("order_revenue_5s", "window_start", 3).verified
    assert not RetentionPolicy("quarantine", "quarantined_at", 3).verified
    # The error-count family: seconds and minutes are verified against the kept-forever hours.
    assert RetentionPolicy("error_counts_1s", "second_start", 3).verified
    assert RetentionPolicy("error_counts_1m", "window_start", 90, "partition").verified
    assert not RetentionPolicy("error_counts", "window_start", 30).verified
    with pytest.raises(ValueError, match="verified against"):
        RetentionPolicy("error_counts_1h", "window_start", 3)


def test_minute_rollups_must_outlive_what_they_are_built_from() -> None:
    with pytest.raises(ValueError, match="error_counts_1m must be kept at least as long"):
        CompactionConfig(
            retention=(
                RetentionPolicy("error_counts_1s", "second_start", 10),
                RetentionPolicy("error_counts_1m", "window_start", 5, "partition"),
            )
        )
    with pytest.raises(ValueError, match="order_revenue_1m must be kept at least as long"):
        CompactionConfig(
            retention=(
                RetentionPolicy("order_revenue_5s", "window_start", 10),
                RetentionPolicy("order_revenue_1m", "window_start", 5, "partition"),
            )
        )


def test_count_rollup_sql_is_derived_from_the_family() -> None:
    sql = minute_rollup_sql(ERROR_COUNTS)
    assert sql.startswith("INSERT INTO error_counts_1m (window_start, service, level, window_end")
    assert "SUM(event_count), MIN(first_seen), MAX(last_seen), COUNT(*)" in sql
    assert "FROM error_counts_1s WHERE second_start >= ? AND second_start < ?" in sql
    assert "GROUP BY minute, service, level" in sql
    assert "FROM error_counts_1m WHERE window_start >= ?" in hour_rollup_sql(ERROR_COUNTS)
    assert family_of("error_counts_1s") is family_of("error_counts_1m") is ERROR_COUNTS
    assert family_of("error_counts_1h") is None


def test_vitals_hours_come_straight_from_the_readings_with_a_count_per_sign() -> None:
    sql = hour_rollup_sql(VITALS)
    assert sql.startswith("INSERT INTO vitals_summary_1h (window_start, patient_id, window_end")
    assert "COUNT(*), COUNT(heart_rate), SUM(heart_rate), MIN(heart_rate), MAX(heart_rate)" in sql
    source = "FROM vitals_readings WHERE event_time >= ? AND event_time < ? GROUP BY patient_id"
    assert source in sql
    assert VITALS.minute_table is None and family_of("vitals_readings") is VITALS
    assert family_of("vitals_summary_1m") is None


def test_thresholds_validation() -> None:
    with pytest.raises(ValueError):
        CheckpointThresholds(alert_min_severity="ok")
    with pytest.raises(ValueError):
        CheckpointThresholds(lag_warning=10, lag_critical=5)


def test_partitions_roll_forward_from_the_last_bound_only() -> None:
    from datetime import date, datetime

    fresh = [Partition("p_history", datetime(2000, 1, 1)), Partition("p_future", None)]
    assert partitions_to_add(fresh, date(2026, 11, 25), 2) == [
        date(2026, 11, 25),
        date(2026, 11, 26),
        date(2026, 11, 27),
    ]
    ahead = [Partition("p20261127", datetime(2026, 11, 28)), Partition("p_future", None)]
    assert partitions_to_add(ahead, date(2026, 11, 25), 2) == []
    assert partitions_to_add(ahead, date(2026, 11, 26), 2) == [date(2026, 11, 28)]


def test_windows_merge_into_contiguous_ranges() -> None:
    from datetime import datetime

    start = datetime(2026, 1, 1)
    windows = [start, start + timedelta(seconds=5), start + timedelta(seconds=20)]
    assert merge_windows(windows) == [
        (start, start + timedelta(seconds=10)),
        (start + timedelta(seconds=20), start + timedelta(seconds=25)),
    ]
