"""The vitals anomaly models side by side: precision and recall of the MLlib pipeline against the
per-patient z-score baseline on the same labelled readings, and what each costs to train and to
score. One Spark driver, no Kafka, MariaDB or Redis.

    python -m benchmarks.runner vitals_model

Data: the generator's ``patient-vitals`` readings of one seed (48 patients). The first
``BENCH_VITALS_MODEL_HISTORY`` readings, without injected anomalies, are the training history
(its clinical episodes are left out of training by both models, as the trainer does); the next
``BENCH_VITALS_MODEL_TEST`` readings, with ``BENCH_VITALS_MODEL_ANOMALY_RATIO`` of them given a
labelled anomaly (``spike``: one sign 4.5-8 noise units off; ``joint``: three signs 2.5-3.5 units
off in a clinically coherent direction), are scored.

Measured per model, per *reading* (a reading is predicted anomalous when the model flags any of
its signs): precision, recall and F1 against the injected labels, recall per kind, and the
false-positive rate on normal readings. Readings of the generator's own clinical episodes are
left out of the scores: they are outside the clinical ranges, which flag them whatever the model
(their recall is reported on its own). Out-of-range flags are not part of the comparison.
Training seconds (z-score: the baselines; MLlib: the baselines and the pipeline) and scoring
seconds (test readings to per-reading flags, collected) are the median of
``BENCH_VITALS_MODEL_REPEATS`` runs after one warm-up. ``ratio_*`` = MLlib ÷ z-score.

``design`` holds precision and recall of MLlib variants (clusters, the threshold's quantile, and
features normalised by the population instead of the patient) on the *validation* readings: the
``BENCH_VITALS_MODEL_VALIDATION`` readings between the history and the test readings, labelled
the same way and never scored for the results above. ``selected`` is the variant with the best
validation F1, trained on the same history and then scored once on the test readings: a choice of
settings made without looking at the readings it is judged on. ``ratio_f1_selected`` = its test
F1 ÷ the z-score baseline's (whose threshold is its default, not tuned).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from benchmarks import BenchmarkError, int_env
from streamops.config import Settings
from streamops.generator.records import RecordFactory, parse_event_time

NAME = "vitals_model"
HISTORY_ENV = "BENCH_VITALS_MODEL_HISTORY"
DEFAULT_HISTORY = 40_000
TEST_ENV = "BENCH_VITALS_MODEL_TEST"
DEFAULT_TEST = 20_000
VALIDATION_ENV = "BENCH_VITALS_MODEL_VALIDATION"
DEFAULT_VALIDATION = 20_000
ANOMALY_RATIO_ENV = "BENCH_VITALS_MODEL_ANOMALY_RATIO"
DEFAULT_ANOMALY_RATIO = 0.02
REPEATS_ENV = "BENCH_VITALS_MODEL_REPEATS"
DEFAULT_REPEATS = 3
QUICK_ENV = {HISTORY_ENV: "8000", VALIDATION_ENV: "4000", TEST_ENV: "4000", REPEATS_ENV: "1"}
SEED = 2020
ERA = datetime(2002, 6, 1, tzinfo=UTC)
# One reading a second: a training history of 40,000 readings is about 11 hours of the ward.
INTERVAL = timedelta(seconds=1)
INJECTED_KINDS = ("spike", "joint")
T = TypeVar("T")


def run(settings: Settings) -> dict[str, Any]:
    history_size = int_env(HISTORY_ENV, DEFAULT_HISTORY)
    test_size = int_env(TEST_ENV, DEFAULT_TEST)
    repeats = int_env(REPEATS_ENV, DEFAULT_REPEATS)
    anomaly_ratio = _ratio_env(ANOMALY_RATIO_ENV, DEFAULT_ANOMALY_RATIO)
    validation_size = int_env(VALIDATION_ENV, DEFAULT_VALIDATION)
    history_rows, _ = _readings(history_size, 0, 0.0)
    validation_rows, validation_labels = _readings(validation_size, history_size, anomaly_ratio)
    test_rows, labels = _readings(test_size, history_size + validation_size, anomaly_ratio)
    with _spark(settings) as spark:
        from spark_jobs.transforms.vitals import (
            BASELINES_SCHEMA,
            DEFAULT_MIN_SAMPLES,
            DEFAULT_Z_THRESHOLD,
            THRESHOLDS_SCHEMA,
            long_vitals,
            train_baselines,
        )
        from spark_jobs.transforms.vitals_model import (
            DEFAULT_CLUSTERS,
            DEFAULT_QUANTILE,
            fit_anomaly_pipeline,
            reading_anomalies,
            score_readings,
            zscore_scored,
        )

        history = spark.createDataFrame(history_rows, _READING_SCHEMA).cache()
        test = spark.createDataFrame(test_rows, _READING_SCHEMA).cache()
        validation = spark.createDataFrame(validation_rows, _READING_SCHEMA).cache()
        history.count(), test.count(), validation.count()
        overrides = spark.createDataFrame([], THRESHOLDS_SCHEMA)

        def baselines() -> Any:
            rows = train_baselines(long_vitals(history), overrides, DEFAULT_MIN_SAMPLES).collect()
            return spark.createDataFrame(rows, BASELINES_SCHEMA)

        def fit(
            with_baselines: Any,
            clusters: int = DEFAULT_CLUSTERS,
            quantile: float = DEFAULT_QUANTILE,
        ) -> Any:
            pipeline, _ = fit_anomaly_pipeline(
                history, with_baselines, overrides, clusters=clusters, quantile=quantile
            )
            return pipeline

        def predictions(scored_long: Any) -> dict[tuple[str, str, datetime], bool]:
            return {
                (row.patient_id, row.device_id, _utc(row.event_time)): bool(row.anomaly)
                for row in reading_anomalies(scored_long).collect()
            }

        zscore_train, zscore_model = _timed(baselines, repeats)
        mllib_train, mllib_model = _timed(lambda: fit(baselines()), repeats)
        zscore_score, zscore_flags = _timed(
            lambda: predictions(zscore_scored(test, zscore_model, 1, DEFAULT_Z_THRESHOLD)),
            repeats,
        )
        mllib_score, mllib_flags = _timed(
            lambda: predictions(score_readings(test, zscore_model, mllib_model, 2)), repeats
        )
        population_only = zscore_model.where("patient_id IS NULL")
        # Each variant: (its normalising baselines, its fitted pipeline), fitted once.
        variants = {
            f"clusters_{clusters}_quantile_{quantile}": (
                zscore_model,
                fit(zscore_model, clusters, quantile),
            )
            for clusters, quantile in (
                (2, 0.995),
                (2, 0.999),
                (2, 0.9995),
                (4, 0.995),
                (4, 0.999),
                (8, 0.995),
                (8, 0.999),
            )
        }
        for clusters in (8, 48):
            variants[f"population_normalised_clusters_{clusters}"] = (
                population_only,
                fit(population_only, clusters),
            )
        design = {
            name: _scores(
                validation_labels,
                predictions(score_readings(validation, baselines_of, pipeline, 2)),
            )
            for name, (baselines_of, pipeline) in variants.items()
        }
        chosen = max(design, key=lambda name: design[name]["f1"] or 0.0)
        chosen_baselines, chosen_pipeline = variants[chosen]
        selected = {
            "variant": chosen,
            "validation_f1": design[chosen]["f1"],
            **_scores(
                labels, predictions(score_readings(test, chosen_baselines, chosen_pipeline, 2))
            ),
        }
        zscore = {
            **_scores(labels, zscore_flags),
            "z_threshold": DEFAULT_Z_THRESHOLD,
            "train_seconds": zscore_train,
            "score_seconds": zscore_score,
        }
        mllib = {
            **_scores(labels, mllib_flags),
            "clusters": DEFAULT_CLUSTERS,
            "quantile": DEFAULT_QUANTILE,
            "train_seconds": mllib_train,
            "score_seconds": mllib_score,
        }
    return {
        "data": {
            "seed": SEED,
            "patients": 48,
            "history_readings": history_size,
            "validation_readings": validation_size,
            "test_readings": test_size,
            "anomaly_ratio": anomaly_ratio,
            "labelled": {
                kind: sum(1 for label in labels.values() if label == kind)
                for kind in (*INJECTED_KINDS, "episode")
            },
        },
        "zscore": zscore,
        "mllib": mllib,
        "design": design,
        "selected": selected,
        **{
            f"ratio_{metric}": _ratio(mllib[metric], zscore[metric])
            for metric in ("precision", "recall", "f1", "train_seconds", "score_seconds")
        },
        "ratio_f1_selected": _ratio(selected["f1"], zscore["f1"]),
    }


# --- data -----------------------------------------------------------------------------------

_VITALS = ("heart_rate", "spo2", "systolic_bp", "diastolic_bp", "temperature_c", "respiratory_rate")
_READING_SCHEMA = "patient_id STRING, device_id STRING, event_time TIMESTAMP, " + ", ".join(
    f"{vital} DOUBLE" for vital in _VITALS
)
ReadingKey = tuple[str, str, datetime]


def _readings(
    count: int, skip: int, anomaly_ratio: float
) -> tuple[list[tuple[Any, ...]], dict[ReadingKey, str | None]]:
    """Readings ``skip`` to ``skip + count`` of the seed's stream (wide rows) and the label of
    each (None: normal). Injection has a random stream of its own, so the readings are those of
    the same stream without anomalies except where one was injected."""
    factory = RecordFactory(
        "patient-vitals", seed=SEED, now=ERA, interval=INTERVAL, anomaly_ratio=anomaly_ratio
    )
    for _ in range(skip):
        next(factory)
    rows: list[tuple[Any, ...]] = []
    labels: dict[ReadingKey, str | None] = {}
    for record in factory.take(count):
        fields = json.loads(record.value)
        moment = parse_event_time(fields["event_time"])
        assert moment is not None
        key = (fields["patient_id"], fields["device_id"], moment.astimezone(UTC))
        if key in labels:  # the same patient, device and millisecond: keep the first
            continue
        rows.append((*key, *(_number(fields.get(vital)) for vital in _VITALS)))
        labels[key] = None if record.anomaly is None else record.anomaly.kind
    return rows, labels


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _utc(moment: datetime) -> datetime:
    # Collected timestamps are naive local wall-clock times; astimezone reads them as such.
    return moment.astimezone(UTC)


# --- scores ---------------------------------------------------------------------------------


def _scores(
    labels: dict[ReadingKey, str | None], flagged: dict[ReadingKey, bool]
) -> dict[str, Any]:
    """Precision, recall, F1 over the readings outside episodes; recall per kind."""
    missing = set(labels) - set(flagged)
    if missing:
        raise BenchmarkError(f"{len(missing)} readings were not scored, e.g. {next(iter(missing))}")
    evaluated = {key: kind for key, kind in labels.items() if kind != "episode"}
    true_positive = sum(1 for key, kind in evaluated.items() if kind and flagged[key])
    false_positive = sum(1 for key, kind in evaluated.items() if not kind and flagged[key])
    positives = sum(1 for kind in evaluated.values() if kind)
    negatives = len(evaluated) - positives
    precision = _ratio(true_positive, true_positive + false_positive)
    recall = _ratio(true_positive, positives)
    f1 = (
        None
        if precision is None or recall is None or precision + recall == 0
        else round(2 * precision * recall / (precision + recall), 4)
    )
    by_kind = {}
    for wanted in (*INJECTED_KINDS, "episode"):
        of_kind = [key for key, kind in labels.items() if kind == wanted]
        by_kind[wanted] = _ratio(sum(1 for key in of_kind if flagged[key]), len(of_kind))
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "true_positives": true_positive,
        "false_positives": false_positive,
        "false_positive_rate": _ratio(false_positive, negatives),
        "recall_by_kind": by_kind,
    }


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 4)


def _timed(action: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Median seconds of ``repeats`` runs after a warm-up (the JVM compiles on first use), and
    the last run's result."""
    result = action()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = action()
        seconds.append(time.perf_counter() - started)
    return round(statistics.median(seconds), 3), result


def _ratio_env(name: str, default: float) -> float:
    import os

    text = os.environ.get(name, str(default))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise BenchmarkError(f"{name} is {text!r}; give a fraction between 0 and 1.")
    return value


@contextmanager
def _spark(settings: Settings) -> Iterator[Any]:
    from spark_jobs.common.session import build_spark_session
    from streamops.errors import StreamopsError

    try:
        spark = build_spark_session(
            "streamops-bench-vitals-model",
            settings,
            {
                "spark.ui.enabled": "false",
                "spark.ui.showConsoleProgress": "false",
                # Tens of thousands of rows: a handful of partitions, not the default 200.
                "spark.sql.shuffle.partitions": "4",
            },
        )
    except StreamopsError as error:
        raise BenchmarkError(str(error)) from error
    try:
        yield spark
    finally:
        spark.stop()
