"""Reference data of the vitals pipeline, kept fresh inside a running job: per-patient clinical
ranges from MariaDB ``patient_thresholds`` and the versioned anomaly model on disk.

Choice: both are small static DataFrames held by the driver and used in ``foreachBatch`` (a
stream-static broadcast join per micro-batch), refreshed when the copy in hand is older than an
interval. A stream-static join inside the streaming plan would need the static side to be
re-read by Spark each batch, which Spark does only for sources it re-scans (JDBC), and the
project ships no JDBC driver; reading on the driver every N seconds also bounds the load on
MariaDB to one small query per interval however short the batches are. A failed reload keeps the
last copy (and logs), so a MariaDB hiccup or a half-written model never stops the stream.

Model layout (``model_dir``, default ``<state_dir>/models/vitals``)::

    v1/baselines/      Parquet, columns BASELINE_COLUMNS (patient_id NULL = population)
    v1/model.json      {"version", "kind", "trained_at", "rows", "patients", ...}
    v2/pipeline/       only when kind is "mllib": the PipelineModel (PipelineModel.save)
    v2/...
    latest             the text "v2": written to a temporary file and renamed over the old one,
                       so a reader sees the old or the new version, never a partial one

``kind`` is ``zscore`` (the per-patient baselines are the model) or ``mllib`` (the baselines
normalise each reading for the pipeline; see ``spark_jobs.transforms.vitals_model``). A version
written before there were two kinds has no ``kind``: it is a z-score model. Rolling back is
pointing ``latest`` at an older version (:func:`point_latest`).

A version directory is complete before ``latest`` names it (it is built under a temporary name
and renamed into place), so following the pointer is always safe.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession

from spark_jobs.common.refresh import RefreshingCopy
from spark_jobs.transforms.vitals import BASELINES_SCHEMA, THRESHOLDS_SCHEMA
from streamops.config import Settings
from streamops.db import connect

log = logging.getLogger(__name__)

DEFAULT_REFRESH_SECONDS = 30.0
LATEST_POINTER = "latest"
ModelKind = Literal["zscore", "mllib"]
MODEL_KINDS: tuple[ModelKind, ...] = ("zscore", "mllib")
_VERSION_DIR = re.compile(r"^v([1-9][0-9]*)$")
_SELECT_THRESHOLDS = (
    "SELECT patient_id, vital, threshold_low, threshold_high FROM patient_thresholds "
    "ORDER BY patient_id, vital"
)


def default_model_dir(settings: Settings) -> Path:
    return settings.state_dir / "models" / "vitals"


# --- the model on disk ------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelVersion:
    version: int
    path: Path

    @property
    def baselines_path(self) -> Path:
        return self.path / "baselines"

    @property
    def pipeline_path(self) -> Path:
        return self.path / "pipeline"

    def details(self) -> dict[str, Any]:
        """The version's model.json ({} when there is none)."""
        try:
            loaded = json.loads((self.path / "model.json").read_text())
        except FileNotFoundError:
            return {}
        return loaded if isinstance(loaded, dict) else {}

    @property
    def kind(self) -> ModelKind:
        kind = self.details().get("kind", "zscore")  # versions from before kinds: z-score
        if kind not in MODEL_KINDS:
            raise ValueError(f"{self.path}/model.json names kind {kind!r}; known: {MODEL_KINDS}")
        return kind


@dataclass(frozen=True)
class LoadedModel:
    """A version in memory: its baselines, and the fitted pipeline when the kind is mllib."""

    version: int
    kind: ModelKind
    baselines: DataFrame
    pipeline: PipelineModel | None = None


def model_versions(model_dir: Path) -> list[int]:
    """The complete versions in ``model_dir``, oldest first."""
    if not model_dir.is_dir():
        return []
    found = (_VERSION_DIR.match(entry.name) for entry in model_dir.iterdir() if entry.is_dir())
    return sorted(int(match[1]) for match in found if match)


def latest_model(model_dir: Path) -> ModelVersion | None:
    """The version the ``latest`` pointer names, or None when there is no model yet."""
    pointer = model_dir / LATEST_POINTER
    try:
        name = pointer.read_text().strip()
    except FileNotFoundError:
        return None
    match = _VERSION_DIR.match(name)
    if not match or not (model_dir / name).is_dir():
        raise ValueError(f"{pointer} names {name!r}, which is not a model version in {model_dir}")
    return ModelVersion(int(match[1]), model_dir / name)


def save_model(
    baselines: DataFrame,
    model_dir: Path,
    metadata: dict[str, Any] | None = None,
    pipeline: PipelineModel | None = None,
) -> ModelVersion:
    """Write ``baselines`` (and ``pipeline``: then the kind is mllib, else zscore) as the next
    version and point ``latest`` at it; return that version.

    Two trainings at once would race for the version number; the rename of the finished
    directory fails for the loser instead of mixing their files.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    version = (max(model_versions(model_dir), default=0)) + 1
    staging = model_dir / f".v{version}-{uuid.uuid4().hex}"
    baselines.write.mode("error").parquet(str(staging / "baselines"))
    if pipeline is not None:
        pipeline.save(str(staging / "pipeline"))
    stored = baselines.sparkSession.read.parquet(str(staging / "baselines"))
    details = {
        "version": version,
        "kind": "zscore" if pipeline is None else "mllib",
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": stored.count(),
        "patients": stored.where("patient_id IS NOT NULL").select("patient_id").distinct().count(),
        **(metadata or {}),
    }
    (staging / "model.json").write_text(json.dumps(details, indent=2) + "\n")
    final = model_dir / f"v{version}"
    staging.rename(final)  # fails if another training took this number meanwhile
    return point_latest(model_dir, version)


def point_latest(model_dir: Path, version: int) -> ModelVersion:
    """Point ``latest`` at ``version`` (a new one, or an older one to roll back to); running
    jobs switch to it at their next check."""
    if version not in model_versions(model_dir):
        raise ValueError(
            f"{model_dir} has no version v{version}; it has {model_versions(model_dir)}"
        )
    pointer_tmp = model_dir / f".{LATEST_POINTER}-{uuid.uuid4().hex}"
    pointer_tmp.write_text(f"v{version}\n")
    os.replace(pointer_tmp, model_dir / LATEST_POINTER)
    return ModelVersion(version, model_dir / f"v{version}")


def load_baselines(spark: SparkSession, model: ModelVersion) -> DataFrame:
    """The model's baselines as a small in-memory DataFrame (collected once per version)."""
    rows = spark.read.schema(BASELINES_SCHEMA).parquet(str(model.baselines_path)).collect()
    return spark.createDataFrame(rows, BASELINES_SCHEMA)


def load_model(spark: SparkSession, model: ModelVersion) -> LoadedModel:
    """The version of either kind in memory."""
    kind = model.kind
    pipeline = PipelineModel.load(str(model.pipeline_path)) if kind == "mllib" else None
    return LoadedModel(model.version, kind, load_baselines(spark, model), pipeline)


class ModelCache:
    """The current model: the ``latest`` pointer is read at most every ``check_seconds``; a new
    version is loaded then, without restarting the stream."""

    def __init__(
        self,
        spark: SparkSession,
        model_dir: Path,
        check_seconds: float = DEFAULT_REFRESH_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if check_seconds <= 0:
            raise ValueError(f"check_seconds is {check_seconds}; give a positive number.")
        self.spark = spark
        self.model_dir = model_dir
        self.check_seconds = check_seconds
        self._clock = clock
        self._checked_at: float | None = None
        self._model: LoadedModel | None = None

    def loaded(self) -> LoadedModel | None:
        """The model in hand (either kind), None while there is none."""
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= self.check_seconds:
            self._checked_at = now
            held = None if self._model is None else self._model.version
            try:
                model = latest_model(self.model_dir)
                if model is not None and model.version != held:
                    self._model = load_model(self.spark, model)
                    log.info(
                        "vitals anomaly model v%s (%s) loaded from %s",
                        model.version,
                        self._model.kind,
                        model.path,
                    )
            except Exception:
                log.exception(
                    "could not load the vitals model from %s; keeping v%s", self.model_dir, held
                )
        return self._model


# --- per-patient thresholds -------------------------------------------------------------------


def load_thresholds(settings: Settings) -> list[tuple[str, str, float | None, float | None]]:
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        cursor.execute(_SELECT_THRESHOLDS)
        return [
            (
                str(patient_id),
                str(vital),
                None if low is None else float(low),
                None if high is None else float(high),
            )
            for patient_id, vital, low, high in cursor
        ]


class ThresholdCache(RefreshingCopy[list[tuple[str, str, float | None, float | None]]]):
    """``patient_thresholds`` as a static DataFrame, re-read when older than ``refresh_seconds``."""

    def __init__(
        self,
        spark: SparkSession,
        settings: Settings,
        refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
        *,
        loader: Callable[[Settings], list[tuple[str, str, float | None, float | None]]] = (
            load_thresholds
        ),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            settings,
            refresh_seconds,
            loader,
            what="patient_thresholds",
            describe=lambda rows: f"{len(rows)} overrides",
            clock=clock,
        )
        self.spark = spark
        self._frame: DataFrame | None = None
        self._frame_version = -1

    def current(self) -> DataFrame:
        """The overrides, reloaded first if stale. Raises only if no load ever succeeded."""
        rows = self.value()
        if self._frame is None or self._frame_version != self.version:
            self._frame = self.spark.createDataFrame(rows, THRESHOLDS_SCHEMA)
            self._frame_version = self.version
        return self._frame
