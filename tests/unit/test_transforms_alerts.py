"""Rule matching, window alignment, deterministic alert ids, and the per-second aggregate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_jobs.common.rules import RuleCache
from spark_jobs.transforms.alerts import (
    WindowCount,
    alert_id_column,
    match_rules,
    per_second_counts,
    window_lengths,
)
from streamops.contract.alerts import AlertRule, alert_id, window_start

T0 = datetime(2026, 11, 24, 14, 3, 0)


def count(service: str, n: int, level: str = "ERROR", seconds: int = 10, at: datetime = T0):
    return WindowCount(
        service,
        level,
        seconds,
        at,
        n,
        at + timedelta(seconds=1),
        at + timedelta(seconds=2),
        f"m-{service}",
    )


def test_service_rule_counts_its_service_only_and_any_service_sums() -> None:
    rules = [
        AlertRule("pay", "ERROR", "payments-api", 10, 5),
        AlertRule("any", "ERROR", None, 10, 8),
        AlertRule("crit", "CRITICAL", None, 10, 1),
        AlertRule("off", "ERROR", None, 10, 1, enabled=False),
        AlertRule("other-window", "ERROR", None, 60, 1),
    ]
    counts = [count("payments-api", 5), count("search", 4), count("search", 1, level="CRITICAL")]
    alerts = {a.rule_id: a for a in match_rules(rules, counts)}
    assert set(alerts) == {"pay", "any", "crit"}
    assert (alerts["pay"].service, alerts["pay"].event_count) == ("payments-api", 5)
    assert (alerts["any"].service, alerts["any"].event_count) == (None, 9)
    assert alerts["crit"].event_count == 1
    assert alerts["pay"].window_end - alerts["pay"].window_start == timedelta(seconds=10)


def test_below_threshold_no_alert_and_reaching_it_alerts() -> None:
    rule = AlertRule("r", "WARN", "svc", 30, 3)
    assert match_rules([rule], [count("svc", 2, "WARN", 30)]) == []
    assert len(match_rules([rule], [count("svc", 3, "WARN", 30)])) == 1


def test_alerts_do_not_depend_on_the_order_of_counts() -> None:
    rules = [AlertRule("any", "ERROR", None, 10, 2)]
    counts = [count("b", 1), count("a", 1), count("c", 3, at=T0 + timedelta(seconds=10))]
    assert match_rules(rules, counts) == match_rules(rules, list(reversed(counts)))


def test_alert_ids_are_deterministic_and_distinct() -> None:
    first = alert_id("r", T0, 10)
    assert first == alert_id("r", T0.replace(tzinfo=UTC), 10)
    assert len(first) == 64 and int(first, 16) >= 0
    assert (
        len(
            {
                first,
                alert_id("r", T0, 60),
                alert_id("s", T0, 10),
                alert_id("r", T0 + timedelta(seconds=10), 10),
            }
        )
        == 4
    )
    (alert,) = match_rules([AlertRule("r", "ERROR", "a", 10, 1)], [count("a", 1)])
    assert alert.alert_id == first


def test_spark_alert_id_matches_python(spark: SparkSession) -> None:
    cases = [
        ("r", T0, 10),
        ("rule:ü", datetime(1969, 12, 31, 23, 59, 50), 3600),
        ("x", datetime(2100, 1, 1), 1),
    ]
    frame = spark.createDataFrame(cases, "rule_id string, window_start timestamp_ntz, seconds int")
    rows = frame.select(
        alert_id_column(
            F.col("rule_id"), F.col("window_start").cast("timestamp"), F.col("seconds")
        ).alias("id")
    ).collect()
    assert [row.id for row in rows] == [alert_id(*case) for case in cases]


@pytest.mark.parametrize(
    ("moment", "seconds", "expected"),
    [
        (datetime(2026, 1, 1, 0, 0, 9, 999_000), 10, datetime(2026, 1, 1, 0, 0, 0)),
        (datetime(2026, 1, 1, 0, 0, 10), 10, datetime(2026, 1, 1, 0, 0, 10)),
        (datetime(2026, 1, 1, 0, 7, 30), 3600, datetime(2026, 1, 1)),
        (datetime(1969, 12, 31, 23, 59, 59), 60, datetime(1969, 12, 31, 23, 59)),
        (datetime(2200, 1, 1, 0, 0, 7, 500_000), 1, datetime(2200, 1, 1, 0, 0, 7)),
    ],
)
def test_window_start_aligns_to_the_epoch(
    moment: datetime, seconds: int, expected: datetime
) -> None:
    assert window_start(moment, seconds) == expected


def test_window_lengths_of_enabled_rules() -> None:
    rules = [
        AlertRule("a", "ERROR", None, 60, 1),
        AlertRule("b", "INFO", None, 10, 1),
        AlertRule("c", "INFO", None, 5, 1, enabled=False),
    ]
    assert window_lengths(rules) == [10, 60]


def test_per_second_counts_in_batch(spark: SparkSession) -> None:
    t = datetime(2026, 11, 24, 14, 3, 5, 100_000)
    lines = spark.createDataFrame(
        [
            (t, "ERROR", "a", "second", 0, 2),
            (t - timedelta(milliseconds=50), "ERROR", "a", "first", 1, 9),
            (t + timedelta(seconds=1), "ERROR", "a", "next second", 0, 3),
            (t, "WARN", "a", "warn", 0, 4),
        ],
        "event_time timestamp, level string, service string, message string, "
        "source_partition int, source_offset long",
    )
    rows = {
        (r.level, r.second_start.second): r for r in per_second_counts(lines, "1 minute").collect()
    }
    assert rows[("ERROR", 5)].event_count == 2 and rows[("ERROR", 5)].sample_message == "first"
    assert rows[("ERROR", 6)].event_count == 1 and rows[("WARN", 5)].event_count == 1


def test_rule_cache_refreshes_when_stale_and_keeps_rules_on_failure() -> None:
    now = [0.0]
    loads: list[list[AlertRule]] = [[AlertRule("a", "ERROR", None, 10, 1)]]

    def loader(settings: object) -> list[AlertRule]:
        if isinstance(loads[0], Exception):
            raise loads[0]
        return list(loads[0])

    cache = RuleCache(None, 5, loader=loader, clock=lambda: now[0])  # type: ignore[arg-type]
    assert [r.rule_id for r in cache.current()] == ["a"]
    loads[0] = [AlertRule("b", "ERROR", None, 10, 1)]
    now[0] = 4.9
    assert [r.rule_id for r in cache.current()] == ["a"]
    now[0] = 5.0
    assert [r.rule_id for r in cache.current()] == ["b"]
    loads[0] = RuntimeError("db down")  # type: ignore[list-item]
    now[0] = 20.0
    assert [r.rule_id for r in cache.current()] == ["b"]
