"""One query per checkpoint: a lease with a fencing token in MariaDB, and the restart state.

Two streaming queries on one checkpoint corrupt it (or double the output), which is what happens
when a restarted worker launches a second application next to a running one. So every launcher
first takes the checkpoint's lease:

- :func:`acquire` grants a free or expired lease (the fencing token grows by one), hands the
  current holder its own lease back (``reattached=True``, same token), and otherwise raises
  :class:`LeaseHeldError` saying who holds it until when.
- :func:`renew` extends it while the job runs; :func:`release` gives it up (the token stays, so it
  never goes backwards); :func:`record_process` notes the launched process so a reattaching
  launcher can find it.
- :func:`revoke` fences a job that a supervisor on another host asked to stop in vain: the token
  moves on and the lease is free.

Every change happens in one transaction on the row locked with ``SELECT … FOR UPDATE``; expiry
is judged by the database's clock, so launchers on different machines agree on it. The row is
created beforehand by a separate ``INSERT IGNORE``: two launchers holding shared locks on an
existing row and then both asking for the exclusive one would deadlock.

The connection passed in is one of :func:`streamops.db.connect` (autocommit off, UTC session).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import mariadb

from streamops.errors import StreamopsError
from streamops.processes import parse_stamp
from streamops.supervision.restart import Phase, RestartState

_LEASE_COLUMNS = (
    "checkpoint_location, owner, fencing_token, acquired_at, expires_at, host, pid, "
    "process_start_epoch, pipeline, process_stamp"
)


class LeaseHeldError(StreamopsError):
    """Another launcher holds the checkpoint's lease; starting a second query is refused."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        where = f" (pid {lease.pid} on {lease.host})" if lease.pid else ""
        super().__init__(
            f"The checkpoint {lease.checkpoint_location} is held by {lease.owner}{where} until "
            f"{_iso(lease.expires_at)} (fencing token {lease.fencing_token}); not starting a "
            "second query on it. Stop that job first, or wait for its lease to expire if its "
            "launcher is gone."
        )


class CorruptRowError(StreamopsError):
    """A lease or restart-state row that cannot be what the supervisor wrote: never trusted."""


class LeaseLostError(StreamopsError):
    """The lease is no longer ours: it expired and another launcher took it, or was released."""


@dataclass(frozen=True)
class Lease:
    checkpoint_location: str
    owner: str | None
    fencing_token: int
    acquired_at: datetime | None = None
    expires_at: datetime | None = None
    host: str | None = None
    pid: int | None = None
    process_start_epoch: float | None = None
    pipeline: str | None = None
    # The process's boot id and start tick (streamops.processes.process_stamp); None for a pod.
    process_stamp: str | None = None
    # True when acquire() found this owner already holding it (a retried task, a new scheduler).
    reattached: bool = False

    @property
    def key(self) -> str:
        return checkpoint_key(self.checkpoint_location)


def checkpoint_key(location: str) -> str:
    """Primary key of a checkpoint: locations are URIs of any length, the key is fixed."""
    return hashlib.sha256(location.rstrip("/").encode("utf-8")).hexdigest()


def acquire(
    connection: mariadb.Connection,
    location: str,
    owner: str,
    ttl_seconds: float,
    *,
    pipeline: str | None = None,
) -> Lease:
    """The lease of ``location`` for ``owner``, or :class:`LeaseHeldError` naming the holder."""
    _ensure_row(connection, location, pipeline)
    with _transaction(connection) as cursor:
        row, live = _locked(cursor, location)
        if row.owner == owner:
            cursor.execute(
                "UPDATE pipeline_leases SET expires_at = UTC_TIMESTAMP(3) + INTERVAL ? "
                "MICROSECOND WHERE checkpoint_key = ?",
                (_micros(ttl_seconds), row.key),
            )
            return replace(_read(cursor, location), reattached=True)
        if row.owner is not None and live:
            raise LeaseHeldError(row)
        cursor.execute(
            "UPDATE pipeline_leases SET owner = ?, fencing_token = fencing_token + 1, "
            "acquired_at = UTC_TIMESTAMP(3), expires_at = UTC_TIMESTAMP(3) + INTERVAL ? "
            "MICROSECOND, host = NULL, pid = NULL, process_start_epoch = NULL, "
            "process_stamp = NULL, pipeline = COALESCE(?, pipeline) WHERE checkpoint_key = ?",
            (owner, _micros(ttl_seconds), pipeline, row.key),
        )
        return _read(cursor, location)


def renew(connection: mariadb.Connection, lease: Lease, ttl_seconds: float) -> Lease:
    """Extend ``lease``; :class:`LeaseLostError` when someone else holds it now.

    An expired lease nobody took over is still ours (same owner and token): renewing it is safe.
    """
    with _transaction(connection) as cursor:
        row = _check_ours(cursor, lease)
        cursor.execute(
            "UPDATE pipeline_leases SET expires_at = UTC_TIMESTAMP(3) + INTERVAL ? MICROSECOND "
            "WHERE checkpoint_key = ?",
            (_micros(ttl_seconds), row.key),
        )
        return _read(cursor, lease.checkpoint_location)


# One launch at a time on this MariaDB: the start gate's check and the launch it allows happen
# under this lock, so two supervisors never both see "nobody is starting" and launch together.
LAUNCH_LOCK = "streamops:launch"


def try_named_lock(connection: mariadb.Connection, name: str) -> bool:
    """Take the session-level named lock ``name`` if it is free; never waits."""
    with _transaction(connection) as cursor:
        cursor.execute("SELECT GET_LOCK(?, 0)", (name,))
        row = cursor.fetchone()
    return bool(row and row[0] == 1)


def release_named_lock(connection: mariadb.Connection, name: str) -> None:
    with _transaction(connection) as cursor:
        cursor.execute("SELECT RELEASE_LOCK(?)", (name,))
        cursor.fetchone()


def record_process(
    connection: mariadb.Connection,
    lease: Lease,
    *,
    host: str,
    pid: int,
    start_epoch: float,
    stamp: str | None = None,
) -> Lease:
    """Note the process launched under ``lease``: pid, start time and the stamp that tells a
    reused pid apart whatever the clock does (:func:`streamops.processes.process_stamp`)."""
    with _transaction(connection) as cursor:
        row = _check_ours(cursor, lease)
        cursor.execute(
            "UPDATE pipeline_leases SET host = ?, pid = ?, process_start_epoch = ?, "
            "process_stamp = ? WHERE checkpoint_key = ?",
            (host, pid, start_epoch, stamp or None, row.key),
        )
        return _read(cursor, lease.checkpoint_location)


def release(connection: mariadb.Connection, lease: Lease) -> bool:
    """Give ``lease`` up; False when it was no longer ours (nothing changed then)."""
    with _transaction(connection) as cursor:
        try:
            row = _check_ours(cursor, lease)
        except LeaseLostError:
            return False
        cursor.execute(
            "UPDATE pipeline_leases SET owner = NULL, expires_at = UTC_TIMESTAMP(3), "
            "host = NULL, pid = NULL, process_start_epoch = NULL, process_stamp = NULL "
            "WHERE checkpoint_key = ?",
            (row.key,),
        )
        return True


def revoke(connection: mariadb.Connection, lease: Lease) -> int:
    """Fence the job launched under ``lease`` and free the checkpoint: the token moves on by one
    (the job's fenced writes are refused from now) and nobody holds the lease. A row whose
    token has moved on already is left alone (the job is fenced by that). Returns the row's
    token afterwards, for the Redis mirror.

    For a supervisor that cannot signal the job (it runs on another host) and asked it to stop
    in vain."""
    with _transaction(connection) as cursor:
        row, _live = _locked(cursor, lease.checkpoint_location)
        if row.fencing_token != lease.fencing_token:
            return row.fencing_token
        cursor.execute(
            "UPDATE pipeline_leases SET owner = NULL, fencing_token = fencing_token + 1, "
            "expires_at = UTC_TIMESTAMP(3), host = NULL, pid = NULL, process_start_epoch = NULL, "
            "process_stamp = NULL WHERE checkpoint_key = ?",
            (row.key,),
        )
        return row.fencing_token + 1


def current(connection: mariadb.Connection, location: str) -> Lease | None:
    """The lease row of ``location`` as it stands (no lock), or None if never leased."""
    with _transaction(connection) as cursor:
        cursor.execute(
            f"SELECT {_LEASE_COLUMNS} FROM pipeline_leases WHERE checkpoint_key = ?",
            (checkpoint_key(location),),
        )
        row = cursor.fetchone()
        return None if row is None else _lease(row)


# --- restart state ------------------------------------------------------------------------------


def load_restart_state(connection: mariadb.Connection, pipeline: str) -> RestartState:
    with _transaction(connection) as cursor:
        cursor.execute("SELECT state FROM pipeline_restart_state WHERE pipeline = ?", (pipeline,))
        row = cursor.fetchone()
    if row is None:
        return RestartState()
    try:
        data = json.loads(row[0])
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        return RestartState.from_dict(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptRowError(
            f"The restart state of {pipeline} in pipeline_restart_state is corrupted "
            f"({exc}; the row holds {str(row[0])[:200]!r}), so it is not trusted: no restart "
            f"decision is made on it. Check who wrote it, then `streamops pipeline reset-breaker "
            f"{pipeline}` writes a clean one (the failure history is lost)."
        ) from exc


def save_restart_state(connection: mariadb.Connection, pipeline: str, state: RestartState) -> None:
    with _transaction(connection) as cursor:
        cursor.execute(
            "INSERT INTO pipeline_restart_state (pipeline, phase, consecutive_failures, "
            "restarts_total, breaker_opened_at, next_restart_at, state) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE phase = VALUES(phase), "
            "consecutive_failures = VALUES(consecutive_failures), "
            "restarts_total = VALUES(restarts_total), "
            "breaker_opened_at = VALUES(breaker_opened_at), "
            "next_restart_at = VALUES(next_restart_at), state = VALUES(state)",
            (
                pipeline,
                state.phase.value,
                state.consecutive_failures,
                state.restarts_total,
                _utc(state.breaker_opened_at) if state.phase is Phase.BREAKER_OPEN else None,
                _utc(state.next_restart_at),
                json.dumps(state.to_dict()),
            ),
        )


# --- internals ----------------------------------------------------------------------------------


@contextmanager
def _transaction(connection: mariadb.Connection) -> Iterator[mariadb.Cursor]:
    cursor = connection.cursor()
    try:
        yield cursor
    except BaseException:
        connection.rollback()
        raise
    else:
        connection.commit()
    finally:
        cursor.close()


def _ensure_row(connection: mariadb.Connection, location: str, pipeline: str | None) -> None:
    with _transaction(connection) as cursor:
        cursor.execute(
            "INSERT IGNORE INTO pipeline_leases (checkpoint_key, checkpoint_location, pipeline) "
            "VALUES (?, ?, ?)",
            (checkpoint_key(location), location.rstrip("/"), pipeline),
        )


def _locked(cursor: mariadb.Cursor, location: str) -> tuple[Lease, bool]:
    cursor.execute(
        f"SELECT {_LEASE_COLUMNS}, expires_at > UTC_TIMESTAMP(3) FROM pipeline_leases "
        "WHERE checkpoint_key = ? FOR UPDATE",
        (checkpoint_key(location),),
    )
    row = cursor.fetchone()
    if row is None:  # pragma: no cover - _ensure_row inserted it; only a concurrent DELETE
        raise LeaseLostError(f"The lease row of {location} vanished while being acquired.")
    return _lease(row[:-1]), bool(row[-1])


def _check_ours(cursor: mariadb.Cursor, lease: Lease) -> Lease:
    row, _live = _locked(cursor, lease.checkpoint_location)
    if row.owner != lease.owner or row.fencing_token != lease.fencing_token:
        holder = f"held by {row.owner}" if row.owner else "released"
        raise LeaseLostError(
            f"The lease of {lease.checkpoint_location} (token {lease.fencing_token}, owner "
            f"{lease.owner}) is no longer ours: it is {holder} with token {row.fencing_token}. "
            "The job started under it must stop: another launcher may run the query now."
        )
    return row


def _read(cursor: mariadb.Cursor, location: str) -> Lease:
    cursor.execute(
        f"SELECT {_LEASE_COLUMNS} FROM pipeline_leases WHERE checkpoint_key = ?",
        (checkpoint_key(location),),
    )
    return _lease(cursor.fetchone())


def _lease(row: tuple[Any, ...]) -> Lease:
    location, owner, token, acquired, expires, host, pid, start_epoch, pipeline, stamp = row
    problems = _lease_problems(token, pid, start_epoch, owner, expires)
    if stamp and parse_stamp(stamp) is None:
        problems.append(f"process_stamp {stamp!r} is not '<boot id>/<start ticks>'")
    if problems:
        raise CorruptRowError(
            f"The lease row of {location} in pipeline_leases is corrupted ({'; '.join(problems)}), "
            "so it is not trusted: no job is reattached to, stopped or launched on it. Check who "
            "wrote it; once no job of the pipeline runs (`streamops pipeline status`), delete the "
            "row and start the pipeline again (the next grant starts a new row at token 1)."
        )
    return Lease(
        checkpoint_location=location,
        owner=owner,
        fencing_token=int(token),
        acquired_at=acquired,
        expires_at=expires,
        host=host,
        pid=None if pid is None else int(pid),
        process_start_epoch=None if start_epoch is None else float(start_epoch),
        pipeline=pipeline,
        process_stamp=stamp or None,
    )


def _lease_problems(token: Any, pid: Any, start_epoch: Any, owner: Any, expires: Any) -> list[str]:
    """Why a lease row cannot be one the supervisor wrote (empty: it can)."""
    problems = []
    # A fresh row (INSERT IGNORE) has token 0 and no owner; every grant adds one.
    if not isinstance(token, int) or token < 0 or (owner and token < 1):
        problems.append(f"fencing_token {token!r} cannot be {'held' if owner else 'a token'}")
    # pid 0: a driver pod in Kubernetes (the host names the pod); start time 0: a pod without
    # its creation time.
    if pid is not None and (not isinstance(pid, int) or pid < 0):
        problems.append(f"pid {pid!r} is not a process id")
    if start_epoch is not None:
        try:
            number = float(start_epoch)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or number < 0:
            problems.append(f"process_start_epoch {start_epoch!r} is not a time")
    if owner and expires is None:
        problems.append(f"owner {owner!r} holds it without an expiry")
    return problems


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _utc(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def _iso(moment: datetime | None) -> str:
    return "(no expiry)" if moment is None else moment.isoformat(timespec="seconds") + "Z"
