"""Unthrottled ``generate orders`` next to Kafka's own ProducerPerformance, on the same broker.

Both producers send the same number of records of the same mean size, with the same producer
settings (acks=all, linger.ms=5, lz4), each into a fresh topic, one after the other in one run.
The ratio ours/theirs says how much of what the broker and client can take the generator uses;
the Java tool only sends a fixed buffer, so it is the ceiling, not a competitor.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import BenchmarkError, int_env, produce_orders
from streamops.config import Settings
from streamops.generator.producer import (
    CLIENT_LOGGER,
    PRODUCER_CONFIG,
    UNTHROTTLED_INTERVAL,
)
from streamops.generator.records import RecordFactory

# The producer settings both sides use. The generator's delivery.timeout.ms is left out: the Java
# client rejects one below linger.ms + request.timeout.ms, and it never matters on a healthy broker.
COMPARED_SETTINGS = ("acks", "linger.ms", "compression.type", "enable.idempotence")
RECORDS_ENV = "BENCH_RECORDS"
DEFAULT_RECORDS = 500_000
REPEATS_ENV = "BENCH_REPEATS"
DEFAULT_REPEATS = 3
# Records whose mean size sets ProducerPerformance's record size; the mean settles long before.
SIZE_SAMPLE = 50_000
SEED = 7
TIMEOUT_SECONDS = 600.0
PRODUCER_PERFORMANCE = "org.apache.kafka.tools.ProducerPerformance"
# The final line of ProducerPerformance (the per-window lines lack the percentiles).
SUMMARY_LINE = re.compile(
    r"(?P<records>\d+) records sent, (?P<records_per_second>[\d.]+) records/sec "
    r"\((?P<megabytes_per_second>[\d.]+) MB/sec\), (?P<avg_latency_ms>[\d.]+) ms avg latency, "
    r"(?P<max_latency_ms>[\d.]+) ms max latency, (?P<p50_ms>\d+) ms 50th, (?P<p95_ms>\d+) ms "
    r"95th, (?P<p99_ms>\d+) ms 99th, (?P<p999_ms>\d+) ms 99\.9th"
)


def run(settings: Settings) -> dict[str, Any]:
    records = int_env(RECORDS_ENV, DEFAULT_RECORDS)
    repeats = int_env(REPEATS_ENV, DEFAULT_REPEATS)
    bootstrap = settings.kafka_bootstrap_servers
    java = _java_command(settings.kafka_jars_dir)
    admin = _admin(bootstrap)

    now = datetime.now(UTC)
    # The bytes the generator is about to send: their mean size is the Java tool's record size.
    sample = RecordFactory("orders", seed=SEED, now=now, interval=UNTHROTTLED_INTERVAL)
    sample_size = min(records, SIZE_SAMPLE)
    mean_size = sum(len(record.value) for record in sample.take(sample_size)) / sample_size
    record_size = round(mean_size)

    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    for round_number in range(repeats):
        stamp = f"{now:%Y%m%d%H%M%S}-{round_number}"
        ours_topic, theirs_topic = f"bench-orders-streamops-{stamp}", f"bench-orders-kafka-{stamp}"
        _create_topics(admin, [ours_topic, theirs_topic], settings)
        try:
            # Alternate who goes first, so a warming broker or page cache favours neither side.
            if round_number % 2:
                theirs.append(_run_theirs(java, bootstrap, theirs_topic, records, record_size))
            ours.append(_run_ours(bootstrap, ours_topic, records, now))
            if not round_number % 2:
                theirs.append(_run_theirs(java, bootstrap, theirs_topic, records, record_size))
        finally:
            _delete_topics(admin, [ours_topic, theirs_topic])

    ours_median, theirs_median = _median_run(ours), _median_run(theirs)
    return {
        "records": records,
        "repeats": repeats,
        "record_size_bytes": record_size,
        "record_size_mean_bytes": round(mean_size, 2),
        "partitions": settings.kafka_partitions,
        "replication_factor": settings.kafka_replication_factor,
        "bootstrap_servers": bootstrap,
        "producer_config": {key: PRODUCER_CONFIG[key] for key in COMPARED_SETTINGS},
        "versions": _versions(settings),
        "streamops_generate": {"median": ours_median, "runs": ours},
        "kafka_producer_performance": {"median": theirs_median, "runs": theirs},
        "ratio_records_per_second": round(
            ours_median["records_per_second"] / theirs_median["records_per_second"], 4
        ),
        "ratio_megabytes_per_second": round(
            ours_median["megabytes_per_second"] / theirs_median["megabytes_per_second"], 4
        ),
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median records/s (a real run, so its numbers belong together)."""
    ordered = sorted(runs, key=lambda run: run["records_per_second"])
    return ordered[(len(ordered) - 1) // 2]


def _java_command(jars_dir: Path) -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise BenchmarkError("java is not on PATH; install a JDK 17+ (the stack needs one too).")
    if not any(jars_dir.glob("kafka-tools-*.jar")):
        raise BenchmarkError(
            f"No Kafka tools jar in {jars_dir}; `streamops up` downloads the Kafka jars there "
            "(or set STREAMOPS_CACHE_DIR to where they are)."
        )
    # An English locale, so the summary line prints `1234.5`, never `1234,5`.
    return [java, "-Xmx512m", "-Duser.language=en", "-Duser.country=US", "-cp", f"{jars_dir}/*"]


def _admin(bootstrap: str) -> Any:
    from confluent_kafka.admin import AdminClient

    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": CLIENT_LOGGER}
    admin = AdminClient(config)
    try:
        admin.list_topics(timeout=10)
    except Exception as error:  # KafkaException: no broker answered
        raise BenchmarkError(
            f"Kafka at {bootstrap} is not reachable ({error}); start the stack with "
            "`streamops up`, or set STREAMOPS_KAFKA_HOST and STREAMOPS_KAFKA_PORT to a running "
            "broker."
        ) from error
    return admin


def _create_topics(admin: Any, names: list[str], settings: Settings) -> None:
    from confluent_kafka.admin import NewTopic

    futures = admin.create_topics(
        [
            NewTopic(name, settings.kafka_partitions, settings.kafka_replication_factor)
            for name in names
        ],
        operation_timeout=30,
    )
    for name, future in futures.items():
        try:
            future.result(timeout=60)
        except Exception as error:
            raise BenchmarkError(f"Could not create the scratch topic {name}: {error}.") from error
    # Metadata reaches every listener a moment after creation; the producers need the leaders.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=10).topics
        if all(name in topics and not topics[name].error for name in names):
            return
        time.sleep(0.2)


def _delete_topics(admin: Any, names: list[str]) -> None:
    for future in admin.delete_topics(names, operation_timeout=30).values():
        try:
            future.result(timeout=60)
        except Exception as error:  # leftover scratch topics are untidy, not a failed benchmark
            print(f"warning: could not delete a scratch topic: {error}", file=sys.stderr)


def _run_ours(bootstrap: str, topic: str, records: int, now: datetime) -> dict[str, Any]:
    summary = produce_orders(bootstrap, topic, records, SEED, now)
    return {
        "records_per_second": round(summary.rate, 1),
        "megabytes_per_second": round(summary.megabytes_per_second, 3),
        "elapsed_seconds": round(summary.elapsed_seconds, 3),
        "sent": summary.sent,
        "bytes_sent": summary.bytes_sent,
    }


def _run_theirs(
    java: list[str], bootstrap: str, topic: str, records: int, record_size: int
) -> dict[str, Any]:
    command = [
        *java,
        PRODUCER_PERFORMANCE,
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--record-size",
        str(record_size),
        "--throughput",
        "-1",
        "--producer-props",
        f"bootstrap.servers={bootstrap}",
        *(f"{key}={_java_value(PRODUCER_CONFIG[key])}" for key in COMPARED_SETTINGS),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired as error:
        raise BenchmarkError(
            f"ProducerPerformance did not finish within {TIMEOUT_SECONDS:g} s; lower {RECORDS_ENV}."
        ) from error
    matches = list(SUMMARY_LINE.finditer(done.stdout))
    if done.returncode != 0 or not matches:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise BenchmarkError(
            f"ProducerPerformance failed (exit {done.returncode}): {' | '.join(tail)}."
        )
    summary = matches[-1].groupdict()
    result: dict[str, Any] = {
        name: int(value) if name in ("records",) or name.endswith("th") else float(value)
        for name, value in summary.items()
    }
    result["command"] = " ".join(command[command.index(PRODUCER_PERFORMANCE) :])
    return result


def _java_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _versions(settings: Settings) -> dict[str, str]:
    import confluent_kafka

    return {
        "kafka": settings.kafka_version,
        "confluent_kafka": metadata.version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "python": sys.version.split()[0],
    }
