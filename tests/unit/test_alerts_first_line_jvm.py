"""The real-time first-line path in the JVM (Spark SQL to the Kafka sink) and the feed that
writes its alerts to MariaDB and Redis: the same alerts as the Python paths, byte for byte."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_jobs.common.rules import first_line_rules
from spark_jobs.common.rules_source import RULES_SCHEMA
from spark_jobs.sinks.alerts import encode_alert
from spark_jobs.sinks.alerts_feed import decode_first_line_alert, first_states
from spark_jobs.sinks.alerts_realtime import first_line_alerts
from spark_jobs.transforms.alerts import (
    FIRST_LINE_HEADER,
    SAMPLE_MESSAGE_MAX_CHARS,
    first_line_alert_records,
)
from streamops.contract.alerts import AlertRule

RULES = [
    AlertRule("any-critical", "CRITICAL", None, 60, 1),
    AlertRule("pay-critical", "CRITICAL", "payments-api", 10, 1),
    AlertRule("pay-errors", "ERROR", "payments-api", 10, 5),
    AlertRule("hourly-warn", "WARN", "orders-api", 3600, 1),
]
LINES = [
    (datetime(2026, 11, 24, 14, 3, 7, 250000), "CRITICAL", "payments-api", "down"),
    (datetime(2026, 11, 24, 14, 3, 9, 999000), "CRITICAL", "orders-api", 'say "hi", ü 😀'),
    (datetime(2026, 11, 24, 14, 3, 10), "ERROR", "payments-api", "only counted"),
    (datetime(1969, 12, 31, 23, 59, 59, 1000), "WARN", "orders-api", "line\nbreak\ttab"),
    (datetime(2026, 11, 24, 14, 3, 11), "CRITICAL", "payments-api", "x" * 1500),
    (datetime(2026, 11, 24, 14, 3, 12), "INFO", "payments-api", "no rule"),
]


def _records(spark: SparkSession, rules: list[AlertRule]) -> list[tuple[str, str, list]]:
    lines = spark.createDataFrame(
        LINES, "event_time timestamp_ntz, level string, service string, message string"
    ).withColumn("event_time", F.col("event_time").cast("timestamp"))
    frame = spark.createDataFrame(
        [
            (r.rule_id, r.level, r.service, r.window_seconds, r.threshold_count)
            for r in rules
            if r.enabled
        ],
        RULES_SCHEMA,
    )
    rows = first_line_alert_records(lines, frame).collect()
    return [(row.key, row.value, [(h.key, bytes(h.value)) for h in row.headers]) for row in rows]


def _expected() -> list[tuple[str, str]]:
    return sorted(
        (alert.alert_id, encode_alert(alert))
        for event_time, level, service, message in LINES
        for alert in first_line_alerts(
            RULES, level=level, service=service, event_time=event_time, message=message
        )
    )


def test_the_jvm_records_are_the_python_paths_alerts_byte_for_byte(spark: SparkSession) -> None:
    records = _records(spark, RULES)
    assert sorted((key, value) for key, value, _ in records) == _expected()
    # One per line and matching threshold-1 rule: a line under a service rule and the any rule
    # opens two; the threshold-5 rule and the INFO line open none.
    assert len(records) == 6
    name, value = FIRST_LINE_HEADER
    assert all(headers == [(name, value.encode())] for _, _, headers in records)
    samples = [json.loads(value)["sample_message"] for _, value, _ in records]
    assert max(len(sample) for sample in samples) == SAMPLE_MESSAGE_MAX_CHARS
    assert any(json.loads(value)["service"] is None for _, value, _ in records)


def test_without_threshold_one_rules_no_line_opens_anything(spark: SparkSession) -> None:
    assert _records(spark, [rule for rule in RULES if rule.threshold_count != 1]) == []


def test_the_feed_keeps_the_earliest_line_of_each_alert_and_skips_what_is_no_alert() -> None:
    rules = first_line_rules(RULES)
    t0, t1 = datetime(2026, 11, 24, 14, 3, 1), datetime(2026, 11, 24, 14, 3, 4)

    def opened(at: datetime, message: str) -> list:
        return first_line_alerts(
            rules, level="CRITICAL", service="payments-api", event_time=at, message=message
        )

    first, later = opened(t0, "b"), opened(t1, "a")
    # Same line time, later on the topic: the record first on the topic wins, whatever its text.
    tied = opened(t0, "a")
    counted = encode_alert(first[0]).replace('"event_count":1', '"event_count":2')
    junk = ['{"alert_id": "x"}', "not json", counted]
    records = [
        *((encode_alert(a), 0, 10 + i) for i, a in enumerate(later)),
        *((payload, 1, 5) for payload in junk),
        *((encode_alert(a), 0, 20 + i) for i, a in enumerate(first)),
        *((encode_alert(a), 0, 30 + i) for i, a in enumerate(tied)),
    ]
    kept, skipped = first_states(records)
    assert skipped == 3
    assert sorted(map(encode_alert, kept)) == sorted(map(encode_alert, first))
    # Decoding is the inverse of encoding: the feed writes Redis the counting path's bytes.
    assert [encode_alert(decode_first_line_alert(encode_alert(a))) for a in first] == [
        encode_alert(a) for a in first
    ]


def test_a_record_whose_id_does_not_match_its_rule_and_window_is_refused() -> None:
    alert = first_line_alerts(
        RULES, level="CRITICAL", service="payments-api", event_time=LINES[0][0], message="m"
    )[0]
    forged = json.loads(encode_alert(alert)) | {"rule_id": "someone-else"}
    with pytest.raises(ValueError, match="does not add up"):
        decode_first_line_alert(json.dumps(forged))
