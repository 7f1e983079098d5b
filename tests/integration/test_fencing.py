"""Fencing on real MariaDB and Redis: a job's sink writes are refused once its lease was taken over.

The job's lease key and token come from its environment, as the supervisor launches it. The
sink writes here are the real ones (``spark_jobs.sinks.mariadb.upsert_rows``, chunked, one
transaction per chunk), against a scratch table like ``order_revenue_5s``; on Redis, every shape of
write the sinks use, through the sinks' own client (``redis_client``), against the token's mirror.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis

from spark_jobs.common.listener import status_redis
from spark_jobs.sinks.mariadb import upsert_rows
from streamops.config import Settings
from streamops.db import connect as connect_unfenced
from streamops.supervision import lease as leases
from streamops.supervision.fence import Fence, FencedError, FencedRedis, connect, redis_client
from streamops.supervision.job_processes import JOB_LEASE_ENV, JOB_TOKEN_ENV, mirror_fence
from streamops.supervision.redis_fence import fence_key
from tests.integration.support import query

COLUMNS = ("window_start", "currency", "window_end", "order_count", "item_count", "revenue")
KEY = ("window_start", "currency")


def _row(second: int) -> tuple[Any, ...]:
    start = datetime(2031, 1, 1) + timedelta(seconds=5 * second)
    return (start, "EUR", start + timedelta(seconds=5), 1, 1, Decimal(1))


def _acquire(settings: Settings, location: str, owner: str) -> leases.Lease:
    connection = connect_unfenced(settings)
    try:
        return leases.acquire(connection, location, owner, 0.5, pipeline="orders")
    finally:
        connection.close()


@pytest.fixture
def scratch(settings: Settings) -> Any:
    table = f"test_fence_{uuid.uuid4().hex[:8]}"
    query(settings, f"CREATE TABLE {table} LIKE order_revenue_5s")
    yield table
    query(settings, f"DROP TABLE IF EXISTS {table}")


def test_a_taken_over_job_cannot_commit(
    settings: Settings, scratch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = f"/tmp/fence-test/{uuid.uuid4().hex}"
    old = _acquire(settings, location, "airflow:old")
    monkeypatch.setenv(JOB_LEASE_ENV, old.key)
    monkeypatch.setenv(JOB_TOKEN_ENV, str(old.fencing_token))

    # The holder writes.
    assert upsert_rows(settings, scratch, KEY, COLUMNS, [_row(0), _row(1)]) == 2

    # Its lease expires (0.5 s) and a new launcher takes it: the token grows.
    time.sleep(1.0)
    new = _acquire(settings, location, "airflow:new")
    assert new.fencing_token == old.fencing_token + 1

    # The old job's next commit is refused, and nothing of it is kept.
    with pytest.raises(FencedError, match=f"holds fencing token {old.fencing_token}"):
        upsert_rows(settings, scratch, KEY, COLUMNS, [_row(2), _row(3)])
    assert query(settings, f"SELECT COUNT(*) FROM {scratch}")[0][0] == 2

    # The new holder's job writes.
    monkeypatch.setenv(JOB_TOKEN_ENV, str(new.fencing_token))
    assert upsert_rows(settings, scratch, KEY, COLUMNS, [_row(2)]) == 1
    assert query(settings, f"SELECT COUNT(*) FROM {scratch}")[0][0] == 3


def test_a_takeover_waits_for_a_commit_in_flight(
    settings: Settings, scratch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check's shared lock holds the takeover back until the old job's transaction ends,
    so no write of the old job can land after the new job got the lease."""
    location = f"/tmp/fence-test/{uuid.uuid4().hex}"
    old = _acquire(settings, location, "airflow:old")
    monkeypatch.setenv(JOB_LEASE_ENV, old.key)
    monkeypatch.setenv(JOB_TOKEN_ENV, str(old.fencing_token))
    time.sleep(1.0)  # expired: anyone may take it now

    connection = connect(settings)
    cursor = connection.cursor()
    cursor.execute(
        f"INSERT INTO {scratch} ({', '.join(COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)", _row(9)
    )
    fence = Fence.from_env()
    assert fence is not None
    fence.check(cursor)  # the old job's commit, half done: the check holds the row

    took_over_at: list[float] = []

    def take_over() -> None:
        _acquire(settings, location, "airflow:new")
        took_over_at.append(time.monotonic())

    thread = threading.Thread(target=take_over)
    thread.start()
    time.sleep(1.5)
    assert not took_over_at, "the takeover did not wait for the commit in flight"
    committed_at = time.monotonic()
    connection.commit()  # checks again: still ours, so it commits, then releases the row
    thread.join(timeout=30)
    connection.close()
    assert took_over_at and took_over_at[0] >= committed_at
    assert query(settings, f"SELECT COUNT(*) FROM {scratch}")[0][0] == 1


# --- Redis ----------------------------------------------------------------------------------------


@dataclass
class RedisCase:
    settings: Settings
    plain: redis.Redis  # unfenced, decoded: what the tests read back
    key: str
    location: str

    def takeover(self) -> tuple[leases.Lease, leases.Lease]:
        """An old holder's lease, then (expired) a new holder's: their tokens differ by one."""
        old = _acquire(self.settings, self.location, "airflow:old")
        time.sleep(1.0)
        return old, _acquire(self.settings, self.location, "airflow:new")


@pytest.fixture
def case(settings: Settings) -> Iterator[RedisCase]:
    plain = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    location = f"/tmp/fence-test/{uuid.uuid4().hex}"
    found = RedisCase(settings, plain, f"streamops:test:fence:{uuid.uuid4().hex}", location)
    yield found
    plain.delete(found.key, fence_key(leases.checkpoint_key(location)))
    plain.close()


def _fenced_as(monkeypatch: pytest.MonkeyPatch, lease: leases.Lease) -> None:
    monkeypatch.setenv(JOB_LEASE_ENV, lease.key)
    monkeypatch.setenv(JOB_TOKEN_ENV, str(lease.fencing_token))


def _writes(client: Any, key: str, value: str) -> None:
    """The shapes the sinks use: a plain command, a script in a non-transactional pipeline
    (vitals), and a WATCH … MULTI … EXEC of the sink's own (orders' windows)."""
    client.hset(key, "plain", value)
    script = client.register_script("return redis.call('HSET', KEYS[1], 'script', ARGV[1])")
    with client.pipeline(transaction=False) as pipe:
        script(keys=[key], args=[value], client=pipe)
        pipe.expire(key, 600)
        pipe.execute()
    with client.pipeline(transaction=True) as pipe:
        pipe.watch(key)
        pipe.hget(key, "plain")
        pipe.multi()
        pipe.hset(key, "watched", value)
        pipe.execute()


def test_a_taken_over_job_cannot_write_to_redis(
    case: RedisCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _acquire(case.settings, case.location, "airflow:old")
    mirror_fence(case.settings, old)
    _fenced_as(monkeypatch, old)
    old_client = redis_client(case.settings)
    assert isinstance(old_client, FencedRedis)
    _writes(old_client, case.key, "old")
    assert case.plain.hgetall(case.key) == {"plain": "old", "script": "old", "watched": "old"}

    # A new launcher takes the lease and mirrors its token before its job starts.
    time.sleep(1.0)
    new = _acquire(case.settings, case.location, "airflow:new")
    mirror_fence(case.settings, new)
    assert case.plain.get(fence_key(new.key)) == str(new.fencing_token)

    # Every shape of write by the old job is refused, and none of it lands.
    for write in (
        lambda: old_client.hset(case.key, "plain", "late"),
        lambda: _writes(old_client, case.key, "late"),
        lambda: old_client.publish("streamops:test:channel", "late"),
    ):
        with pytest.raises(FencedError, match=f"holds fencing token {old.fencing_token}"):
            write()
    assert case.plain.hgetall(case.key) == {"plain": "old", "script": "old", "watched": "old"}
    # Reads are not fenced.
    assert old_client.hget(case.key, "plain") == b"old"

    # The new holder's job writes.
    _fenced_as(monkeypatch, new)
    _writes(redis_client(case.settings), case.key, "new")
    assert case.plain.hgetall(case.key) == {"plain": "new", "script": "new", "watched": "new"}


def test_an_old_job_s_heartbeats_cannot_mask_the_new_job(
    case: RedisCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listener and the driver's status reporter write each query's hash through
    ``status_redis``: after a takeover, an old job still running cannot refresh the heartbeat
    that the supervisor reads for the new job."""
    old, new = case.takeover()
    mirror_fence(case.settings, old)
    _fenced_as(monkeypatch, old)
    old_status = status_redis(case.settings)

    def heartbeat(client: redis.Redis, at: str) -> None:
        # The listener's shape: HSET, EXPIRE and PUBLISH in one MULTI/EXEC.
        with client.pipeline(transaction=True) as pipe:
            pipe.hset(case.key, mapping={"state": "running", "heartbeat_at": at})
            pipe.expire(case.key, 600)
            pipe.publish("streamops:test:channel", at)
            pipe.execute()

    heartbeat(old_status, "1.000")
    mirror_fence(case.settings, new)
    _fenced_as(monkeypatch, new)
    heartbeat(status_redis(case.settings), "2.000")
    with pytest.raises(FencedError, match=f"holds fencing token {old.fencing_token}"):
        heartbeat(old_status, "3.000")
    assert case.plain.hget(case.key, "heartbeat_at") == "2.000"


def test_a_takeover_between_watch_and_exec_refuses_the_exec(
    case: RedisCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _acquire(case.settings, case.location, "airflow:old")
    mirror_fence(case.settings, old)
    _fenced_as(monkeypatch, old)
    with redis_client(case.settings).pipeline() as pipe:
        pipe.multi()  # armed: the mirror is watched and was the old job's token
        pipe.set(case.key, "old")
        time.sleep(1.0)
        new = _acquire(case.settings, case.location, "airflow:new")
        mirror_fence(case.settings, new)
        with pytest.raises(FencedError, match=f"now has {new.fencing_token}"):
            pipe.execute()
    assert case.plain.get(case.key) is None


def test_a_lost_mirror_is_restored_from_the_lease_and_still_fences(
    case: RedisCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis lost its data (or was away at the launch): the mirror is missing. The lease holder's
    job raises it after MariaDB confirms its token; an older job is refused by MariaDB's word."""
    old, new = case.takeover()
    assert case.plain.get(fence_key(new.key)) is None

    _fenced_as(monkeypatch, old)
    with pytest.raises(FencedError, match=f"lease now has {new.fencing_token}"):
        redis_client(case.settings).set(case.key, "old")
    assert case.plain.get(fence_key(new.key)) is None, "a refused job must not touch the mirror"

    _fenced_as(monkeypatch, new)
    redis_client(case.settings).set(case.key, "new")
    assert case.plain.get(case.key) == "new"
    assert case.plain.get(fence_key(new.key)) == str(new.fencing_token)


def test_a_refused_pipeline_keeps_nothing_and_a_write_before_multi_is_refused(
    case: RedisCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = case.takeover()
    mirror_fence(case.settings, new)

    _fenced_as(monkeypatch, old)
    pipe = redis_client(case.settings).pipeline(transaction=False)  # as the vitals sink uses it
    pipe.set(case.key, "old")
    with pytest.raises(FencedError):
        pipe.execute()
    # Nothing queued, watched or held: running it again sends nothing stale.
    assert pipe.command_stack == [] and pipe.connection is None and not pipe.watching
    assert pipe.execute() == []
    assert case.plain.get(case.key) is None

    # A write between the caller's own WATCH and MULTI would run outside any fence: refused.
    _fenced_as(monkeypatch, new)
    with redis_client(case.settings).pipeline() as watched:
        watched.watch(case.key)
        assert watched.get(case.key) is None  # reads are fine
        with pytest.raises(redis.RedisError, match="would not be fenced"):
            watched.set(case.key, "new")
        watched.multi()
        watched.set(case.key, "new")
        watched.execute()
    assert case.plain.get(case.key) == "new"
