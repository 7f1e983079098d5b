"""Leases on real MariaDB: one holder per checkpoint, fencing tokens, expiry, reattach."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing

import mariadb
import pytest

from streamops.config import Settings
from streamops.db import connect
from streamops.supervision import lease as leases
from streamops.supervision.restart import Phase, RestartState


@pytest.fixture
def connection(settings: Settings) -> Iterator[mariadb.Connection]:
    with closing(connect(settings)) as conn:
        yield conn


@pytest.fixture
def location() -> str:
    return f"/tmp/test-checkpoints/{uuid.uuid4().hex}/orders"


def test_two_concurrent_acquirers_one_wins(settings: Settings, location: str) -> None:
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def contend(owner: str) -> None:
        with closing(connect(settings)) as conn:
            barrier.wait()
            try:
                results[owner] = leases.acquire(conn, location, owner, 60, pipeline="orders")
            except leases.LeaseHeldError as held:
                results[owner] = held

    threads = [threading.Thread(target=contend, args=(f"launcher-{i}",)) for i in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    winners = [r for r in results.values() if isinstance(r, leases.Lease)]
    losers = [r for r in results.values() if isinstance(r, leases.LeaseHeldError)]
    assert len(winners) == 1 and len(losers) == 1, results
    winner = winners[0]
    assert winner.fencing_token == 1 and not winner.reattached
    message = str(losers[0])
    assert f"held by {winner.owner}" in message and " until " in message
    assert losers[0].lease.owner == winner.owner


def test_fencing_token_grows_with_every_new_holder(
    connection: mariadb.Connection, location: str
) -> None:
    first = leases.acquire(connection, location, "a", 60)
    assert leases.release(connection, first)
    second = leases.acquire(connection, location, "b", 60)
    assert second.fencing_token == first.fencing_token + 1
    assert leases.release(connection, second)
    third = leases.acquire(connection, location, "a", 60)
    assert third.fencing_token == second.fencing_token + 1
    # The old grant of "a" is not the current one: its token gives it away.
    assert not leases.release(connection, first)
    assert leases.current(connection, location).owner == "a"  # type: ignore[union-attr]


def test_expired_lease_is_taken_over_and_the_old_holder_lost_it(
    connection: mariadb.Connection, location: str
) -> None:
    old = leases.acquire(connection, location, "crashed-scheduler", 1)
    with pytest.raises(leases.LeaseHeldError):
        leases.acquire(connection, location, "new-scheduler", 60)
    time.sleep(1.3)
    new = leases.acquire(connection, location, "new-scheduler", 60)
    assert new.owner == "new-scheduler"
    assert new.fencing_token == old.fencing_token + 1
    with pytest.raises(leases.LeaseLostError, match="held by new-scheduler"):
        leases.renew(connection, old, 60)
    with pytest.raises(leases.LeaseLostError):
        leases.record_process(connection, old, host="h", pid=1, start_epoch=1.0)
    assert not leases.release(connection, old)


def test_same_owner_reattaches_with_the_same_token(
    connection: mariadb.Connection, location: str
) -> None:
    lease = leases.acquire(connection, location, "airflow:dag.task", 5, pipeline="orders")
    lease = leases.record_process(connection, lease, host="worker-1", pid=4321, start_epoch=12.5)
    again = leases.acquire(connection, location, "airflow:dag.task", 60)
    assert again.reattached
    assert again.fencing_token == lease.fencing_token
    assert (again.host, again.pid, again.process_start_epoch) == ("worker-1", 4321, 12.5)
    assert again.expires_at is not None and lease.expires_at is not None
    assert again.expires_at > lease.expires_at
    renewed = leases.renew(connection, again, 120)
    assert renewed.expires_at is not None and renewed.expires_at > again.expires_at
    assert leases.release(connection, renewed)
    released = leases.current(connection, location)
    assert released is not None and released.owner is None and released.pid is None
    assert released.fencing_token == lease.fencing_token


def test_restart_state_round_trips(connection: mariadb.Connection) -> None:
    pipeline = f"t_{uuid.uuid4().hex[:12]}"
    assert leases.load_restart_state(connection, pipeline) == RestartState()
    state = RestartState(
        phase=Phase.BREAKER_OPEN,
        consecutive_failures=5,
        failure_times=(1.0, 2.0, 3.0, 4.0, 5.5),
        breaker_opened_at=1_764_000_000.5,
        last_failure_reason="failed: boom",
        restarts_total=4,
    )
    leases.save_restart_state(connection, pipeline, state)
    assert leases.load_restart_state(connection, pipeline) == state
    leases.save_restart_state(connection, pipeline, RestartState(restarts_total=4))
    assert leases.load_restart_state(connection, pipeline).phase is Phase.STOPPED


def test_a_corrupted_lease_row_is_reported_never_trusted(
    connection: mariadb.Connection, location: str
) -> None:
    lease = leases.acquire(connection, location, "airflow:a.supervise", 60, pipeline="orders")
    leases.record_process(connection, lease, host="h", pid=4242, start_epoch=1.5)
    cursor = connection.cursor()
    cursor.execute(
        "UPDATE pipeline_leases SET pid = -7, process_start_epoch = -1 WHERE checkpoint_key = ?",
        (leases.checkpoint_key(location),),
    )
    connection.commit()
    with pytest.raises(leases.CorruptRowError, match=r"corrupted \(pid -7 is not a process id"):
        leases.current(connection, location)
    # Nobody acquires on it either: no launch next to a job the row may no longer describe.
    with pytest.raises(leases.CorruptRowError, match="not trusted"):
        leases.acquire(connection, location, "airflow:b.supervise", 60, pipeline="orders")
    cursor.execute(
        "UPDATE pipeline_leases SET pid = 4242, process_start_epoch = 1.5, fencing_token = 0 "
        "WHERE checkpoint_key = ?",
        (leases.checkpoint_key(location),),
    )
    connection.commit()
    with pytest.raises(leases.CorruptRowError, match="fencing_token 0 cannot be held"):
        leases.current(connection, location)


@pytest.mark.parametrize(
    "stored", ['{"phase": "exploded"}', "[1, 2]", '{"failure_times": ["x"]}', '"text"']
)
def test_a_corrupted_restart_state_is_reported_and_a_reset_replaces_it(
    connection: mariadb.Connection, settings: Settings, stored: str
) -> None:
    from streamops_airflow.hooks import SparkJobHook

    from streamops.supervision.spec import parse_specs

    pipeline = f"t_{uuid.uuid4().hex[:12]}"
    leases.save_restart_state(connection, pipeline, RestartState(restarts_total=2))
    cursor = connection.cursor()
    cursor.execute(
        "UPDATE pipeline_restart_state SET state = ? WHERE pipeline = ?", (stored, pipeline)
    )
    connection.commit()
    with pytest.raises(leases.CorruptRowError, match=f"reset-breaker {pipeline}"):
        leases.load_restart_state(connection, pipeline)
    spec = parse_specs(
        {"pipelines": {pipeline: {"job_module": "spark_jobs.jobs.orders", "queries": ["q"]}}}
    )[pipeline]
    assert SparkJobHook(spec, settings).reset_breaker() == RestartState()
    assert leases.load_restart_state(connection, pipeline) == RestartState()
