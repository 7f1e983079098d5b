"""Supervision across hosts: the launcher and the watcher are different hosts (issue 17).

In compose the scheduler launches a pipeline's job and the triggerer, another container, watches
it: a host name of its own, no view of the launcher's processes, the network and the state volume
shared. Here the test process launches (the hook, as the scheduler's task does) and the watcher is
a process in namespaces of its own (``unshare --uts --pid --fork --mount-proc``, a host name set
inside): it polls the job's health, runs the health trigger, reads the operations page's liveness,
and stops the job. Real Kafka, MariaDB, Redis and Spark, from the suite's shared stack (the hook
and the trigger are driven directly; Airflow's processes only run beside them).

Also on the real services, without Spark: the job heartbeat's script (token guard, relaunch,
stop request, fence), and a job that ignores the stop request is fenced and exits by itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from streamops_airflow.hooks import SparkJobHook

from streamops.clients import redis_client
from streamops.config import Settings
from streamops.contract.redis_keys import job_key, job_stop_key
from streamops.db import connect
from streamops.generator.producer import run_generator
from streamops.processes import session_members
from streamops.supervision import job_beat, job_processes
from streamops.supervision import lease as leases
from streamops.supervision.job_health import (
    JOB_EXIT_CODE,
    JOB_STOPPING,
    JOB_TOKEN,
    driver_must_stop,
)
from streamops.supervision.job_processes import JobHandle
from streamops.supervision.redis_fence import fence_key, raise_mirror
from streamops.supervision.spec import PIPELINES_FILE_ENV, PipelineSpec, load_spec
from tests.integration.support import empty_orders_outputs, query, wait_until

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SPARK_PYTHON = PROJECT_ROOT / ".venv-spark" / "bin" / "python"
WATCHER_HOST = "streamops-watcher"
OWNER = "test:cross-host"
POLL_SECONDS = 3
HEALTHY_POLLS = 3


def _unshare() -> list[str]:
    """A new UTS, PID and mount namespace with its own /proc; unprivileged, a user namespace too."""
    command = ["unshare", "--uts", "--pid", "--fork", "--mount-proc"]
    return command if os.geteuid() == 0 else [*command, "--map-root-user"]


@pytest.fixture
def specs_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The orders pipeline on a checkpoint of its own, a small local master and 3 s polls; the
    launcher, the job's driver and the watcher all read this file."""
    conn = {"conn_type": "spark", "host": "local[1]", "extra": {"deploy-mode": "client"}}
    monkeypatch.setenv("AIRFLOW_CONN_STREAMOPS_TEST_LOCAL1", json.dumps(conn))
    document = {
        "pipelines": {
            "orders": {
                "job_module": "spark_jobs.jobs.orders",
                "queries": ["orders_records", "orders_revenue"],
                "job_args": ["--max-offsets-per-trigger", "2000"],
                "trigger_interval": "2 seconds",
                "spark_conf": {"spark.sql.shuffle.partitions": "2", "spark.ui.enabled": "false"},
                "spark_conn_id": "streamops_test_local1",
                "checkpoint_root": str(tmp_path / "checkpoints"),
                "stop_timeout_seconds": 45,
                "lease_ttl_seconds": 300,
                "health": {"poll_interval_seconds": POLL_SECONDS, "startup_grace_seconds": 300},
            }
        }
    }
    path = tmp_path / "pipelines.yaml"
    path.write_text(yaml.safe_dump(document))
    monkeypatch.setenv(PIPELINES_FILE_ENV, str(path))
    return path


@contextlib.contextmanager
def producing_orders(settings: Settings, rate: float = 20.0) -> Iterator[None]:
    """Orders at ``rate`` per second, in bursts of 5 s, until the block ends."""
    done = threading.Event()

    def produce() -> None:
        seed = 1
        while not done.is_set():
            run_generator(
                "orders",
                bootstrap_servers=settings.kafka_bootstrap_servers,
                rate=rate,
                duration=5,
                seed=seed,
                progress=False,
            )
            seed += 1

    producer = threading.Thread(target=produce, name="orders-producer")
    producer.start()
    try:
        yield
    finally:
        done.set()
        producer.join(timeout=60)


def orders_stored(settings: Settings) -> int:
    return int(query(settings, "SELECT COUNT(*) FROM orders")[0][0])


def job_log(handle: JobHandle) -> str:
    return Path(handle.log_file).read_text(errors="replace")[-3000:]


class Watcher:
    """The watcher process, in namespaces of its own, and its JSON lines."""

    def __init__(self, handle: JobHandle, specs_file: Path) -> None:
        inner = (
            f"hostname {WATCHER_HOST} && exec {sys.executable} -m "
            'tests.integration.cross_host_watcher "$0" "$1" "$2"'
        )
        arguments = [json.dumps(handle.to_dict()), str(specs_file), str(HEALTHY_POLLS)]
        self.process = subprocess.Popen(
            [*_unshare(), "sh", "-c", inner, *arguments],
            cwd=PROJECT_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self.log: list[str] = []

    def next(self) -> dict[str, Any]:
        """The watcher's next event; its log lines (Airflow logs to stdout) are kept aside."""
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            assert line, f"the watcher ended ({self.process.wait()}): {self.events}, {self.log}"
            if line.startswith('{"event"'):
                event = json.loads(line)
                self.events.append(event)
                return dict(event)
            self.log.append(line.rstrip())

    def go_on(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("stop\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def test_one_host_launches_another_watches_and_stops_the_job(
    settings: Settings, specs_file: Path
) -> None:
    spec = load_spec("orders")
    empty_orders_outputs(settings)
    hook = SparkJobHook(spec, settings)
    with producing_orders(settings):
        handle = hook.start_or_reattach(OWNER)
        watcher: Watcher | None = None
        try:
            assert handle.host == socket.gethostname() and handle.pid > 0
            wait_until(
                lambda: orders_stored(settings) > 0 or not SparkJobHook.is_running(handle),
                420,
                "the job's first orders in MariaDB",
            )
            assert SparkJobHook.is_running(handle), job_log(handle)
            watcher = Watcher(handle, specs_file)
            identity = watcher.next()
            # Another host: another name, and the launcher's processes out of its sight.
            assert identity["host"] == WATCHER_HOST != handle.host, identity
            assert identity["sees_launcher_pid"] is False, identity
            polls: list[tuple[dict[str, Any], int]] = []
            event = watcher.next()
            while event["event"] == "poll":
                polls.append((event, orders_stored(settings)))
                event = watcher.next()
            statuses = [poll["status"] for poll, _ in polls]
            details = " | ".join(poll["detail"] for poll, _ in polls)
            # Never "killed": healthy (or busy) across its polls, judged by the job heartbeat.
            assert statuses.count("healthy") >= HEALTHY_POLLS, (polls, job_log(handle))
            assert set(statuses) <= {"starting", "healthy", "overloaded"}, polls
            assert all(poll["alive"] for poll, _ in polls), polls
            assert "without a word" not in details and "killed" not in details
            assert "job heartbeat" in details
            healthy_rows = [rows for poll, rows in polls if poll["status"] == "healthy"]
            # The health trigger, as the triggerer runs it: no event for three polls.
            assert event == {"event": "trigger", "fired": None}, (event, watcher.events)
            assert watcher.next() == {"event": "page", "alive": True}
            # The job makes progress while it is watched from the other host.
            wait_until(
                lambda: orders_stored(settings) > healthy_rows[0],
                60,
                "more orders after the watcher's first healthy poll",
            )

            watcher.go_on()
            stopped = watcher.next()
            assert stopped["code"] == 0 and stopped["released"] is True, (stopped, job_log(handle))
            assert stopped["seconds"] < spec.stop_timeout_seconds
            after = watcher.next()
            assert after == {"event": "after", "status": "stopped", "alive": False}
            assert watcher.process.wait(timeout=60) == 0
            print("watcher:", *watcher.events, sep="\n  ")

            # On the launcher's host: the job went by itself, all of it, with exit 0.
            wait_until(lambda: not session_members(handle.pid), 60, "the job's session to end")
            assert job_processes.process_exit_code(handle) == 0, job_log(handle)
            assert "stopping on request (stop requested)" in Path(handle.log_file).read_text()
            client = redis_client(settings, decode_responses=True)
            with contextlib.closing(client):
                key = leases.checkpoint_key(handle.checkpoint_location)
                beat = client.hgetall(job_key("orders", key))
                assert client.get(job_stop_key("orders", key)) is None  # withdrawn
            assert beat[JOB_TOKEN] == str(handle.fencing_token)
            assert beat[JOB_EXIT_CODE] == "0" and beat[JOB_STOPPING] == "stop requested"
            with contextlib.closing(connect(settings)) as connection:
                lease = leases.current(connection, handle.checkpoint_location)
            assert lease is not None and lease.owner is None and lease.pid is None
            assert lease.fencing_token == handle.fencing_token  # released, not fenced
        finally:
            if watcher is not None:
                watcher.close()
            job_processes.stop_process(handle, 5)
            hook.release(handle)


# --- the job heartbeat on the real Redis, without Spark -----------------------------------------


def test_the_beat_script_guards_tokens_relaunches_and_carries_stop_and_fence(
    settings: Settings,
) -> None:
    pipeline = f"crosshost{uuid.uuid4().hex[:8]}"
    lease_key = uuid.uuid4().hex * 2
    client = redis_client(settings, decode_responses=True)
    try:

        def beat(token: int, started: str, **fields: str) -> job_beat.BeatReply:
            return job_beat.write_beat(
                client,
                pipeline,
                token=token,
                lease_key=lease_key,
                started_at=started,
                fields={"beat_at": str(time.time()), **fields},
            )

        first = beat(5, "100.000", exit_code="0")
        assert first.written and first.reporting_token is None and first.request is None
        assert job_beat.read_job_beat(client, pipeline, lease_key)["token"] == "5"
        # An older job never overwrites a newer one's heartbeat.
        older = beat(4, "50.000")
        assert not older.written and older.reporting_token == 5
        assert job_beat.read_job_beat(client, pipeline, lease_key)["started_at"] == "100.000"
        # A relaunch under the same token starts from an empty hash (no earlier exit code).
        again = beat(5, "200.000")
        assert again.written
        fields = job_beat.read_job_beat(client, pipeline, lease_key)
        assert fields["started_at"] == "200.000" and "exit_code" not in fields
        # The stop request comes back with the next beat, and stops only its launch.
        request = job_beat.request_stop(client, pipeline, lease_key, 5, 4100)
        reply = beat(5, "200.000")
        assert reply.request == request == "5 4100"
        assert (
            driver_must_stop(
                5,
                {4100, 4200},
                reporting_token=reply.reporting_token,
                mirror_token=reply.mirror_token,
                request=reply.request,
            )
            == "stop requested"
        )
        job_beat.withdraw_stop(client, pipeline, lease_key, request)
        assert beat(5, "200.000").request is None
        # A newer token in the fence mirror: nothing more is written, and the driver is fenced.
        raise_mirror(client, lease_key, 6)
        fenced = beat(5, "200.000", stopping="x")
        assert not fenced.written and fenced.mirror_token == 6
        assert "stopping" not in job_beat.read_job_beat(client, pipeline, lease_key)
        reason = driver_must_stop(
            5, {1}, reporting_token=fenced.reporting_token, mirror_token=6, request=None
        )
        assert reason is not None and reason.startswith("fenced")
    finally:
        client.delete(
            job_key(pipeline, lease_key), job_stop_key(pipeline, lease_key), fence_key(lease_key)
        )
        client.close()


# A driver whose queries never stop (hung): its heartbeat sees the stop request, asks the job to
# stop, and the job does not. Run with the Spark environment's Python: the heartbeat is Spark-side.
HUNG_DRIVER = """
import sys, time
from spark_jobs.common.query_status import JobHeartbeat
from streamops.config import load_settings
beat = JobHeartbeat.start(
    load_settings(), sys.argv[1], lambda why: print("asked:", why, flush=True),
    exit_after_seconds=float(sys.argv[2]),
)
print("beating" if beat is not None else "no lease", flush=True)
while True:
    time.sleep(0.1)
"""


def test_a_job_that_does_not_stop_on_request_is_fenced_and_exits_by_itself(
    settings: Settings, tmp_path: Path
) -> None:
    pipeline = f"crosshost{uuid.uuid4().hex[:8]}"
    spec = PipelineSpec(
        name=pipeline,
        job_module="spark_jobs.jobs.orders",
        queries=(f"{pipeline}_records",),
        checkpoint_root=str(tmp_path / "checkpoints"),
    )
    location = spec.checkpoint_location(settings.checkpoint_root)
    with contextlib.closing(connect(settings)) as connection:
        lease = leases.acquire(connection, location, OWNER, 300, pipeline=pipeline)
    job_processes.mirror_fence(settings, lease)
    env = {**os.environ, **job_processes.job_environment(pipeline, lease)}
    driver = subprocess.Popen(
        [str(SPARK_PYTHON), "-c", HUNG_DRIVER, pipeline, "6"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert driver.stdout is not None and driver.stdout.readline().strip() == "beating"
        # Launched "on another host": the watcher judges it by its heartbeat alone.
        handle = JobHandle(
            pipeline=pipeline,
            queries=spec.queries,
            checkpoint_location=location,
            owner=OWNER,
            fencing_token=lease.fencing_token,
            host="launcher-elsewhere",
            pid=driver.pid,
            process_start_epoch=psutil.Process(driver.pid).create_time(),
            exit_file=str(tmp_path / f"pid-{driver.pid}.exit"),
            log_file=str(tmp_path / "job.log"),
        )
        assert job_processes.is_remote(handle)
        wait_until(lambda: job_processes.job_is_alive(spec, settings, handle), 20, "its first beat")
        started = time.monotonic()
        assert job_processes.stop_remote(spec, settings, handle, timeout_seconds=4) is None
        assert 4 <= time.monotonic() - started < 15
        assert driver.stdout.readline().strip() == "asked: stop requested"
        # Fenced: the lease's token moved on and nobody holds it; the mirror follows.
        with contextlib.closing(connect(settings)) as connection:
            after = leases.current(connection, location)
        assert after is not None and after.owner is None
        assert after.fencing_token == lease.fencing_token + 1
        client = redis_client(settings, decode_responses=True)
        with contextlib.closing(client):
            assert client.get(fence_key(lease.key)) == str(after.fencing_token)
        # It goes by itself, within its own stop budget of the request.
        assert driver.wait(timeout=30) == 1
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        client = redis_client(settings)
        with contextlib.closing(client):
            client.delete(job_key(pipeline, lease.key), job_stop_key(pipeline, lease.key))
