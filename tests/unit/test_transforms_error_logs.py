"""Parsing `error-logs` CSV lines: RFC 4180 quoting, levels, times, and every malformed kind."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from pyspark.sql import SparkSession

from spark_jobs.transforms.error_logs import (
    CHECKED_COLUMNS,
    check_error_logs,
    rejected_lines,
    valid_lines,
)
from streamops.generator.records import generate, validate

KAFKA_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, "
    "timestamp timestamp, timestampType int"
)
TS = "2026-11-24T14:03:05.120Z"
# When the broker appended the records: the receiving clock of event_time_in_future.
KAFKA_TIME = datetime(2026, 11, 24, 14, 3, 6, tzinfo=UTC)
LONG_MESSAGE = 'x, "y"\n' * 20_000  # 140,000 characters with commas, quotes and newlines


def csv_line(*fields: str) -> bytes:
    buffer = io.StringIO()
    # With "\r\n" as terminator, csv quotes every field holding a line break.
    csv.writer(buffer, lineterminator="\r\n").writerow(fields)
    return buffer.getvalue().removesuffix("\r\n").encode()


def check(spark: SparkSession, payloads: list[bytes]) -> list:
    now = KAFKA_TIME
    raw = spark.createDataFrame(
        [(b"k", p, "error-logs", 0, i, now, 0) for i, p in enumerate(payloads)], KAFKA_SCHEMA
    )
    return check_error_logs(raw).orderBy("source_offset").collect()


# (payload, expected (level, service, message) or the reason)
CASES: list[tuple[bytes, tuple[str, str, str] | str]] = [
    (csv_line(TS, "ERROR", "payments-api", "plain"), ("ERROR", "payments-api", "plain")),
    (csv_line(TS, "error", "svc", "a, b, c"), ("ERROR", "svc", "a, b, c")),
    (csv_line(TS, "Warning", "svc", 'he said "hi"'), ("WARN", "svc", 'he said "hi"')),
    (
        csv_line(TS, "warn", "svc", "line1\nline2\r\nline3"),
        ("WARN", "svc", "line1\nline2\r\nline3"),
    ),
    (csv_line(TS, "FATAL", "svc", '""'), ("CRITICAL", "svc", '""')),
    (csv_line(TS, "fatal", "svc", ""), ("CRITICAL", "svc", "")),
    (
        csv_line(TS, "Critical", "svc", "ünïcødé ✓ 日本語 🚀"),
        ("CRITICAL", "svc", "ünïcødé ✓ 日本語 🚀"),
    ),
    (csv_line(TS, "INFO", "svc, with comma", "m"), ("INFO", "svc, with comma", "m")),
    (csv_line(TS, "debug", "svc", LONG_MESSAGE), ("DEBUG", "svc", LONG_MESSAGE)),
    (f"{TS},INFO,svc,".encode(), ("INFO", "svc", "")),
    (f"{TS},INFO,svc,trailing newline\n".encode(), ("INFO", "svc", "trailing newline")),
    (f'"{TS}","INFO","svc","all quoted"'.encode(), ("INFO", "svc", "all quoted")),
    # malformed
    (f"{TS},ERROR,svc".encode(), "csv_wrong_column_count"),
    (f"{TS},ERROR,svc,msg,extra".encode(), "csv_wrong_column_count"),
    (f"{TS},ERROR,svc,msg,".encode(), "csv_wrong_column_count"),
    (b"", "csv_wrong_column_count"),
    (f'{TS},ERROR,svc,"unterminated'.encode(), "csv_bad_quoting"),
    (f'{TS},ERROR,svc,"closed"junk'.encode(), "csv_bad_quoting"),
    (f'{TS},ERROR,svc,bare "quote"'.encode(), "csv_bad_quoting"),
    (f"{TS},ERROR,svc,two\nlines".encode(), "csv_bad_quoting"),
    (f"{TS},ERROR,svc,msg\n\n".encode(), "csv_bad_quoting"),
    (csv_line(TS, "ERROR", "svc", "Échec").decode().encode("cp1252"), "invalid_utf8"),
    (csv_line("2026-11-24 14:03:05", "ERROR", "svc", "m"), "bad_timestamp"),
    (csv_line("2026-11-24T14:03:05", "ERROR", "svc", "m"), "bad_timestamp"),
    (csv_line("2026-02-30T14:03:05Z", "ERROR", "svc", "m"), "bad_timestamp"),
    (csv_line("", "ERROR", "svc", "m"), "bad_timestamp"),
    (csv_line("0999-01-01T00:00:00Z", "ERROR", "svc", "m"), "timestamp_out_of_range"),
    (csv_line(TS, "NOTICE", "svc", "m"), "unknown_level"),
    (csv_line(TS, " ERROR", "svc", "m"), "unknown_level"),
    (csv_line(TS, "", "svc", "m"), "unknown_level"),
    (csv_line(TS, "ERROR", "", "m"), "service_empty"),
    (csv_line(TS, "ERROR", " \t", "m"), "service_empty"),
    (csv_line(TS, "ERROR", "s" * 129, "m"), "service_too_long"),
    # The receiving clock: at most 5 minutes (the default skew) after the Kafka timestamp.
    (csv_line("2026-11-24T14:08:06.000Z", "ERROR", "svc", "m"), ("ERROR", "svc", "m")),
    (csv_line("2026-11-24T14:08:06.001Z", "ERROR", "svc", "m"), "event_time_in_future"),
    (csv_line("2026-11-24T15:08:06.001+01:00", "ERROR", "svc", "m"), "event_time_in_future"),
    (csv_line("9999-12-31T23:59:59.999Z", "ERROR", "svc", "m"), "event_time_in_future"),
    # Rules of the line itself come first.
    (csv_line("9999-12-31T23:59:59Z", "NOTICE", "svc", "m"), "unknown_level"),
]


def test_hostile_lines_parse_or_quarantine_with_the_right_reason(spark: SparkSession) -> None:
    rows = check(spark, [payload for payload, _ in CASES])
    assert len(rows) == len(CASES)
    for row, (payload, expected) in zip(rows, CASES, strict=True):
        if isinstance(expected, str):
            assert row.reason == expected, payload[:120]
        else:
            assert row.reason is None, (payload[:120], row.reason)
            assert (row.level, row.service, row.message) == expected


def test_offsets_are_converted_to_utc(spark: SparkSession) -> None:
    rows = check(
        spark,
        [
            csv_line("2026-11-24T15:03:05.120+01:00", "ERROR", "s", "m"),
            csv_line("2026-11-24T14:03:05.120Z", "ERROR", "s", "m"),
            csv_line("2026-11-24T09:33:05.120456-04:30", "ERROR", "s", "m"),
        ],
    )
    instants = {row.event_time.astimezone(UTC) for row in rows}
    assert instants == {datetime(2026, 11, 24, 14, 3, 5, 120_000, tzinfo=UTC)}


def test_valid_and_rejected_split_every_record_once(spark: SparkSession) -> None:
    now = datetime(2026, 11, 24, tzinfo=UTC)
    payloads = [r.value for r in generate("error-logs", 400, seed=7, now=now, malformed_ratio=0.2)]
    raw = spark.createDataFrame(
        [(b"k", p, "error-logs", 1, i, now, 0) for i, p in enumerate(payloads)], KAFKA_SCHEMA
    )
    checked = check_error_logs(raw)
    assert tuple(checked.columns) == CHECKED_COLUMNS
    rejected = {r.source_offset: r.reason for r in rejected_lines(checked).collect()}
    valid = {r.source_offset for r in valid_lines(checked).collect()}
    assert valid.isdisjoint(rejected) and len(valid) + len(rejected) == len(payloads)
    # The generator's own validator is the reference for what is malformed.
    expected = {i for i, p in enumerate(payloads) if validate("error-logs", p) is not None}
    assert set(rejected) == expected
    assert expected, "the seed should produce malformed lines"


@pytest.mark.parametrize("spelling", ["warning", "WARNING", "Warn"])
def test_level_spellings(spark: SparkSession, spelling: str) -> None:
    (row,) = check(spark, [csv_line(TS, spelling, "s", "m")])
    assert row.level == "WARN"
