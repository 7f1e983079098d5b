"""Alert latency of the alerts job in micro-batch and real-time mode, and its sustained lines/s.

    python -m benchmarks.runner alerts

For each mode the job (``spark_jobs.jobs.alerts``) runs as its own driver on a fresh checkpoint:

* ``micro-batch``: the default (each batch starts when the previous one ends);
* ``real-time``: the same job with ``--realtime-batch "5 seconds"``, which adds the real-time
  first-line query with its Python ``foreach`` writer (spark_jobs/sinks/alerts_realtime.py);
* ``real-time-jvm``: ``--realtime-path kafka-sink`` as well: the first-line alert built in Spark
  SQL and sent by Spark's Kafka sink, and the feed query that writes it to MariaDB and Redis
  (spark_jobs/sinks/alerts_feed.py).

Latency: ``BENCH_ALERTS_PROBES`` times, a new rule "1 CRITICAL line of service S in 60 s" and,
once the job has loaded it, the one crossing line. Measured from the line's produce
acknowledgement to the alert being visible in Redis (``streamops:alerts:alert:<id>``), on the
Kafka ``alerts`` topic (a consumer at the topic's end) and in MariaDB ``alerts``; p50/p99/max.
The ratios of interest are each real-time mode ÷ micro-batch, all measured in this run on this
machine, and each mode's p99 against issue 20's targets (:data:`TARGETS_MS`).

Throughput (micro-batch mode): ``BENCH_ALERTS_LINES`` CSV lines sent as fast as the producer
can, then the time until ``error_counts_1s`` accounts for all of them. The baseline is the
producer's own rate in the same run: the pipeline's lines/s ÷ the rate at which they were sent
says how close the job keeps up with its input.

Plots (PNG) are written next to the JSON (``BENCH_OUTPUT_DIR`` or the runner's ``--output``).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from benchmarks import BenchmarkError, int_env, output_dir, plots, source_checkout
from streamops.config import Settings
from streamops.contract.alerts import alert_id, window_start
from streamops.contract.redis_keys import REALTIME_STATS_KEY
from streamops.db import execute

NAME = "alerts"
PROBES_ENV = "BENCH_ALERTS_PROBES"
LINES_ENV = "BENCH_ALERTS_LINES"
DEFAULT_PROBES = 15
DEFAULT_LINES = 50_000
WINDOW_SECONDS = 60
RULES_REFRESH_SECONDS = 2
REALTIME_BATCH = "5 seconds"
RULE_PICKUP_SECONDS = 5 + RULES_REFRESH_SECONDS + 1.5
PROBE_TIMEOUT_SECONDS = 90
MODES: dict[str, list[str]] = {
    "micro-batch": [],
    "real-time": ["--realtime-batch", REALTIME_BATCH],
    "real-time-jvm": ["--realtime-batch", REALTIME_BATCH, "--realtime-path", "kafka-sink"],
}
# The queries each mode starts, beyond the counting and records queries.
OPT_IN_QUERIES = {
    "micro-batch": set(),
    "real-time": {"alerts_realtime"},
    "real-time-jvm": {"alerts_realtime", "alerts_feed"},
}
PLACES = ("redis", "kafka", "mariadb")
# Issue 20's targets for a threshold-1 rule's p99 (crossing line → alert), in milliseconds.
TARGETS_MS = {"kafka": 100.0, "redis": 1500.0, "mariadb": 1500.0}


def run(settings: Settings) -> dict[str, Any]:
    probes = int_env(PROBES_ENV, DEFAULT_PROBES, minimum=3)
    lines = int_env(LINES_ENV, DEFAULT_LINES, minimum=1000)
    plots.require_matplotlib()
    results: dict[str, Any] = {
        "probes": probes,
        "rule": f"1 CRITICAL line of one service in {WINDOW_SECONDS} s (threshold 1)",
        "realtime_batch": REALTIME_BATCH,
        "spark_master": settings.spark_master,
        "load_average_start": list(os.getloadavg()),
        "modes": {},
        "targets_p99_ms": TARGETS_MS,
    }
    for mode, extra_args in MODES.items():
        published_before = _realtime_published(settings)
        with _job(settings, extra_args, mode, OPT_IN_QUERIES[mode]) as job:
            latencies = [_probe(settings, job, f"bench-{mode}-{uuid.uuid4().hex[:8]}")]
            latencies += [
                _probe(settings, job, f"bench-{mode}-{uuid.uuid4().hex[:8]}")
                for _ in range(probes - 1)
            ]
            entry: dict[str, Any] = {
                place: _summary([probe[place] for probe in latencies]) for place in PLACES
            }
            if mode == "micro-batch":
                entry["throughput"] = _throughput(settings, job, lines)
            # Alerts whose first state the real-time path sent (the foreach writer, or the feed
            # of the JVM path) during this mode: a probe line may open two (its rule's and that
            # of any enabled threshold-1 rule of all services).
            entry["first_states_by_realtime_query"] = (
                _realtime_published(settings) - published_before
            )
            entry["p99_meets_target"] = {
                place: entry[place]["p99"] <= TARGETS_MS[place] for place in PLACES
            }
        results["modes"][mode] = entry
    modes = results["modes"]
    micro = modes["micro-batch"]
    for ratio, mode in (
        ("ratio_realtime_to_microbatch_p50", "real-time"),
        ("ratio_realtime_jvm_to_microbatch_p50", "real-time-jvm"),
    ):
        results[ratio] = {
            place: round(modes[mode][place]["p50"] / micro[place]["p50"], 3) for place in PLACES
        }
    results["load_average_end"] = list(os.getloadavg())
    results["plots"] = _draw(results, output_dir())
    return results


# --- the job --------------------------------------------------------------------------------------


@contextmanager
def _job(
    settings: Settings, extra_args: list[str], mode: str, opt_in: set[str]
) -> Iterator[subprocess.Popen]:
    folder = Path(tempfile.mkdtemp(prefix=f"bench-alerts-{mode}-"))
    before = _batches(settings)
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spark_jobs.jobs.alerts",
            "--rules-refresh-seconds",
            str(RULES_REFRESH_SECONDS),
            *extra_args,
        ],
        cwd=source_checkout(),
        env={**os.environ, "STREAMOPS_CHECKPOINT_URI": str(folder / "checkpoints")},
        stdout=(folder / "job.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # Every query of the mode has finished a batch: the backlog is read, the real-time
        # query has fixed its starting offsets at the topic's end.
        names = {"alerts_counts", "alerts_records"} | opt_in
        deadline = time.monotonic() + 600
        while not all(_batches(settings).get(name, 0) > before.get(name, 0) for name in names):
            if job.poll() is not None:
                raise BenchmarkError(f"the alerts job exited ({job.returncode}); see {folder}")
            if time.monotonic() > deadline:
                raise BenchmarkError(f"the alerts job did not start in 600 s; see {folder}")
            time.sleep(0.5)
        yield job
    finally:
        job.send_signal(signal.SIGTERM)
        try:
            job.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(timeout=30)


def _batches(settings: Settings) -> dict[str, int]:
    rows = execute(
        settings,
        "SELECT query_name, COUNT(*) FROM query_progress WHERE pipeline = 'alerts' "
        "GROUP BY query_name",
    )
    return {str(name): int(count) for name, count in rows}


# --- latency --------------------------------------------------------------------------------------


def _probe(settings: Settings, job: subprocess.Popen, service: str) -> dict[str, float]:
    rule_id = f"bench-{service}"
    execute(
        settings,
        "INSERT INTO alert_rules (rule_id, level, service, window_seconds, threshold_count) "
        "VALUES (?, 'CRITICAL', ?, ?, 1)",
        (rule_id, service, WINDOW_SECONDS),
    )
    # Every query of the job has reloaded its rules: the counting query within a refresh
    # interval, the real-time one when its next batch opens (batch length + refresh).
    time.sleep(RULE_PICKUP_SECONDS)
    client = redis.Redis.from_url(settings.redis_url)
    consumer = _consumer_at_end(settings)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 0})
    try:
        moment = datetime.now(UTC)
        expected = alert_id(rule_id, window_start(moment, WINDOW_SECONDS), WINDOW_SECONDS)
        producer.produce("error-logs", key=service.encode(), value=_line(moment, service))
        if producer.flush(10):
            raise BenchmarkError("the probe line was not delivered to Kafka in 10 s")
        sent = time.monotonic()
        seen: dict[str, float] = {}
        while len(seen) < len(PLACES):
            if job.poll() is not None:
                raise BenchmarkError(f"the alerts job exited ({job.returncode}) during a probe")
            if time.monotonic() - sent > PROBE_TIMEOUT_SECONDS:
                missing = ", ".join(p for p in PLACES if p not in seen)
                raise BenchmarkError(f"no alert in {missing} {PROBE_TIMEOUT_SECONDS} s after")
            message = consumer.poll(0.005)
            if (
                "kafka" not in seen
                and message is not None
                and not message.error()
                and message.key() == expected.encode()
            ):
                seen["kafka"] = time.monotonic()
            if "redis" not in seen and client.exists(f"streamops:alerts:alert:{expected}"):
                seen["redis"] = time.monotonic()
            if "mariadb" not in seen and execute(
                settings, "SELECT 1 FROM alerts WHERE alert_id = ?", (expected,)
            ):
                seen["mariadb"] = time.monotonic()
    finally:
        consumer.close()
        client.close()
        execute(settings, "UPDATE alert_rules SET enabled = FALSE WHERE rule_id = ?", (rule_id,))
    return {place: (at - sent) * 1000 for place, at in seen.items()}


def _realtime_published(settings: Settings) -> int:
    """How many alerts' first state the real-time query published (streamops:alerts:realtime)."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return int(client.hget(REALTIME_STATS_KEY, "published") or 0)
    finally:
        client.close()


def _consumer_at_end(settings: Settings) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"bench-alerts-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
        }
    )
    partitions = consumer.list_topics("alerts", timeout=10).topics["alerts"].partitions
    consumer.assign([TopicPartition("alerts", p, OFFSET_END) for p in partitions])
    # The assignment resolves OFFSET_END on the first fetch; do it before the probe line goes.
    consumer.poll(0.5)
    return consumer


def _line(moment: datetime, service: str, index: int = 0, level: str = "CRITICAL") -> bytes:
    stamp = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f'{stamp},{level},{service},"bench line {index}, ""quoted"""'.encode()


# --- throughput -----------------------------------------------------------------------------------


def _throughput(settings: Settings, job: subprocess.Popen, lines: int) -> dict[str, Any]:
    service = f"bench-tput-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    now = datetime.now(UTC)
    started = time.monotonic()
    for index in range(lines):
        # One service and level for every line, so a single SUM tells when all are counted.
        producer.produce("error-logs", value=_line(now, service, index, level="ERROR"))
        if index % 10_000 == 0:
            producer.poll(0)
    if producer.flush(60):
        raise BenchmarkError("the throughput lines were not all delivered in 60 s")
    produced = time.monotonic()
    total = 0
    while total < lines:
        if job.poll() is not None:
            raise BenchmarkError(f"the alerts job exited ({job.returncode}) while counting")
        if time.monotonic() - produced > 600:
            raise BenchmarkError(f"only {total} of {lines} lines counted 600 s after sending")
        time.sleep(0.2)
        ((counted,),) = execute(
            settings,
            "SELECT COALESCE(SUM(event_count), 0) FROM error_counts_1s WHERE service = ?",
            (service,),
        )
        total = int(counted)
    done = time.monotonic()
    produce_rate = lines / (produced - started)
    pipeline_rate = lines / (done - started)
    return {
        "lines": lines,
        "produce_seconds": round(produced - started, 2),
        "end_to_end_seconds": round(done - started, 2),
        "produce_lines_per_second": round(produce_rate),
        "lines_per_second": round(pipeline_rate),
        "ratio_to_produce_rate": round(pipeline_rate / produce_rate, 3),
    }


# --- results --------------------------------------------------------------------------------------


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 1),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "max": round(ordered[-1], 1),
    }


def _draw(results: dict[str, Any], output: Path) -> dict[str, str]:
    stamp = datetime.now(UTC)
    modes = list(results["modes"])
    panels = {
        title: {
            f"p{p}": [results["modes"][mode][place][f"p{p}"] for mode in modes] for p in (50, 99)
        }
        for title, place in (
            ("alert in Redis", "redis"),
            ("alert on Kafka `alerts`", "kafka"),
            ("alert in MariaDB", "mariadb"),
        )
    }
    note = (
        f"{os.cpu_count()} CPUs, load average {results['load_average_start'][0]:.1f} before the "
        f"run, {stamp:%Y-%m-%d}; {results['probes']} probes per mode"
    )
    latency_png = plots.grouped_bars(
        output / f"{NAME}-{stamp:%Y%m%dT%H%M%SZ}-latency.png",
        title="Alerts: crossing line → alert visible",
        panels=panels,
        groups=modes,
        ylabel="milliseconds",
        log_scale=True,
        label=lambda value: f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.0f} ms",
        note=note,
    )
    return {"latency": str(latency_png)}
