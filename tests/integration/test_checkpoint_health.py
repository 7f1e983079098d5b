"""Checkpoint health against real checkpoints (the orders job, run briefly), Kafka and Redis."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import NewTopic
from streamops_airflow.dag_factory import CheckpointHealthDagSpec, build_checkpoint_health_dag

from streamops.config import PROJECT_ROOT, Settings
from streamops.contract.redis_keys import query_key
from streamops.db import connect
from streamops.maintenance.checkpoints import (
    CheckpointTarget,
    CheckpointThresholds,
    CriticalCheckpointFinding,
    check_checkpoint,
    redis_key,
    run_checkpoint_check,
)
from streamops.topics import admin_client


def produce(settings: Settings, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    now = datetime.now(UTC).isoformat()
    for _ in range(count):
        order_id = f"maint-{uuid.uuid4().hex}"
        value = {
            "order_id": order_id,
            "customer_id": "c",
            "product_id": "p",
            "quantity": 1,
            "unit_price": "2.50",
            "event_time": now,
        }
        producer.produce(topic, key=order_id.encode(), value=json.dumps(value).encode())
    assert producer.flush(30) == 0


@pytest.fixture(scope="module")
def job_checkpoints(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Checkpoints of a real orders job that committed a batch and was stopped gracefully."""
    root = tmp_path_factory.mktemp("maint-job")
    produce(settings, "orders", 20)
    with (root / "job.log").open("wb") as log:
        job = subprocess.Popen(
            [str(settings.spark_python), "-m", "spark_jobs.jobs.orders"],
            cwd=PROJECT_ROOT,
            env={
                **os.environ,
                "STREAMOPS_CHECKPOINT_URI": str(root / "checkpoints"),
                "STREAMOPS_ARCHIVE_URI": str(root / "archive"),
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        commits = [
            root / "checkpoints" / "orders" / q / "commits" / "0" for q in ("records", "revenue")
        ]
        deadline = time.monotonic() + 150
        while not all(c.exists() for c in commits):
            assert job.poll() is None, (root / "job.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the orders job committed no batch in time"
            time.sleep(1)
        job.send_signal(signal.SIGTERM)
        job.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
    return root / "checkpoints" / "orders"


@pytest.fixture
def target(job_checkpoints: Path, tmp_path: Path) -> CheckpointTarget:
    """A private copy of the records checkpoint, under a pipeline name no job uses."""
    copy = tmp_path / "records"
    shutil.copytree(job_checkpoints / "records", copy)
    return CheckpointTarget(f"maint-{uuid.uuid4().hex[:8]}", "orders_records", str(copy))


def kinds(result: dict) -> set[str]:
    return {f"{f['finding']}:{f['severity']}" for f in result["findings"]}


def test_a_stopped_query_with_growing_lag(settings: Settings, target: CheckpointTarget) -> None:
    first = run_checkpoint_check(settings, target, CheckpointThresholds())
    assert first["last_committed_batch"] is not None and first["query_id"]
    produce(settings, "orders", 15)
    second = run_checkpoint_check(settings, target, CheckpointThresholds())
    assert second["total_lag"] >= first["total_lag"] + 15
    assert {"stopped_with_lag:warning", "lag_growing:warning"} <= kinds(second)
    assert second["status"] == "warning"
    # Lag per partition is Kafka's end offset minus the committed offset.
    consumer_ends = _end_offsets(settings, "orders")
    committed = json.loads(
        Path(target.path, "offsets", str(second["last_committed_batch"])).read_text().split("\n")[2]
    )["orders"]
    assert second["lag_by_partition"]["orders"] == {
        p: consumer_ends[int(p)] - committed[p] for p in committed
    }
    stored = _rows(settings, target)
    assert [r[0] for r in stored] == ["warning", "warning"] or stored[-1][0] == "warning"
    published = redis.Redis.from_url(settings.redis_url).hgetall(
        redis_key(target.pipeline, target.query_name)
    )
    assert (
        published[b"status"] == b"warning" and int(published[b"total_lag"]) == second["total_lag"]
    )


def test_a_stalled_query_is_critical_and_recorded(
    settings: Settings, target: CheckpointTarget
) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    heartbeat = query_key(target.pipeline, target.query_name)
    client.hset(heartbeat, mapping={"state": "running"})
    client.expire(heartbeat, 600)
    old = time.time() - 3600
    for commit in Path(target.path, "commits").iterdir():
        os.utime(commit, (old, old))
    produce(settings, "orders", 3)
    with pytest.raises(CriticalCheckpointFinding, match="stalled"):
        run_checkpoint_check(settings, target, CheckpointThresholds())
    assert _rows(settings, target)[-1][0] == "critical"
    assert client.hget(redis_key(target.pipeline, target.query_name), "status") == b"critical"


def test_offsets_aged_out_of_the_topic_are_data_lost(
    settings: Settings, target: CheckpointTarget
) -> None:
    topic = f"maint-short-{uuid.uuid4().hex[:8]}"
    admin = admin_client(settings)
    futures = admin.create_topics(
        [NewTopic(topic, 1, 1, config={"retention.ms": "1000", "segment.ms": "1000"})]
    )
    futures[topic].result(30)
    produce(settings, topic, 10)
    admin.delete_records([TopicPartition(topic, 0, 8)])[TopicPartition(topic, 0, 8)].result(30)
    # Point the private checkpoint's last committed batch at offset 2 of that topic.
    batch = max(int(p.name) for p in Path(target.path, "commits").iterdir() if p.name.isdigit())
    offsets_file = Path(target.path, "offsets", str(batch))
    lines = offsets_file.read_text().split("\n")
    offsets_file.write_text("\n".join([*lines[:2], json.dumps({topic: {"0": 2}})]))
    result = check_checkpoint(settings, target, CheckpointThresholds())
    assert "data_lost:critical" in kinds(result)
    assert result["lost_offsets"] == 6


def test_a_recreated_topic_is_past_the_end_and_alerted(
    settings: Settings, target: CheckpointTarget
) -> None:
    """A topic deleted and recreated with fewer partitions and fewer records than the checkpoint
    read: the check flags offsets past the end and the lost partition, records, publishes and
    fails the task."""
    topic = f"maint-recreated-{uuid.uuid4().hex[:8]}"
    admin = admin_client(settings)
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for partition in (0, 0, 0, 0, 0, 0, 0, 0, 1, 1):
        producer.produce(topic, value=b"{}", partition=partition)
    assert producer.flush(30) == 0
    ends = _end_offsets(settings, topic)
    assert ends == {0: 8, 1: 2}
    batch = max(int(p.name) for p in Path(target.path, "commits").iterdir() if p.name.isdigit())
    offsets_file = Path(target.path, "offsets", str(batch))
    lines = offsets_file.read_text().split("\n")
    offsets_file.write_text(
        "\n".join([*lines[:2], json.dumps({topic: {str(p): e for p, e in ends.items()}})])
    )
    caught_up = check_checkpoint(settings, target, CheckpointThresholds())
    assert not {"offsets_past_end:critical", "partitions_missing:critical"} & kinds(caught_up)
    assert caught_up["offsets_past_end"] == 0 and caught_up["missing_partitions"] == 0

    admin.delete_topics([topic])[topic].result(30)
    deadline = time.monotonic() + 60
    while True:  # deletion finishes in the background; the name is taken until then
        try:
            admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
            break
        except Exception:
            assert time.monotonic() < deadline, f"{topic} could not be recreated"
            time.sleep(1)
    for _ in range(3):
        producer.produce(topic, value=b"{}", partition=0)
    assert producer.flush(30) == 0

    with pytest.raises(CriticalCheckpointFinding, match=r"offsets_past_end.*partitions_missing"):
        run_checkpoint_check(settings, target, CheckpointThresholds())

    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        cursor.execute(
            "SELECT status, offsets_past_end, missing_partitions, lost_offsets "
            "FROM checkpoint_health WHERE pipeline = ? ORDER BY checked_at DESC LIMIT 1",
            (target.pipeline,),
        )
        assert cursor.fetchone() == ("critical", 5, 1, 0)
    published = redis.Redis.from_url(settings.redis_url).hgetall(
        redis_key(target.pipeline, target.query_name)
    )
    assert published[b"status"] == b"critical"
    assert int(published[b"offsets_past_end"]) == 5
    findings = {f["finding"]: f["detail"] for f in json.loads(published[b"findings"])}
    assert "deleted and recreated" in findings["offsets_past_end"]
    assert f"{{'{topic}': [1]}}" in findings["partitions_missing"]
    admin.delete_topics([topic])


def test_a_corrupted_copy_fails_the_dag_task(settings: Settings, target: CheckpointTarget) -> None:
    batch = max(int(p.name) for p in Path(target.path, "offsets").iterdir() if p.name.isdigit())
    offsets_file = Path(target.path, "offsets", str(batch))
    offsets_file.write_bytes(offsets_file.read_bytes()[:40])
    Path(target.path, "metadata").write_text('{"id": "12')
    stale = Path(target.path, "offsets", ".99.abc.tmp")
    stale.write_text("x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))

    dag = build_checkpoint_health_dag(
        CheckpointHealthDagSpec(dag_id="maint_test_checkpoints", targets=(target,))
    )
    callable_ = dag.get_task("check").python_callable  # type: ignore[attr-defined]
    with pytest.raises(CriticalCheckpointFinding, match="metadata_unreadable"):
        callable_(
            target={
                "pipeline": target.pipeline,
                "query_name": target.query_name,
                "path": target.path,
                "trigger_interval_seconds": 0.0,
            }
        )
    assert not stale.exists(), "the stale temp file is cleaned"
    assert offsets_file.exists(), "a corrupt file is never deleted"
    status, findings = _rows(settings, target)[-1]
    assert status == "critical" and "temp_files_removed" in findings


def _rows(settings: Settings, target: CheckpointTarget) -> list[tuple[str, str]]:
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        cursor.execute(
            "SELECT status, findings FROM checkpoint_health WHERE pipeline = ? ORDER BY checked_at",
            (target.pipeline,),
        )
        return list(cursor.fetchall())


def _end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    from streamops.maintenance.checkpoints import kafka_watermarks

    return {p: high for p, (_, high) in kafka_watermarks(settings, [topic])[topic].items()}


@pytest.fixture(autouse=True)
def _clean_redis(settings: Settings) -> Iterator[None]:
    yield
    client = redis.Redis.from_url(settings.redis_url)
    for key in client.scan_iter("streamops:*:maint-*"):
        client.delete(key)
