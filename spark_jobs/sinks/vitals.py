"""Sinks of the vitals pipeline: ``foreachBatch`` writers, idempotent under replay.

MariaDB (the system of record):

- ``vitals_readings`` and ``vitals_reading_flags``: the first copy of a key stays (a duplicate
  reading and a replayed batch write nothing new).
- ``vitals_alerts`` (out of range, anomaly): after a batch's flags are stored, the alert rows of
  every patient and window the batch touched are *recomputed* from ``vitals_reading_flags`` and
  ``vitals_readings`` in one ``INSERT … SELECT … ON DUPLICATE KEY UPDATE``: absolute values, so a
  replay changes nothing and a late reading of the same window updates its counts.
- ``vitals_summary_1m``: the absolute values of each window that changed (update mode).
- ``vitals_alerts`` (``vital = 'signal'``): one row per silence, keyed by the last reading's time;
  a reading after it or a discharge sets ``resolved_at``.

Redis (live state for the dashboard; keys in docs/redis-keys.md): per patient the newest reading,
the newest summary window and the current flags, each written only if newer than what is there
(a Lua compare-and-set), so replays and out-of-order batches never move them backwards.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

import redis
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_jobs.sinks import with_utc_wall_clock_timestamps
from spark_jobs.sinks.mariadb import write_frame
from spark_jobs.transforms.vitals import (
    FLAG_COLUMNS,
    READING_COLUMNS,
    SIGNAL_VITAL,
    SUMMARY_COLUMNS,
    VITAL_SIGNS,
)
from streamops.config import Settings
from streamops.contract.redis_keys import VITALS_KEY_PREFIX
from streamops.contract.times import as_utc_naive, iso_utc
from streamops.supervision.fence import connect, redis_client

log = logging.getLogger(__name__)

BatchWriter = Callable[[DataFrame, int], None]

READINGS_TABLE = "vitals_readings"
READINGS_KEY = ("patient_id", "event_time", "device_id")
FLAGS_TABLE = "vitals_reading_flags"
FLAGS_KEY = ("patient_id", "vital", "event_time", "device_id")
SUMMARY_TABLE = "vitals_summary_1m"
SUMMARY_KEY = ("patient_id", "window_start")

# Live state for a ward's dashboard: a patient not heard of for a day is gone from Redis.
DEFAULT_TTL_SECONDS = 24 * 3600
# The patient list has no TTL (a member leaves after a day), so it is also cut to the newest this
# many patients: Redis' memory stays bounded however many patients a day brings. The dashboard
# lists the newest 48.
DEFAULT_MAX_PATIENTS = 10_000
# Patients per recompute statement (the IN list).
RECOMPUTE_PATIENTS_PER_STATEMENT = 500

ALERT_COLUMNS = (
    "patient_id",
    "vital",
    "window_start",
    "window_end",
    "observed_value",
    "observed_min",
    "observed_max",
    "threshold_low",
    "threshold_high",
    "reason",
    "reading_count",
    "out_of_range_count",
    "anomaly_count",
    "max_abs_z",
    "model_version",
    "device_id",
    "first_seen",
    "last_seen",
)
_ALERT_KEY = ("patient_id", "vital", "window_start")
_VITAL_VALUE = "CASE g.vital " + " ".join(f"WHEN '{v}' THEN r.{v}" for v in VITAL_SIGNS) + " END"

# Every script first checks the patient's discharge marker (KEYS[2]): data no newer than the
# discharge is never written back, whichever query's batch comes last.
_DISCHARGE_CHECK = """
local gone = redis.call('GET', KEYS[2])
if gone and tonumber(gone) >= tonumber(ARGV[1]) then return 0 end
"""
# HSET a whole hash only when `order` (ARGV[1]) is at least the stored one; ARGV[2] TTL, ARGV[3]
# a member to add to the sorted set KEYS[3] scored by order / 1000 ('' = none), then field/value.
_SET_IF_NEWER = (
    _DISCHARGE_CHECK
    + """
local current = redis.call('HGET', KEYS[1], 'order')
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'order', ARGV[1], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[3], 'GT', tonumber(ARGV[1]) / 1000, ARGV[3])
end
return 1
"""
)
# The same for one field (ARGV[3]) holding JSON with an `order` member: ARGV[1] order, ARGV[2]
# TTL, ARGV[4] the JSON.
_SET_FIELD_IF_NEWER = (
    _DISCHARGE_CHECK
    + """
local current = redis.call('HGET', KEYS[1], ARGV[3])
if current and tonumber(cjson.decode(current)['order']) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
)
# Delete a flag field (ARGV[1]) unless a newer flag (larger `order` than ARGV[2]) replaced it.
_DELETE_FIELD_UP_TO = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
if tonumber(cjson.decode(current)['order']) > tonumber(ARGV[2]) then return 0 end
return redis.call('HDEL', KEYS[1], ARGV[1])
"""
# Discharge: raise the marker (KEYS[1]) to ARGV[1] and drop the patient's live keys.
_DISCHARGE = """
local gone = redis.call('GET', KEYS[1])
if not gone or tonumber(gone) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[3])
return 1
"""


class VitalsRedisKeys:
    def __init__(self, prefix: str = VITALS_KEY_PREFIX) -> None:
        self.prefix = prefix

    def latest(self, patient_id: str) -> str:
        return f"{self.prefix}:patient:{patient_id}:latest"

    def summary(self, patient_id: str) -> str:
        return f"{self.prefix}:patient:{patient_id}:summary"

    def flags(self, patient_id: str) -> str:
        return f"{self.prefix}:patient:{patient_id}:flags"

    def discharged(self, patient_id: str) -> str:
        return f"{self.prefix}:patient:{patient_id}:discharged"

    @property
    def patients(self) -> str:
        return f"{self.prefix}:patients"


class VitalsRedis:
    """The vitals pipeline's Redis writes; one lazily opened client per writer."""

    def __init__(
        self,
        settings: Settings,
        *,
        key_prefix: str = VITALS_KEY_PREFIX,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        max_patients: int = DEFAULT_MAX_PATIENTS,
    ) -> None:
        if max_patients < 1:
            raise ValueError(f"max_patients ({max_patients}) must be ≥ 1")
        self.settings = settings
        self.keys = VitalsRedisKeys(key_prefix)
        self.ttl_seconds = ttl_seconds
        self.max_patients = max_patients
        self._client: redis.Redis | None = None

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis_client(self.settings, socket_timeout=10, socket_connect_timeout=5)
        return self._client

    def _hash_args(self, order: int, member: str, fields: dict[str, str]) -> list[Any]:
        args: list[Any] = [order, self.ttl_seconds, member]
        for name, value in fields.items():
            args += [name, value]
        return args

    def write_latest_readings(self, rows: Sequence[Any], batch_id: int) -> None:
        script = self.client.register_script(_SET_IF_NEWER)
        pipe = self.client.pipeline(transaction=False)
        for row in rows:
            order = _epoch_ms(row.event_time)
            fields: dict[str, str] = {
                "patient_id": row.patient_id,
                "device_id": row.device_id or "",
                "event_time": iso_utc(row.event_time),
                "batch_id": str(batch_id),
                **{vital: _number(getattr(row, vital)) for vital in VITAL_SIGNS},
            }
            # The patient list is scored by the newest reading; GT keeps it from moving back.
            script(
                keys=[
                    self.keys.latest(row.patient_id),
                    self.keys.discharged(row.patient_id),
                    self.keys.patients,
                ],
                args=self._hash_args(order, row.patient_id, fields),
                client=pipe,
            )
        # Patients not heard of for a TTL leave the list, as their hashes expire.
        pipe.zremrangebyscore(self.keys.patients, "-inf", f"({time.time() - self.ttl_seconds}")
        # ... and beyond the newest max_patients; their hashes keep their TTL.
        pipe.zremrangebyrank(self.keys.patients, 0, -(self.max_patients + 1))
        pipe.execute()

    def write_summaries(self, rows: Sequence[Any], batch_id: int) -> None:
        newest: dict[str, Any] = {}
        for row in rows:
            kept = newest.get(row.patient_id)
            if kept is None or row.window_start > kept.window_start:
                newest[row.patient_id] = row
        script = self.client.register_script(_SET_IF_NEWER)
        pipe = self.client.pipeline(transaction=False)
        for row in newest.values():
            fields = {
                "patient_id": row.patient_id,
                "window_start": iso_utc(row.window_start),
                "window_end": iso_utc(row.window_end),
                "reading_count": str(int(row.reading_count)),
                "batch_id": str(batch_id),
                **{name: _number(getattr(row, name)) for name in SUMMARY_COLUMNS[4:]},
            }
            order = _epoch_ms(row.window_start)
            script(
                keys=[
                    self.keys.summary(row.patient_id),
                    self.keys.discharged(row.patient_id),
                    self.keys.patients,
                ],
                args=self._hash_args(order, "", fields),
                client=pipe,
            )
        pipe.execute()

    def write_alert_flags(self, alerts: Sequence[dict[str, Any]]) -> None:
        """One field per vital: the patient's newest alert window of that vital."""
        script = self.client.register_script(_SET_FIELD_IF_NEWER)
        pipe = self.client.pipeline(transaction=False)
        for alert in alerts:
            order = _epoch_ms(alert["window_start"])
            flag = {
                "order": order,
                "reason": alert["reason"],
                "window_start": iso_utc(alert["window_start"]),
                "window_end": iso_utc(alert["window_end"]),
                "observed_value": alert["observed_value"],
                "threshold_low": alert["threshold_low"],
                "threshold_high": alert["threshold_high"],
                "out_of_range_count": int(alert["out_of_range_count"]),
                "anomaly_count": int(alert["anomaly_count"]),
                "max_abs_z": alert["max_abs_z"],
                "model_version": alert["model_version"],
                "last_seen": iso_utc(alert["last_seen"]) if alert["last_seen"] else None,
            }
            patient_id = alert["patient_id"]
            script(
                keys=[self.keys.flags(patient_id), self.keys.discharged(patient_id)],
                args=[order, self.ttl_seconds, alert["vital"], _json(flag)],
                client=pipe,
            )
        pipe.execute()

    def write_signal_events(self, events: Sequence[Any]) -> None:
        set_field = self.client.register_script(_SET_FIELD_IF_NEWER)
        delete_field = self.client.register_script(_DELETE_FIELD_UP_TO)
        discharge = self.client.register_script(_DISCHARGE)
        pipe = self.client.pipeline(transaction=False)
        for event in events:
            order = _epoch_ms(event.last_seen)
            flags = self.keys.flags(event.patient_id)
            if event.event == "silent":
                flag = {
                    "order": order,
                    "reason": "no_signal",
                    "last_seen": iso_utc(event.last_seen),
                    "silent_since": iso_utc(event.event_at),
                    "device_id": event.device_id,
                }
                set_field(
                    keys=[flags, self.keys.discharged(event.patient_id)],
                    args=[order, self.ttl_seconds, SIGNAL_VITAL, _json(flag)],
                    client=pipe,
                )
            elif event.event == "restored":
                delete_field(keys=[flags], args=[SIGNAL_VITAL, order], client=pipe)
            elif event.event == "discharged":
                # Gone from the ward: nothing of the patient stays on the dashboard, and the
                # marker keeps older data of any query from coming back.
                discharge(
                    keys=[
                        self.keys.discharged(event.patient_id),
                        self.keys.latest(event.patient_id),
                        self.keys.summary(event.patient_id),
                        flags,
                        self.keys.patients,
                    ],
                    args=[_epoch_ms(event.event_at), self.ttl_seconds, event.patient_id],
                    client=pipe,
                )
            # "expired": state dropped after the retention; the flag stays until its TTL.
        pipe.execute()


def readings_writer(settings: Settings) -> BatchWriter:
    """Valid readings into ``vitals_readings``; the first copy of a key wins."""

    def write(batch: DataFrame, batch_id: int) -> None:
        stamped = batch.withColumns(
            {
                "device_id": F.coalesce("device_id", F.lit("")),
                "ingested_at": F.current_timestamp(),
            }
        )
        write_frame(
            stamped,
            settings,
            READINGS_TABLE,
            READINGS_KEY,
            (*READING_COLUMNS, "ingested_at"),
            on_duplicate="ignore",
        )

    return write


def flags_writer(settings: Settings) -> Callable[[DataFrame, DataFrame], list[dict[str, Any]]]:
    """Stores flagged readings, then recomputes the alerts of every (patient, window) in
    ``touched`` (columns patient_id, window_start); returns the alert rows recomputed."""

    def write(flags: DataFrame, touched: DataFrame) -> list[dict[str, Any]]:
        write_frame(
            flags.withColumn("device_id", F.coalesce("device_id", F.lit(""))),
            settings,
            FLAGS_TABLE,
            FLAGS_KEY,
            FLAG_COLUMNS,
            on_duplicate="ignore",
        )
        pairs = with_utc_wall_clock_timestamps(touched.distinct()).collect()
        return recompute_alerts(settings, [(row.patient_id, row.window_start) for row in pairs])

    return write


def recompute_alerts(
    settings: Settings, touched: Iterable[tuple[str, datetime]]
) -> list[dict[str, Any]]:
    """Recompute the out-of-range and anomaly alerts of these (patient, window start) pairs
    from the stored flags and readings; return the alert rows as they now are."""
    by_patient: dict[str, list[datetime]] = {}
    for patient_id, window_start in touched:
        by_patient.setdefault(patient_id, []).append(as_utc_naive(window_start))
    if not by_patient:
        return []
    patients = sorted(by_patient)
    alerts: list[dict[str, Any]] = []
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        for start in range(0, len(patients), RECOMPUTE_PATIENTS_PER_STATEMENT):
            chunk = patients[start : start + RECOMPUTE_PATIENTS_PER_STATEMENT]
            windows = [w for p in chunk for w in by_patient[p]]
            params = (*chunk, min(windows), max(windows))
            cursor.execute(_recompute_sql(len(chunk)), params * 2)
            connection.commit()
            cursor.execute(_select_alerts_sql(len(chunk)), params)
            names = [d[0] for d in cursor.description]
            wanted = {(p, w) for p in chunk for w in by_patient[p]}
            for values in cursor.fetchall():
                alert = dict(zip(names, values, strict=True))
                if (alert["patient_id"], alert["window_start"]) in wanted:
                    alerts.append(alert)
    return alerts


def summary_writer(settings: Settings, cache: VitalsRedis | None = None) -> BatchWriter:
    """Windows into ``vitals_summary_1m`` (absolute values) and each patient's newest window
    into Redis."""
    live = cache or VitalsRedis(settings)

    def write(windows: DataFrame, batch_id: int) -> None:
        # Two actions on one batch: without persist the stateful plan would run twice.
        windows.persist()
        try:
            write_frame(
                windows,
                settings,
                SUMMARY_TABLE,
                SUMMARY_KEY,
                SUMMARY_COLUMNS,
                on_duplicate="update",
            )
            rows = with_utc_wall_clock_timestamps(windows.select(*SUMMARY_COLUMNS)).collect()
        finally:
            windows.unpersist()
        if rows:
            live.write_summaries(rows, batch_id)

    return write


def signal_writer(settings: Settings, cache: VitalsRedis | None = None) -> BatchWriter:
    """Signal events into ``vitals_alerts`` (``vital = 'signal'``) and the Redis flags."""
    live = cache or VitalsRedis(settings)

    def write(events: DataFrame, batch_id: int) -> None:
        rows = with_utc_wall_clock_timestamps(events).collect()
        if not rows:
            return
        write_signal_rows(settings, rows)
        live.write_signal_events(rows)

    return write


def write_signal_rows(settings: Settings, events: Sequence[Any]) -> None:
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        for event in events:
            if event.event == "silent":
                cursor.execute(_UPSERT_SILENCE, _silence_params(event))
            elif event.event == "restored":
                cursor.execute(
                    "UPDATE vitals_alerts SET resolved_at = ? WHERE patient_id = ? "
                    "AND vital = 'signal' AND window_start = ?",
                    (event.event_at, event.patient_id, event.last_seen),
                )
            elif event.event == "discharged":
                cursor.execute(
                    "UPDATE vitals_alerts SET resolved_at = ? WHERE patient_id = ? "
                    "AND vital = 'signal' AND resolved_at IS NULL AND window_start <= ?",
                    (event.event_at, event.patient_id, event.event_at),
                )
        connection.commit()


_UPSERT_SILENCE = (
    "INSERT INTO vitals_alerts (patient_id, vital, window_start, window_end, reason, "
    "reading_count, out_of_range_count, device_id, first_seen, last_seen) "
    "VALUES (?, 'signal', ?, ?, 'no_signal', 0, 0, ?, ?, ?) "
    "ON DUPLICATE KEY UPDATE window_end = VALUES(window_end), device_id = VALUES(device_id)"
)


def _silence_params(event: Any) -> tuple[Any, ...]:
    return (
        event.patient_id,
        event.last_seen,
        event.event_at,
        event.device_id,
        event.last_seen,
        event.last_seen,
    )


def _flag_filter(patients: int) -> str:
    marks = ", ".join("?" for _ in range(patients))
    return f"patient_id IN ({marks}) AND window_start >= ? AND window_start <= ?"


def _recompute_sql(patients: int) -> str:
    where = _flag_filter(patients)
    updates = ", ".join(
        # Qualified: the SELECT's derived tables have columns of the same names.
        f"vitals_alerts.{column} = VALUES({column})"
        for column in ALERT_COLUMNS
        if column not in _ALERT_KEY
    )
    return f"""INSERT INTO vitals_alerts ({", ".join(ALERT_COLUMNS)})
SELECT g.patient_id, g.vital, g.window_start, g.window_end, w.value, g.observed_min, g.observed_max,
       IF(g.out_of_range_count > 0, w.threshold_low, w.anomaly_low),
       IF(g.out_of_range_count > 0, w.threshold_high, w.anomaly_high),
       IF(g.out_of_range_count > 0, 'out_of_range', 'anomaly'),
       (SELECT COUNT({_VITAL_VALUE}) FROM vitals_readings AS r
         WHERE r.patient_id = g.patient_id
           AND r.event_time >= g.window_start AND r.event_time < g.window_end),
       g.out_of_range_count, g.anomaly_count, g.max_abs_z, g.model_version,
       NULLIF(w.device_id, ''), g.first_seen, g.last_seen
FROM (
    SELECT patient_id, vital, window_start, MAX(window_end) AS window_end,
           MIN(value) AS observed_min, MAX(value) AS observed_max,
           SUM(out_of_range) AS out_of_range_count, SUM(anomaly) AS anomaly_count,
           MAX(ABS(z_score)) AS max_abs_z, MAX(model_version) AS model_version,
           MIN(event_time) AS first_seen, MAX(event_time) AS last_seen
    FROM vitals_reading_flags WHERE {where}
    GROUP BY patient_id, vital, window_start
) AS g
JOIN (
    SELECT patient_id, vital, window_start, value, threshold_low, threshold_high,
           anomaly_low, anomaly_high, device_id,
           ROW_NUMBER() OVER (
               PARTITION BY patient_id, vital, window_start
               ORDER BY out_of_range DESC, severity DESC, ABS(z_score) DESC, event_time, device_id
           ) AS pick
    FROM vitals_reading_flags WHERE {where}
) AS w
  ON w.patient_id = g.patient_id AND w.vital = g.vital AND w.window_start = g.window_start
 AND w.pick = 1
ON DUPLICATE KEY UPDATE {updates}"""


def _select_alerts_sql(patients: int) -> str:
    return (
        f"SELECT {', '.join(ALERT_COLUMNS)} FROM vitals_alerts "
        f"WHERE vital <> 'signal' AND {_flag_filter(patients)}"
    )


def _epoch_ms(moment: datetime) -> int:
    return round(as_utc_naive(moment).replace(tzinfo=UTC).timestamp() * 1000)


def _number(value: Any) -> str:
    return "" if value is None else repr(float(value))


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)
