"""The MLlib anomaly model of the vitals pipeline: a ``pyspark.ml`` pipeline that scores a whole
reading (all six signs at once) instead of each sign on its own, as the z-score baseline of
``spark_jobs.transforms.vitals`` does.

Design (compared with the z-score baseline in docs/pipelines/vitals.md, "Anomaly models"):

1. *Patient-aware features.* Each sign becomes its deviation from the patient's own baseline in
   units of the patient's standard deviation (the population's when the patient has none): the
   very baselines the z-score model trains. Without this step one patient's normal heart rate is
   another's anomaly, and a population model flags patients, not readings. A sign the reading
   omits counts as "at the patient's mean" (0): a missing sensor says nothing.
2. ``VectorAssembler`` → ``StandardScaler`` → ``KMeans``: the nearest centroid of the reading in
   the scaled deviation space.
3. A ``SQLTransformer`` with the fitted scaler's and centroids' numbers written into its
   statement: the Euclidean distance to that centroid (``anomaly_score``) and ``anomaly`` when it
   reaches the threshold, the ``quantile`` of the training readings' distances. Spark SQL cannot
   index an ML vector, so the statement recomputes the scaled coordinates from the scalar
   features. The threshold lives in the saved model: ``PipelineModel.transform`` alone says
   which readings are anomalous, with built-in JVM stages only (no Python UDF on the stream).

The tables keep one row per sign, so an anomalous reading is reported on the sign that moved it
furthest from its centroid; ``z_score`` is that sign's deviation from the patient's baseline (the
feature itself), and the per-sign band ``anomaly_low``/``anomaly_high`` is NULL: a distance in six
dimensions has no range of one sign.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.clustering import KMeans, KMeansModel
from pyspark.ml.feature import SQLTransformer, StandardScaler, StandardScalerModel, VectorAssembler
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, IntegerType

from spark_jobs.transforms.vitals import (
    DEFAULT_Z_THRESHOLD,
    LONG_COLUMNS,
    VITAL_SIGNS,
    flag_out_of_range,
    flagged_readings,
    flags_in_windows,
    long_vitals,
    score_anomalies,
    with_thresholds,
)

# Chosen by measurement on the generator's readings (docs/pipelines/vitals.md, one small run):
# 2 clusters (KMeans' minimum) did as well as 4 and a 0.995 quantile had the best F1.
DEFAULT_CLUSTERS = 2
DEFAULT_QUANTILE = 0.995
DEFAULT_SEED = 1
READING_KEY = ("patient_id", "device_id", "event_time")
SCORE_COLUMN = "anomaly_score"


def _z(vital: str) -> str:
    return f"z_{vital}"


def _feature(vital: str) -> str:
    return f"_feature_{vital}"


def _deviation(vital: str) -> str:
    return f"_deviation_{vital}"


FEATURE_COLUMNS = tuple(_feature(vital) for vital in VITAL_SIGNS)


# --- features -------------------------------------------------------------------------------


def patient_deviations(readings_frame: DataFrame, baselines: DataFrame) -> DataFrame:
    """``readings_frame`` (wide: one column per sign) plus ``z_<sign>``, the value's deviation
    from the patient's baseline in standard deviations (the population's baseline when the
    patient has none; NULL when the sign is omitted or there is no baseline), and the model's
    features ``_feature_<sign>``: the same with NULL as 0."""
    own = _wide_baselines(baselines.where(F.col("patient_id").isNotNull()), "own", ["patient_id"])
    population = _wide_baselines(baselines.where(F.col("patient_id").isNull()), "pop", [])
    joined = readings_frame.join(F.broadcast(own), ["patient_id"], "left").crossJoin(
        F.broadcast(population)
    )
    deviations = {
        _z(vital): (
            F.col(vital) - F.coalesce(F.col(f"_own_mean_{vital}"), F.col(f"_pop_mean_{vital}"))
        )
        / F.coalesce(F.col(f"_own_stddev_{vital}"), F.col(f"_pop_stddev_{vital}"))
        for vital in VITAL_SIGNS
    }
    with_z = joined.withColumns(deviations).drop(
        *(
            f"_{side}_{stat}_{v}"
            for side in ("own", "pop")
            for stat in ("mean", "stddev")
            for v in VITAL_SIGNS
        )
    )
    return with_z.withColumns(
        {_feature(vital): F.coalesce(F.col(_z(vital)), F.lit(0.0)) for vital in VITAL_SIGNS}
    )


def in_range_readings(history: DataFrame, overrides: DataFrame) -> DataFrame:
    """The readings of ``history`` none of whose signs is out of its clinical range: an episode
    must not become part of what the model learns as normal (as in ``train_baselines``)."""
    out_of_range = (
        flag_out_of_range(with_thresholds(long_vitals(history), overrides))
        .where(F.col("out_of_range"))
        .select(*(F.col(name).alias(f"_bad_{name}") for name in READING_KEY))
        .distinct()
    )
    # Null-safe: a reading may have no device_id.
    same_reading = [history[name].eqNullSafe(out_of_range[f"_bad_{name}"]) for name in READING_KEY]
    return history.join(out_of_range, same_reading, "left_anti")


# --- training -------------------------------------------------------------------------------


def fit_anomaly_pipeline(
    history: DataFrame,
    baselines: DataFrame,
    overrides: DataFrame,
    *,
    clusters: int = DEFAULT_CLUSTERS,
    quantile: float = DEFAULT_QUANTILE,
    seed: int = DEFAULT_SEED,
) -> tuple[PipelineModel, float]:
    """The fitted scoring pipeline and its threshold, from the wide readings ``history`` (its
    in-range readings), normalised by ``baselines`` (``train_baselines`` of the same history).

    The threshold is the ``quantile`` of the training readings' distances to their centroid: on
    clean history about ``1 - quantile`` of normal readings are flagged.
    """
    if clusters < 2:  # KMeans' own minimum
        raise ValueError(f"clusters is {clusters}; give 2 or more.")
    if not 0.5 <= quantile < 1.0:
        raise ValueError(f"quantile is {quantile}; give a fraction in [0.5, 1).")
    training = patient_deviations(in_range_readings(history, overrides), baselines).select(
        *FEATURE_COLUMNS
    )
    training.persist()
    try:
        if training.isEmpty():
            raise ValueError("the history holds no in-range reading to train on.")
        fitted = Pipeline(
            stages=[
                VectorAssembler(inputCols=list(FEATURE_COLUMNS), outputCol="_features"),
                StandardScaler(
                    inputCol="_features", outputCol="_scaled", withMean=True, withStd=True
                ),
                KMeans(featuresCol="_scaled", predictionCol="_cluster", k=clusters, seed=seed),
            ]
        ).fit(training)
        assembler, scaler, kmeans = fitted.stages
        assert isinstance(scaler, StandardScalerModel) and isinstance(kmeans, KMeansModel)
        means = list(scaler.mean.toArray())
        stddevs = list(scaler.std.toArray())
        centers = [list(center) for center in kmeans.clusterCenters()]
        unthresholded = PipelineModel(
            stages=[assembler, scaler, kmeans, _scoring_stage(means, stddevs, centers, None)]
        )
        distances = unthresholded.transform(training)
        threshold = distances.approxQuantile(SCORE_COLUMN, [quantile], 1e-4)[0]
    finally:
        training.unpersist()
    model = PipelineModel(
        stages=[assembler, scaler, kmeans, _scoring_stage(means, stddevs, centers, threshold)]
    )
    return model, threshold


def _scoring_stage(
    means: Sequence[float],
    stddevs: Sequence[float],
    centers: Sequence[Sequence[float]],
    threshold: float | None,
) -> SQLTransformer:
    """Distance to the reading's centroid from its scalar features, with the fitted numbers as
    literals; ``anomaly`` is NULL without a threshold (while the threshold is being chosen)."""
    deviations = []
    for index, vital in enumerate(VITAL_SIGNS):
        # StandardScaler maps a constant feature (std 0) to 0, so its scaled coordinate is 0.
        scaled = (
            f"(({_feature(vital)} - {_literal(means[index])}) / {_literal(stddevs[index])})"
            if stddevs[index] > 0
            else _literal(0.0)
        )
        center = " ".join(
            f"WHEN {cluster} THEN {_literal(values[index])}"
            for cluster, values in enumerate(centers)
        )
        deviations.append(f"{scaled} - CASE _cluster {center} END AS {_deviation(vital)}")
    squares = " + ".join(f"{_deviation(v)} * {_deviation(v)}" for v in VITAL_SIGNS)
    anomaly = (
        f"sqrt({squares}) >= {_literal(threshold)}"
        if threshold is not None
        else "CAST(NULL AS BOOLEAN)"
    )
    return SQLTransformer(
        statement=(
            f"SELECT *, sqrt({squares}) AS {SCORE_COLUMN}, {anomaly} AS anomaly "
            f"FROM (SELECT *, {', '.join(deviations)} FROM __THIS__)"
        )
    )


def _literal(value: float) -> str:
    # The D suffix makes a DOUBLE literal (a plain 0.25 would be a DECIMAL).
    return f"({float(value)!r}D)"


# --- scoring --------------------------------------------------------------------------------


def score_readings(
    readings_frame: DataFrame,
    baselines: DataFrame,
    pipeline: PipelineModel,
    model_version: int | None,
) -> DataFrame:
    """One row per sign a reading carries (:data:`LONG_COLUMNS`) with the columns
    ``score_anomalies`` adds: ``z_score`` (deviation from the patient's baseline), ``anomaly``
    (the reading is anomalous and this sign moved it furthest from its centroid), the band
    ``anomaly_low``/``anomaly_high`` (NULL: see the module docstring) and ``model_version``."""
    scored = pipeline.transform(patient_deviations(readings_frame, baselines))
    squares = {vital: F.col(_deviation(vital)) * F.col(_deviation(vital)) for vital in VITAL_SIGNS}
    furthest = F.greatest(
        *(F.when(F.col(vital).isNotNull(), square) for vital, square in squares.items())
    )
    pairs = F.array(
        *(
            F.struct(
                F.lit(vital).alias("vital"),
                F.col(vital).alias("value"),
                F.col(_z(vital)).alias("z_score"),
                (F.coalesce(F.col("anomaly"), F.lit(False)) & (squares[vital] >= furthest)).alias(
                    "anomaly"
                ),
            )
            for vital in VITAL_SIGNS
        )
    )
    return (
        scored.select("patient_id", "device_id", "event_time", F.inline(pairs))
        .where(F.col("value").isNotNull())
        .select(
            *LONG_COLUMNS,
            "z_score",
            F.coalesce(F.col("anomaly"), F.lit(False)).alias("anomaly"),
            F.lit(None).cast(DoubleType()).alias("anomaly_low"),
            F.lit(None).cast(DoubleType()).alias("anomaly_high"),
            F.lit(model_version).cast(IntegerType()).alias("model_version"),
        )
    )


def flagged_readings_by_model(
    readings_frame: DataFrame,
    overrides: DataFrame,
    baselines: DataFrame | None,
    model_version: int | None,
    pipeline: PipelineModel | None,
    *,
    window_seconds: int = 60,
    z_threshold: float = DEFAULT_Z_THRESHOLD,
) -> DataFrame:
    """``flagged_readings`` with whichever model is loaded: the MLlib ``pipeline`` when there is
    one (``z_threshold`` then plays no part), else the z-score ``baselines`` (or none).
    Columns are :data:`spark_jobs.transforms.vitals.FLAG_COLUMNS` either way."""
    if pipeline is None or baselines is None:
        return flagged_readings(
            readings_frame,
            overrides,
            baselines,
            model_version,
            window_seconds=window_seconds,
            z_threshold=z_threshold,
        )
    scored = score_readings(readings_frame, baselines, pipeline, model_version)
    return flags_in_windows(flag_out_of_range(with_thresholds(scored, overrides)), window_seconds)


def reading_anomalies(scored_long: DataFrame) -> DataFrame:
    """Per reading (:data:`READING_KEY`): ``anomaly`` when any of its signs is anomalous. How
    the benchmark compares the two models, whose flags sit on signs."""
    return scored_long.groupBy(*READING_KEY).agg(F.max(F.col("anomaly")).alias("anomaly"))


def zscore_scored(
    readings_frame: DataFrame,
    baselines: DataFrame,
    model_version: int | None,
    z_threshold: float = DEFAULT_Z_THRESHOLD,
) -> DataFrame:
    """The z-score model's long rows for the same comparison (``score_anomalies``)."""
    return score_anomalies(long_vitals(readings_frame), baselines, model_version, z_threshold)


def _wide_baselines(baselines: DataFrame, side: str, keys: list[str]) -> DataFrame:
    """One row per key with ``_<side>_mean_<sign>`` and ``_<side>_stddev_<sign>``."""
    columns: list[Column] = []
    for vital in VITAL_SIGNS:
        this = F.col("vital") == vital
        columns += [
            F.max(F.when(this, F.col("mean"))).alias(f"_{side}_mean_{vital}"),
            F.max(F.when(this, F.col("stddev"))).alias(f"_{side}_stddev_{vital}"),
        ]
    if keys:
        return baselines.groupBy(*keys).agg(*columns)
    # No population rows still gives one row (of NULLs), so the cross join keeps every reading.
    return baselines.agg(*columns)
