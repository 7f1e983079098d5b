"""What the integration tests share: MariaDB queries, bounded waits, killing a job's process
group, and emptying the orders pipeline's outputs."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis

from streamops import db
from streamops.airflow_rest import AirflowRest
from streamops.config import Settings
from streamops.topics import admin_client, ensure_topics


def query(settings: Settings, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` (none for a statement without a result), committed."""
    return db.execute(settings, sql, params)


def execute(settings: Settings, sql: str, params: tuple[Any, ...] = ()) -> None:
    db.execute(settings, sql, params)


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    job: subprocess.Popen[Any] | None = None,
    interval: float = 0.5,
) -> None:
    """Poll ``predicate`` until it is true, at most ``timeout`` seconds; a ``job`` that exits
    meanwhile fails the wait at once (its exit code says more than the timeout would)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if job is not None and job.poll() is not None:
            raise AssertionError(f"the job exited ({job.returncode}) while waiting for {what}")
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def kill_group(process: subprocess.Popen[Any]) -> None:
    """SIGKILL a job started with ``start_new_session=True`` and its children (the JVM)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def empty_orders_outputs(settings: Settings) -> None:
    """No rows in the orders pipeline's tables and no ``streamops:orders:*`` keys in Redis."""
    for table in ("orders", "order_revenue_5s", "quarantine"):
        execute(settings, f"DELETE FROM {table}")
    client = redis.Redis.from_url(settings.redis_url)
    try:
        for key in client.scan_iter("streamops:orders:*"):
            client.delete(key)
    finally:
        client.close()


@contextlib.contextmanager
def own_topic(settings: Settings, name: str) -> Iterator[str]:
    """A topic of a test's own, made as the contract's are (partitions, LogAppendTime), deleted
    after: the shared input topics hold every earlier test's records, which a job on a new
    checkpoint would read first, and records deleted there would be missing for later tests."""
    assert ensure_topics(settings, (name,)) == [name]
    try:
        yield name
    finally:
        admin = admin_client(settings)  # held: a collected client cancels its futures
        for future in admin.delete_topics([name], operation_timeout=30).values():
            future.result(60)


def end_supervision(api: AirflowRest, dag_id: str) -> None:
    """Fail the supervision DAG's active runs and pause it, as an operator stops a pipeline. For
    teardowns: a failure is printed and the teardown goes on (it stops the job itself after)."""
    try:
        for run in api.active_runs(dag_id):
            api.fail_run(dag_id, run["dag_run_id"])
        api.set_paused(dag_id, True)
    except Exception as exc:
        print(f"teardown: {dag_id}: {exc}")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now (the kernel's pick), for a test's own
    services beside the shared stack."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
