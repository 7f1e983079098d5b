"""The vitals pipeline end to end on real Kafka, Spark, MariaDB and Redis.

Known readings go to a fresh topic; an anomaly model is trained from history put in MariaDB;
the job runs as its own driver with ``--available-now`` and is killed with SIGKILL after the
sinks of a records batch wrote and before Spark committed it, then restarted from its
checkpoints. Afterwards: exact min/max/avg per window, out-of-range and anomalous readings
flagged once, silent patients flagged (a discharged one not), every malformed record in
quarantine, and nothing lost or duplicated.

All readings go to partition 0 in event-time order, so the watermark never overtakes a reading
and every window is exact; the malformed records go to partition 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Producer
from pyspark.sql import SparkSession

from spark_jobs.common.runner import FAULT_ENV, FAULT_MARKER_ENV
from spark_jobs.common.vitals_reference import latest_model
from spark_jobs.jobs.vitals_train import TrainConfig, train
from streamops.config import PROJECT_ROOT, Settings
from streamops.db import connect
from streamops.topics import ensure_topics
from tests.integration.support import kill_group, query

# A minute boundary in the past: windows are [T0, T0+60 s), [T0+60 s, T0+120 s).
T0 = (datetime.now(UTC) - timedelta(minutes=30)).replace(second=0, microsecond=0)
W0, W1 = T0, T0 + timedelta(seconds=60)
JOB_TIMEOUT_SECONDS = 420


def naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Scenario:
    tag: str
    topic: str
    readings: int  # distinct valid readings sent (duplicate and discharge record not counted)
    malformed: dict[int, str]  # partition-1 offset -> reason
    job_log: Path
    crash_returncode: int | None
    final_returncode: int | None

    def patient(self, name: str) -> str:
        return f"IT-{self.tag}-{name}"


def _records(tag: str) -> tuple[list[bytes], list[tuple[bytes, str]], int]:
    """(readings in event-time order, malformed records with their reason, distinct readings)."""

    def at(name: str, seconds: int, **fields: Any) -> tuple[int, bytes]:
        body = {
            "patient_id": f"IT-{tag}-{name}",
            "device_id": f"dev-{name}",
            "event_time": iso(T0 + timedelta(seconds=seconds)),
            **fields,
        }
        return seconds, json.dumps(body).encode()

    timed = [
        at("A", 0, heart_rate=60, spo2=97),
        at("A", 20, heart_rate=80),  # no spo2
        at("A", 59, heart_rate=70, spo2=99, temperature_c=36.6),
        at("A", 61, heart_rate=100, spo2=95),
        at("B", 10, heart_rate=150, spo2=88),  # hr out of range; spo2 within B's own range
        at("B", 15, heart_rate=72, spo2=97),
        at("C", 12, heart_rate=72, spo2=88),  # spo2 below the default 90
        at("ANOM", 30, heart_rate=95),  # in range, 12 sd above its own baseline
        at("S", 0, heart_rate=70),
        at("S", 5, heart_rate=71),  # then silent
        at("D", 0, heart_rate=70),
        at("D", 5, discharged=True),  # discharged: never flagged as silent
        *(at("K", s, heart_rate=75) for s in range(0, 400, 10)),  # keeps sending
    ]
    timed.sort(key=lambda pair: pair[0])
    ordered = [value for _, value in timed]
    duplicate = ordered[0]  # the same bytes again: one reading
    distinct = len(ordered) - 1  # the discharge record is not a reading
    readings = [*ordered[:5], duplicate, *ordered[5:]]
    malformed = [
        (b'{"patient_id": "x", ', "invalid_json"),
        (b"[1, 2]", "not_a_json_object"),
        (
            json.dumps({"event_time": iso(T0), "heart_rate": 70}).encode(),
            "missing_field:patient_id",
        ),
        (json.dumps({"patient_id": f"IT-{tag}-M"}).encode(), "missing_field:event_time"),
        (
            json.dumps(
                {"patient_id": f"IT-{tag}-M", "event_time": iso(T0), "heart_rate": "high"}
            ).encode(),
            "heart_rate_not_numeric",
        ),
        (
            json.dumps({"patient_id": 42, "event_time": iso(T0)}).encode(),
            "patient_id_not_string",
        ),
        (
            json.dumps(
                {"patient_id": f"IT-{tag}-M", "event_time": iso(T0), "discharged": "yes"}
            ).encode(),
            "discharged_not_boolean",
        ),
    ]
    return readings, malformed, distinct


def _produce(settings: Settings, topic: str, readings: list[bytes], malformed: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "acks": "all"})
    for value in readings:
        key = json.loads(value)["patient_id"].encode()
        producer.produce(topic, key=key, value=value, partition=0)
    for value in malformed:
        producer.produce(topic, value=value, partition=1)
    assert producer.flush(30) == 0


def _start_job(
    settings: Settings, folder: Path, topic: str, extra_env: dict[str, str]
) -> subprocess.Popen[bytes]:
    log = (folder / "job.log").open("ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spark_jobs.jobs.vitals",
            "--topic",
            topic,
            "--available-now",
            "--max-offsets-per-trigger",
            "20",
            "--watermark",
            "10 seconds",
            "--silence-seconds",
            "60",
            "--retention-seconds",
            "3600",
            "--model-dir",
            str(folder / "models"),
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, "STREAMOPS_CHECKPOINT_URI": str(folder / "checkpoints"), **extra_env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _train_model(spark: SparkSession, settings: Settings, tag: str, model_dir: Path) -> None:
    """History three hours before T0: ANOM steady at 68/72 bpm, POP spread over 50-110 bpm (so the
    population baseline, used for patients without their own, is broad)."""
    day_before = naive(T0 - timedelta(hours=3))
    rows = [
        (f"IT-{tag}-ANOM", day_before + timedelta(seconds=i), 68.0 + 4 * (i % 2)) for i in range(60)
    ]
    rows += [(f"IT-{tag}-POP", day_before + timedelta(seconds=i), 50.0 + i) for i in range(61)]
    connection = connect(settings)
    try:
        connection.cursor().executemany(
            "INSERT INTO vitals_readings (patient_id, event_time, device_id, heart_rate) "
            "VALUES (?, ?, 'history', ?)",
            rows,
        )
        connection.commit()
    finally:
        connection.close()
    # Only this history: the window ends before the stream's readings and starts after any
    # earlier run's (the stack's database is fresh per test session anyway).
    train(
        spark,
        settings,
        TrainConfig(
            history_days=0.5,
            min_samples=30,
            model_dir=str(model_dir),
            until=T0 - timedelta(hours=1),
            # The assertions below read the z-score model's band (the MLlib kind has none).
            kind="zscore",
        ),
    )


@pytest.fixture(scope="module")
def scenario(
    settings: Settings, spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenario]:
    tag = uuid.uuid4().hex[:8]
    folder = tmp_path_factory.mktemp("vitals")
    topic = f"vitals-it-{tag}"
    ensure_topics(settings, (topic,))
    query(
        settings,
        "INSERT INTO patient_thresholds (patient_id, vital, threshold_low, note) "
        "VALUES (?, 'spo2', 85, 'integration test')",
        (f"IT-{tag}-B",),
    )
    _train_model(spark, settings, tag, folder / "models")
    assert latest_model(folder / "models") is not None

    readings, malformed, distinct = _records(tag)
    _produce(settings, topic, readings, [value for value, _ in malformed])

    marker = folder / "fault-marker"
    crashing = _start_job(
        settings, folder, topic, {FAULT_ENV: "vitals_records:1", FAULT_MARKER_ENV: str(marker)}
    )
    try:
        crashing.wait(timeout=JOB_TIMEOUT_SECONDS)
    finally:
        kill_group(crashing)
    assert marker.exists(), (folder / "job.log").read_text()[-5000:]
    final = _start_job(settings, folder, topic, {})
    try:
        final.wait(timeout=JOB_TIMEOUT_SECONDS)
    finally:
        kill_group(final)
    yield Scenario(
        tag=tag,
        topic=topic,
        readings=distinct,
        malformed={offset: reason for offset, (_, reason) in enumerate(malformed)},
        job_log=folder / "job.log",
        crash_returncode=crashing.returncode,
        final_returncode=final.returncode,
    )


def test_the_job_was_killed_after_a_sink_and_finished_after_the_restart(
    scenario: Scenario,
) -> None:
    assert scenario.crash_returncode == -signal.SIGKILL, "the fault point did not fire"
    assert scenario.final_returncode == 0, scenario.job_log.read_text()[-5000:]


def test_every_reading_is_stored_once(settings: Settings, scenario: Scenario) -> None:
    rows = query(
        settings,
        "SELECT COUNT(*), COUNT(DISTINCT patient_id, event_time, device_id) FROM vitals_readings "
        "WHERE patient_id LIKE ? AND device_id <> 'history'",
        (f"IT-{scenario.tag}-%",),
    )
    assert rows == [(scenario.readings, scenario.readings)]


def test_summaries_are_exact_per_window(settings: Settings, scenario: Scenario) -> None:
    rows = query(
        settings,
        "SELECT patient_id, window_start, window_end, reading_count, heart_rate_min, "
        "heart_rate_avg, heart_rate_max, spo2_min, spo2_avg, spo2_max, temperature_c_max "
        "FROM vitals_summary_1m WHERE patient_id IN (?, ?) ORDER BY patient_id, window_start",
        (scenario.patient("A"), scenario.patient("B")),
    )
    a, b = scenario.patient("A"), scenario.patient("B")
    w0, w1, w2 = naive(W0), naive(W1), naive(W1 + timedelta(seconds=60))
    assert rows == [
        # 0 s (sent twice, counted once), 20 s without spo2, 59 s
        (a, w0, w1, 3, 60.0, 70.0, 80.0, 97.0, 98.0, 99.0, 36.6),
        (a, w1, w2, 1, 100.0, 100.0, 100.0, 95.0, 95.0, 95.0, None),
        (b, w0, w1, 2, 72.0, 111.0, 150.0, 88.0, 92.5, 97.0, None),
    ]
    (total,) = query(
        settings,
        "SELECT SUM(reading_count) FROM vitals_summary_1m WHERE patient_id LIKE ?",
        (f"IT-{scenario.tag}-%",),
    )[0]
    assert total == scenario.readings


def test_out_of_range_and_anomalous_readings_are_alerted_once(
    settings: Settings, scenario: Scenario
) -> None:
    rows = query(
        settings,
        "SELECT patient_id, vital, window_start, reason, observed_value, threshold_low, "
        "threshold_high, reading_count, out_of_range_count, anomaly_count, model_version "
        "FROM vitals_alerts WHERE patient_id LIKE ? AND vital <> 'signal' "
        "ORDER BY patient_id, vital",
        (f"IT-{scenario.tag}-%",),
    )
    by_key = {(row[0], row[1]): row[2:] for row in rows}
    w0 = naive(W0)
    assert set(by_key) == {
        (scenario.patient("ANOM"), "heart_rate"),
        (scenario.patient("B"), "heart_rate"),
        (scenario.patient("C"), "spo2"),
    }
    # B: 150 bpm over the default 130; two heart-rate readings in the window, one out of range.
    # Against the broad population baseline it is anomalous too; the range decides the reason.
    assert by_key[(scenario.patient("B"), "heart_rate")][:8] == (
        w0, "out_of_range", 150.0, 40.0, 130.0, 2, 1, 1,
    )  # fmt: skip
    assert by_key[(scenario.patient("C"), "spo2")][:8] == (
        w0, "out_of_range", 88.0, 90.0, None, 1, 1, 0,
    )  # fmt: skip
    anomaly = by_key[(scenario.patient("ANOM"), "heart_rate")]
    assert anomaly[:2] == (w0, "anomaly") and anomaly[2] == 95.0
    assert anomaly[5:9] == (1, 0, 1, 1)  # readings, out of range, anomalies, model v1
    assert anomaly[3] < 70.0 < anomaly[4] < 95.0  # the model's band: 70 ± 4 sd


def test_silent_patients_are_flagged_and_the_discharged_one_is_not(
    settings: Settings, scenario: Scenario
) -> None:
    rows = query(
        settings,
        "SELECT patient_id, window_start, window_end, reason FROM vitals_alerts "
        "WHERE patient_id LIKE ? AND vital = 'signal'",
        (f"IT-{scenario.tag}-%",),
    )
    silent = {row[0]: row[1:] for row in rows}
    # K keeps sending to T0+390 s; everyone else stopped more than 60 s before the watermark.
    assert set(silent) == {scenario.patient(name) for name in ("A", "B", "C", "ANOM", "S")}
    last_s = naive(T0 + timedelta(seconds=5))
    assert silent[scenario.patient("S")] == (last_s, last_s + timedelta(seconds=60), "no_signal")


def test_malformed_records_are_all_in_quarantine(settings: Settings, scenario: Scenario) -> None:
    rows = query(
        settings,
        "SELECT source_partition, source_offset, reason, pipeline FROM quarantine "
        "WHERE source_topic = ? ORDER BY source_partition, source_offset",
        (scenario.topic,),
    )
    assert rows == [(1, offset, reason, "vitals") for offset, reason in scenario.malformed.items()]


def test_redis_holds_the_latest_reading_summary_and_flags(
    settings: Settings, scenario: Scenario
) -> None:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    prefix = "streamops:vitals:patient"
    latest = client.hgetall(f"{prefix}:{scenario.patient('A')}:latest")
    assert latest["event_time"] == iso(T0 + timedelta(seconds=61))
    assert float(latest["heart_rate"]) == 100.0 and latest["temperature_c"] == ""
    summary = client.hgetall(f"{prefix}:{scenario.patient('A')}:summary")
    assert summary["window_start"] == iso(W1) and summary["reading_count"] == "1"
    flags_b = client.hgetall(f"{prefix}:{scenario.patient('B')}:flags")
    assert json.loads(flags_b["heart_rate"])["reason"] == "out_of_range"
    assert json.loads(flags_b["signal"])["reason"] == "no_signal"
    assert "signal" not in client.hgetall(f"{prefix}:{scenario.patient('K')}:flags")
    assert not client.exists(f"{prefix}:{scenario.patient('D')}:latest")  # discharged
    assert client.zscore("streamops:vitals:patients", scenario.patient("K")) is not None
    assert client.zscore("streamops:vitals:patients", scenario.patient("D")) is None
