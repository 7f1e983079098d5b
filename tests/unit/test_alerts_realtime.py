"""The real-time first-line path opens the alerts the micro-batch path would, byte for byte."""

from __future__ import annotations

from datetime import datetime, timedelta

from spark_jobs.sinks.alerts import encode_alert
from spark_jobs.sinks.alerts_realtime import first_line_alerts, first_line_rules
from spark_jobs.transforms.alerts import SAMPLE_MESSAGE_MAX_CHARS, WindowCount, match_rules
from streamops.contract.alerts import AlertRule, alert_id, window_start

LINE_TIME = datetime(2026, 11, 24, 14, 3, 7, 250000)
RULES = [
    AlertRule("any-critical", "CRITICAL", None, 60, 1),
    AlertRule("pay-critical", "CRITICAL", "payments-api", 10, 1),
    AlertRule("pay-errors", "ERROR", "payments-api", 10, 5),  # needs counting: not this path's
    AlertRule("off", "CRITICAL", None, 60, 1, enabled=False),
]


def test_only_enabled_threshold_one_rules_are_served() -> None:
    assert [rule.rule_id for rule in first_line_rules(RULES)] == ["any-critical", "pay-critical"]


def test_a_line_opens_one_alert_per_matching_rule_in_its_window() -> None:
    alerts = first_line_alerts(
        RULES, level="CRITICAL", service="payments-api", event_time=LINE_TIME, message="down"
    )
    assert [(a.rule_id, a.service, a.window_start) for a in alerts] == [
        ("any-critical", None, datetime(2026, 11, 24, 14, 3, 0)),
        ("pay-critical", "payments-api", datetime(2026, 11, 24, 14, 3, 0)),
    ]
    assert alerts[1].window_end - alerts[1].window_start == timedelta(seconds=10)
    assert alerts[1].alert_id == alert_id("pay-critical", window_start(LINE_TIME, 10), 10)
    assert all(a.event_count == 1 and a.first_seen == a.last_seen == LINE_TIME for a in alerts)


def test_lines_of_other_levels_or_services_open_nothing() -> None:
    assert not first_line_alerts(
        RULES, level="ERROR", service="payments-api", event_time=LINE_TIME, message="m"
    )
    only_any = first_line_alerts(
        RULES, level="CRITICAL", service="orders-api", event_time=LINE_TIME, message="m"
    )
    assert [a.rule_id for a in only_any] == ["any-critical"]


def test_the_first_state_is_byte_identical_to_the_micro_batch_paths() -> None:
    # What the counting path publishes for a window holding that one line.
    start = window_start(LINE_TIME, 10)
    counted = match_rules(
        RULES,
        [WindowCount("payments-api", "CRITICAL", 10, start, 1, LINE_TIME, LINE_TIME, "down")],
    )
    fast = first_line_alerts(
        RULES, level="CRITICAL", service="payments-api", event_time=LINE_TIME, message="down"
    )
    by_rule = {alert.rule_id: alert for alert in fast}
    assert [alert.rule_id for alert in counted] == ["pay-critical"]
    assert encode_alert(by_rule["pay-critical"]) == encode_alert(counted[0])


def test_the_sample_message_is_cut_like_the_aggregate_cuts_it() -> None:
    long_message = "x" * (SAMPLE_MESSAGE_MAX_CHARS + 50)
    (alert, *_) = first_line_alerts(
        RULES, level="CRITICAL", service="s", event_time=LINE_TIME, message=long_message
    )
    assert alert.sample_message == "x" * SAMPLE_MESSAGE_MAX_CHARS
