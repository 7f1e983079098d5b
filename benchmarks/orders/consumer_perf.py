"""Kafka's own consumer tool, ``kafka-consumer-perf-test`` (``ConsumerPerformance`` in the stack's
Kafka jars), reading the throughput topic: the baseline of the no-op drain.

It reads the same records from the same broker in one Java consumer and does nothing with them,
so it is the ceiling of reading the topic, not a competitor: the no-op job reads every record
twice (each of its two queries reads the whole topic) and parses and checks it on top.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks import BenchmarkError
from benchmarks.bench_generate_orders import _java_command as kafka_java_command
from benchmarks.orders.support import ORDERS_ENV
from streamops.config import Settings

CONSUMER_PERFORMANCE = "org.apache.kafka.tools.ConsumerPerformance"
# The longest wait for the next records: the first fetch waits for the group join and, on a
# fresh broker, for the creation of __consumer_offsets (50 partitions), seconds on a busy machine.
RECORD_TIMEOUT_MS = 60_000
RUN_TIMEOUT_SECONDS = 600.0
# The summary's columns (Kafka 4.4), by the names the results give them. rebalance.time.ms is the
# group join, which Spark's Kafka source never does (it assigns the partitions itself); fetch.* is
# the rest of the run, the time spent reading.
COLUMNS = {
    "data.consumed.in.nMsg": "records",
    "nMsg.sec": "records_per_second",
    "data.consumed.in.MB": "megabytes",
    "MB.sec": "megabytes_per_second",
    "rebalance.time.ms": "rebalance_ms",
    "fetch.time.ms": "fetch_ms",
    "fetch.nMsg.sec": "fetch_records_per_second",
    "fetch.MB.sec": "fetch_megabytes_per_second",
}
HEADER_START = "start.time,"


def parse_summary(output: str) -> dict[str, float]:
    """The figures of ConsumerPerformance's summary: the line after its header, whose fields are
    read by the header's names (so a reordered or added column cannot shift them)."""
    lines = [line.strip() for line in output.splitlines()]
    for index, line in enumerate(lines):
        if not line.startswith(HEADER_START):
            continue
        names = [name.strip() for name in line.split(",")]
        for values_line in lines[index + 1 :]:
            values = [value.strip() for value in values_line.split(",")]
            # A warning (too few records within the timeout) may come between header and values.
            if len(values) != len(names):
                continue
            fields = dict(zip(names, values, strict=True))
            try:
                return {ours: float(fields[theirs]) for theirs, ours in COLUMNS.items()}
            except (KeyError, ValueError) as error:
                raise ValueError(f"unexpected ConsumerPerformance summary: {error}") from error
    raise ValueError("no ConsumerPerformance summary in its output")


def best_run(runs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The fastest reading run, as the drains' best round counts: other work on the machine only
    ever slows a run down."""
    return max(runs, key=lambda run: run["fetch_records_per_second"])


def ratio_to_consumer_perf(no_op_orders_per_second: float, kafka: Mapping[str, Any]) -> float:
    """The no-op drain's orders/s over the Kafka tool's records/s while reading (its group join
    left out: the job's source has none)."""
    return round(no_op_orders_per_second / kafka["fetch_records_per_second"], 4)


def check_java(settings: Settings) -> list[str]:
    """The ``java -cp <Kafka jars>`` prefix, or a BenchmarkError saying what is missing."""
    return kafka_java_command(settings.kafka_jars_dir)


def consumer_performance(
    java: list[str], settings: Settings, topic: str, records: int, group: str
) -> dict[str, Any]:
    """Read ``records`` records of ``topic`` from the start in a fresh consumer group ``group``,
    which is deleted afterwards; the summary's figures and the command."""
    command = [
        *java,
        CONSUMER_PERFORMANCE,
        "--bootstrap-server",
        settings.kafka_bootstrap_servers,
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--group",
        group,
        "--timeout",
        str(RECORD_TIMEOUT_MS),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired as error:
        raise BenchmarkError(
            f"ConsumerPerformance did not finish within {RUN_TIMEOUT_SECONDS:g} s; "
            f"lower {ORDERS_ENV}."
        ) from error
    finally:
        _delete_group(settings, group)
    try:
        summary = parse_summary(done.stdout)
    except ValueError as error:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise BenchmarkError(
            f"ConsumerPerformance failed (exit {done.returncode}, {error}): {' | '.join(tail)}."
        ) from error
    if done.returncode != 0 or summary["records"] < records:
        raise BenchmarkError(
            f"ConsumerPerformance read {summary['records']:.0f} of {records} records of {topic} "
            f"(exit {done.returncode}); check the broker's log."
        )
    return {
        **summary,
        "records": int(summary["records"]),
        "command": " ".join(command[command.index(CONSUMER_PERFORMANCE) :]),
    }


def _delete_group(settings: Settings, group: str) -> None:
    """The tool commits its offsets: remove the group, so the run leaves nothing behind."""
    from streamops.topics import admin_client

    admin = admin_client(settings)  # held until the futures resolve: its end cancels them
    for future in admin.delete_consumer_groups([group], request_timeout=30).values():
        try:
            future.result(timeout=60)
        except Exception as error:  # a leftover empty group is untidy, not a failed benchmark
            print(f"warning: could not delete consumer group {group}: {error}", file=sys.stderr)
