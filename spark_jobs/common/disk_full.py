"""A full disk stops a job cleanly, with its own exit code, instead of as a crash.

Where Spark meets a full filesystem (tried on tmpfs, PySpark 4.2): the Parquet archive's tasks fail
with ``[TASK_WRITE_FAILED]`` caused by Hadoop's ``FSError: java.io.IOException: No space left on
device``; the state store's commit with ``[CANNOT_WRITE_STATE_STORE.CANNOT_COMMIT]``; the offset
and commit logs with the same ``IOException``. Each reaches the driver as the query's
``StreamingQueryException``, and from a ``foreachBatch`` writer as a Py4J error whose text holds
the Python traceback and, inside it, the Java causes. The checkpoint stays consistent: Spark
writes each offsets, commits and state file to a hidden temporary file and renames it into
place, so a write cut short leaves at most a hidden ``.….tmp`` file (empty ones are left by the
state store), never a partial version; the batch that failed is replayed on the next start, and
every sink is idempotent per batch.

So :func:`disk_full_cause` reads every text the failure carries (the Python chain, a captured
Java exception's description and stack trace, and each Java cause and suppressed exception
behind it) for the patterns the supervisor reads too (``streamops.supervision.dependencies``,
``disk``). The runner then stops the job's other queries, logs one line starting
``streamops: disk full:`` that names each filesystem the job writes with its free space, and
exits with ``EXIT_DISK_FULL`` (74). A job also does not start on a filesystem that is already full
(:func:`startup_disk_full`), with the same line and code: the supervisor waits for free space
rather than relaunch into it (docs/adr/0005-full-disk.md).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamops.config import Settings
from streamops.disk import full_below_bytes, human_bytes, is_full, local_path, measured_path
from streamops.errors import EXIT_DISK_FULL
from streamops.supervision.dependencies import CAUSE_PATTERNS

# Java causes and suppressed exceptions read behind one failure, at most (a cycle ends there).
MAX_JAVA_THROWABLES = 64
RUNBOOK = "docs/operations.md#a-full-disk"


def exception_texts(error: BaseException) -> Iterator[str]:
    """Every text ``error`` carries: each exception of its Python chain (``__cause__``,
    ``__context__``, PySpark's ``_cause``), a captured Java exception's description and JVM
    stack trace, and every Java throwable behind it, causes and suppressed ones included."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield f"{type(current).__name__}: {current}"
        for attribute in ("_desc", "_stackTrace"):  # pyspark's CapturedException
            value = getattr(current, attribute, None)
            if isinstance(value, str):
                yield value
        # PySpark keeps the Java throwable as ``_origin``, Py4J as ``java_exception``.
        for attribute in ("_origin", "java_exception"):
            throwable = getattr(current, attribute, None)
            if throwable is not None:
                yield from _java_texts(throwable)
        for following in (current.__cause__, current.__context__, getattr(current, "_cause", None)):
            if isinstance(following, BaseException):
                pending.append(following)


def _java_texts(throwable: Any) -> Iterator[str]:
    pending = [throwable]
    read = 0
    while pending and read < MAX_JAVA_THROWABLES:
        current = pending.pop()
        read += 1
        try:
            text = str(current.toString())
            cause = current.getCause()
            suppressed = list(current.getSuppressed() or [])
        except Exception:  # not a Java throwable, or the gateway is gone: nothing more to read
            continue
        yield text
        if cause is not None:
            pending.append(cause)
        pending.extend(suppressed)


def disk_full_cause(error: BaseException) -> str | None:
    """The line of ``error``'s texts that says the disk is full (e.g. ``java.io.IOException: No
    space left on device``), or None when none does."""
    for text in exception_texts(error):
        for line in text.splitlines():
            if any(pattern.search(line) for pattern in CAUSE_PATTERNS["disk"]):
                return line.strip()[:300]
    return None


@dataclass(frozen=True)
class WriteSpace:
    """One filesystem the job writes to, with the roots it holds and its space now."""

    roles: tuple[str, ...]
    path: Path
    free_bytes: int
    total_bytes: int

    @property
    def full(self) -> bool:
        return is_full(self.total_bytes, self.free_bytes)

    def describe(self) -> str:
        return (
            f"{human_bytes(self.free_bytes)} free of {human_bytes(self.total_bytes)} on "
            f"{self.path} ({', '.join(self.roles)}; full below "
            f"{human_bytes(full_below_bytes(self.total_bytes))})"
        )


def write_spaces(settings: Settings, pipeline: str) -> list[WriteSpace]:
    """The filesystems of the job's checkpoints and archive (local roots only), one entry each."""
    spaces: dict[int, WriteSpace] = {}
    roots = (("checkpoints", settings.checkpoint_root), ("archive", settings.archive_root))
    for role, root in roots:
        path = local_path(root)
        if path is None:
            continue
        path = path / pipeline
        try:
            existing = measured_path(path)
            device = os.stat(existing).st_dev
            usage = shutil.disk_usage(existing)
        except OSError:  # unreadable: the write will say so itself
            continue
        if device in spaces:
            known = spaces[device]
            spaces[device] = WriteSpace((*known.roles, role), known.path, usage.free, usage.total)
        else:
            spaces[device] = WriteSpace((role,), path, usage.free, usage.total)
    return list(spaces.values())


def startup_disk_full(settings: Settings, pipeline: str) -> str | None:
    """Why the job must not start because a filesystem it writes is full; None when it may."""
    full = [space for space in write_spaces(settings, pipeline) if space.full]
    if not full:
        return None
    return (
        f"the {pipeline} job does not start: "
        + "; ".join(space.describe() for space in full)
        + f". {_what_to_do()}"
    )


def disk_full_message(settings: Settings, pipeline: str, cause: str) -> str:
    """The job's one line (after ``DISK_FULL_MARK``) when a write failed on a full disk."""
    spaces = write_spaces(settings, pipeline)
    where = "; ".join(space.describe() for space in spaces) or "its roots are not local paths"
    return (
        f"the {pipeline} job stopped its queries: {cause}. Now {where}. Every batch it "
        "committed is in its checkpoint; the batch that failed is written again from there on "
        f"the next start. {_what_to_do()}"
    )


def _what_to_do() -> str:
    return (
        f"Free space ({RUNBOOK}); under Airflow the supervisor relaunches the job by itself once "
        f"no filesystem is full (exit {EXIT_DISK_FULL}, not counted toward the breaker), by hand "
        "run it again."
    )
