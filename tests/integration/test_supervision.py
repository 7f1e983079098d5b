"""Airflow supervises the streaming jobs, end to end on the real stack.

Real Airflow (scheduler, triggerer, LocalExecutor), Spark, Kafka, MariaDB and Redis. The specs come
from a test pipelines file (``$STREAMOPS_PIPELINES_FILE``) with short backoffs and polls, so
Airflow's scheduler, dag-processor and triggerer are restarted with it for this module and again
without it afterwards:

- ``streamops up``'s path enables the orders DAG; the job runs under Airflow. Its driver is killed
  with SIGKILL while orders flow: Airflow relaunches it from its checkpoint within 60 s, and the
  tables hold exactly the topic's records (0 lost, 0 duplicated).
- A job that always crashes opens the circuit breaker after K tries: no more launches, the run
  fails, an alert lands in Redis and on the ``alerts`` topic; a new run refuses to start.
- Restarting the scheduler and triggerer does not start a second query: the same process keeps
  the lease, which the resumed trigger renews.
- Redis stopped while orders flow: the supervisor waits for it (not counted toward the breaker,
  no relaunch into the outage), relaunches once it answers, and nothing is lost or doubled.
- Marking the DAG run failed through the REST API stops the job gracefully (the trigger's
  ``on_kill``): exit 0, lease released, and the listener recorded each query's termination.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
import redis
import yaml
from confluent_kafka import Consumer, TopicPartition
from streamops_airflow.hooks import SparkJobHook

from streamops.airflow_rest import AirflowRest
from streamops.config import Settings
from streamops.contract.redis_keys import PLATFORM_ALERTS_KEY
from streamops.db import connect
from streamops.generator.producer import run_generator
from streamops.stack import Stack
from streamops.stack.airflow import AirflowDatabase
from streamops.stack.pipelines import SupervisedPipeline, supervise
from streamops.supervision import job_processes
from streamops.supervision import lease as leases
from streamops.supervision.job_health import HealthStatus
from streamops.supervision.restart import Phase
from streamops.supervision.spec import PIPELINES_FILE_ENV, PipelineSpec, load_spec
from tests.integration.orders_support import (
    assert_orders_exactly_once,
    expected_from_topic,
    orders_landed,
    query,
    topic_contents,
)
from tests.integration.support import empty_orders_outputs, end_supervision

T = TypeVar("T")

# Restarted with the test pipelines file (and back); the api-server reads no spec.
AIRFLOW_WORKERS = ("airflow-dag-processor", "airflow-scheduler", "airflow-triggerer")
CRASH_MAX_FAILURES = 3
ORDERS = 6000
ORDERS_RATE = 150.0
OUTAGE_ORDERS = 1500


# The test pipelines' Spark Connection: a small local master, a row of Airflow's database as
# `up` makes spark_default (ensure_test_spark_connection).
TEST_SPARK_CONN_ID = "streamops_test_local2"


def ensure_test_spark_connection(settings: Settings) -> None:
    AirflowDatabase(settings).ensure_spark_connection(print, TEST_SPARK_CONN_ID, "local[2]")


def pipelines_document(checkpoints: Path) -> dict[str, Any]:
    common = {
        "spark_conf": {"spark.sql.shuffle.partitions": "2", "spark.ui.enabled": "false"},
        "spark_conn_id": TEST_SPARK_CONN_ID,
        "checkpoint_root": str(checkpoints),
        "stop_timeout_seconds": 45,
        "lease_ttl_seconds": 60,
        "retries": 2,
    }
    return {
        "pipelines": {
            "orders": {
                **common,
                "job_module": "spark_jobs.jobs.orders",
                "queries": ["orders_records", "orders_revenue"],
                "job_args": ["--max-offsets-per-trigger", "2000"],
                "trigger_interval": "2 seconds",
                # The outage test needs the job to fail on Redis, not to ride the outage out in
                # its batch (the chaos suite's outages prove the ride-out under the platform).
                "outage_ride_out_seconds": 0,
                "restart": {
                    "initial_backoff_seconds": 2,
                    "max_backoff_seconds": 5,
                    "jitter_ratio": 0.1,
                    "max_failures": 10,
                    "failure_window_seconds": 600,
                },
                "health": {
                    "heartbeat_timeout_seconds": 60,
                    "startup_grace_seconds": 240,
                    "poll_interval_seconds": 3,
                },
            },
            # The orders job with a window of 0 s refuses to start (ValueError, exit 1): a bad
            # deploy that crashes on every launch.
            "crashloop": {
                **common,
                "job_module": "spark_jobs.jobs.orders",
                "queries": ["orders_records"],
                "job_args": ["--window-seconds", "0"],
                "restart": {
                    "initial_backoff_seconds": 1,
                    "max_backoff_seconds": 2,
                    "jitter_ratio": 0,
                    "max_failures": CRASH_MAX_FAILURES,
                    "failure_window_seconds": 600,
                },
                "health": {"startup_grace_seconds": 240, "poll_interval_seconds": 2},
            },
        }
    }


@dataclass
class Supervision:
    settings: Settings
    stack: Stack
    api: AirflowRest
    orders: PipelineSpec
    crashloop: PipelineSpec
    crash_run_id: str
    alerts_start: dict[int, int]

    def lease(self, spec: PipelineSpec) -> leases.Lease | None:
        connection = connect(self.settings)
        try:
            return leases.current(
                connection, spec.checkpoint_location(self.settings.checkpoint_root)
            )
        finally:
            connection.close()

    def running_job(self, spec: PipelineSpec) -> job_processes.JobHandle | None:
        lease = self.lease(spec)
        if lease is None or not lease.pid:
            return None
        handle = job_processes.handle_from_lease(spec, self.settings, lease)
        return handle if job_processes.process_is_running(handle) else None

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api.dag_run(dag_id, run_id)["state"])

    def active_run(self, spec: PipelineSpec) -> str:
        runs = self.api.active_runs(spec.dag_id)
        assert len(runs) == 1, runs
        return str(runs[0]["dag_run_id"])


@contextmanager
def producing_orders(
    settings: Settings, *, count: int, rate: float, seed: int, **ratios: float
) -> Iterator[None]:
    """Produce ``count`` orders at ``rate`` in the background while the block runs; after it,
    every record was sent."""
    produced: dict[str, Any] = {}
    producer = threading.Thread(
        target=lambda: produced.update(
            summary=run_generator(
                "orders",
                bootstrap_servers=settings.kafka_bootstrap_servers,
                rate=rate,
                count=count,
                seed=seed,
                progress=False,
                **ratios,
            )
        )
    )
    producer.start()
    try:
        yield
    finally:
        producer.join(timeout=count / rate + 120)
    assert produced["summary"].failed == 0 and produced["summary"].sent == count


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 2.0) -> T:
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    assert value, f"timed out after {timeout:.0f} s waiting for {what} (last: {value!r})"
    return value


def restart_airflow_workers(stack: Stack) -> None:
    components = [stack.component(name) for name in AIRFLOW_WORKERS]
    for component in components:
        component.stop()
    for component in components:
        component.start()
    for component in components:
        component.wait_healthy()


def spark_submits(app_name: str) -> list[psutil.Process]:
    """spark-submit JVMs of ``app_name`` on this host: one per running query set."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        # spark-submit's shell scripts carry the same arguments; count the JVM only.
        java = (process.info["name"] or "").startswith("java")
        if java and "org.apache.spark.deploy.SparkSubmit" in cmdline and app_name in cmdline:
            found.append(process)
    return found


def _session(process: psutil.Process) -> int | None:
    """``process``'s session id; None once it is gone."""
    try:
        return os.getsid(process.pid)
    except OSError:
        return None


def alerts_end_offsets(settings: Settings) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "x"})
    try:
        partitions = consumer.list_topics("alerts", timeout=10).topics["alerts"].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition("alerts", p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def alerts_since(settings: Settings, start: dict[int, int]) -> list[dict[str, Any]]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": uuid.uuid4().hex,
            "enable.auto.commit": False,
        }
    )
    ends = alerts_end_offsets(settings)
    consumer.assign([TopicPartition("alerts", p, offset) for p, offset in start.items()])
    found: list[dict[str, Any]] = []
    wanted = sum(ends[p] - start[p] for p in start)
    deadline = time.monotonic() + 30
    seen = 0
    while seen < wanted and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            seen += 1
            found.append(json.loads(message.value()))
    consumer.close()
    return found


@pytest.fixture(scope="module")
def supervision(
    stack: Stack, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Supervision]:
    folder = tmp_path_factory.mktemp("supervision")
    specs_file = folder / "pipelines.yaml"
    specs_file.write_text(yaml.safe_dump(pipelines_document(folder / "checkpoints")))
    ensure_test_spark_connection(settings)
    empty_orders_outputs(settings)
    api = AirflowRest.login(settings)
    os.environ[PIPELINES_FILE_ENV] = str(specs_file)
    try:
        restart_airflow_workers(stack)
        orders, crashloop = load_spec("orders"), load_spec("crashloop")
        connection = connect(settings)
        cursor = connection.cursor()
        cursor.execute(
            "DELETE FROM pipeline_restart_state WHERE pipeline IN ('orders', 'crashloop')"
        )
        connection.commit()
        connection.close()
        alerts_start = alerts_end_offsets(settings)
        # The crash loop runs alongside the orders tests; test_a_job_that_always_crashes checks it.
        supervise(settings, [SupervisedPipeline(settings, crashloop)], print, wait=False)
        crash_run_id = str(api.active_runs(crashloop.dag_id)[0]["dag_run_id"])
        yield Supervision(settings, stack, api, orders, crashloop, crash_run_id, alerts_start)
    finally:
        for dag_id in ("streamops_supervise_orders", "streamops_supervise_crashloop"):
            end_supervision(api, dag_id)
        for name in ("orders", "crashloop"):
            lease = _lease(settings, load_spec(name))
            if lease is not None and lease.pid:
                handle = job_processes.handle_from_lease(load_spec(name), settings, lease)
                job_processes.stop_process(handle, 30)
        api.close()
        del os.environ[PIPELINES_FILE_ENV]
        restart_airflow_workers(stack)


def _lease(settings: Settings, spec: PipelineSpec) -> leases.Lease | None:
    connection = connect(settings)
    try:
        return leases.current(connection, spec.checkpoint_location(settings.checkpoint_root))
    finally:
        connection.close()


def assert_exactly_once(s: Supervision) -> None:
    """The orders tables hold exactly the topic's records, and the Redis totals equal the windows.

    Ground truth: the topic itself (earlier tests' records included: the checkpoint is new).
    """
    expected_orders, expected_rejects = expected_from_topic(topic_contents(s.settings))
    wait_for(
        lambda: orders_landed(s.settings, expected_orders, expected_rejects),
        timeout=300,
        what="every record to land after the restart",
    )
    assert_orders_exactly_once(s.settings, expected_orders, expected_rejects)

    # The revenue query replayed its batch too: Redis totals still equal the stored windows.
    def totals_match() -> bool:
        totals = redis.Redis.from_url(s.settings.redis_url, decode_responses=True).hgetall(
            "streamops:orders:totals"
        )
        rows = query(
            s.settings,
            "SELECT currency, SUM(order_count), SUM(revenue) FROM order_revenue_5s "
            "GROUP BY currency",
        )
        return bool(rows) and all(
            int(totals.get(f"{currency}:order_count", -1)) == count
            and Decimal(totals.get(f"{currency}:revenue", "-1")) == revenue
            for currency, count, revenue in rows
        )

    wait_for(totals_match, timeout=60, what="Redis totals to equal the windows")
    (windowed,) = query(s.settings, "SELECT COALESCE(SUM(order_count), 0) FROM order_revenue_5s")[0]
    assert windowed <= len(expected_orders), "the revenue windows counted an order twice"


def test_up_enables_supervision_and_a_killed_driver_comes_back_exactly_once(
    supervision: Supervision,
) -> None:
    s = supervision
    # `streamops up`'s path: unpause the DAG, start a run, wait until the job is healthy.
    healths = supervise(s.settings, [SupervisedPipeline(s.settings, s.orders)], print)
    assert healths["pipeline-orders"].healthy, healths
    assert s.api.dag(s.orders.dag_id)["is_paused"] is False  # type: ignore[index]
    job = s.running_job(s.orders)
    assert job is not None and len(spark_submits("streamops-orders")) == 1

    with producing_orders(
        s.settings,
        count=ORDERS,
        rate=ORDERS_RATE,
        seed=777,
        malformed_ratio=0.05,
        duplicate_ratio=0.05,
    ):
        before = query(s.settings, "SELECT COUNT(*) FROM orders")[0][0]
        wait_for(
            lambda: query(s.settings, "SELECT COUNT(*) FROM orders")[0][0] > before + 300,
            timeout=180,
            what="the job to write orders while data flows",
        )
        drivers = job_processes.python_drivers(job_processes.job_processes(job))
        assert drivers, "no Python driver under the job's session"
        killed_at = time.time()
        for driver in drivers:
            driver.send_signal(signal.SIGKILL)

        relaunched = wait_for(
            lambda: (j := s.running_job(s.orders)) is not None and j.pid != job.pid and j,
            timeout=90,
            what="Airflow to relaunch the killed job",
            interval=1.0,
        )
        assert relaunched
        restart_seconds = relaunched.process_start_epoch - killed_at
        print(f"relaunched {restart_seconds:.1f} s after the kill")
        assert restart_seconds <= 60
        assert relaunched.fencing_token == job.fencing_token, "same supervisor, same lease"
        # The relaunch is its wrapper at first; its JVM comes a moment later. Never two.
        counts: list[int] = []
        wait_for(
            lambda: counts.append(len(spark_submits("streamops-orders"))) or counts[-1] == 1,
            timeout=60,
            what="the relaunched job's JVM",
            interval=0.5,
        )
        assert max(counts) == 1, counts

    assert_exactly_once(s)

    connection = connect(s.settings)
    try:
        state = leases.load_restart_state(connection, "orders")
    finally:
        connection.close()
    assert state.phase is Phase.RUNNING and state.restarts_total == 1, state


def test_a_job_that_always_crashes_opens_the_breaker(supervision: Supervision) -> None:
    s = supervision
    dag_id = s.crashloop.dag_id
    wait_for(
        lambda: s.run_state(dag_id, s.crash_run_id) == "failed",
        timeout=480,
        what="the crash-looping pipeline's run to fail",
        interval=3.0,
    )
    connection = connect(s.settings)
    try:
        state = leases.load_restart_state(connection, "crashloop")
    finally:
        connection.close()
    assert state.phase is Phase.BREAKER_OPEN, state
    assert len(state.failure_times) == CRASH_MAX_FAILURES
    assert state.restarts_total == CRASH_MAX_FAILURES - 1
    assert "exited with" in (state.last_failure_reason or ""), state
    # One exit file per launch (the sh wrapper's), each with the job's failure code.
    exits = sorted(job_processes.run_dir(s.settings, "crashloop").glob("pid-*.exit"))
    assert len(exits) == CRASH_MAX_FAILURES, exits
    assert all(int(p.read_text()) != 0 for p in exits)
    (log_file,) = job_processes.run_dir(s.settings, "crashloop").glob("token-*.log")
    assert log_file.read_text(errors="replace").count("window_seconds is 0") >= CRASH_MAX_FAILURES
    lease = s.lease(s.crashloop)
    assert lease is not None and lease.owner is None, "the breaker released the lease"

    # The alert: in Redis and on the `alerts` topic, with the same id.
    platform = [
        json.loads(item)
        for item in redis.Redis.from_url(s.settings.redis_url).lrange(PLATFORM_ALERTS_KEY, 0, 50)
    ]
    breaker = [a for a in platform if a["service"] == "crashloop"]
    assert breaker and breaker[0]["rule_id"] == "streaming-circuit-breaker"
    assert breaker[0]["event_count"] == CRASH_MAX_FAILURES
    on_topic = [a for a in alerts_since(s.settings, s.alerts_start) if a["service"] == "crashloop"]
    assert [a["alert_id"] for a in on_topic] == [breaker[0]["alert_id"]]

    # Stopped for good: a new run refuses at once, and nothing is launched.
    run_id = s.api.trigger(dag_id, note="test: after the breaker opened")
    wait_for(lambda: s.run_state(dag_id, run_id) == "failed", 180, "the refused run to fail")
    assert len(list(job_processes.run_dir(s.settings, "crashloop").glob("pid-*.exit"))) == len(
        exits
    )
    assert s.running_job(s.crashloop) is None

    # The operator's way out (docs/operations.md): reset the breaker, history forgotten.
    reset = SparkJobHook(s.crashloop, s.settings).reset_breaker()
    assert reset.phase is Phase.STOPPED and reset.failure_times == ()


def test_restarting_the_scheduler_does_not_start_a_second_query(supervision: Supervision) -> None:
    s = supervision
    job = s.running_job(s.orders)
    assert job is not None, "the orders job should run (previous test)"
    run_id = s.active_run(s.orders)
    before = s.lease(s.orders)
    assert before is not None and before.expires_at is not None

    restart_airflow_workers(s.stack)

    # The resumed trigger renews the lease for the same job; nobody launches another.
    renewed = wait_for(
        lambda: (
            (lease := s.lease(s.orders)) is not None
            and lease.expires_at is not None
            and lease.expires_at > before.expires_at
            and lease
        ),
        timeout=120,
        what="the resumed trigger to renew the lease",
    )
    assert renewed
    time.sleep(3 * s.orders.health.poll_interval_seconds)
    after = s.lease(s.orders)
    assert after is not None
    assert (after.pid, after.fencing_token, after.owner) == (job.pid, job.fencing_token, job.owner)
    assert s.running_job(s.orders) is not None
    assert len(spark_submits("streamops-orders")) == 1
    assert s.active_run(s.orders) == run_id
    # A second launcher (another DAG, a stray worker) is refused and told who holds it.
    from streamops.supervision.lease import LeaseHeldError

    with pytest.raises(LeaseHeldError, match="held by airflow:streamops_supervise_orders"):
        SparkJobHook(s.orders, s.settings).start_or_reattach("airflow:intruder.supervise")
    assert len(spark_submits("streamops-orders")) == 1


def test_a_killed_wrapper_is_not_a_dead_job_and_a_stop_leaves_no_orphan(
    supervision: Supervision,
) -> None:
    """kill -9 of the ``sh`` that leads the job's session leaves spark-submit's JVM and the
    Python driver running: the supervisor keeps that job (no failure, no second launch), and a
    stop reaches every process of the session though the wrapper is gone."""
    s = supervision
    job = s.running_job(s.orders)
    assert job is not None, "the orders job should run (previous tests)"
    run_id = s.active_run(s.orders)
    hook = SparkJobHook(s.orders, s.settings)
    restarts_before = hook.load_restart_state()

    os.kill(job.pid, signal.SIGKILL)
    wait_for(
        lambda: not job_processes.wrapper_is_running(job), timeout=10, what="the wrapper to die"
    )
    time.sleep(4 * s.orders.health.poll_interval_seconds)

    assert job_processes.process_is_running(job), (
        "the JVM and the driver run on without the wrapper"
    )
    health = hook.read_health(job)
    assert health.status in (HealthStatus.HEALTHY, HealthStatus.OVERLOADED), health
    lease = s.lease(s.orders)
    assert lease is not None and (lease.pid, lease.fencing_token) == (job.pid, job.fencing_token)
    assert len(spark_submits("streamops-orders")) == 1, "a second job was launched"
    assert s.active_run(s.orders) == run_id
    assert hook.load_restart_state() == restarts_before, "the kill counted as a failure"

    # The stop finds the orphaned JVM and driver by their session: nothing is left behind.
    assert hook.stop(job, 60) is None  # no exit code: its recorder was killed
    assert not job_processes.process_is_running(job)
    # No JVM of the stopped job's session is left. (The supervisor may already have relaunched
    # the job, which had run healthy, under a new wrapper: a session of its own.)
    assert [p for p in spark_submits("streamops-orders") if _session(p) == job.pid] == []
    # Then (a dead job) the supervisor relaunches one job, under a new wrapper.
    relaunched = wait_for(
        lambda: (j := s.running_job(s.orders)) is not None and j.pid != job.pid and j,
        timeout=240,
        what="the supervisor to relaunch the stopped job",
    )
    wait_for(
        lambda: hook.read_health(relaunched).status is HealthStatus.HEALTHY,
        timeout=240,
        what="the relaunched job to be healthy",
    )
    assert len(spark_submits("streamops-orders")) == 1


def test_a_redis_outage_is_waited_out_not_counted_and_loses_nothing(
    supervision: Supervision,
) -> None:
    """Redis stops, then orders arrive: the job's batch fails on its Redis write, and the
    supervisor waits for Redis (phase ``waiting``, nothing counted toward the breaker, no
    relaunch into the outage). Redis back: one relaunch from the checkpoint, exactly once."""
    s = supervision
    job = s.running_job(s.orders)
    assert job is not None, "the orders job should run (previous tests)"
    run_id = s.active_run(s.orders)
    hook = SparkJobHook(s.orders, s.settings)
    before = hook.load_restart_state()
    redis_server = s.stack.component("redis")

    # Orders arrive during the outage: the revenue query's next batch needs Redis and fails. Their
    # event times lie past the query's watermark (earlier tests may have pushed it ahead of the
    # clock), or the windows would drop them as late and write nothing to fail on.
    revenue = redis.Redis.from_url(s.settings.redis_url, decode_responses=True).hgetall(
        "streamops:query:orders:orders_revenue"
    )
    event_base = datetime.now(UTC)
    if revenue.get("watermark"):
        watermark = datetime.fromisoformat(revenue["watermark"].replace("Z", "+00:00"))
        event_base = max(event_base, watermark + timedelta(minutes=1))
    redis_server.stop()
    try:
        summary = run_generator(
            "orders",
            bootstrap_servers=s.settings.kafka_bootstrap_servers,
            rate=0,
            count=OUTAGE_ORDERS,
            seed=778,
            now=event_base,
            progress=False,
        )
        assert (summary.sent, summary.failed) == (OUTAGE_ORDERS, 0)
        waiting = wait_for(
            lambda: (state := hook.load_restart_state()).phase is Phase.WAITING and state,
            timeout=180,
            what="the supervisor to wait for Redis",
        )
        assert waiting
        assert "redis" in waiting.waiting_for, waiting
        assert waiting.failure_times == before.failure_times, "the outage was counted"
        assert waiting.consecutive_failures == before.consecutive_failures
        assert not job_processes.process_is_running(job), "the failed job was left running"
        # No relaunch into the outage.
        time.sleep(3 * s.orders.health.poll_interval_seconds)
        assert s.running_job(s.orders) is None
        assert hook.load_restart_state().phase is Phase.WAITING
    finally:
        redis_server.start()
        redis_server.wait_healthy()

    relaunched = wait_for(
        lambda: (j := s.running_job(s.orders)) is not None and j,
        timeout=180,
        what="the supervisor to relaunch once Redis answers",
    )
    wait_for(
        lambda: hook.read_health(relaunched).status is HealthStatus.HEALTHY,
        timeout=240,
        what="the relaunched job to be healthy",
    )
    assert len(spark_submits("streamops-orders")) == 1
    assert s.active_run(s.orders) == run_id, "the same supervision run waited and relaunched"
    after = hook.load_restart_state()
    assert after.phase is Phase.RUNNING and after.failure_times == before.failure_times, after
    assert after.outages_total >= before.outages_total + 1
    assert after.restarts_total == before.restarts_total + 1
    assert_exactly_once(s)


def test_failing_the_run_from_the_api_stops_the_job_cleanly(supervision: Supervision) -> None:
    s = supervision
    job = s.running_job(s.orders)
    assert job is not None, "the orders job should run (previous tests)"
    run_id = s.active_run(s.orders)
    stop_asked = time.time()

    s.api.fail_run(s.orders.dag_id, run_id)

    wait_for(
        lambda: not job_processes.process_is_running(job),
        timeout=90,
        what="the trigger's on_kill to stop the job",
        interval=1.0,
    )
    assert job_processes.process_exit_code(job) == 0, "a graceful stop exits 0"
    assert len(spark_submits("streamops-orders")) == 0
    lease = wait_for(
        lambda: (lease := s.lease(s.orders)) is not None and lease.owner is None and lease,
        timeout=30,
        what="the lease to be released",
    )
    assert lease
    # The listener recorded each query's termination before the driver exited.
    statuses = dict(
        query(
            s.settings,
            "SELECT query_name, state FROM query_status WHERE pipeline = 'orders' "
            "AND terminated_at >= FROM_UNIXTIME(?)",
            (int(stop_asked) - 1,),
        )
    )
    assert statuses == {"orders_records": "stopped", "orders_revenue": "stopped"}
    client = redis.Redis.from_url(s.settings.redis_url, decode_responses=True)
    for name in s.orders.queries:
        assert client.hget(f"streamops:query:orders:{name}", "state") == "stopped"
    assert s.run_state(s.orders.dag_id, run_id) == "failed"
