"""Fencing: a job whose checkpoint lease was taken over cannot commit to MariaDB any more.

The supervisor (or ``streamops run``) launches a job with its lease's row key and fencing token
in the environment (``streamops.supervision.job_processes.job_environment``; the JVM, the
driver and the Python workers all inherit it). Every sink connection of the job comes from
:func:`connect` here: its ``commit()`` first reads the lease row's token with a shared lock, in
the same transaction, and commits only when the token is still the job's. A takeover
(``acquire`` updates that row) waits for a running commit and is seen by every later one: an old
job's writes are refused with :class:`FencedError` after the new holder got the lease, so its
batch fails, the query fails, and the job exits; nothing it did not commit before is kept.

Redis: every write of a job's Redis client from :func:`redis_client` runs in a MULTI/EXEC that
WATCHes the lease token's mirror (``streamops.supervision.redis_fence``) and checks it first: a
newer token there refuses the write with :class:`FencedError`, and a takeover between the check
and EXEC aborts the EXEC (then the check refuses). Reads are not fenced. A mirror behind the
job's token (never raised, lost with Redis' data) is raised by the job once MariaDB's lease row
confirms the token is still the lease's.

A job started without the variables (tests and benchmarks that run a job module directly) is not
fenced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, cast

import mariadb
import redis
from redis.client import Pipeline

from streamops.config import Settings
from streamops.db import connect as connect_unfenced
from streamops.supervision.job_processes import JOB_LEASE_ENV, JOB_TOKEN_ENV
from streamops.supervision.redis_fence import fence_key, parse_token, raise_mirror

_CHECK = "SELECT fencing_token FROM pipeline_leases WHERE checkpoint_key = ? LOCK IN SHARE MODE"


class FencedError(RuntimeError):
    """The job's lease belongs to a newer job: this job must not write and must stop."""


@dataclass(frozen=True)
class Fence:
    lease_key: str
    token: int

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Fence | None:
        """The job's fence; None when it was not launched under a lease. A malformed value is
        an error, never an unfenced job."""
        env = dict(os.environ) if env is None else env
        key, token = env.get(JOB_LEASE_ENV, ""), env.get(JOB_TOKEN_ENV, "")
        if not key and not token:
            return None
        if len(key) != 64 or not token.isdigit():
            raise ValueError(
                f"{JOB_LEASE_ENV}={key!r} / {JOB_TOKEN_ENV}={token!r}: expected the lease row's "
                "64-character key and a whole-number fencing token (both are set by the "
                "launcher; unset both to run a job without a lease)."
            )
        return cls(key, int(token))

    def check(self, cursor: Any) -> None:
        """In the caller's transaction: the lease row still carries our token (shared lock)."""
        cursor.execute(_CHECK, (self.lease_key,))
        row = cursor.fetchone()
        current = None if row is None else int(row[0])
        if current != self.token:
            raise self.refused(current if current is not None else "no row", "lease")

    def refused(self, current: object, where: str) -> FencedError:
        return FencedError(
            f"fenced: this job holds fencing token {self.token}, but the checkpoint's {where} "
            f"now has {current}; a newer job owns the checkpoint, so this job's writes are "
            "refused and it stops."
        )


class FencedConnection:
    """A MariaDB connection whose ``commit()`` checks the fence first (everything else is the
    connection's own)."""

    def __init__(self, connection: mariadb.Connection, fence: Fence) -> None:
        self._connection = connection
        self._fence = fence

    def commit(self) -> None:
        cursor = self._connection.cursor()
        try:
            self._fence.check(cursor)
        except BaseException:
            self._connection.rollback()
            raise
        finally:
            cursor.close()
        self._connection.commit()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


def connect(settings: Settings) -> mariadb.Connection:
    """A sink connection (``streamops.db.connect``), fenced when the job runs under a lease."""
    connection = connect_unfenced(settings)
    fence = Fence.from_env()
    if fence is None:
        return connection
    return cast(mariadb.Connection, FencedConnection(connection, fence))


# --- Redis --------------------------------------------------------------------------------------

# Commands that only read: never fenced (the first word, upper case).
_READS = frozenset(
    [
        "GET",
        "MGET",
        "HGET",
        "HGETALL",
        "HMGET",
        "HEXISTS",
        "HLEN",
        "HKEYS",
        "HVALS",
        "HSTRLEN",
        "ZRANGE",
        "ZRANGEBYSCORE",
        "ZREVRANGE",
        "ZREVRANGEBYSCORE",
        "ZSCORE",
        "ZMSCORE",
        "ZCARD",
        "ZCOUNT",
        "ZRANK",
        "ZREVRANK",
        "EXISTS",
        "TTL",
        "PTTL",
        "TYPE",
        "STRLEN",
        "LRANGE",
        "LLEN",
        "LINDEX",
        "SMEMBERS",
        "SISMEMBER",
        "SCARD",
        "XRANGE",
        "XREVRANGE",
        "XLEN",
        "XINFO",
        "SCAN",
        "HSCAN",
        "ZSCAN",
        "SSCAN",
        "KEYS",
        "INFO",
        "PING",
        "ECHO",
        "TIME",
        "DBSIZE",
        "SCRIPT",
        "WATCH",
        "UNWATCH",
        "CLIENT",
        "MEMORY",
    ]
)


def _is_read(args: tuple[Any, ...]) -> bool:
    return str(args[0]).split()[0].upper() in _READS


class FencedRedis(redis.Redis):
    """A Redis client whose every write is checked against the lease token's mirror."""

    fence: Fence
    settings: Settings

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> FencedPipeline:
        # Always a transaction: a WATCH means nothing without MULTI/EXEC.
        return FencedPipeline(self, shard_hint)

    def client(self) -> FencedRedis:
        other = cast(FencedRedis, super().client())
        other.fence, other.settings = self.fence, self.settings
        return other

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if _is_read(args):
            return super().execute_command(*args, **options)
        with self.pipeline() as pipe:
            pipe.execute_command(*args, **options)
            return pipe.execute()[0]

    def plain(self) -> redis.Redis:
        """An unfenced client on the same connections (the fence's own reads and raises)."""
        return redis.Redis(connection_pool=self.connection_pool)

    def catch_up(self, mirrored: int | None) -> None:
        """The mirror is behind our token: raise it if MariaDB's lease row still has our token."""
        connection = connect_unfenced(self.settings)
        try:
            cursor = connection.cursor()
            cursor.execute(
                "SELECT fencing_token FROM pipeline_leases WHERE checkpoint_key = ?",
                (self.fence.lease_key,),
            )
            row = cursor.fetchone()
            connection.rollback()
        finally:
            connection.close()
        current = None if row is None else int(row[0])
        if current != self.fence.token:
            raise self.fence.refused(current if current is not None else "no row", "lease")
        raised = raise_mirror(self.plain(), self.fence.lease_key, self.fence.token)
        if raised != self.fence.token:
            raise self.fence.refused(raised, "Redis fence")

    def mirrored(self) -> int | None:
        return parse_token(self.plain().get(fence_key(self.fence.lease_key)))


# Attempts of a fenced transaction that only the fence watches, when its connection drops
# (redis-py turns a dropped connection under WATCH into a WatchError and does not retry it).
FENCED_ATTEMPTS = 3


class FencedPipeline(Pipeline):
    """A MULTI/EXEC that WATCHes the fence's mirror and checks it before MULTI (or, for a
    pipeline without WATCH of its own, at ``execute``). A pipeline of reads only is not fenced;
    a write between the caller's own WATCH and MULTI is refused (it would run unfenced)."""

    def __init__(self, client: FencedRedis, shard_hint: Any = None) -> None:
        super().__init__(client.connection_pool, client.response_callbacks, True, shard_hint)
        self._client = client
        self._armed = False
        self._caller_watched = False

    def _arm(self) -> None:
        fence, key = self._client.fence, fence_key(self._client.fence.lease_key)
        mirrored = self._client.mirrored()
        if mirrored is not None and mirrored > fence.token:
            raise fence.refused(mirrored, "Redis fence")
        if mirrored != fence.token:
            self._client.catch_up(mirrored)
        self.immediate_execute_command("WATCH", key)
        self.watching = True
        current = parse_token(self.immediate_execute_command("GET", key))
        if current != fence.token:
            raise fence.refused(current, "Redis fence")
        self._armed = True

    def _arm_or_reset(self) -> None:
        try:
            self._arm()
        except BaseException:
            self.reset()  # no WATCH, no queued commands, no connection kept
            raise

    def watch(self, *names: Any) -> Any:
        self._caller_watched = True
        return super().watch(*names)

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self.watching and not self.explicit_transaction and not _is_read(args):
            raise redis.RedisError(
                f"{args[0]} between WATCH and MULTI would not be fenced; call multi() first"
            )
        return super().execute_command(*args, **kwargs)

    def multi(self) -> None:
        if not self._armed:
            self._arm_or_reset()
        super().multi()

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        if not self._armed and not self.explicit_transaction:
            if all(_is_read(args) for args, _ in self.command_stack):
                return super().execute(raise_on_error)
            stack, scripts = list(self.command_stack), set(self.scripts)
            caller_watched = self._caller_watched
            for attempt in range(1, FENCED_ATTEMPTS + 1):
                self._arm_or_reset()
                try:
                    return super().execute(raise_on_error)
                except redis.WatchError:
                    self._refuse_if_fenced()
                    if caller_watched or attempt == FENCED_ATTEMPTS:
                        raise
                    # Only the fence was watched and it still holds: the connection dropped.
                    self.command_stack, self.scripts = list(stack), set(scripts)
        try:
            return super().execute(raise_on_error)
        except redis.WatchError:
            # The mirror or one of the caller's own watched keys changed: which one decides.
            self._refuse_if_fenced()
            raise

    def _refuse_if_fenced(self) -> None:
        current = self._client.mirrored()
        if current != self._client.fence.token:
            raise self._client.fence.refused(current, "Redis fence") from None

    def reset(self) -> None:  # type: ignore[override]  # Pipeline.reset, not the command
        super().reset()
        self._armed = False
        self._caller_watched = False


def redis_client(settings: Settings, **kwargs: Any) -> redis.Redis:
    """A sink's Redis client (``redis.Redis.from_url(settings.redis_url, **kwargs)``), fenced
    when the job runs under a lease."""
    fence = Fence.from_env()
    if fence is None:
        return redis.Redis.from_url(settings.redis_url, **kwargs)
    client = cast(FencedRedis, FencedRedis.from_url(settings.redis_url, **kwargs))
    client.fence, client.settings = fence, settings
    return client
