"""Fencing: a job whose checkpoint lease was taken over cannot commit to MariaDB any more.

The supervisor (or ``streamops run``) launches a job with its lease's row key and fencing token
in the environment (``streamops.pipelines.jobs.job_environment``; the JVM, the driver and the
Python workers all inherit it). Every sink connection of the job comes from :func:`connect`
here: its ``commit()`` first reads the lease row's token with a shared lock, in the same
transaction, and commits only when the token is still the job's. A takeover (``acquire`` updates
that row) waits for a running commit and is seen by every later one: an old job's writes are
refused with :class:`FencedError` after the new holder got the lease, so its batch fails, the
query fails, and the job exits; nothing it did not commit before is kept.

A job started without the variables (tests and benchmarks that run a job module directly) is not
fenced. Redis writes are not fenced yet (docs/adr/0003-supervision.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, cast

import mariadb

from streamops.config import Settings
from streamops.db import connect as connect_unfenced
from streamops.pipelines.jobs import JOB_LEASE_ENV, JOB_TOKEN_ENV

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
            raise FencedError(
                f"fenced: this job holds fencing token {self.token}, but the checkpoint's lease "
                f"now has {current if current is not None else 'no row'}; a newer job owns the "
                "checkpoint, so this job's writes are refused and it stops."
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
