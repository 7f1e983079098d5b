"""The progress listener on real streaming queries: MariaDB history, Redis heartbeat, channel."""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming.listener import QueryProgressEvent

from spark_jobs.common.listener import ProgressPublisher, progress_record
from streamops.config import Settings
from streamops.contract.redis_keys import QUERY_EVENTS_CHANNEL, query_key
from tests.integration.support import query

# Event-time seconds (after 2031-05-06 07:08:00) of the records of each file; one file per
# micro-batch. The 1 in the last file is behind that batch's watermark (07:08:09).
# Two stateful operators (deduplication, aggregation), so state rows are a sum.
FILES = ((0, 1, 2), (10, 11, 12, 13, 14), (20, 21, 1))
RECORDS = sum(len(seconds) for seconds in FILES)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Listener events arrive asynchronously, after the query has moved on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def pipeline(settings: Settings) -> Iterator[str]:
    name = f"test-listener-{uuid.uuid4().hex[:10]}"
    yield name
    query(settings, "DELETE FROM query_progress WHERE pipeline = ?", (name,))
    query(settings, "DELETE FROM query_status WHERE pipeline = ?", (name,))
    client = redis.Redis.from_url(settings.redis_url)
    keys = list(client.scan_iter(f"streamops:query:{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def publisher(
    spark: SparkSession, settings: Settings, pipeline: str
) -> Iterator[ProgressPublisher]:
    listener = ProgressPublisher(settings, pipeline)
    spark.streams.addListener(listener)
    yield listener
    spark.streams.removeListener(listener)
    listener.close()


@pytest.fixture
def events(settings: Settings) -> Iterator[Callable[[str], list[dict[str, Any]]]]:
    """Messages on the events channel since the test began, for one pipeline."""
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    pubsub = client.pubsub()
    pubsub.subscribe(QUERY_EVENTS_CHANNEL)
    received: list[dict[str, Any]] = []

    def read(pipeline: str) -> list[dict[str, Any]]:
        while (
            message := pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        ) is not None:
            received.append(json.loads(message["data"]))
        return [m for m in received if m["pipeline"] == pipeline]

    yield read
    pubsub.close()
    client.close()


def read_everything(batch: DataFrame, batch_id: int) -> None:
    # Spark 4.2 fails a stateful query whose foreachBatch leaves partitions unread.
    batch.write.format("noop").mode("overwrite").save()


def event_stream(spark: SparkSession, folder: Path) -> DataFrame:
    """A file stream with a watermark and a windowed count, so there is state to report."""
    for number, seconds in enumerate(FILES):
        lines = [
            json.dumps({"key": f"k{i % 2}", "event_time": f"2031-05-06T07:08:{second:02d}Z"})
            for i, second in enumerate(seconds)
        ]
        path = folder / f"part-{number}.json"
        path.write_text("\n".join(lines) + "\n")
        # The file source takes files oldest first: distinct times fix the batches' order.
        os.utime(path, (1_900_000_000 + number, 1_900_000_000 + number))
    return (
        spark.readStream.schema("key STRING, event_time TIMESTAMP")
        .option("maxFilesPerTrigger", 1)
        .json(str(folder))
        .withWatermark("event_time", "5 seconds")
        .dropDuplicatesWithinWatermark(["key", "event_time"])
        .groupBy(F.window("event_time", "5 seconds"), "key")
        .count()
    )


def test_progress_of_a_real_query_lands_in_mariadb_and_redis(
    spark: SparkSession,
    settings: Settings,
    pipeline: str,
    publisher: ProgressPublisher,
    events: Callable[[str], list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    (tmp_path / "in").mkdir()
    name = f"listener_{pipeline[-10:]}"
    started = datetime.now(UTC).replace(tzinfo=None)
    streaming = (
        event_stream(spark, tmp_path / "in")
        .writeStream.queryName(name)
        .outputMode("update")
        .foreachBatch(read_everything)
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    streaming.awaitTermination(120)
    query_id, run_id = str(streaming.id), str(streaming.runId)

    # Listener events arrive in order, after the query moved on: once the stop is recorded,
    # every batch's progress is too.
    status = wait_for(
        lambda: query(
            settings,
            "SELECT state, query_id, run_id, started_at, terminated_at, last_exception "
            "FROM query_status WHERE pipeline = ? AND query_name = ? AND state = 'stopped'",
            (pipeline, name),
        ),
        "the stop in query_status",
    )
    _, stored_id, stored_run, started_at, terminated_at, exception = status[0]
    assert (stored_id, stored_run, exception) == (query_id, run_id, None)
    assert started_at is not None and terminated_at >= started_at

    rows = query(
        settings,
        "SELECT batch_id, num_input_rows, pipeline, query_name, run_id, progress_at, "
        "batch_duration_ms, watermark, state_rows, rows_dropped_by_watermark, end_offsets, "
        "latest_offsets, input_rows_per_second, processed_rows_per_second "
        "FROM query_progress WHERE query_id = ? ORDER BY batch_id",
        (query_id,),
    )
    with_data = [row for row in rows if row[1] > 0]
    assert [(row[0], row[1]) for row in with_data] == [(0, 3), (1, 5), (2, 3)]
    assert {row[2:5] for row in rows} == {(pipeline, name, run_id)}
    for row in rows:
        assert abs((row[5] - started).total_seconds()) < 120, "progress_at is UTC"
        assert row[6] is not None and row[6] >= 0
        assert json.loads(row[10]) and json.loads(row[11]), "offsets are JSON"
        assert row[13] is None or row[13] >= 0
    # Batch 0 runs before any watermark; then max event time so far minus 5 s.
    assert [row[7] for row in with_data] == [
        None,
        datetime(2031, 5, 6, 7, 7, 57),
        datetime(2031, 5, 6, 7, 8, 9),
    ]
    assert all(row[8] > 0 for row in with_data), "windows kept in state"
    assert all(row[9] >= 0 for row in rows)
    # One file source, read up to its third file (log offsets count from 0).
    assert list(json.loads(with_data[-1][10]).values()) == [{"logOffset": 2}]

    key = query_key(pipeline, name)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        heartbeat = client.hgetall(key)
        assert 0 < client.ttl(key) <= 7 * 24 * 3600
    finally:
        client.close()
    assert heartbeat["state"] == "stopped"
    assert heartbeat["query_id"] == query_id and heartbeat["run_id"] == run_id
    assert int(heartbeat["batch_id"]) == rows[-1][0]
    assert abs(time.time() - float(heartbeat["heartbeat_at"])) < 60
    assert json.loads(heartbeat["end_offsets"])
    assert heartbeat["last_exception"] == ""

    messages = wait_for(
        lambda: (m := events(pipeline)) and m[-1]["event"] == "terminated" and m,
        "the terminated message",
    )
    kinds = [message["event"] for message in messages]
    assert kinds[0] == "started" and kinds[-1] == "terminated"
    assert kinds.count("progress") == len(rows)


def test_a_failed_query_is_recorded_with_its_exception(
    spark: SparkSession,
    settings: Settings,
    pipeline: str,
    publisher: ProgressPublisher,
    tmp_path: Path,
) -> None:
    (tmp_path / "in").mkdir()
    name = f"failing_{pipeline[-10:]}"
    marker = f"deliberate failure {uuid.uuid4().hex}"

    def fail(batch: DataFrame, batch_id: int) -> None:
        raise RuntimeError(marker)

    streaming = (
        event_stream(spark, tmp_path / "in")
        .writeStream.queryName(name)
        .outputMode("update")
        .foreachBatch(fail)
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    with pytest.raises(StreamingQueryException):
        streaming.awaitTermination(120)

    (state, exception) = wait_for(
        lambda: query(
            settings,
            "SELECT state, last_exception FROM query_status "
            "WHERE pipeline = ? AND query_name = ? AND state <> 'running'",
            (pipeline, name),
        ),
        "the failure in query_status",
    )[0]
    assert state == "failed"
    assert marker in exception
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        stored = client.hgetall(query_key(pipeline, name))
    finally:
        client.close()
    assert stored["state"] == "failed" and marker in stored["last_exception"]


def state_operator(rows: int, dropped: int) -> dict[str, Any]:
    return {
        "operatorName": "stateStoreSave",
        "numRowsTotal": rows,
        "numRowsUpdated": 0,
        "numRowsRemoved": 0,
        "allUpdatesTimeMs": 0,
        "allRemovalsTimeMs": 0,
        "commitTimeMs": 0,
        "memoryUsedBytes": 0,
        "numRowsDroppedByWatermark": dropped,
        "numShufflePartitions": 2,
        "numStateStoreInstances": 2,
    }


def synthetic_progress(query_id: str, batch_id: int, rows: int) -> QueryProgressEvent:
    return QueryProgressEvent.fromJson(
        {
            "progress": {
                "id": query_id,
                "runId": "00000000-0000-0000-0000-000000000001",
                "name": None,
                "timestamp": "2031-05-06T07:08:09.123Z",
                "batchId": batch_id,
                "batchDuration": 42,
                "durationMs": {"triggerExecution": 42},
                "eventTime": {"watermark": "1970-01-01T00:00:00.000Z"},
                "stateOperators": [state_operator(5, 1), state_operator(7, 2)],
                "sources": [
                    {
                        "description": "KafkaV2[Subscribe[orders]]",
                        "startOffset": None,
                        "endOffset": {"orders": {"0": rows}},
                        "latestOffset": {"orders": {"0": rows}},
                        "numInputRows": rows,
                        "inputRowsPerSecond": float("nan"),
                        "processedRowsPerSecond": 10.0,
                    }
                ],
                "sink": {"description": "ForeachBatchSink", "numOutputRows": -1},
                "numInputRows": rows,
                "inputRowsPerSecond": float("nan"),
                "processedRowsPerSecond": 10.0,
            }
        }
    )


def test_a_repeated_progress_event_is_one_row_and_nan_rates_are_null(
    settings: Settings, pipeline: str
) -> None:
    query_id = str(uuid.uuid4())
    listener = ProgressPublisher(settings, pipeline)
    try:
        listener.onQueryProgress(synthetic_progress(query_id, 7, 10))
        listener.onQueryProgress(synthetic_progress(query_id, 7, 12))
    finally:
        listener.close()

    rows = query(
        settings,
        "SELECT batch_id, query_name, num_input_rows, input_rows_per_second, "
        "processed_rows_per_second, watermark, end_offsets, start_offsets, state_rows, "
        "rows_dropped_by_watermark "
        "FROM query_progress WHERE query_id = ?",
        (query_id,),
    )
    assert len(rows) == 1
    (
        batch_id,
        name,
        input_rows,
        input_rate,
        processed_rate,
        watermark,
        end,
        start,
        state,
        dropped,
    ) = rows[0]
    # An unnamed query is known by its id; the later report of the same batch wins.
    assert (batch_id, name, input_rows) == (7, query_id, 12)
    assert (input_rate, processed_rate, watermark) == (None, 10.0, None)
    assert json.loads(end) == {"KafkaV2[Subscribe[orders]]": {"orders": {"0": 12}}}
    assert json.loads(start) == {"KafkaV2[Subscribe[orders]]": None}
    assert (state, dropped) == (12, 3), "summed over the stateful operators"


def test_the_listener_never_raises_when_redis_and_mariadb_are_down(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = settings.model_copy(update={"redis_port": 1, "mariadb_port": 2})
    listener = ProgressPublisher(unreachable, "test-listener-down")
    event = synthetic_progress(str(uuid.uuid4()), 0, 1)
    with caplog.at_level(logging.ERROR, logger="spark_jobs.common.listener"):
        started = time.monotonic()
        listener.onQueryProgress(event)
        elapsed = time.monotonic() - started
    listener.close()

    assert elapsed < 10
    assert "could not write" in caplog.text and "to Redis" in caplog.text
    assert "could not write to MariaDB" in caplog.text
    assert progress_record(event.progress, "p")["input_rows_per_second"] is None
