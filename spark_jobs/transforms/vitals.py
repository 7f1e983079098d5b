"""Transforms of the vitals pipeline: check each `patient-vitals` record against the contract
(shared/CONTRACT.md), summarise readings per patient and event-time window, flag vital signs that
are out of their clinical range or anomalous for the patient, train the per-patient baselines the
anomaly check uses, and detect patients whose device has gone silent.

A payload is parsed the way the orders pipeline parses one (see ``spark_jobs.transforms.orders``):
strictly, once, into a VARIANT, as ``[<payload>,"<end mark>"]`` so that trailing text after the
first JSON value is caught, and every field is read as the JSON type it has on the wire.

The record may carry one field beyond the contract's vital signs: ``"discharged": true`` says the
patient left the ward; such a record is a control record, never a reading (see
docs/pipelines/vitals.md, "Discharge").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F
from pyspark.sql.streaming import StatefulProcessor, StatefulProcessorHandle
from pyspark.sql.streaming.stateful_processor import ExpiredTimerInfo, TimerValues
from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
    VariantType,
)

from spark_jobs.transforms.cleansing import (
    DEFAULT_MAX_CLOCK_SKEW_SECONDS,
    EVENT_TIME_IN_FUTURE,
    SOURCE_COLUMNS,
    event_time_in_future,
    first_failing_reason,
    parse_event_time,
    quarantine_rows,
    read_one_json_value,
)
from streamops.contract.vitals import DEFAULT_THRESHOLDS

PIPELINE = "vitals"
VITAL_SIGNS = (
    "heart_rate",
    "spo2",
    "systolic_bp",
    "diastolic_bp",
    "temperature_c",
    "respiratory_rate",
)
# The vitals_alerts row of a silent device uses this in place of a vital sign (migration 0007).
SIGNAL_VITAL = "signal"

# A baseline's standard deviation is at least this, so a very steady history does not turn the
# next small wobble into a huge z-score (units of each vital).
STDDEV_FLOORS: Mapping[str, float] = {
    "heart_rate": 2.0,
    "spo2": 0.5,
    "systolic_bp": 3.0,
    "diastolic_bp": 3.0,
    "temperature_c": 0.1,
    "respiratory_rate": 1.0,
}
DEFAULT_Z_THRESHOLD = 4.0
DEFAULT_MIN_SAMPLES = 30

# Limits of the columns the values land in (migration 0007 and 0001).
PATIENT_ID_MAX_LENGTH = 64
DEVICE_ID_MAX_LENGTH = 128

CHECKED_COLUMNS = (
    *SOURCE_COLUMNS,
    "patient_id",
    "device_id",
    "event_time",
    *VITAL_SIGNS,
    "discharged",
    "reason",
)
READING_COLUMNS = (
    "patient_id",
    "device_id",
    "event_time",
    *VITAL_SIGNS,
    "source_partition",
    "source_offset",
)
SUMMARY_COLUMNS = (
    "patient_id",
    "window_start",
    "window_end",
    "reading_count",
    *(f"{vital}_{stat}" for vital in VITAL_SIGNS for stat in ("min", "avg", "max")),
)
LONG_COLUMNS = ("patient_id", "device_id", "event_time", "vital", "value")
THRESHOLD_COLUMNS = ("patient_id", "vital", "threshold_low", "threshold_high")
BASELINE_COLUMNS = ("patient_id", "vital", "mean", "stddev", "sample_count")
FLAG_COLUMNS = (
    "patient_id",
    "vital",
    "event_time",
    "device_id",
    "window_start",
    "window_end",
    "value",
    "threshold_low",
    "threshold_high",
    "out_of_range",
    "severity",
    "z_score",
    "anomaly",
    "anomaly_low",
    "anomaly_high",
    "model_version",
)

THRESHOLDS_SCHEMA = StructType(
    [
        StructField("patient_id", StringType(), False),
        StructField("vital", StringType(), False),
        StructField("threshold_low", DoubleType(), True),
        StructField("threshold_high", DoubleType(), True),
    ]
)
# patient_id NULL: the population baseline of the vital, used for patients without their own.
BASELINES_SCHEMA = StructType(
    [
        StructField("patient_id", StringType(), True),
        StructField("vital", StringType(), False),
        StructField("mean", DoubleType(), False),
        StructField("stddev", DoubleType(), False),
        StructField("sample_count", LongType(), False),
    ]
)

_BLANK = r"(?U)^[\s\x1c-\x1f]*$"
_FIELDS = ("patient_id", "device_id", "event_time", *VITAL_SIGNS, "discharged")
_RECORD_SCHEMA = StructType([StructField(name, VariantType(), nullable=True) for name in _FIELDS])
# DATETIME's range as seconds since the epoch (as in the orders pipeline).
_EVENT_TIME_MIN_EPOCH_SECONDS = int(datetime(1000, 1, 1, tzinfo=UTC).timestamp())
_EVENT_TIME_END_EPOCH_SECONDS = int(datetime(9999, 12, 31, tzinfo=UTC).timestamp()) + 86_400


# --- parse and check ------------------------------------------------------------------------


def check_vitals(
    raw: DataFrame, max_clock_skew_seconds: int = DEFAULT_MAX_CLOCK_SKEW_SECONDS
) -> DataFrame:
    """Every Kafka record with its fields and ``reason``: NULL for a valid record, else the first
    contract rule it breaks. Columns are :data:`CHECKED_COLUMNS`; vital signs are DOUBLE (NULL
    when the reading omits one), ``discharged`` is never NULL for a valid record. A record (a
    discharge too) whose event time is more than ``max_clock_skew_seconds`` after its Kafka
    timestamp is ``event_time_in_future``: it would move the watermark and the silence timers."""
    parsed = read_one_json_value(raw)
    shaped = parsed.withColumn(
        "_fields",
        F.when(
            F.schema_of_variant("_record").startswith("OBJECT<"),
            F.try_variant_get("_record", "$", _RECORD_SCHEMA.simpleString()),
        ),
    )
    kinds = shaped.withColumns(
        {f"_kind_{name}": F.schema_of_variant(_value(name)) for name in _FIELDS}
    )
    read = kinds.withColumns(
        {
            **{
                f"_string_{name}": F.when(
                    _kind(name) == "STRING", F.try_variant_get(_value(name), "$", "string")
                )
                for name in ("patient_id", "device_id", "event_time")
            },
            **{
                f"_number_{vital}": F.when(
                    _is_number(vital), F.try_variant_get(_value(vital), "$", "double")
                )
                for vital in VITAL_SIGNS
            },
            "_discharged": F.when(
                _kind("discharged") == "BOOLEAN",
                F.try_variant_get(_value("discharged"), "$", "boolean"),
            ),
        }
    )
    timed = read.withColumn("_event_time", parse_event_time(_string("event_time")))
    return timed.select(
        *SOURCE_COLUMNS,
        _string("patient_id").alias("patient_id"),
        _string("device_id").alias("device_id"),
        F.col("_event_time").alias("event_time"),
        *(F.col(f"_number_{vital}").alias(vital) for vital in VITAL_SIGNS),
        F.coalesce(F.col("_discharged"), F.lit(False)).alias("discharged"),
        first_failing_reason(_rules(max_clock_skew_seconds)).alias("reason"),
    )


def valid_records(checked: DataFrame) -> DataFrame:
    """The valid records of ``check_vitals``, readings and discharge records alike:
    :data:`READING_COLUMNS` plus ``discharged``."""
    return checked.where(F.col("reason").isNull()).select(*READING_COLUMNS, "discharged")


def readings(checked: DataFrame) -> DataFrame:
    """The valid readings (discharge records left out). Columns are :data:`READING_COLUMNS`."""
    return checked.where(F.col("reason").isNull() & ~F.col("discharged")).select(*READING_COLUMNS)


def rejected_records(checked: DataFrame) -> DataFrame:
    """The rejected records of ``check_vitals`` as rows of the ``quarantine`` table."""
    return quarantine_rows(checked, PIPELINE)


# --- windows ----------------------------------------------------------------------------------


def summary_per_window(
    readings_frame: DataFrame, window_seconds: int = 60, slide_seconds: int | None = None
) -> DataFrame:
    """min/avg/max of each vital sign and the reading count per patient and event-time window.

    Tumbling windows of ``window_seconds`` by default; with ``slide_seconds`` (smaller than the
    window, dividing it) sliding windows that start every ``slide_seconds``. An aggregate is NULL
    when no reading of the window carried that sign. Columns are :data:`SUMMARY_COLUMNS`. One
    ``groupBy(window, patient_id)``, so it runs on a watermarked stream.
    """
    _check_seconds("window_seconds", window_seconds)
    if slide_seconds is None:
        window = F.window("event_time", f"{window_seconds} seconds")
    else:
        _check_seconds("slide_seconds", slide_seconds)
        if slide_seconds > window_seconds or window_seconds % slide_seconds:
            raise ValueError(
                f"slide_seconds ({slide_seconds}) must divide window_seconds ({window_seconds})."
            )
        window = F.window("event_time", f"{window_seconds} seconds", f"{slide_seconds} seconds")
    aggregates = [F.count(F.lit(1)).alias("reading_count")]
    for vital in VITAL_SIGNS:
        aggregates += [
            F.min(vital).alias(f"{vital}_min"),
            F.avg(vital).alias(f"{vital}_avg"),
            F.max(vital).alias(f"{vital}_max"),
        ]
    return (
        readings_frame.groupBy(window.alias("window"), F.col("patient_id"))
        .agg(*aggregates)
        .select(
            "patient_id",
            F.col("window.start").alias("window_start"),
            F.col("window.end").alias("window_end"),
            *SUMMARY_COLUMNS[3:],
        )
    )


def latest_per_patient(readings_frame: DataFrame) -> DataFrame:
    """Each patient's newest reading (by event time, then offset): :data:`READING_COLUMNS`."""
    newest = F.max_by(
        F.struct(*READING_COLUMNS), F.struct("event_time", "source_partition", "source_offset")
    )
    return (
        readings_frame.groupBy("patient_id")
        .agg(newest.alias("latest"))
        .select(*(F.col(f"latest.{name}").alias(name) for name in READING_COLUMNS))
    )


# --- flags: clinical ranges and the anomaly model ---------------------------------------------


def long_vitals(readings_frame: DataFrame) -> DataFrame:
    """One row per vital sign a reading carries: :data:`LONG_COLUMNS` (omitted signs dropped)."""
    pairs = F.array(
        *(
            F.struct(F.lit(vital).alias("vital"), F.col(vital).alias("value"))
            for vital in VITAL_SIGNS
        )
    )
    return (
        readings_frame.select("patient_id", "device_id", "event_time", F.inline(pairs))
        .where(F.col("value").isNotNull())
        .select(*LONG_COLUMNS)
    )


def with_thresholds(long_frame: DataFrame, overrides: DataFrame) -> DataFrame:
    """``long_frame`` plus ``threshold_low``/``threshold_high``: the patient's override of that
    bound from ``overrides`` (:data:`THRESHOLD_COLUMNS`) where there is one, else the default."""
    default_low, default_high = _default_bound(0), _default_bound(1)
    joined = long_frame.join(
        F.broadcast(
            overrides.select(
                "patient_id",
                "vital",
                F.col("threshold_low").alias("_override_low"),
                F.col("threshold_high").alias("_override_high"),
            )
        ),
        on=["patient_id", "vital"],
        how="left",
    )
    return joined.withColumns(
        {
            "threshold_low": F.coalesce("_override_low", default_low),
            "threshold_high": F.coalesce("_override_high", default_high),
        }
    ).drop("_override_low", "_override_high")


def flag_out_of_range(with_bounds: DataFrame) -> DataFrame:
    """Adds ``out_of_range`` (below the low or above the high bound; a NULL bound never trips)
    and ``severity``: how far outside the range the value is, 0 inside."""
    value, low, high = F.col("value"), F.col("threshold_low"), F.col("threshold_high")
    below = F.when(low.isNotNull() & (value < low), low - value)
    above = F.when(high.isNotNull() & (value > high), value - high)
    return with_bounds.withColumns(
        {
            "out_of_range": below.isNotNull() | above.isNotNull(),
            "severity": F.coalesce(below, above, F.lit(0.0)),
        }
    )


def score_anomalies(
    long_frame: DataFrame,
    baselines: DataFrame | None,
    model_version: int | None,
    z_threshold: float = DEFAULT_Z_THRESHOLD,
) -> DataFrame:
    """Adds ``z_score`` against the patient's baseline (the population's when the patient has
    none), ``anomaly`` (``|z| >= z_threshold``), the band ``anomaly_low``/``anomaly_high`` and
    ``model_version``. Without a model (``baselines`` None) nothing is anomalous and z is NULL.
    """
    if z_threshold <= 0:
        raise ValueError(f"z_threshold is {z_threshold}; give a positive number.")
    if baselines is None:
        return long_frame.withColumns(
            {
                "z_score": F.lit(None).cast(DoubleType()),
                "anomaly": F.lit(False),
                "anomaly_low": F.lit(None).cast(DoubleType()),
                "anomaly_high": F.lit(None).cast(DoubleType()),
                "model_version": F.lit(None).cast(IntegerType()),
            }
        )
    own = baselines.where(F.col("patient_id").isNotNull()).select(
        "patient_id",
        "vital",
        F.col("mean").alias("_own_mean"),
        F.col("stddev").alias("_own_stddev"),
    )
    population = baselines.where(F.col("patient_id").isNull()).select(
        "vital", F.col("mean").alias("_pop_mean"), F.col("stddev").alias("_pop_stddev")
    )
    joined = long_frame.join(F.broadcast(own), ["patient_id", "vital"], "left").join(
        F.broadcast(population), ["vital"], "left"
    )
    has_own = F.col("_own_mean").isNotNull()
    mean = F.when(has_own, F.col("_own_mean")).otherwise(F.col("_pop_mean"))
    stddev = F.when(has_own, F.col("_own_stddev")).otherwise(F.col("_pop_stddev"))
    z = (F.col("value") - mean) / stddev
    scored = joined.withColumns(
        {
            "z_score": z,
            "anomaly": F.coalesce(F.abs(z) >= F.lit(z_threshold), F.lit(False)),
            "anomaly_low": mean - F.lit(z_threshold) * stddev,
            "anomaly_high": mean + F.lit(z_threshold) * stddev,
            "model_version": F.lit(model_version).cast(IntegerType()),
        }
    )
    return scored.drop("_own_mean", "_own_stddev", "_pop_mean", "_pop_stddev")


def flagged_readings(
    readings_frame: DataFrame,
    overrides: DataFrame,
    baselines: DataFrame | None,
    model_version: int | None,
    *,
    window_seconds: int = 60,
    z_threshold: float = DEFAULT_Z_THRESHOLD,
) -> DataFrame:
    """Every vital of every reading that is out of range or anomalous, in the tumbling
    ``window_seconds`` alert window it falls in. Columns are :data:`FLAG_COLUMNS`."""
    _check_seconds("window_seconds", window_seconds)
    long_frame = long_vitals(readings_frame)
    checked = flag_out_of_range(with_thresholds(long_frame, overrides))
    scored = score_anomalies(checked, baselines, model_version, z_threshold)
    return flags_in_windows(scored, window_seconds)


def flags_in_windows(scored: DataFrame, window_seconds: int = 60) -> DataFrame:
    """The rows of ``scored`` (long rows with the range and the model's columns) that are out of
    range or anomalous, in their tumbling ``window_seconds`` alert window: :data:`FLAG_COLUMNS`.
    Shared by both kinds of anomaly model, so their flags land in the same tables."""
    _check_seconds("window_seconds", window_seconds)
    window = F.window("event_time", f"{window_seconds} seconds")
    return (
        scored.where(F.col("out_of_range") | F.col("anomaly"))
        .withColumn("_window", window)
        .select(
            *(
                F.col(f"_window.{column.removeprefix('window_')}").alias(column)
                if column in ("window_start", "window_end")
                else column
                for column in FLAG_COLUMNS
            )
        )
    )


def train_baselines(
    long_history: DataFrame, overrides: DataFrame, min_samples: int = DEFAULT_MIN_SAMPLES
) -> DataFrame:
    """The anomaly model: mean and standard deviation of each vital per patient (patients with at
    least ``min_samples`` in-range values) and for the whole population (``patient_id`` NULL).

    Out-of-range values are left out: a fever episode must not become the patient's normal. The
    standard deviation is at least the vital's floor (:data:`STDDEV_FLOORS`). Columns are
    :data:`BASELINE_COLUMNS`.
    """
    if min_samples < 2:
        raise ValueError(f"min_samples is {min_samples}; give 2 or more.")
    in_range = flag_out_of_range(with_thresholds(long_history, overrides)).where(
        ~F.col("out_of_range")
    )
    floor = _per_vital(STDDEV_FLOORS)
    stats = [
        F.avg("value").alias("mean"),
        F.stddev_samp("value").alias("_stddev"),
        F.count(F.lit(1)).alias("sample_count"),
    ]
    per_patient = (
        in_range.groupBy("patient_id", "vital")
        .agg(*stats)
        .where(F.col("sample_count") >= min_samples)
    )
    population = (
        in_range.groupBy("vital")
        .agg(*stats)
        .where(F.col("sample_count") >= min_samples)
        .withColumn("patient_id", F.lit(None).cast(StringType()))
    )
    return (
        per_patient.unionByName(population)
        .withColumn("stddev", F.greatest(F.coalesce("_stddev", F.lit(0.0)), floor))
        .select(
            "patient_id",
            "vital",
            F.col("mean").cast(DoubleType()).alias("mean"),
            F.col("stddev").cast(DoubleType()).alias("stddev"),
            F.col("sample_count").cast(LongType()).alias("sample_count"),
        )
    )


# --- "no signal": arbitrary stateful processing -----------------------------------------------

SIGNAL_INPUT_COLUMNS = ("patient_id", "device_id", "event_time", "discharged")
SIGNAL_EVENT_SCHEMA = StructType(
    [
        # silent | restored | discharged | expired
        StructField("event", StringType(), False),
        StructField("patient_id", StringType(), False),
        StructField("device_id", StringType(), True),
        StructField("last_seen", TimestampType(), False),
        StructField("event_at", TimestampType(), False),
    ]
)
_PATIENT_STATE = StructType(
    [
        StructField("last_seen_ms", LongType(), False),
        StructField("device_id", StringType(), True),
        StructField("silent", BooleanType(), False),
    ]
)


class SilenceDetector(StatefulProcessor):
    """Per patient: the event time of the last reading, and one event-time timer.

    - While the patient sends, the timer sits at ``last_seen + silence``. When the watermark
      passes it, the patient is ``silent`` (once), and the timer moves to
      ``last_seen + retention``.
    - A reading after a silence emits ``restored``; a discharge record emits ``discharged``; in
      both of the latter and when the retention timer fires (``expired``) nothing of the patient
      stays in state but what a new reading creates.

    Event time, not processing time: the same input gives the same events on a replay or a
    restart from a backlog. The flip side (documented): when *every* device stops, the watermark
    stops too and nobody is flagged; the query's heartbeat and lag monitoring cover that case.
    """

    def __init__(self, silence_seconds: float, retention_seconds: float) -> None:
        if silence_seconds <= 0 or retention_seconds <= silence_seconds:
            raise ValueError(
                f"silence_seconds ({silence_seconds}) must be positive and retention_seconds "
                f"({retention_seconds}) longer than it."
            )
        self.silence_ms = int(silence_seconds * 1000)
        self.retention_ms = int(retention_seconds * 1000)

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.handle = handle
        self.patient = handle.getValueState("patient", _PATIENT_STATE)

    def handleInputRows(
        self, key: Any, rows: Iterator[Row], timerValues: TimerValues
    ) -> Iterator[Row]:
        patient_id = key[0]
        state = self.patient.get() if self.patient.exists() else None
        last_seen_ms = None if state is None else int(state[0])
        device_id = None if state is None else state[1]
        silent = False if state is None else bool(state[2])
        events: list[Row] = []
        for row in sorted(rows, key=lambda r: (_epoch_ms(r.event_time), not r.discharged)):
            moment = _epoch_ms(row.event_time)
            if row.discharged:
                events.append(
                    _event("discharged", patient_id, device_id, last_seen_ms or moment, moment)
                )
                last_seen_ms, device_id, silent = None, None, False
                continue
            if last_seen_ms is not None and moment <= last_seen_ms:
                continue  # older than what we know: says nothing about the device now
            if silent and last_seen_ms is not None:
                events.append(_event("restored", patient_id, device_id, last_seen_ms, moment))
            last_seen_ms, device_id, silent = moment, row.device_id, False
        self._delete_timers()
        if last_seen_ms is None:
            self.patient.clear()
        else:
            self.patient.update((last_seen_ms, device_id, silent))
            self.handle.registerTimer(last_seen_ms + self.silence_ms)
        return iter(events)

    def handleExpiredTimer(
        self, key: Any, timerValues: TimerValues, expiredTimerInfo: ExpiredTimerInfo
    ) -> Iterator[Row]:
        if not self.patient.exists():
            return iter(())
        stored = self.patient.get()
        assert stored is not None
        last_seen_ms, device_id, silent = int(stored[0]), stored[1], bool(stored[2])
        self._delete_timers()
        if not silent:
            self.patient.update((last_seen_ms, device_id, True))
            self.handle.registerTimer(last_seen_ms + self.retention_ms)
            at = last_seen_ms + self.silence_ms
            return iter([_event("silent", key[0], device_id, last_seen_ms, at)])
        self.patient.clear()
        at = last_seen_ms + self.retention_ms
        return iter([_event("expired", key[0], device_id, last_seen_ms, at)])

    def close(self) -> None:
        pass

    def _delete_timers(self) -> None:
        for timer in list(self.handle.listTimers()):
            self.handle.deleteTimer(timer)


def detect_silence(
    valid: DataFrame, watermark: str, silence_seconds: float, retention_seconds: float
) -> DataFrame:
    """Signal events (:data:`SIGNAL_EVENT_SCHEMA`) per patient from the valid records (readings
    and discharge records: :data:`SIGNAL_INPUT_COLUMNS`). Needs the RocksDB state store."""
    return (
        valid.select(*SIGNAL_INPUT_COLUMNS)
        .withWatermark("event_time", watermark)
        .groupBy("patient_id")
        .transformWithState(
            SilenceDetector(silence_seconds, retention_seconds),
            SIGNAL_EVENT_SCHEMA,
            "Update",
            "EventTime",
        )
    )


def _event(
    event: str, patient_id: str, device_id: str | None, last_seen_ms: int, at_ms: int
) -> Row:
    return Row(
        event=event,
        patient_id=patient_id,
        device_id=device_id,
        last_seen=_from_epoch_ms(last_seen_ms),
        event_at=_from_epoch_ms(at_ms),
    )


def _epoch_ms(moment: datetime) -> int:
    # A naive datetime from PySpark is local wall-clock time; .timestamp() reads it as such.
    return round(moment.timestamp() * 1000)


def _from_epoch_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


# --- the rules --------------------------------------------------------------------------------


def _rules(max_clock_skew_seconds: int) -> list[tuple[str, Column]]:
    """In the order of the generator's validator: record, then fields in contract order, and
    last the receiving clock's rule."""
    event_seconds = F.unix_seconds(F.col("_event_time"))
    rules: list[tuple[str, Column]] = [
        ("missing_payload", F.col("raw_payload").isNull()),
        ("invalid_utf8", ~F.col("_utf8")),
        ("invalid_json", ~F.col("_json_ok")),
        ("not_a_json_object", ~F.coalesce(F.col("_fields").isNotNull(), F.lit(False))),
        ("missing_field:patient_id", ~_present("patient_id")),
        ("patient_id_not_string", _kind("patient_id") != "STRING"),
        ("patient_id_empty", _string("patient_id").rlike(_BLANK)),
        ("patient_id_too_long", F.char_length(_string("patient_id")) > PATIENT_ID_MAX_LENGTH),
        ("device_id_not_string", _present("device_id") & (_kind("device_id") != "STRING")),
        (
            "device_id_empty",
            _present("device_id") & F.coalesce(_string("device_id").rlike(_BLANK), F.lit(False)),
        ),
        (
            "device_id_too_long",
            F.coalesce(F.char_length(_string("device_id")) > DEVICE_ID_MAX_LENGTH, F.lit(False)),
        ),
        ("missing_field:event_time", ~_present("event_time")),
        ("bad_event_time", F.col("_event_time").isNull()),
        (
            "event_time_out_of_range",
            ~event_seconds.between(
                _EVENT_TIME_MIN_EPOCH_SECONDS, _EVENT_TIME_END_EPOCH_SECONDS - 1
            ),
        ),
    ]
    for vital in VITAL_SIGNS:
        rules.append(
            (
                f"{vital}_not_numeric",
                _present(vital) & ~F.coalesce(F.col(f"_number_{vital}").isNotNull(), F.lit(False)),
            )
        )
    rules.append(("discharged_not_boolean", _present("discharged") & F.col("_discharged").isNull()))
    rules.append(
        (EVENT_TIME_IN_FUTURE, event_time_in_future(F.col("_event_time"), max_clock_skew_seconds))
    )
    return rules


def _value(name: str) -> Column:
    return F.col("_fields").getField(name)


def _kind(name: str) -> Column:
    return F.col(f"_kind_{name}")


def _present(name: str) -> Column:
    """JSON null counts as absent, as in the contract's validator."""
    return F.coalesce(_kind(name) != "VOID", F.lit(False))


def _string(name: str) -> Column:
    return F.col(f"_string_{name}")


def _is_number(name: str) -> Column:
    kind = _kind(name)
    return kind.isin("BIGINT", "DOUBLE") | kind.startswith("DECIMAL(")


def _per_vital(values: Mapping[str, float | None]) -> Column:
    column: Column | None = None
    for vital, value in values.items():
        literal = F.lit(value).cast(DoubleType())
        column = (
            F.when(F.col("vital") == vital, literal)
            if column is None
            else column.when(F.col("vital") == vital, literal)
        )
    assert column is not None
    return column


def _default_bound(side: int) -> Column:
    return _per_vital({vital: bounds[side] for vital, bounds in DEFAULT_THRESHOLDS.items()})


def _check_seconds(name: str, seconds: int) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
        raise ValueError(f"{name} is {seconds!r}; give a whole number ≥ 1.")
