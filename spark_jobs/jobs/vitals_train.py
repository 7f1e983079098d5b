"""Train the vitals anomaly model from the readings history in MariaDB, saved as the next version
under the model folder; the running vitals job picks it up within ``--model-check-seconds``
without a restart.

    python -m spark_jobs.jobs.vitals_train [--history-days 7] [--min-samples 30] [--kind zscore]

Both kinds start from per-patient (and population) baselines of each vital sign. ``zscore`` flags
a sign whose z-score against them is large (the default: it had the better F1 on the
generator's labelled anomalies at the benchmark's full size, docs/pipelines/vitals.md); ``mllib``
also fits a ``pyspark.ml`` pipeline that scores whole readings normalised by those baselines.

The history is read on the driver in chunks (the project ships no JDBC driver for Spark) and
handed to Spark, which unpivots it, drops out-of-range values and aggregates. A week of one
reading per patient every few seconds is a few million rows: fine for a nightly batch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import (
    DoubleType,
    StringType,
    StructField,
    StructType,
    TimestampNTZType,
)

from spark_jobs.common.session import build_spark_session
from spark_jobs.common.vitals_reference import (
    MODEL_KINDS,
    ModelKind,
    ModelVersion,
    default_model_dir,
    load_thresholds,
    save_model,
)
from spark_jobs.transforms.vitals import (
    BASELINES_SCHEMA,
    DEFAULT_MIN_SAMPLES,
    THRESHOLDS_SCHEMA,
    VITAL_SIGNS,
    long_vitals,
    train_baselines,
)
from spark_jobs.transforms.vitals_model import (
    DEFAULT_CLUSTERS,
    DEFAULT_QUANTILE,
    fit_anomaly_pipeline,
)
from streamops.config import Settings, load_settings
from streamops.db import connect
from streamops.errors import EXIT_REFUSED, REFUSAL_MARK

log = logging.getLogger(__name__)

FETCH_CHUNK_ROWS = 50_000
HISTORY_SCHEMA = StructType(
    [
        StructField("patient_id", StringType(), False),
        StructField("device_id", StringType(), True),
        StructField("event_time", TimestampNTZType(), False),
        *(StructField(vital, DoubleType(), True) for vital in VITAL_SIGNS),
    ]
)


@dataclass(frozen=True)
class TrainConfig:
    history_days: float = 7.0
    min_samples: int = DEFAULT_MIN_SAMPLES
    # None: <state_dir>/models/vitals.
    model_dir: str | None = None
    # None: up to now.
    until: datetime | None = None
    kind: ModelKind = "zscore"
    # Only for kind mllib: KMeans clusters and the quantile of training distances flagged above.
    clusters: int = DEFAULT_CLUSTERS
    quantile: float = DEFAULT_QUANTILE

    def __post_init__(self) -> None:
        if self.history_days <= 0:
            raise ValueError(f"history_days is {self.history_days}; give a positive number.")
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"kind is {self.kind!r}; give one of {', '.join(MODEL_KINDS)}.")


def read_history(
    spark: SparkSession, settings: Settings, since: datetime, until: datetime
) -> DataFrame:
    """Readings with ``since <= event_time < until`` (UTC) from ``vitals_readings``."""
    rows = list(_history_rows(settings, since, until))
    frame = spark.createDataFrame(rows, HISTORY_SCHEMA)
    # DATETIME holds UTC wall-clock times; as TIMESTAMP they are instants again.
    return frame.withColumn("event_time", frame["event_time"].cast("timestamp"))


def train(spark: SparkSession, settings: Settings, config: TrainConfig) -> ModelVersion:
    until = config.until or datetime.now(UTC)
    since = until - timedelta(days=config.history_days)
    history = read_history(spark, settings, since, until).persist()
    try:
        overrides = spark.createDataFrame(load_thresholds(settings), THRESHOLDS_SCHEMA)
        # Collected: the pipeline's training joins them again, and they are small.
        baselines = spark.createDataFrame(
            train_baselines(long_vitals(history), overrides, config.min_samples).collect(),
            BASELINES_SCHEMA,
        )
        metadata: dict[str, object] = {
            "history_since": since.isoformat(),
            "history_until": until.isoformat(),
            "min_samples": config.min_samples,
        }
        pipeline = None
        if config.kind == "mllib":
            pipeline, threshold = fit_anomaly_pipeline(
                history,
                baselines,
                overrides,
                clusters=config.clusters,
                quantile=config.quantile,
            )
            metadata |= {
                "clusters": config.clusters,
                "quantile": config.quantile,
                "threshold": threshold,
            }
        model_dir = Path(config.model_dir) if config.model_dir else default_model_dir(settings)
        return save_model(baselines, model_dir, metadata, pipeline)
    finally:
        history.unpersist()


def history_size(settings: Settings, since: datetime, until: datetime) -> int:
    """Readings with ``since <= event_time < until`` in ``vitals_readings``."""
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        cursor.execute(
            "SELECT COUNT(*) FROM vitals_readings WHERE event_time >= ? AND event_time < ?",
            (_naive_utc(since), _naive_utc(until)),
        )
        return int(cursor.fetchone()[0])


def _history_rows(settings: Settings, since: datetime, until: datetime) -> Iterator[tuple]:
    columns = ", ".join(("patient_id", "device_id", "event_time", *VITAL_SIGNS))
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        cursor.execute(
            f"SELECT {columns} FROM vitals_readings WHERE event_time >= ? AND event_time < ?",
            (_naive_utc(since), _naive_utc(until)),
        )
        while chunk := cursor.fetchmany(FETCH_CHUNK_ROWS):
            for patient_id, device_id, event_time, *values in chunk:
                yield (
                    patient_id,
                    device_id or None,
                    event_time,
                    *(None if v is None else float(v) for v in values),
                )


def _naive_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def parse_args(argv: list[str] | None) -> TrainConfig:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="vitals_train", description=__doc__.split("\n")[0])
    parser.add_argument("--history-days", type=float, default=defaults.history_days)
    parser.add_argument("--min-samples", type=int, default=defaults.min_samples)
    parser.add_argument("--model-dir", default=defaults.model_dir)
    parser.add_argument(
        "--kind",
        choices=MODEL_KINDS,
        default=defaults.kind,
        help=f"the anomaly model to train (default {defaults.kind})",
    )
    parser.add_argument(
        "--clusters", type=int, default=defaults.clusters, help="KMeans clusters (mllib only)"
    )
    parser.add_argument(
        "--quantile",
        type=float,
        default=defaults.quantile,
        help="share of the training readings below the anomaly threshold (mllib only)",
    )
    args = parser.parse_args(argv)
    return TrainConfig(
        history_days=args.history_days,
        min_samples=args.min_samples,
        model_dir=args.model_dir,
        kind=args.kind,
        clusters=args.clusters,
        quantile=args.quantile,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO)
    config = parse_args(argv)
    settings = load_settings()
    # As every streaming job: a database whose migrations are not the code's is refused before a
    # JVM starts, with the migration to run (the model reads vitals_summary_1m and thresholds).
    from streamops.db import SchemaMismatchError, check_schema

    try:
        check_schema(settings, "The vitals model training")
    except SchemaMismatchError as mismatch:
        log.error("%s %s", REFUSAL_MARK, mismatch)
        return EXIT_REFUSED
    # Before any JVM: a first `streamops up` runs the daily DAG at once, on an empty table, while
    # the pipelines start; a model of nothing would only cost them a Spark driver's start.
    until = config.until or datetime.now(UTC)
    readings = history_size(settings, until - timedelta(days=config.history_days), until)
    if readings < config.min_samples:
        log.warning(
            "vitals model not trained: %d readings in the last %g days, fewer than min_samples "
            "(%d); the current model stays",
            readings,
            config.history_days,
            config.min_samples,
        )
        return 0
    spark = build_spark_session("streamops-vitals-train", settings)
    try:
        model = train(spark, settings, replace(config, until=until))
    finally:
        spark.stop()
    log.info("vitals model v%s (%s) written to %s", model.version, config.kind, model.path)
    print(model.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
