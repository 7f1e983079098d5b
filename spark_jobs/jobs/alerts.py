"""Alerts: Kafka `error-logs` CSV lines → quarantine, per-second and windowed counts in MariaDB,
and alerts in MariaDB, on the Kafka `alerts` topic and in Redis when a rule's threshold is reached.

Two queries read the topic, each with its own checkpoint:
- ``alerts_records``: every line; malformed ones into ``quarantine`` (idempotent by Kafka position).
- ``alerts_counts``: valid lines counted per service, level and second (update mode); each batch
  upserts the seconds, recomputes the windows of every length the enabled rules use, and
  publishes the alerts that changed (see spark_jobs/sinks/alerts.py).

Rules are re-read from ``alert_rules`` at most every ``--rules-refresh-seconds`` (default 30)
inside the counting query's batches, so rule changes apply without a restart.

With ``--realtime-batch "5 seconds"`` a third query, ``alerts_realtime``, runs in Spark's
real-time mode and sends the first state of alerts whose rule has ``threshold_count`` 1 as soon
as the line arrives. It starts at the topic's end on its first run. ``--realtime-path`` says how:

- ``foreach`` (default): valid lines to a Python ``foreach`` writer that publishes each alert's
  first state once, to Redis and Kafka (spark_jobs/sinks/alerts_realtime.py);
- ``kafka-sink``: all in the JVM, lines → a broadcast join with the threshold-1 rules (re-read
  every batch) → alert JSON → Spark's Kafka sink to ``alerts``; a fourth query, ``alerts_feed``,
  reads those records back and writes each alert once into MariaDB and Redis
  (spark_jobs/sinks/alerts_feed.py).

Being opt-in, these queries are not among the spec's, and nothing supervises them.

Run with ``streamops run alerts`` or ``spark-submit spark_jobs/jobs/alerts.py``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from spark_jobs.common.job_args import parse_job_config
from spark_jobs.common.rules import DEFAULT_REFRESH_SECONDS, RuleCache
from spark_jobs.common.rules_source import first_line_rules_frame
from spark_jobs.common.runner import JobContext, JobQuery, batch_writer, run_job, start_all
from spark_jobs.common.source import KafkaSourceOptions, read_kafka_stream
from spark_jobs.sinks import with_utc_wall_clock_timestamps
from spark_jobs.sinks.alerts import alerts_writer
from spark_jobs.sinks.alerts_feed import alerts_feed_writer
from spark_jobs.sinks.alerts_realtime import FirstLineAlertWriter
from spark_jobs.sinks.mariadb import quarantine_writer
from spark_jobs.transforms.alerts import first_line_alert_records, per_second_counts
from spark_jobs.transforms.error_logs import check_error_logs, rejected_lines, valid_lines
from streamops.config import Settings, load_settings
from streamops.contract import job_defaults
from streamops.contract.topics import ALERTS_TOPIC
from streamops.kafka_security import spark_kafka_security_options

PIPELINE = "alerts"
TOPIC = "error-logs"
BatchWriter = Callable[[DataFrame, int], None]
REALTIME_PATHS = ("foreach", "kafka-sink")


@dataclass(frozen=True)
class AlertsJobConfig:
    watermark: str = job_defaults.ALERTS_WATERMARK
    rules_refresh_seconds: float = DEFAULT_REFRESH_SECONDS
    max_offsets_per_trigger: int | None = 100_000
    # None: the next batch starts as soon as the previous one ends (lowest latency).
    trigger_interval: str | None = None
    # Real-time mode batch length of the optional first-line query; None: no such query.
    realtime_batch: str | None = None
    # How that query sends: a Python foreach writer, or Spark's Kafka sink plus the feed query.
    realtime_path: str = "foreach"

    def __post_init__(self) -> None:
        if self.realtime_path not in REALTIME_PATHS:
            raise ValueError(
                f"realtime_path is {self.realtime_path!r}; use one of {', '.join(REALTIME_PATHS)}."
            )
        if not 0 < self.rules_refresh_seconds <= 60:
            raise ValueError(
                f"rules_refresh_seconds is {self.rules_refresh_seconds}; give more than 0 and at "
                "most 60, so rule changes apply within a minute."
            )


def records_writer(settings: Settings) -> BatchWriter:
    write_quarantine = quarantine_writer(settings)

    def write(batch: DataFrame, batch_id: int) -> None:
        write_quarantine(rejected_lines(batch), batch_id)

    return write


def counts_writer(settings: Settings, config: AlertsJobConfig) -> BatchWriter:
    return alerts_writer(settings, RuleCache(settings, config.rules_refresh_seconds))


def writers(
    spark: SparkSession, context: JobContext, config: AlertsJobConfig
) -> list[DataStreamWriter]:
    """The job's queries, not started (``runner.run_job`` starts them in this order)."""
    settings = context.settings
    counts_query, records_query = context.queries("counts", "records")
    source = KafkaSourceOptions(TOPIC, max_offsets_per_trigger=config.max_offsets_per_trigger)
    checked = check_error_logs(
        read_kafka_stream(spark, settings, source), settings.max_clock_skew_seconds
    )
    seconds = per_second_counts(valid_lines(checked), config.watermark)
    records = (
        checked.writeStream.queryName(records_query.name)
        .foreachBatch(batch_writer(records_query, records_writer(settings)))
        .option("checkpointLocation", records_query.checkpoint)
    )
    counts = (
        seconds.writeStream.queryName(counts_query.name)
        .outputMode("update")
        .foreachBatch(batch_writer(counts_query, counts_writer(settings, config)))
        .option("checkpointLocation", counts_query.checkpoint)
    )
    if config.trigger_interval:
        records = records.trigger(processingTime=config.trigger_interval)
        counts = counts.trigger(processingTime=config.trigger_interval)
    queries = [counts, records]
    if config.realtime_batch and config.realtime_path == "kafka-sink":
        queries.append(
            realtime_kafka_writer(spark, settings, config, context.opt_in_query("realtime"))
        )
        queries.append(feed_writer(spark, settings, context.opt_in_query("feed")))
    elif config.realtime_batch:
        queries.append(realtime_writer(spark, settings, config, context.opt_in_query("realtime")))
    return queries


def start(spark: SparkSession, settings: Settings, config: AlertsJobConfig) -> list[StreamingQuery]:
    return start_all(writers(spark, JobContext.of(PIPELINE, settings), config))


def _realtime_lines(spark: SparkSession, settings: Settings) -> DataFrame:
    """Valid lines from the topic's end; real-time mode allows no rate limit."""
    source = KafkaSourceOptions(TOPIC, starting_offsets="latest", max_offsets_per_trigger=None)
    return valid_lines(
        check_error_logs(
            read_kafka_stream(spark, settings, source), settings.max_clock_skew_seconds
        )
    )


def realtime_writer(
    spark: SparkSession, settings: Settings, config: AlertsJobConfig, query: JobQuery
) -> DataStreamWriter:
    """The real-time first-line query; real-time mode wants update mode and no rate limit."""
    lines = _realtime_lines(spark, settings)
    return (
        with_utc_wall_clock_timestamps(lines.select("level", "service", "event_time", "message"))
        .writeStream.queryName(query.name)
        .outputMode("update")
        .foreach(FirstLineAlertWriter(settings, config.rules_refresh_seconds))
        .option("checkpointLocation", query.checkpoint)
        # PySpark 4.2's typing overloads of trigger() do not list realTime yet; the method has it.
        .trigger(realTime=config.realtime_batch)  # type: ignore[call-overload]
    )


def realtime_kafka_writer(
    spark: SparkSession, settings: Settings, config: AlertsJobConfig, query: JobQuery
) -> DataStreamWriter:
    """The real-time first-line query in the JVM: alert records to ``alerts`` by the Kafka sink."""
    rules = first_line_rules_frame(spark, config.rules_refresh_seconds)
    records = first_line_alert_records(_realtime_lines(spark, settings), rules)
    return (
        records.writeStream.queryName(query.name)
        .format("kafka")
        .outputMode("update")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .options(**spark_kafka_security_options(settings))
        .option("topic", ALERTS_TOPIC)
        # The first-line state goes out as soon as the line is read: no batching of records.
        .option("kafka.linger.ms", "0")
        .option("checkpointLocation", query.checkpoint)
        .trigger(realTime=config.realtime_batch)  # type: ignore[call-overload]
    )


def feed_writer(spark: SparkSession, settings: Settings, query: JobQuery) -> DataStreamWriter:
    """The micro-batch query that writes the first-line path's alerts to MariaDB and Redis."""
    source = KafkaSourceOptions(ALERTS_TOPIC, starting_offsets="latest", include_headers=True)
    return (
        read_kafka_stream(spark, settings, source)
        .writeStream.queryName(query.name)
        .foreachBatch(batch_writer(query, alerts_feed_writer(settings)))
        .option("checkpointLocation", query.checkpoint)
    )


def realtime_spark_conf(settings: Settings, config: AlertsJobConfig) -> dict[str, str]:
    """Real-time mode holds one task slot per Kafka partition for the whole batch: a local
    master gets that many more threads so the micro-batch queries still find free slots."""
    if not config.realtime_batch or not settings.spark_master.startswith("local"):
        return {}
    # Two slots per partition: the long-running real-time tasks, and room for the next batch's
    # tasks to start while the previous ones finish, on top of the cores the other queries use.
    threads = os.cpu_count() or 2
    return {"spark.master": f"local[{threads + 2 * settings.kafka_partitions}]"}


def parse_args(argv: list[str] | None) -> AlertsJobConfig:
    return parse_job_config(
        AlertsJobConfig,
        argv,
        prog="alerts",
        description=__doc__.split("\n")[0],
        help_texts={
            "realtime_batch": (
                "run the real-time first-line alert query with this batch length (e.g. '5 seconds')"
            ),
            "realtime_path": (
                "how the real-time query sends: 'foreach' (a Python writer to Redis and Kafka) "
                "or 'kafka-sink' (all in the JVM to the alerts topic, plus the feed query that "
                "writes MariaDB and Redis)"
            ),
        },
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    return run_job(PIPELINE, writers, config, realtime_spark_conf(load_settings(), config))


if __name__ == "__main__":
    sys.exit(main())
