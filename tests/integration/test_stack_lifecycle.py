"""`up`, `status`, `down` and the faults a user meets, against the real stack."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import closing

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from streamops.airflow_rest import AirflowRest, stop_pipeline
from streamops.config import Settings
from streamops.db import connect
from streamops.errors import StreamopsError
from streamops.stack import Stack
from streamops.stack.pipelines import SupervisedPipeline, supervise
from streamops.stack.redis import Redis
from streamops.supervision import job_processes
from streamops.supervision import lease as leases
from tests.integration.support import free_port

CLI = [sys.executable, "-m", "streamops"]


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_status_reports_every_core_component_healthy() -> None:
    result = run_cli("status", "--json")
    components = {c["name"]: c for c in json.loads(result.stdout)}
    for name in (
        "kafka",
        "mariadb",
        "redis",
        "postgresql",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    ):
        assert components[name]["healthy"], components[name]
        assert components[name]["pid"], components[name]
    assert components["kafka"]["version"].startswith("4.")
    assert components["mariadb"]["version"].startswith("10.")


def test_up_twice_starts_no_second_copy(stack: Stack) -> None:
    before = {c.name: c.running_pid() for c in stack.components}
    reports: list[str] = []
    stack.up(with_airflow=True, report=reports.append)
    after = {c.name: c.running_pid() for c in stack.components}
    assert after == before
    assert any("already running" in line for line in reports)
    assert not any(line.endswith(": starting") for line in reports)


def test_port_in_use_gives_a_clear_error_and_leaves_state_consistent(settings: Settings) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        busy_port = blocker.getsockname()[1]
        other = Redis(settings.model_copy(update={"redis_port": busy_port}))
        other.name = "redis-conflict"  # its own pid/log files; the session's Redis is untouched
        with pytest.raises(StreamopsError) as error:
            other.start()
    message = str(error.value)
    assert str(busy_port) in message and "STREAMOPS_REDIS_PORT" in message
    assert other.running_pid() is None
    assert not other.pid_path.exists()


def test_a_service_that_dies_at_start_reports_its_log(settings: Settings, tmp_path) -> None:
    broken_config = tmp_path / "missing-dir"
    broken = Redis(settings.model_copy(update={"redis_port": free_port()}))
    broken.name = "redis-broken"
    # A real redis-server refused by its own config check: a data dir that does not exist.
    port = broken.settings.redis_port
    broken.prepare = lambda: broken.config_path.write_text(  # type: ignore[method-assign]
        f"port {port}\ndir {broken_config}\n"
    )
    broken.start()
    with pytest.raises(StreamopsError) as error:
        broken.wait_healthy(timeout=20)
    assert "exited during start-up" in str(error.value)
    assert "streamops logs redis-broken" in str(error.value)
    assert error.value.log_tail and "dir" in error.value.log_tail.lower()
    assert broken.running_pid() is None


def test_missing_java_is_named_with_its_fix(stack: Stack, monkeypatch) -> None:
    kafka = stack.component("kafka")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(StreamopsError, match="JDK 17"):
        kafka._check_requirements()


def test_generate_rejects_a_negative_rate_and_an_unknown_topic() -> None:
    negative = run_cli("generate", "orders", "--rate", "-5", "--count", "3", check=False)
    assert negative.returncode == 2
    assert "rate" in negative.stderr.lower()
    unknown = run_cli("generate", "ordres", "--count", "3", check=False)
    assert unknown.returncode == 2
    assert "orders" in unknown.stderr and "ordres" in unknown.stderr


def test_down_then_up_keeps_mariadb_redis_and_kafka_data(stack: Stack, settings: Settings) -> None:
    marker = uuid.uuid4().hex
    conn = connect(settings)
    cursor = conn.cursor()
    cursor.execute(
        "INSERT INTO quarantine (source_topic, source_partition, source_offset, raw_payload, "
        "reason, pipeline) VALUES (?, ?, ?, ?, ?, ?)",
        ("orders", 0, 10_000_000 + int(marker[:6], 16), marker.encode(), "test", "test"),
    )
    conn.commit()
    conn.close()
    redis.Redis(port=settings.redis_port).set(f"test:{marker}", marker)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "acks": "all"})
    delivered: list = []
    producer.produce("orders", value=marker.encode(), on_delivery=lambda e, m: delivered.append(m))
    producer.flush(30)
    (record,) = delivered

    stack.down()
    assert all(c.running_pid() is None for c in stack.components)
    stack.up(with_airflow=True)

    conn = connect(settings)
    cursor = conn.cursor()
    cursor.execute("SELECT raw_payload FROM quarantine WHERE reason='test' AND pipeline='test'")
    assert marker.encode() in [bytes(row[0]) for row in cursor.fetchall()]
    conn.close()
    assert redis.Redis(port=settings.redis_port).get(f"test:{marker}") == marker.encode()
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": marker,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition("orders", record.partition(), record.offset())])
    message = None
    for _ in range(40):
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            break
    consumer.close()
    assert message is not None and message.value() == marker.encode()


def test_up_with_generators_and_the_supervised_orders_job_feeds_mariadb(
    stack: Stack, settings: Settings
) -> None:
    """`up --with-generator`, then `up`'s supervision path for the orders pipeline alone.

    One pipeline only: every spec of pipelines.yaml at once is more Spark JVMs than the test
    machine's cores carry. It ends the way an operator stops a pipeline (pause the DAG, fail the
    run), so no supervision run is left to relaunch the job while later tests run.
    """
    orders = stack.component("pipeline-orders")
    assert isinstance(orders, SupervisedPipeline)
    dag_id = orders.spec.dag_id
    before = _count_orders(settings)
    stack.up(with_airflow=True, with_generator=True)
    try:
        healths = supervise(settings, [orders], print)
        assert healths[orders.name].healthy, healths
        job = orders.job()
        assert job is not None and job_processes.process_is_running(job), job
        for generator in stack.generators:
            assert generator.health().healthy, (generator.name, generator.health().detail)
        # The operations page reads every DAG at once; it agrees with the DAG-by-DAG read, and
        # an unknown DAG still reads as not existing.
        with AirflowRest.login(settings) as api:
            ids = [dag_id, "streamops_no_such_dag"]
            batch = api.dags_info(ids)
            assert batch == {d: api.dag_info(d) for d in ids}
            assert batch[dag_id].active_run_state == "running", batch
            assert batch["streamops_no_such_dag"].exists is False
        assert _within(180, lambda: _count_orders(settings) > before), (
            "generated orders never reached MariaDB"
        )
    finally:
        try:
            with AirflowRest.login(settings) as api:
                stop_pipeline(api, orders.spec.name, dag_id)
        finally:
            for generator in stack.generators:
                generator.stop()

    with AirflowRest.login(settings) as api:
        assert api.dag_info(dag_id).is_paused is True
        assert api.active_runs(dag_id) == []
        assert api.dags_info([dag_id]) == {dag_id: api.dag_info(dag_id)}
    assert all(g.running_pid() is None for g in stack.generators)
    # The failed run's on_kill stops the job gracefully and hands the checkpoint back.
    assert _within(
        orders.spec.stop_timeout_seconds + 60, lambda: not job_processes.process_is_running(job)
    ), f"the orders job (pid {job.pid}) still runs"
    assert job_processes.process_exit_code(job) == 0, "a graceful stop exits 0"
    assert orders.running_pid() is None
    location = orders.spec.checkpoint_location(settings.checkpoint_root)

    def released() -> bool:
        lease = _lease(settings, location)
        return lease is not None and lease.owner is None

    assert _within(60, released), f"the lease is still held: {_lease(settings, location)}"


def _within(seconds: float, condition: Callable[[], bool]) -> bool:
    """Whether ``condition`` came true within ``seconds`` (polled every 2 s)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(2)
    return True


def _lease(settings: Settings, location: str) -> leases.Lease | None:
    with closing(connect(settings)) as connection:
        return leases.current(connection, location)


def _count_orders(settings: Settings) -> int:
    conn = connect(settings)
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT COUNT(*) FROM orders")
        return int(cursor.fetchone()[0])
    finally:
        conn.close()
