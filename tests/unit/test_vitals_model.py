"""The MLlib anomaly model: patient-aware features, the fitted pipeline's scoring into the flag
columns, and versions of both kinds on disk (old versions without a kind are z-score models)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession

from spark_jobs.common.vitals_reference import (
    ModelCache,
    latest_model,
    point_latest,
    save_model,
)
from spark_jobs.transforms.vitals import (
    BASELINES_SCHEMA,
    FLAG_COLUMNS,
    THRESHOLDS_SCHEMA,
    VITAL_SIGNS,
    long_vitals,
    train_baselines,
)
from spark_jobs.transforms.vitals_model import (
    fit_anomaly_pipeline,
    flagged_readings_by_model,
    in_range_readings,
    patient_deviations,
    score_readings,
)

T0 = datetime(2026, 5, 1, tzinfo=UTC)
SCHEMA = "patient_id STRING, device_id STRING, event_time TIMESTAMP, " + ", ".join(
    f"{vital} DOUBLE" for vital in VITAL_SIGNS
)
NORMAL = {"A": (70.0, 97.0, 120.0, 80.0, 36.8, 14.0), "B": (90.0, 95.0, 130.0, 85.0, 37.0, 16.0)}
NOISE = (3.0, 0.8, 5.0, 4.0, 0.15, 1.5)


def wide(spark: SparkSession, rows: list[tuple[Any, ...]]) -> DataFrame:
    return spark.createDataFrame(rows, SCHEMA)


def history(spark: SparkSession) -> DataFrame:
    rng = random.Random(4)
    rows = [
        (
            patient,
            "dev",
            T0 + timedelta(seconds=i),
            *(rng.gauss(mean, noise) for mean, noise in zip(NORMAL[patient], NOISE, strict=True)),
        )
        for i in range(300)
        for patient in NORMAL
    ]
    rows.append(("A", "dev", T0 - timedelta(hours=1), 180.0, *NORMAL["A"][1:]))  # out of range
    return wide(spark, rows)


@pytest.fixture(scope="module")
def trained(spark: SparkSession) -> tuple[DataFrame, Any, float]:
    overrides = spark.createDataFrame([], THRESHOLDS_SCHEMA)
    frame = history(spark)
    baselines = spark.createDataFrame(
        train_baselines(long_vitals(frame), overrides, 30).collect(), BASELINES_SCHEMA
    )
    pipeline, threshold = fit_anomaly_pipeline(frame, baselines, overrides, quantile=0.99)
    return baselines, pipeline, threshold


def test_features_are_deviations_from_the_patient_or_else_the_population(
    spark: SparkSession,
) -> None:
    baselines = spark.createDataFrame(
        [("A", "heart_rate", 70.0, 2.0, 50), (None, "heart_rate", 80.0, 10.0, 500)],
        BASELINES_SCHEMA,
    )
    readings = wide(
        spark,
        [
            ("A", "d", T0, 76.0, 97.0, None, None, None, None),
            ("N", "d", T0, 95.0, None, None, None, None, None),  # no own baseline
            ("A", "d", T0, None, 97.0, None, None, None, None),  # heart rate omitted
        ],
    )
    got = {
        (r.patient_id, r.z_heart_rate, r._feature_heart_rate, r.z_spo2, r._feature_spo2)
        for r in patient_deviations(readings, baselines).collect()
    }
    assert got == {
        ("A", None, 0.0, None, 0.0),  # omitted: no deviation; spo2 has no baseline at all
        ("A", 3.0, 3.0, None, 0.0),
        ("N", 1.5, 1.5, None, 0.0),
    }


def test_training_leaves_out_readings_with_an_out_of_range_sign(spark: SparkSession) -> None:
    overrides = spark.createDataFrame([], THRESHOLDS_SCHEMA)
    kept = in_range_readings(history(spark), overrides)
    assert kept.count() == 600
    assert kept.where("heart_rate > 130").count() == 0


def test_the_pipeline_flags_a_joint_deviation_on_the_sign_that_moved_most(
    spark: SparkSession, trained: tuple[DataFrame, Any, float]
) -> None:
    baselines, pipeline, threshold = trained
    assert threshold > 0
    a = NORMAL["A"]
    # Three signs 3.5 noise units off each: no single z reaches 4, together they are far out.
    joint = (a[0] + 3.5 * 3.0, a[1] - 3.5 * 0.8 * 1.2, a[2], a[3], a[4], a[5] + 3.5 * 1.5)
    readings = wide(
        spark,
        [
            ("A", "dev", T0 + timedelta(hours=1), *a),
            ("A", "dev", T0 + timedelta(hours=2), *joint),
            ("B", "dev", T0 + timedelta(hours=1), *NORMAL["B"]),
        ],
    )
    rows = score_readings(readings, baselines, pipeline, 7).collect()
    assert len(rows) == 18 and {r.model_version for r in rows} == {7}
    assert all(r.anomaly_low is None and r.anomaly_high is None for r in rows)
    flagged = [(r.patient_id, r.vital, r.z_score) for r in rows if r.anomaly]
    assert [(patient, vital) for patient, vital, _ in flagged] == [("A", "spo2")]
    assert -5.0 < flagged[0][2] < -3.5  # z_score: 4.2 noise units below A's baseline
    flags = flagged_readings_by_model(
        readings, spark.createDataFrame([], THRESHOLDS_SCHEMA), baselines, 7, pipeline
    )
    assert tuple(flags.columns) == FLAG_COLUMNS
    assert [(r.patient_id, r.vital, r.anomaly, r.out_of_range) for r in flags.collect()] == [
        ("A", "spo2", True, False)
    ]


def test_versions_of_both_kinds_are_saved_loaded_and_rolled_back(
    spark: SparkSession, tmp_path: Path, trained: tuple[DataFrame, Any, float]
) -> None:
    baselines, pipeline, _ = trained
    model_dir = tmp_path / "models"
    now = [0.0]
    cache = ModelCache(spark, model_dir, check_seconds=1, clock=lambda: now[0])
    old = save_model(baselines, model_dir)
    details = json.loads((old.path / "model.json").read_text())
    assert details["kind"] == "zscore"
    del details["kind"]  # as written before there were two kinds
    (old.path / "model.json").write_text(json.dumps(details))
    first = cache.loaded()
    assert first is not None and (first.version, first.kind, first.pipeline) == (1, "zscore", None)

    new = save_model(baselines, model_dir, {"threshold": 1.0}, pipeline)
    assert json.loads((new.path / "model.json").read_text())["kind"] == "mllib"
    now[0] = 1.0
    second = cache.loaded()  # the running job's next check: no restart
    assert second is not None and (second.version, second.kind) == (2, "mllib")
    assert second.pipeline is not None
    readings = wide(spark, [("A", "dev", T0, *NORMAL["A"])])
    reloaded = score_readings(readings, second.baselines, second.pipeline, 2).collect()
    original = score_readings(readings, baselines, pipeline, 2).collect()
    assert [(r.vital, r.anomaly, r.z_score) for r in reloaded] == [
        (r.vital, r.anomaly, r.z_score) for r in original
    ]

    assert point_latest(model_dir, 1) == latest_model(model_dir)  # roll back
    now[0] = 2.0
    back = cache.loaded()
    assert back is not None and (back.version, back.kind) == (1, "zscore")
    with pytest.raises(ValueError, match="no version v9"):
        point_latest(model_dir, 9)
