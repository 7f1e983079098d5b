"""Free space of the filesystem that holds the state folder (Kafka logs, MariaDB, checkpoints,
the Parquet archive): one verdict, shown by `streamops status`, the dashboard and the
platform-health DAG alike (docs/operations.md).

Used space is measured as ``df`` does: ``used / (used + free)``, where ``free`` is what an
unprivileged process may still write. Blocks the filesystem reserves for root are in neither, so
100 % means the services can write nothing more, whatever ``total`` says.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

WARNING_PERCENT = 80
CRITICAL_PERCENT = 90
GIB = 1024**3
MIB = 1024**2
# Where the jobs write (checkpoints, state stores, the archive), a filesystem is *full* below
# this much free space, or below this fraction of its size when that is less (a small volume
# would otherwise never count as recovered): a job does not start on it, and the supervisor
# waits until it is no longer full (docs/operations.md#a-full-disk).
FULL_MIN_FREE_BYTES = 256 * MIB
FULL_MIN_FREE_FRACTION = 0.05

Level = Literal["ok", "warning", "critical"]


@dataclass(frozen=True)
class DiskStatus:
    """The verdict on one filesystem, as JSON-ready fields."""

    level: Level
    path: str
    used_percent: float
    free_bytes: int
    total_bytes: int
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def disk_status(path: str | Path, total: int, used: int, free: int) -> DiskStatus:
    """The level of a filesystem from ``shutil.disk_usage``'s three figures (pure).

    ``ok`` below 80 % used, ``warning`` from 80 %, ``critical`` from 90 %. A filesystem that
    reports no space at all (``used + free == 0``) can hold nothing and is critical.
    """
    writable = used + free
    level: Level
    # Compared in whole bytes, exactly: a float ratio could land a hair under 80 at 80 %.
    if writable <= 0 or used * 100 >= CRITICAL_PERCENT * writable:
        level = "critical"
    elif used * 100 >= WARNING_PERCENT * writable:
        level = "warning"
    else:
        level = "ok"
    free_gib = free / GIB
    # Rounded down in whole numbers, so a figure shown as 80.0 is never one below 80 %.
    shown = 100.0 if writable <= 0 else (used * 1000 // writable) / 10
    if writable <= 0:
        message = (
            f"the filesystem of {path} reports 0 bytes of space: nothing can be written there. "
            "Point STREAMOPS_STATE_DIR at a real filesystem."
        )
    else:
        message = f"{shown:.1f} % used, {free_gib:.1f} GiB free on the filesystem of {path}"
        if level != "ok":
            threshold = CRITICAL_PERCENT if level == "critical" else WARNING_PERCENT
            message += (
                f" (at or over {threshold} %): free space before Kafka, MariaDB or the "
                "checkpoints fail to write. Run `streamops maintenance archive-retention` "
                "(or lower archive_retention_days), let the compaction DAG apply MariaDB "
                "retention, or delete what is not needed; docs/operations.md."
            )
    return DiskStatus(
        level=level,
        path=str(path),
        used_percent=shown,
        free_bytes=free,
        total_bytes=total,
        message=message,
    )


def measured_path(path: Path) -> Path:
    """The folder, or until it is created, its nearest existing parent (where it will be)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return path


def state_dir_status(state_dir: Path) -> DiskStatus:
    """The verdict on the filesystem holding ``state_dir``, measured now."""
    usage = shutil.disk_usage(measured_path(state_dir))
    return disk_status(state_dir, usage.total, usage.used, usage.free)


def full_below_bytes(total_bytes: int) -> int:
    """The free space under which a filesystem of ``total_bytes`` counts as full (pure)."""
    return max(1, min(FULL_MIN_FREE_BYTES, int(total_bytes * FULL_MIN_FREE_FRACTION)))


def is_full(total_bytes: int, free_bytes: int) -> bool:
    """Too little free space for a job to write its checkpoints and archive (pure)."""
    return free_bytes < full_below_bytes(total_bytes)


def human_bytes(count: int) -> str:
    """``count`` bytes as people read them: '0 B', '812 KiB', '2.4 MiB', '17.0 GiB'."""
    if count < 1024:
        return f"{count} B"
    if count < MIB:
        return f"{count // 1024} KiB"
    if count < GIB:
        return f"{count / MIB:.1f} MiB"
    return f"{count / GIB:.1f} GiB"


def local_path(uri: str) -> Path | None:
    """The local folder a checkpoint or archive root names (a path or ``file:`` URI); None for
    a remote one (``s3a://…``, ``hdfs://…``), whose space is not this machine's to measure."""
    if uri.startswith("file:"):
        return Path("/" + uri.removeprefix("file:").lstrip("/"))
    if "://" in uri:
        return None
    return Path(uri)


def write_atomically(path: Path, content: str | bytes) -> None:
    """``content`` as the whole of ``path``, or ``path`` left as it was: written to a hidden file
    beside it, flushed to the disk, then renamed over it. On a full disk the write raises
    (``OSError``) instead of leaving an empty or cut-short file that a reader would take for
    garbage (a pid file read as garbage is removed, and the service it named forgotten)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        data = content.encode() if isinstance(content, str) else content
        with open(partial, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_private(path: Path, text: str) -> None:
    """``text`` as the whole of ``path``, readable by its owner only (0600) from the first byte:
    the file is created with that mode, and an older file of any mode is replaced, not reused."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as stream:
            stream.write(text)
        os.chmod(partial, 0o600)  # whatever the umask
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
