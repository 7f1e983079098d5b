"""Publishing what every streaming query does: a Redis heartbeat, a channel, and MariaDB history.

:class:`ProgressPublisher` is a ``StreamingQueryListener``. Per event it makes one Redis round
trip (hash of the latest progress + ``heartbeat_at``, ``EXPIRE``, ``PUBLISH``) and one MariaDB
statement (``query_progress`` per batch, ``query_status`` on start and termination). Spark calls
listeners on its listener-bus thread (``onQueryStarted`` on the thread starting the query), so a
slow listener slows every query: nothing here waits long, and nothing here raises into Spark — a
failure is logged and the next event tries again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from datetime import UTC, datetime
from typing import Any

import mariadb
import redis
from pyspark.sql.streaming import StreamingQueryListener
from pyspark.sql.streaming.listener import (
    QueryIdleEvent,
    QueryProgressEvent,
    QueryStartedEvent,
    QueryTerminatedEvent,
    StreamingQueryProgress,
)
from redis.typing import EncodableT, FieldT

from spark_jobs.common.restarts import RestartPolicy
from streamops.config import Settings
from streamops.contract.redis_keys import QUERY_EVENTS_CHANNEL, QUERY_KEY_PREFIX, query_key
from streamops.contract.times import iso_utc
from streamops.db import connect
from streamops.supervision.job_health import RESTART_AT, RESTART_ATTEMPT, RESTART_REASON, RESTARTING

log = logging.getLogger(__name__)

# Long enough to see why a query stopped after a weekend; the writer refreshes it on every event.
DEFAULT_QUERY_KEY_TTL_SECONDS = 7 * 24 * 3600
# Spark's exception text carries the whole stack trace of the driver and the executor.
MAX_EXCEPTION_CHARS = 100_000
REDIS_TIMEOUT_SECONDS = 2.0
# Spark reports this watermark until the first batch with data moves it.
_NO_WATERMARK = datetime(1970, 1, 1)

PROGRESS_COLUMNS = (
    "query_id",
    "run_id",
    "batch_id",
    "pipeline",
    "query_name",
    "progress_at",
    "num_input_rows",
    "input_rows_per_second",
    "processed_rows_per_second",
    "batch_duration_ms",
    "watermark",
    "state_rows",
    "rows_dropped_by_watermark",
    "sink_output_rows",
    "start_offsets",
    "end_offsets",
    "latest_offsets",
)
_KEY_COLUMNS = ("query_id", "run_id", "batch_id")
_INSERT_PROGRESS = (
    f"INSERT INTO query_progress ({', '.join(PROGRESS_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in PROGRESS_COLUMNS)}) ON DUPLICATE KEY UPDATE "
    + ", ".join(f"{c} = VALUES({c})" for c in PROGRESS_COLUMNS if c not in _KEY_COLUMNS)
)
_UPSERT_STARTED = (
    "INSERT INTO query_status (pipeline, query_name, query_id, run_id, state, started_at) "
    "VALUES (?, ?, ?, ?, 'running', ?) "
    "ON DUPLICATE KEY UPDATE query_id = VALUES(query_id), run_id = VALUES(run_id), "
    "state = VALUES(state), started_at = VALUES(started_at), terminated_at = NULL, "
    "last_exception = NULL, error_class = NULL"
)
# started_at is left alone: a listener added after the start does not know it.
_UPSERT_TERMINATED = (
    "INSERT INTO query_status (pipeline, query_name, query_id, run_id, state, terminated_at, "
    "last_exception, error_class) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON DUPLICATE KEY UPDATE query_id = VALUES(query_id), run_id = VALUES(run_id), "
    "state = VALUES(state), terminated_at = VALUES(terminated_at), "
    "last_exception = VALUES(last_exception), error_class = VALUES(error_class)"
)


def status_redis(settings: Settings) -> redis.Redis:
    """A Redis client for a job's status writes: short timeouts, so a Redis outage delays the
    listener bus and the driver's loop by seconds at most.

    Fenced like the sinks (``streamops.supervision.fence``): once a newer job holds the checkpoint,
    this job's heartbeats and status are refused, so an old job that has not exited yet can never
    make the new one look alive (or overwrite what it reports)."""
    from streamops.supervision.fence import redis_client

    return redis_client(
        settings,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )


def progress_record(progress: StreamingQueryProgress, pipeline: str) -> dict[str, Any]:
    """One ``query_progress`` row (column → value) from a progress report."""
    query_id = str(progress.id)
    state_operators = progress.stateOperators or []
    sink_rows = progress.sink.numOutputRows if progress.sink is not None else -1
    sources = progress.sources or []
    return {
        "query_id": query_id,
        "run_id": str(progress.runId),
        "batch_id": int(progress.batchId),
        "pipeline": pipeline,
        "query_name": progress.name or query_id,
        "progress_at": _parse_time(progress.timestamp),
        "num_input_rows": int(progress.numInputRows or 0),
        "input_rows_per_second": _finite(progress.inputRowsPerSecond),
        "processed_rows_per_second": _finite(progress.processedRowsPerSecond),
        "batch_duration_ms": (progress.durationMs or {}).get("triggerExecution"),
        "watermark": _watermark((progress.eventTime or {}).get("watermark")),
        "state_rows": sum(int(op.numRowsTotal) for op in state_operators),
        "rows_dropped_by_watermark": sum(
            int(op.numRowsDroppedByWatermark) for op in state_operators
        ),
        # Sinks that cannot count (foreachBatch among them) report -1.
        "sink_output_rows": sink_rows if sink_rows is not None and sink_rows >= 0 else None,
        "start_offsets": _offsets_json(sources, "startOffset"),
        "end_offsets": _offsets_json(sources, "endOffset"),
        "latest_offsets": _offsets_json(sources, "latestOffset"),
    }


class ProgressPublisher(StreamingQueryListener):
    """Publishes the start, progress and end of every query of ``pipeline`` to Redis and MariaDB.

    Redis: hash ``streamops:query:<pipeline>:<query_name>`` (latest progress, state,
    ``heartbeat_at`` in epoch seconds; refreshed by idle events too) and a JSON message on
    ``streamops:query:events``. MariaDB: ``query_progress`` (one row per batch) and
    ``query_status`` (running / stopped / failed, with the exception text).
    """

    def __init__(
        self,
        settings: Settings,
        pipeline: str,
        *,
        channel: str = QUERY_EVENTS_CHANNEL,
        ttl_seconds: int = DEFAULT_QUERY_KEY_TTL_SECONDS,
        key_prefix: str = QUERY_KEY_PREFIX,
        restarts: RestartPolicy | None = None,
    ) -> None:
        self.settings = settings
        # The driver's restart policy: a run it restarts is "restarting", not "failed", in Redis.
        self.restarts = restarts
        self.pipeline = pipeline
        self.channel = channel
        self.ttl_seconds = ttl_seconds
        self.key_prefix = key_prefix
        # Termination events carry no query name; remember it from the start or progress.
        self._names: dict[str, str] = {}
        self._redis: redis.Redis | None = None
        self._connection: mariadb.Connection | None = None
        # onQueryStarted runs on the starting thread, the rest on the listener bus.
        self._lock = threading.Lock()

    # --- Spark's callbacks: each one catches everything -----------------------------------------

    def onQueryStarted(self, event: QueryStartedEvent) -> None:
        try:
            self._started(event)
        except Exception:
            log.exception("%s: could not publish the start of query %s", self.pipeline, event.id)

    def onQueryProgress(self, event: QueryProgressEvent) -> None:
        try:
            self._progress(event.progress)
        except Exception:
            log.exception("%s: could not publish a progress event", self.pipeline)

    def onQueryIdle(self, event: QueryIdleEvent) -> None:
        try:
            self._idle(event)
        except Exception:
            log.exception(
                "%s: could not publish the heartbeat of query %s", self.pipeline, event.id
            )

    def onQueryTerminated(self, event: QueryTerminatedEvent) -> None:
        try:
            self._terminated(event)
        except Exception:
            log.exception("%s: could not publish the end of query %s", self.pipeline, event.id)

    def close(self) -> None:
        """Release the connections (after ``spark.streams.removeListener``)."""
        with self._lock:
            if self._connection is not None:
                _close_quietly(self._connection)
                self._connection = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    # --- the work ----------------------------------------------------------------------------

    def _started(self, event: QueryStartedEvent) -> None:
        query_id, run_id = str(event.id), str(event.runId)
        name = event.name or query_id
        self._names[query_id] = name
        started_at = _parse_time(event.timestamp)
        self._publish(
            name,
            {
                "event": "started",
                "state": "running",
                "query_id": query_id,
                "run_id": run_id,
                "started_at": _iso(started_at),
                "terminated_at": None,
                "last_exception": None,
                "error_class": None,
                RESTART_AT: None,
                RESTART_REASON: None,
            },
        )
        self._execute(_UPSERT_STARTED, (self.pipeline, name, query_id, run_id, started_at))

    def _progress(self, progress: StreamingQueryProgress) -> None:
        record = progress_record(progress, self.pipeline)
        self._names[record["query_id"]] = record["query_name"]
        self._publish(
            record["query_name"],
            {
                "event": "progress",
                "state": "running",
                **{k: v for k, v in record.items() if k not in ("pipeline", "query_name")},
                "progress_at": _iso(record["progress_at"]),
                "watermark": _iso(record["watermark"]),
            },
            # Offsets can be long (a partition each): in the hash, not in the message.
            hash_only=("start_offsets", "end_offsets", "latest_offsets"),
        )
        self._execute(_INSERT_PROGRESS, tuple(record[c] for c in PROGRESS_COLUMNS))

    def _idle(self, event: QueryIdleEvent) -> None:
        name = self._names.get(str(event.id))
        if name is None:
            return
        key = query_key(self.pipeline, name, self.key_prefix)
        client = self._client()
        with client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"state": "running", "heartbeat_at": f"{time.time():.3f}"})
            pipe.expire(key, self.ttl_seconds)
            pipe.execute()

    def _terminated(self, event: QueryTerminatedEvent) -> None:
        query_id, run_id = str(event.id), str(event.runId)
        name = self._names.get(query_id) or self._stored_name(query_id) or query_id
        exception = event.exception[:MAX_EXCEPTION_CHARS] if event.exception else None
        state = "failed" if exception else "stopped"
        terminated_at = datetime.now(UTC).replace(tzinfo=None)
        error_class = event.errorClassOnException
        restart = (
            self.restarts.decide(name, run_id, exception)
            if self.restarts is not None and exception
            else None
        )
        fields: dict[str, Any] = {
            "event": "terminated",
            "state": state,
            "query_id": query_id,
            "run_id": run_id,
            "terminated_at": _iso(terminated_at),
            "last_exception": exception,
            "error_class": error_class,
        }
        if restart is not None:
            # The driver starts the query again from its checkpoint: the run's record in
            # MariaDB keeps its exception, the live state says what happens next.
            fields |= {
                "state": RESTARTING,
                "last_exception": None,
                RESTART_AT: f"{restart.at:.3f}",
                RESTART_ATTEMPT: f"{restart.attempt} of {restart.of}",
                RESTART_REASON: restart.reason,
            }
        self._publish(name, fields)
        self._execute(
            _UPSERT_TERMINATED,
            (self.pipeline, name, query_id, run_id, state, terminated_at, exception, error_class),
        )

    def _publish(
        self, query_name: str, fields: dict[str, Any], hash_only: tuple[str, ...] = ()
    ) -> None:
        """HSET the fields (+ heartbeat), refresh the TTL and PUBLISH, in one round trip.

        A failure is logged, not raised: MariaDB still gets its write when Redis is away.
        """
        try:
            self._publish_or_raise(query_name, fields, hash_only)
        except Exception:
            log.exception("%s: could not write %s to Redis", self.pipeline, query_name)

    def _publish_or_raise(
        self, query_name: str, fields: dict[str, Any], hash_only: tuple[str, ...]
    ) -> None:
        key = query_key(self.pipeline, query_name, self.key_prefix)
        heartbeat = round(time.time(), 3)
        message = {
            "pipeline": self.pipeline,
            "query_name": query_name,
            **{k: v for k, v in fields.items() if k not in hash_only},
            "heartbeat_at": heartbeat,
        }
        mapping: dict[FieldT, EncodableT] = {
            "pipeline": self.pipeline,
            "query_name": query_name,
            **{k: _redis_value(v) for k, v in fields.items() if k != "event"},
            "heartbeat_at": f"{heartbeat:.3f}",
        }
        client = self._client()
        with client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, self.ttl_seconds)
            pipe.publish(self.channel, json.dumps(message, separators=(",", ":"), default=str))
            pipe.execute()

    def _client(self) -> redis.Redis:
        if self._redis is None:
            self._redis = status_redis(self.settings)
        return self._redis

    def _execute(self, sql: str, params: tuple[Any, ...]) -> None:
        """Run one statement and commit; a failure is logged, not raised (see ``_publish``)."""
        try:
            self._execute_or_raise(sql, params)
        except Exception:
            log.exception("%s: could not write to MariaDB: %s", self.pipeline, sql.split("(")[0])

    def _execute_or_raise(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._lock:
            # A kept connection may have been closed by the server (wait_timeout) since the
            # last event: one fresh try, then give up until the next event.
            for attempt in (1, 2):
                if self._connection is None:
                    self._connection = connect(self.settings)
                try:
                    cursor = self._connection.cursor()
                    cursor.execute(sql, params)
                    self._connection.commit()
                    return
                except (mariadb.InterfaceError, mariadb.OperationalError):
                    _close_quietly(self._connection)
                    self._connection = None
                    if attempt == 2:
                        raise
                except mariadb.Error:
                    self._connection.rollback()
                    raise

    def _stored_name(self, query_id: str) -> str | None:
        """The name query_status holds for ``query_id``, for a query started before we listened."""
        try:
            with self._lock:
                if self._connection is None:
                    self._connection = connect(self.settings)
                cursor = self._connection.cursor()
                cursor.execute(
                    "SELECT query_name FROM query_status WHERE pipeline = ? AND query_id = ?",
                    (self.pipeline, query_id),
                )
                row = cursor.fetchone()
                self._connection.commit()
        except Exception:
            log.warning("%s: could not look up the name of query %s", self.pipeline, query_id)
            return None
        return str(row[0]) if row else None


def _parse_time(text: str | None) -> datetime | None:
    """Spark's ISO-8601 UTC text (``…Z``) as a naive UTC datetime."""
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _watermark(text: str | None) -> datetime | None:
    moment = _parse_time(text)
    return None if moment is None or moment == _NO_WATERMARK else moment


def _finite(value: float | None) -> float | None:
    # Spark reports NaN for a rate over no time; MariaDB and JSON cannot hold NaN.
    return float(value) if value is not None and math.isfinite(value) else None


def _offsets_json(sources: list[Any], attribute: str) -> str | None:
    if not sources:
        return None
    offsets: dict[str, Any] = {}
    for source in sources:
        name = source.description
        while name in offsets:  # two sources alike: keep both
            name += "'"
        offsets[name] = _json_or_text(getattr(source, attribute))
    return json.dumps(offsets, separators=(",", ":"))


def _json_or_text(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else iso_utc(moment)


def _redis_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _iso(value) or ""
    return str(value)


def _close_quietly(connection: mariadb.Connection) -> None:
    with contextlib.suppress(mariadb.Error):
        connection.close()
