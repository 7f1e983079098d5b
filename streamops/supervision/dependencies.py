"""Outages apart from crashes: is a job's failure the fault of Kafka, MariaDB, Redis or the disk?

A job that dies because MariaDB is down has nothing wrong with it: relaunching it into the outage
only fails again, and counting those failures would open every pipeline's breaker during one
database restart. The supervisor therefore asks two questions when a job fails:

1. :func:`probe`: is a dependency down *now*? Then it waits for that dependency's health (with
   backoff) and relaunches once it is back; the failure is not counted toward the breaker.
2. :func:`causes_in`: does the failure's own text (the query's exception, the end of the job's
   log) name a dependency? An outage shorter than the supervisor's reaction is over by the time
   it probes, yet it was still the cause.

Each probe reaches its service over the network with the application's credentials and a short
timeout, as ``streamops status`` does; a missing topic or an old schema is not an outage (those
are the breaker's business: waiting would never end).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from streamops.clients import redis_client
from streamops.config import Settings
from streamops.disk import full_below_bytes, human_bytes, local_path

DEPENDENCIES = ("kafka", "mariadb", "redis", "disk")
PROBE_TIMEOUT_SECONDS = 5.0
# How much of the end of a job's log is read for the cause of its failure.
LOG_TAIL_BYTES = 64 * 1024
# The line the launcher writes into the job's log before each launch: relaunches under one lease
# append to one log, and only the latest launch's lines tell why it failed.
LAUNCH_MARK = "=== streamops: launch"

# Failure texts that name a dependency outage, per dependency. Specific on purpose: the job's
# log also holds warnings from before the failure, and a crash of the job's own making must
# still count toward the breaker.
CAUSE_PATTERNS: Mapping[str, tuple[re.Pattern[str], ...]] = {
    "mariadb": tuple(
        re.compile(p, re.IGNORECASE)
        for p in (
            r"Can't connect to (local )?(MySQL |MariaDB )?server",
            r"Lost connection to (MySQL |MariaDB )?server",
            r"(MySQL |MariaDB )?server has gone away",
        )
    ),
    "redis": tuple(
        re.compile(p)
        for p in (
            r"redis\.exceptions\.(ConnectionError|TimeoutError|BusyLoadingError)",
            r"Error \d+ connecting to [\w.\-]+:\d+",
        )
    ),
    "kafka": tuple(
        re.compile(p)
        for p in (
            r"Timed out waiting for a node assignment",
            r"org\.apache\.kafka\.common\.errors\.(TimeoutException|DisconnectException)",
            r"Timeout of \d+ms expired before the position for partition",
        )
    ),
    "disk": tuple(
        re.compile(p, re.IGNORECASE)
        for p in (r"No space left on device", r"Disk quota exceeded", r"\bENOSPC\b")
    ),
}


@dataclass(frozen=True)
class Outage:
    """A dependency found down, and what its probe said."""

    dependency: str
    detail: str

    def __str__(self) -> str:
        return f"{self.dependency}: {self.detail}"


def probe_kafka(settings: Settings) -> None:
    from streamops.topics import admin_client

    metadata = admin_client(settings).list_topics(timeout=PROBE_TIMEOUT_SECONDS)
    if not metadata.brokers:
        raise ConnectionError(f"no broker answers at {settings.kafka_bootstrap_servers}")


def probe_mariadb(settings: Settings) -> None:
    from streamops.db import connect

    connection = connect(settings)
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT 1")
        cursor.fetchall()
    finally:
        connection.close()


def probe_redis(settings: Settings) -> None:

    client = redis_client(settings, timeout_seconds=PROBE_TIMEOUT_SECONDS)
    try:
        client.ping()
    finally:
        client.close()


def disk_paths(settings: Settings) -> list[Path]:
    """Where jobs write locally: the state folder, and the checkpoints and the Parquet archive
    when they are paths."""
    paths = [settings.state_dir]
    for root in (settings.checkpoint_root, settings.archive_root):
        path = local_path(str(root))
        if path is not None:
            paths.append(path)
    return paths


def probe_disk(settings: Settings, min_free_bytes: int | None = None) -> None:
    """Down while any filesystem the jobs write is full: below ``min_free_bytes`` free, by
    default the rule a job's start applies too (:func:`streamops.disk.full_below_bytes`), so a
    relaunch after the wait is never refused for the same disk."""
    for path in disk_paths(settings):
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is None:
            continue
        usage = shutil.disk_usage(existing)
        needed = full_below_bytes(usage.total) if min_free_bytes is None else min_free_bytes
        if usage.free < needed:
            raise OSError(
                f"{human_bytes(usage.free)} free on {existing} (at least "
                f"{human_bytes(needed)} needed)"
            )


PROBES: Mapping[str, Callable[[Settings], None]] = {
    "kafka": probe_kafka,
    "mariadb": probe_mariadb,
    "redis": probe_redis,
    "disk": probe_disk,
}


def probe(
    settings: Settings,
    dependencies: Iterable[str] = DEPENDENCIES,
    probes: Mapping[str, Callable[[Settings], None]] = PROBES,
) -> list[Outage]:
    """The dependencies that are down now (empty: all answer)."""
    outages: list[Outage] = []
    for name in dependencies:
        try:
            probes[name](settings)
        except Exception as exc:  # any way of not answering is an outage of that dependency
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            outages.append(Outage(name, first_line[:300]))
    return outages


def causes_in(text: str) -> list[str]:
    """The dependencies whose outage the failure text names, in :data:`DEPENDENCIES` order."""
    return [name for name in DEPENDENCIES if any(p.search(text) for p in CAUSE_PATTERNS[name])]


def log_tail(path: str | Path | None, size: int = LOG_TAIL_BYTES) -> str:
    """The last ``size`` bytes of a job's log ('' when there is none)."""
    if not path:
        return ""
    try:
        with open(path, "rb") as stream:
            stream.seek(0, 2)
            stream.seek(max(0, stream.tell() - size))
            return stream.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def since_launch(text: str) -> str:
    """The part of a log's text after its last launch mark (all of it when there is none)."""
    at = text.rfind(LAUNCH_MARK)
    return text if at < 0 else text[at:]
