"""The vitals transforms: rejection reasons, typed readings, window summaries (tumbling and
sliding), clinical ranges with per-patient overrides, anomaly scoring and training, the model
store, and silence detection with transformWithState on a real (file-fed) stream.

Spark is slow per action, so each test checks many cases with one DataFrame and one collect.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from spark_jobs.common.vitals_reference import (
    ModelCache,
    ThresholdCache,
    latest_model,
    model_versions,
    save_model,
)
from spark_jobs.jobs.vitals import STATE_STORE_PROVIDER
from spark_jobs.sinks import with_utc_wall_clock_timestamps
from spark_jobs.transforms.cleansing import QUARANTINE_OUTPUT_COLUMNS
from spark_jobs.transforms.vitals import (
    BASELINES_SCHEMA,
    CHECKED_COLUMNS,
    FLAG_COLUMNS,
    READING_COLUMNS,
    SUMMARY_COLUMNS,
    THRESHOLDS_SCHEMA,
    VITAL_SIGNS,
    check_vitals,
    detect_silence,
    flagged_readings,
    latest_per_patient,
    long_vitals,
    readings,
    rejected_records,
    summary_per_window,
    train_baselines,
    valid_records,
)
from streamops.config import load_settings
from streamops.generator.records import generate, validate

KAFKA_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, "
    "timestamp timestamp, timestampType int"
)
KAFKA_TIME = datetime(2026, 11, 24, 14, 3, 6, tzinfo=UTC)
T0 = datetime(2026, 11, 24, 14, 3, 0, tzinfo=UTC)

VALID: dict[str, Any] = {
    "patient_id": "MRN-100001",
    "device_id": "monitor-a1",
    "event_time": "2026-11-24T14:03:05.120Z",
    "heart_rate": 72,
    "spo2": 97,
    "systolic_bp": 120,
    "diastolic_bp": 80,
    "temperature_c": 36.8,
    "respiratory_rate": 14,
}


def kafka_frame(spark: SparkSession, values: Sequence[bytes | None]) -> DataFrame:
    rows = [
        (None, value, "patient-vitals", 0, offset, KAFKA_TIME, 0)
        for offset, value in enumerate(values)
    ]
    return spark.createDataFrame(rows, KAFKA_SCHEMA)


def reading(**changes: Any) -> bytes:
    """VALID with ``changes``; a change to ``...`` removes the field."""
    fields = {**VALID, **changes}
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


def local(moment: datetime) -> datetime:
    """How ``collect()`` returns a TIMESTAMP: naive, in the Python process's time zone."""
    return moment.astimezone().replace(tzinfo=None)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


CASES: list[tuple[bytes | None, str | None]] = [
    (reading(), None),
    (reading(heart_rate=..., spo2=None), None),  # omitted and null signs are fine
    (reading(device_id=...), None),
    (reading(event_time="2026-11-24T15:03:05+01:00"), None),
    (reading(discharged=True), None),
    (reading(discharged=False), None),
    (None, "missing_payload"),
    (b"\xff\xfe", "invalid_utf8"),
    (b'{"patient_id": "x"', "invalid_json"),
    (b"{'patient_id': 'x'}", "invalid_json"),
    (reading() + b"}", "invalid_json"),
    (b"[1, 2]", "not_a_json_object"),
    (reading(patient_id=...), "missing_field:patient_id"),
    (reading(patient_id=None), "missing_field:patient_id"),
    (reading(patient_id=42), "patient_id_not_string"),
    (reading(patient_id=" "), "patient_id_empty"),
    (reading(patient_id="p" * 65), "patient_id_too_long"),
    (reading(device_id=7), "device_id_not_string"),
    (reading(device_id=""), "device_id_empty"),
    (reading(device_id="d" * 129), "device_id_too_long"),
    (reading(event_time=...), "missing_field:event_time"),
    (reading(event_time="2026-11-24 14:03:05"), "bad_event_time"),
    (reading(event_time=1764000000000), "bad_event_time"),
    (reading(event_time="2026-11-24T14:08:06Z"), None),
    (reading(event_time="2026-11-24T14:08:06.001Z"), "event_time_in_future"),
    (reading(event_time="9999-12-31T23:59:59Z", discharged=True), "event_time_in_future"),
    (reading(event_time="9999-12-31T23:59:59Z", heart_rate="N/A"), "heart_rate_not_numeric"),
    (reading(heart_rate="N/A"), "heart_rate_not_numeric"),
    (reading(spo2=True), "spo2_not_numeric"),
    (reading(temperature_c="37.1"), "temperature_c_not_numeric"),
    (reading(respiratory_rate=[14]), "respiratory_rate_not_numeric"),
    (reading(discharged="yes"), "discharged_not_boolean"),
]


def test_check_vitals_gives_the_first_broken_rule_for_every_case(spark: SparkSession) -> None:
    checked = check_vitals(kafka_frame(spark, [value for value, _ in CASES]))
    assert tuple(checked.columns) == CHECKED_COLUMNS
    reasons = [row.reason for row in checked.orderBy("source_offset").collect()]
    assert reasons == [reason for _, reason in CASES]


def test_the_cases_agree_with_the_generators_validator() -> None:
    for value, reason in CASES:
        if value is None or b"discharged" in value or (reason or "").endswith("_too_long"):
            # The generator knows no tombstones, no discharge field, and not the tables' limits.
            continue
        assert validate("patient-vitals", value, received_at=KAFKA_TIME) == reason, value


def test_generated_records_are_accepted_or_rejected_as_the_generator_made_them(
    spark: SparkSession,
) -> None:
    records = generate("patient-vitals", 400, seed=3, now=T0, malformed_ratio=0.3)
    checked = check_vitals(kafka_frame(spark, [r.value for r in records]))
    got = [row.reason for row in checked.orderBy("source_offset").collect()]
    expected = [validate("patient-vitals", r.value) for r in records]
    assert got == expected
    assert sum(reason is not None for reason in got) > 50


def test_readings_are_typed_and_discharge_records_are_not_readings(spark: SparkSession) -> None:
    checked = check_vitals(
        kafka_frame(
            spark,
            [
                reading(heart_rate=..., temperature_c=37),
                reading(discharged=True, heart_rate=...),
                b"nope",
            ],
        )
    )
    valid = readings(checked)
    assert tuple(valid.columns) == READING_COLUMNS
    expected = Row(
        patient_id="MRN-100001",
        device_id="monitor-a1",
        event_time=datetime(2026, 11, 24, 14, 3, 5, 120_000),
        heart_rate=None,
        spo2=97.0,
        systolic_bp=120.0,
        diastolic_bp=80.0,
        temperature_c=37.0,
        respiratory_rate=14.0,
        source_partition=0,
        source_offset=0,
    )
    assert valid.withColumn("event_time", F.col("event_time").cast("timestamp_ntz")).collect() == [
        expected
    ]
    assert [r.discharged for r in valid_records(checked).orderBy("source_offset").collect()] == [
        False,
        True,
    ]
    quarantined = rejected_records(checked).collect()
    assert tuple(rejected_records(checked).columns) == QUARANTINE_OUTPUT_COLUMNS
    assert [(r.source_offset, r.reason, r.pipeline) for r in quarantined] == [
        (2, "invalid_json", "vitals")
    ]


def readings_frame(spark: SparkSession, rows: list[tuple[Any, ...]]) -> DataFrame:
    """(patient, seconds after T0, heart_rate, spo2) readings; other signs omitted."""
    data = [
        (patient, "dev", T0 + timedelta(seconds=seconds), hr, spo2, None, None, None, None, 0, i)
        for i, (patient, seconds, hr, spo2) in enumerate(rows)
    ]
    schema = (
        "patient_id string, device_id string, event_time timestamp, heart_rate double, "
        "spo2 double, systolic_bp double, diastolic_bp double, temperature_c double, "
        "respiratory_rate double, source_partition int, source_offset long"
    )
    return spark.createDataFrame(data, schema)


def summary_row(patient: str, start: int, length: int, count: int, **stats: float | None) -> Row:
    values: dict[str, Any] = {
        "patient_id": patient,
        "window_start": T0 + timedelta(seconds=start),
        "window_end": T0 + timedelta(seconds=start + length),
        "reading_count": count,
    }
    for vital in VITAL_SIGNS:
        for stat in ("min", "avg", "max"):
            values[f"{vital}_{stat}"] = stats.get(f"{vital}_{stat}")
    return Row(**values)


def test_summary_per_window_tumbling_and_sliding(spark: SparkSession) -> None:
    frame = readings_frame(
        spark,
        [
            ("A", 0, 60.0, 97.0),
            ("A", 20, 80.0, None),  # a reading without spo2
            ("A", 59, 70.0, 99.0),
            ("A", 61, 100.0, 95.0),
            ("B", 30, 50.0, 90.0),
        ],
    )
    tumbling = summary_per_window(frame, 60)
    assert tuple(tumbling.columns) == SUMMARY_COLUMNS
    assertDataFrameEqual(
        tumbling,
        spark.createDataFrame([
            summary_row("A", 0, 60, 3, heart_rate_min=60.0, heart_rate_avg=70.0,
                        heart_rate_max=80.0, spo2_min=97.0, spo2_avg=98.0, spo2_max=99.0),
            summary_row("A", 60, 60, 1, heart_rate_min=100.0, heart_rate_avg=100.0,
                        heart_rate_max=100.0, spo2_min=95.0, spo2_avg=95.0, spo2_max=95.0),
            summary_row("B", 0, 60, 1, heart_rate_min=50.0, heart_rate_avg=50.0,
                        heart_rate_max=50.0, spo2_min=90.0, spo2_avg=90.0, spo2_max=90.0),
        ], tumbling.schema),
    )  # fmt: skip
    sliding = summary_per_window(frame.where("patient_id = 'A'"), 60, 30)
    got = {(row.window_start, row.reading_count, row.heart_rate_max) for row in sliding.collect()}
    assert got == {
        (local(T0 - timedelta(seconds=30)), 2, 80.0),  # [-30, 30): readings at 0 and 20
        (local(T0), 3, 80.0),  # [0, 60)
        (local(T0 + timedelta(seconds=30)), 2, 100.0),  # [30, 90): 59 and 61
        (local(T0 + timedelta(seconds=60)), 1, 100.0),  # [60, 120)
    }


@pytest.mark.parametrize(("window", "slide"), [(0, None), (60, 0), (60, 45), (60, 90)])
def test_window_and_slide_must_fit(spark: SparkSession, window: int, slide: int | None) -> None:
    with pytest.raises(ValueError):
        summary_per_window(readings_frame(spark, []), window, slide)


def test_latest_per_patient_is_the_newest_reading(spark: SparkSession) -> None:
    frame = readings_frame(
        spark, [("A", 5, 60.0, 97.0), ("A", 9, 61.0, None), ("B", 1, 70.0, 90.0)]
    )
    got = {(r.patient_id, r.heart_rate) for r in latest_per_patient(frame).collect()}
    assert got == {("A", 61.0), ("B", 70.0)}


def test_long_vitals_drops_omitted_signs(spark: SparkSession) -> None:
    frame = readings_frame(spark, [("A", 0, 60.0, None)])
    assert [(r.vital, r.value) for r in long_vitals(frame).collect()] == [("heart_rate", 60.0)]


def thresholds(spark: SparkSession, rows: list[tuple[Any, ...]]) -> DataFrame:
    return spark.createDataFrame(rows, THRESHOLDS_SCHEMA)


def baselines(spark: SparkSession, rows: list[tuple[Any, ...]]) -> DataFrame:
    return spark.createDataFrame(rows, BASELINES_SCHEMA)


def test_flags_use_default_ranges_patient_overrides_and_the_model(spark: SparkSession) -> None:
    frame = readings_frame(
        spark,
        [
            ("A", 1, 135.0, 97.0),  # heart rate above the default 130
            ("A", 2, 72.0, 89.0),  # spo2 below the default 90
            ("B", 3, 72.0, 88.0),  # B's override: spo2 from 85, so in range
            ("B", 4, 125.0, 97.0),  # B's override: high 120 (low stays default)
            ("C", 70, 95.0, 97.0),  # in range, but 25 bpm over C's own baseline 70 ± 2
            ("D", 5, 95.0, 97.0),  # no own baseline: population 80 ± 10, z = 1.5
            ("D", 6, 38.0, 97.0),  # below the default 40; population z = -4.2 too
        ],
    )
    overrides = thresholds(spark, [("B", "spo2", 85.0, None), ("B", "heart_rate", None, 120.0)])
    model = baselines(
        spark,
        [("C", "heart_rate", 70.0, 2.0, 100), (None, "heart_rate", 80.0, 10.0, 1000)],
    )
    flags = flagged_readings(frame, overrides, model, 3, window_seconds=60, z_threshold=4.0)
    assert tuple(flags.columns) == FLAG_COLUMNS
    got = {
        (
            r.patient_id,
            r.vital,
            r.value,
            r.threshold_low,
            r.threshold_high,
            r.out_of_range,
            round(r.severity, 3),
            None if r.z_score is None else round(r.z_score, 3),
            r.anomaly,
            r.model_version,
            r.window_start,
        )
        for r in flags.collect()
    }
    w0, w1 = local(T0), local(T0 + timedelta(seconds=60))
    assert got == {
        ("A", "heart_rate", 135.0, 40.0, 130.0, True, 5.0, 5.5, True, 3, w0),
        ("A", "spo2", 89.0, 90.0, None, True, 1.0, None, False, 3, w0),
        ("B", "heart_rate", 125.0, 40.0, 120.0, True, 5.0, 4.5, True, 3, w0),
        ("C", "heart_rate", 95.0, 40.0, 130.0, False, 0.0, 12.5, True, 3, w1),
        ("D", "heart_rate", 38.0, 40.0, 130.0, True, 2.0, -4.2, True, 3, w0),
    }
    without_model = flagged_readings(frame, overrides, None, None)
    assert {(r.patient_id, r.anomaly, r.z_score) for r in without_model.collect()} == {
        ("A", False, None),
        ("B", False, None),
        ("D", False, None),
    }


def test_train_baselines_leaves_out_of_range_values_and_floors_the_stddev(
    spark: SparkSession,
) -> None:
    rows: list[tuple[Any, ...]] = [
        ("A", i, 70.0 + (i % 2) * 4, 97.0) for i in range(10)
    ]  # hr 70/74, spo2 flat
    rows += [("A", 100, 180.0, 97.0)]  # out of range: not part of A's normal
    rows += [("B", i, 60.0, None) for i in range(3)]  # too few samples of its own
    model = train_baselines(long_vitals(readings_frame(spark, rows)), thresholds(spark, []), 5)
    got = {
        (r.patient_id, r.vital): (round(r.mean, 3), round(r.stddev, 3), r.sample_count)
        for r in model.collect()
    }
    sd = round(math.sqrt(sum((v - 72) ** 2 for v in [70, 74] * 5) / 9), 3)
    assert got == {
        ("A", "heart_rate"): (72.0, sd, 10),
        ("A", "spo2"): (97.0, 0.5, 11),  # floored
        (None, "heart_rate"): (round((700 + 20 + 180) / 13, 3), got[(None, "heart_rate")][1], 13),
        (None, "spo2"): (97.0, 0.5, 11),
    }


def test_model_versions_and_the_latest_pointer(spark: SparkSession, tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    now = [0.0]
    cache = ModelCache(spark, model_dir, check_seconds=10, clock=lambda: now[0])
    assert cache.loaded() is None
    first = save_model(baselines(spark, [(None, "spo2", 97.0, 1.0, 50)]), model_dir)
    assert (first.version, model_versions(model_dir)) == (1, [1])
    now[0] = 10.0
    held = cache.loaded()
    assert held is not None and held.version == 1 and held.baselines.count() == 1
    second = save_model(baselines(spark, [(None, "spo2", 95.0, 1.0, 50)] * 2), model_dir)
    assert latest_model(model_dir) == second and second.version == 2
    now[0] = 15.0
    held = cache.loaded()
    assert held is not None and held.version == 1  # not checked again before check_seconds
    now[0] = 20.0
    held = cache.loaded()
    assert held is not None and held.version == 2 and held.baselines.count() == 2
    meta = json.loads((second.path / "model.json").read_text())
    assert meta["version"] == 2 and meta["rows"] == 2
    (model_dir / "latest").write_text("v9\n")  # a broken pointer keeps the model in hand
    now[0] = 40.0
    held = cache.loaded()
    assert held is not None and held.version == 2


def test_threshold_cache_refreshes_on_its_interval_and_survives_a_failed_load(
    spark: SparkSession,
) -> None:
    loads: list[Any] = [[("A", "spo2", 85.0, None)], RuntimeError("db down"), []]
    now = [0.0]

    def loader(settings: Any) -> Any:
        result = loads.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    cache = ThresholdCache(spark, load_settings(), 30, loader=loader, clock=lambda: now[0])
    assert cache.current().count() == 1
    now[0] = 29.0
    assert cache.current().count() == 1 and len(loads) == 2
    now[0] = 30.0
    assert cache.current().count() == 1  # the failed reload kept the last copy
    now[0] = 60.0
    assert cache.current().count() == 0


@pytest.mark.slow
def test_silence_detection_with_event_time_timers(spark: SparkSession, tmp_path: Path) -> None:
    """A stream as the job wires it: valid records → watermark → transformWithState."""
    provider = "spark.sql.streaming.stateStore.providerClass"
    previous = spark.conf.get(provider)
    spark.conf.set(provider, STATE_STORE_PROVIDER)
    events: list[Row] = []

    def run(name: str, batch: list[bytes]) -> None:
        kafka_frame(spark, batch).write.mode("append").parquet(str(tmp_path / "in"))
        stream = spark.readStream.schema(KAFKA_SCHEMA).parquet(str(tmp_path / "in"))
        signals = detect_silence(valid_records(check_vitals(stream)), "5 seconds", 30, 120)
        query = (
            signals.writeStream.outputMode("update")
            .foreachBatch(
                lambda frame, _: events.extend(with_utc_wall_clock_timestamps(frame).collect())
            )
            .option("checkpointLocation", str(tmp_path / "checkpoint"))
            .trigger(availableNow=True)
            .start()
        )
        # availableNow ends by itself; the bound only keeps a hung query from hanging the suite
        # (a loaded machine took over 180 s, and the events were then judged half-delivered).
        query.awaitTermination(900)
        assert not query.isActive, f"{name}: the query did not finish its available data"
        assert query.exception() is None, name

    def at(patient: str, seconds: int, **extra: Any) -> bytes:
        return reading(patient_id=patient, event_time=iso(T0 + timedelta(seconds=seconds)), **extra)

    try:
        # S goes silent after 10 s; R too, then comes back; D is discharged; K keeps sending.
        run("first", [at("S", 0), at("S", 10), at("R", 5), at("D", 5), at("D", 8, discharged=True),
                      *(at("K", s) for s in range(0, 60, 10))])  # fmt: skip
        silent_s = next(e for e in events if e.event == "silent" and e.patient_id == "S")
        assert _utc(silent_s.last_seen) == T0 + timedelta(seconds=10)
        assert _utc(silent_s.event_at) == T0 + timedelta(seconds=40)  # last reading + 30 s
        assert {(e.event, e.patient_id) for e in events} == {
            ("discharged", "D"),
            ("silent", "S"),
            ("silent", "R"),
        }
        events.clear()
        # R is back; K moves the watermark past S's retention (10 + 120 s).
        run("second", [at("R", 62), *(at("K", s) for s in range(60, 200, 10))])
        got = {(e.event, e.patient_id) for e in events}
        assert ("restored", "R") in got and ("expired", "S") in got
        assert ("silent", "R") in got  # silent again: 62 + 30 s passed by the end
        restored = next(e for e in events if e.event == "restored")
        assert _utc(restored.last_seen) == T0 + timedelta(seconds=5)
        assert _utc(restored.event_at) == T0 + timedelta(seconds=62)
    finally:
        if previous is None:
            spark.conf.unset(provider)
        else:
            spark.conf.set(provider, previous)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
