"""The pure parts of the benchmarks' same-run baselines: Kafka's ConsumerPerformance output read
into figures (the orders no-op drain's baseline), and MariaDB's LOAD DATA file and ratio (the
upsert sink's baseline)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from benchmarks import bench_mariadb_upsert as upsert
from benchmarks.orders import consumer_perf

# As Kafka 4.4's ConsumerPerformance prints it (its log lines go to stderr).
SUMMARY = """\
start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, \
rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
2026-12-04 19:30:29:446, 2026-12-04 19:30:38:987, 3.2425, 0.3398, 20000, 2096.2163, 6336, \
3205, 1.0117, 6240.2496
"""
SHORT = """\
start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, \
rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
WARNING: Exiting before consuming the expected number of records: timeout (10000 ms) exceeded. \
You can use the --timeout option to increase the timeout.
2026-12-04 19:29:57:332, 2026-12-04 19:30:07:390, 0.0000, 0.0000, 0, 0.0000, 0, 10058, 0.0000, \
0.0000
"""


def test_consumer_performance_summary_is_read_by_its_column_names() -> None:
    assert consumer_perf.parse_summary(SUMMARY) == {
        "records": 20000.0,
        "records_per_second": 2096.2163,
        "megabytes": 3.2425,
        "megabytes_per_second": 0.3398,
        "rebalance_ms": 6336.0,
        "fetch_ms": 3205.0,
        "fetch_records_per_second": 6240.2496,
        "fetch_megabytes_per_second": 1.0117,
    }


def test_a_timeout_warning_before_the_figures_does_not_hide_them() -> None:
    summary = consumer_perf.parse_summary(SHORT)
    assert summary["records"] == 0.0
    assert summary["fetch_ms"] == 10058.0


@pytest.mark.parametrize(
    "output",
    [
        "",
        "Exception in thread main: TimeoutException\n",
        # The header alone, the tool killed before its summary.
        SUMMARY.splitlines()[0] + "\n",
        SUMMARY.replace("fetch.nMsg.sec", "fetch.records.sec"),
    ],
)
def test_output_without_a_usable_summary_is_refused(output: str) -> None:
    with pytest.raises(ValueError):
        consumer_perf.parse_summary(output)


def test_the_no_op_ratio_is_against_the_best_run_while_reading() -> None:
    runs = [
        {"fetch_records_per_second": 90_000.0, "records_per_second": 20_000.0},
        {"fetch_records_per_second": 120_000.0, "records_per_second": 15_000.0},
    ]
    best = consumer_perf.best_run(runs)
    assert best is runs[1]
    # The group join (in records_per_second, not in fetch_*) is left out of the baseline.
    assert consumer_perf.ratio_to_consumer_perf(12_000.0, best) == 0.1


def test_sink_to_load_data_is_the_loaders_time_over_the_sinks_per_case() -> None:
    sink = {"insert": {"median_seconds": 2.0}, "update": {"median_seconds": 4.0}}
    load_data = {"insert": {"median_seconds": 0.5}, "update": {"median_seconds": 3.0}}
    assert upsert.sink_to_load_data(sink, load_data) == {"insert": 0.25, "update": 0.75}


def test_load_data_fields_escape_what_its_defaults_would_split_or_read_as_null() -> None:
    assert upsert.tsv_field(None) == "\\N"
    assert upsert.tsv_field("a\tb\nc\\d") == "a\\tb\\nc\\\\d"
    assert upsert.tsv_field(datetime(2030, 1, 1, 0, 0, 0, 37000)) == "2030-01-01 00:00:00.037000"
    assert upsert.tsv_field(Decimal("12.50")) == "12.50"
    assert upsert.tsv_field(3) == "3"


def test_the_sinks_own_chunk_size_is_always_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(upsert.CHUNK_SIZES_ENV, "500,20000")
    sizes = upsert._chunk_sizes()
    assert upsert.DEFAULT_CHUNK_SIZE in sizes
    assert list(sizes) == sorted(sizes)
    monkeypatch.setenv(upsert.CHUNK_SIZES_ENV, str(upsert.DEFAULT_CHUNK_SIZE))
    assert upsert._chunk_sizes() == (upsert.DEFAULT_CHUNK_SIZE,)
