"""Vitals: Kafka `patient-vitals` → readings, flags and alerts, per-patient window summaries and
"no signal" flags in MariaDB and Redis. Replay-safe across crashes and restarts.

Three queries read the topic, each with its own checkpoint:
- ``vitals_records``: every record; malformed ones into ``quarantine``, readings into
  ``vitals_readings``, vital signs out of their clinical range (defaults, or the patient's
  ``patient_thresholds``) or anomalous for the patient (the latest trained model) into
  ``vitals_reading_flags`` and ``vitals_alerts``; each patient's newest reading and flags to Redis.
  The model is of either kind (z-score baselines or the MLlib pipeline); a new version is picked
  up within ``--model-check-seconds``.
- ``vitals_summary``: readings de-duplicated within the watermark, min/avg/max per patient and
  window (update mode) into ``vitals_summary_1m`` and Redis.
- ``vitals_signal``: ``transformWithState`` per patient with event-time timers: a patient silent
  for ``--silence-seconds`` is flagged (``vitals_alerts`` vital ``signal``); state is dropped on
  discharge or ``--retention-seconds`` after the last reading.

Run with ``streamops run vitals`` or ``spark-submit spark_jobs/jobs/vitals.py``; train the anomaly
model with ``spark_jobs/jobs/vitals_train.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from spark_jobs.common.job_args import parse_job_config
from spark_jobs.common.runner import JobContext, batch_writer, run_job, start_all
from spark_jobs.common.source import KafkaSourceOptions, read_kafka_stream
from spark_jobs.common.vitals_reference import (
    DEFAULT_REFRESH_SECONDS,
    ModelCache,
    ThresholdCache,
    default_model_dir,
)
from spark_jobs.sinks import with_utc_wall_clock_timestamps
from spark_jobs.sinks.mariadb import quarantine_writer
from spark_jobs.sinks.vitals import (
    VitalsRedis,
    flags_writer,
    readings_writer,
    signal_writer,
    summary_writer,
)
from spark_jobs.transforms.vitals import (
    DEFAULT_Z_THRESHOLD,
    check_vitals,
    detect_silence,
    latest_per_patient,
    readings,
    rejected_records,
    summary_per_window,
    valid_records,
)
from spark_jobs.transforms.vitals_model import flagged_readings_by_model
from streamops.config import Settings
from streamops.contract import job_defaults

PIPELINE = "vitals"
TOPIC = "patient-vitals"
# transformWithState keeps its state only in RocksDB; the summary's state goes there too.
STATE_STORE_PROVIDER = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
BatchWriter = Callable[[DataFrame, int], None]


@dataclass(frozen=True)
class VitalsJobConfig:
    topic: str = TOPIC
    watermark: str = job_defaults.VITALS_WATERMARK
    window_seconds: int = job_defaults.VITALS_WINDOW_SECONDS
    # None: tumbling windows; else sliding windows starting every slide_seconds.
    slide_seconds: int | None = None
    silence_seconds: float = 120.0
    retention_seconds: float = 3600.0
    thresholds_refresh_seconds: float = DEFAULT_REFRESH_SECONDS
    model_check_seconds: float = DEFAULT_REFRESH_SECONDS
    # None: <state_dir>/models/vitals.
    model_dir: str | None = None
    z_threshold: float = DEFAULT_Z_THRESHOLD
    max_offsets_per_trigger: int | None = 100_000
    # None: the next batch starts as soon as the previous one ends.
    trigger_interval: str | None = None
    # Drain what the topic holds now, then stop (tests, backfills).
    available_now: bool = False

    def __post_init__(self) -> None:
        if self.window_seconds < 1:
            raise ValueError(f"window_seconds is {self.window_seconds}; give 1 or more.")
        if self.silence_seconds <= 0 or self.retention_seconds <= self.silence_seconds:
            raise ValueError(
                f"silence_seconds ({self.silence_seconds}) must be positive and "
                f"retention_seconds ({self.retention_seconds}) longer."
            )
        if not 0 < self.thresholds_refresh_seconds <= 300 or not self.model_check_seconds > 0:
            raise ValueError(
                "thresholds_refresh_seconds must be in (0, 300] and model_check_seconds positive."
            )


def records_writer(
    settings: Settings, config: VitalsJobConfig, thresholds: ThresholdCache, model: ModelCache
) -> BatchWriter:
    write_readings = readings_writer(settings)
    write_quarantine = quarantine_writer(settings)
    write_flags = flags_writer(settings)
    live = VitalsRedis(settings)

    def write(batch: DataFrame, batch_id: int) -> None:
        batch.persist()
        try:
            valid = readings(batch)
            write_readings(valid, batch_id)
            write_quarantine(rejected_records(batch), batch_id)
            loaded = model.loaded()
            flags = flagged_readings_by_model(
                valid,
                thresholds.current(),
                None if loaded is None else loaded.baselines,
                None if loaded is None else loaded.version,
                None if loaded is None else loaded.pipeline,
                window_seconds=config.window_seconds,
                z_threshold=config.z_threshold,
            )
            window = F.window("event_time", f"{config.window_seconds} seconds")
            touched = valid.select("patient_id", window.start.alias("window_start"))
            alerts = write_flags(flags, touched)
            if alerts:
                live.write_alert_flags(alerts)
            latest = with_utc_wall_clock_timestamps(latest_per_patient(valid)).collect()
            if latest:
                live.write_latest_readings(latest, batch_id)
        finally:
            batch.unpersist()

    return write


def writers(
    spark: SparkSession, context: JobContext, config: VitalsJobConfig
) -> list[DataStreamWriter]:
    """The job's queries, not started (``runner.run_job`` starts them in this order).

    ``vitals_signal`` first: its first batch launches ``transformWithState``'s pre-init Python
    worker, which Spark gives a fixed 10 s to connect back; alone, the cold JVM leaves it time.
    """
    settings = context.settings
    signal_query, records_query, summary_query = context.queries("signal", "records", "summary")
    spark.conf.set("spark.sql.streaming.stateStore.providerClass", STATE_STORE_PROVIDER)
    source = KafkaSourceOptions(
        config.topic, max_offsets_per_trigger=config.max_offsets_per_trigger
    )
    checked = check_vitals(
        read_kafka_stream(spark, settings, source), settings.max_clock_skew_seconds
    )
    summaries = summary_per_window(
        readings(checked)
        .withWatermark("event_time", config.watermark)
        .dropDuplicatesWithinWatermark(["patient_id", "device_id", "event_time"]),
        config.window_seconds,
        config.slide_seconds,
    )
    signals = detect_silence(
        valid_records(checked), config.watermark, config.silence_seconds, config.retention_seconds
    )
    model_dir = Path(config.model_dir) if config.model_dir else default_model_dir(settings)
    thresholds = ThresholdCache(spark, settings, config.thresholds_refresh_seconds)
    model = ModelCache(spark, model_dir, config.model_check_seconds)
    live = VitalsRedis(settings)
    queries: list[DataStreamWriter] = [
        signals.writeStream.queryName(signal_query.name)
        .outputMode("update")
        .foreachBatch(batch_writer(signal_query, signal_writer(settings, live)))
        .option("checkpointLocation", signal_query.checkpoint),
        checked.writeStream.queryName(records_query.name)
        .foreachBatch(
            batch_writer(records_query, records_writer(settings, config, thresholds, model))
        )
        .option("checkpointLocation", records_query.checkpoint),
        summaries.writeStream.queryName(summary_query.name)
        .outputMode("update")
        .foreachBatch(batch_writer(summary_query, summary_writer(settings, live)))
        .option("checkpointLocation", summary_query.checkpoint),
    ]
    if config.available_now:
        queries = [writer.trigger(availableNow=True) for writer in queries]
    elif config.trigger_interval:
        queries = [writer.trigger(processingTime=config.trigger_interval) for writer in queries]
    return queries


def start(spark: SparkSession, settings: Settings, config: VitalsJobConfig) -> list[StreamingQuery]:
    return start_all(writers(spark, JobContext.of(PIPELINE, settings), config))


def parse_args(argv: list[str] | None) -> VitalsJobConfig:
    return parse_job_config(
        VitalsJobConfig, argv, prog="vitals", description=__doc__.split("\n")[0]
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    return run_job(
        PIPELINE,
        writers,
        config,
        {"spark.sql.streaming.stateStore.providerClass": STATE_STORE_PROVIDER},
        until_done=config.available_now,
    )


if __name__ == "__main__":
    sys.exit(main())
