"""Every log under the state folder stays bounded: rotation by size, pruning by age and count.

What writes where, and who bounds it (docs/operations.md#logs):

- Kafka's own log (``<state>/kafka/logs/server.log``) rolls natively: log4j2's RollingFile with a
  size policy (streamops/stack/kafka.py). This module leaves that folder alone.
- Every other log is a file some process writes as a plain stream: the stack's components'
  stdout/stderr (``<state>/logs/*.log``: MariaDB's error log, Redis, PostgreSQL's stderr, the
  Airflow processes, the dashboard, the generators), the Spark jobs' launch logs
  (``<state>/pipelines/<name>/token-N.log``) and Airflow's task logs
  (``<state>/airflow/logs/...``). Those are rotated here, in place: the writer keeps its file
  descriptor, so the file cannot be renamed away from under it. Its first bytes are copied to
  ``<log>.1`` and then removed from the live file.

Removing bytes from a file that another process appends to is only safe when that process opened
it with ``O_APPEND``: each of its writes then lands at the file's current end, wherever that is.
The stack opens every log it hands to a child with ``"ab"`` (streamops/stack/base.py, the Spark
hook) and Airflow's task runner does too; a file some live process writes *without* ``O_APPEND``
(read from ``/proc/<pid>/fdinfo``) is skipped and reported, because its writer would go on at its
old offset and leave a hole of zeros.

The bytes are removed with ``fallocate(FALLOC_FL_COLLAPSE_RANGE)`` where the filesystem has it
(ext4, XFS): the kernel takes the range out under the inode lock that every append also takes,
so nothing written meanwhile is lost; only whole filesystem blocks can be collapsed, so a line may
straddle ``<log>.1`` and the live file. Elsewhere (tmpfs, overlayfs, NFS) the classic
copy-and-truncate is the fallback: whatever is appended between the last read and the truncation
(microseconds) is lost, and the report says which method ran.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import gzip
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from streamops.config import Settings

Reporter = Callable[[str], None]
MIB = 1024 * 1024
FALLOC_FL_COLLAPSE_RANGE = 0x08
_COPY_CHUNK = 1024 * 1024
_TOKEN_LOG = re.compile(r"^token-(\d+)\.log(\.\d+(\.gz)?)?$")


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class LogPolicy:
    """How big a log may grow and how much history is kept."""

    max_bytes: int
    keep: int
    compress: bool = False
    task_log_retention_days: int = 7
    job_logs_keep: int = 5

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.keep < 1 or self.job_logs_keep < 1:
            raise ValueError(f"log policy out of range: {self}")
        if self.task_log_retention_days < 1:
            raise ValueError(f"task log retention of {self.task_log_retention_days} days")

    @classmethod
    def from_settings(cls, settings: Settings) -> LogPolicy:
        return cls(
            max_bytes=settings.log_max_mb * MIB,
            keep=settings.log_keep,
            compress=settings.log_compress,
            task_log_retention_days=settings.task_log_retention_days,
            job_logs_keep=settings.job_logs_keep,
        )


# --- who writes a file ----------------------------------------------------------------------------

Writers = dict[tuple[int, int], list[tuple[int, int]]]


def open_writers(proc: Path = Path("/proc")) -> Writers:
    """Every regular file some process has open for writing: (st_dev, st_ino) -> [(pid, flags)].

    Processes this user may not inspect are left out (as root, none are).
    """
    found: Writers = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            fds = os.listdir(entry / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                info = os.stat(entry / "fd" / fd)
                if not stat.S_ISREG(info.st_mode):
                    continue
                flags = _fd_flags((entry / "fdinfo" / fd).read_text())
            except (OSError, ValueError):
                continue
            if flags & os.O_ACCMODE == os.O_RDONLY:
                continue
            found.setdefault((info.st_dev, info.st_ino), []).append((pid, flags))
    return found


def _fd_flags(fdinfo: str) -> int:
    for line in fdinfo.splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8)
    raise ValueError("no flags in fdinfo")


class _LazyWriters:
    """The /proc scan, done once per run and only if some file needs it."""

    def __init__(self, scan: Callable[[], Writers] = open_writers) -> None:
        self._scan = scan
        self._found: Writers | None = None

    def of(self, path: Path) -> list[tuple[int, int]]:
        if self._found is None:
            self._found = self._scan()
        try:
            info = path.stat()
        except OSError:
            return []
        return self._found.get((info.st_dev, info.st_ino), [])


# --- rotation of one file -------------------------------------------------------------------------


def rotated_path(path: Path, index: int, compress: bool) -> Path:
    return path.with_name(f"{path.name}.{index}{'.gz' if compress else ''}")


def rotated_copies(path: Path) -> dict[int, list[Path]]:
    """The existing rotated copies of ``path`` by index (``<log>.N`` and ``<log>.N.gz``)."""
    pattern = re.compile(re.escape(path.name) + r"\.(\d+)(\.gz)?$")
    copies: dict[int, list[Path]] = {}
    if not path.parent.is_dir():
        return copies
    for sibling in path.parent.iterdir():
        match = pattern.match(sibling.name)
        if match:
            copies.setdefault(int(match.group(1)), []).append(sibling)
    return copies


def shift_copies(path: Path, keep: int) -> list[tuple[str, int]]:
    """Make room for a new ``<log>.1``: ``.N`` becomes ``.N+1``, those past ``keep`` go.

    Returns the deleted copies with their sizes. Highest index first, so no rename overwrites a
    newer copy.
    """
    deleted = []
    for index, copies in sorted(rotated_copies(path).items(), reverse=True):
        for copy in copies:
            if index >= keep:
                deleted.append((str(copy), _size(copy)))
                copy.unlink(missing_ok=True)
            else:
                suffix = ".gz" if copy.name.endswith(".gz") else ""
                copy.rename(path.with_name(f"{path.name}.{index + 1}{suffix}"))
    return deleted


def _fallocate() -> Callable[[int, int, int, int], int] | None:
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    function = getattr(libc, "fallocate", None)
    if function is None:
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


def collapse_head(fd: int, length: int) -> bool:
    """Remove the first ``length`` bytes of the open file (whole blocks); False if unsupported."""
    function = _fallocate()
    if function is None:
        return False
    if function(fd, FALLOC_FL_COLLAPSE_RANGE, 0, length) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.ENODEV):
        return False
    raise OSError(code, os.strerror(code))


def _copy_range(source: IO[bytes], target: IO[bytes], start: int, end: int | None) -> int:
    """Copy ``source[start:end]`` (to its end of file when ``end`` is None); bytes copied."""
    source.seek(start)
    copied = 0
    while end is None or start + copied < end:
        want = _COPY_CHUNK if end is None else min(_COPY_CHUNK, end - start - copied)
        chunk = source.read(want)
        if not chunk:
            break
        target.write(chunk)
        copied += len(chunk)
    return copied


def _open_copy(path: Path, compress: bool, append: bool) -> IO[bytes]:
    if compress:
        return cast(IO[bytes], gzip.GzipFile(path, "ab" if append else "wb"))
    return path.open("ab" if append else "wb")


def rotate_in_place(path: Path, keep: int, *, compress: bool = False) -> dict[str, Any]:
    """Move the live file's content to ``<log>.1`` while its writers go on appending.

    Returns ``{"bytes": moved, "method": "collapse" | "copy-truncate", "deleted": [...]}``.
    """
    deleted = shift_copies(path, keep)
    target = rotated_path(path, 1, compress)
    partial = target.with_name(target.name + ".partial")
    with path.open("r+b") as live:
        fd = live.fileno()
        size = os.fstat(fd).st_size
        block = os.fstatvfs(fd).f_bsize or 4096
        # Only whole blocks can be collapsed, and never up to the end of the file.
        head = (size // block) * block
        if head >= size:
            head -= block
        moved = 0
        if head > 0:
            with _open_copy(partial, compress, append=False) as copy:
                moved = _copy_range(live, copy, 0, head)
            partial.rename(target)
            if collapse_head(fd, head):
                return {"bytes": moved, "method": "collapse", "deleted": deleted}
        # Copy what is left (all of it, if nothing was copied yet), then cut the live file.
        if moved:
            with _open_copy(target, compress, append=True) as copy:
                moved += _copy_range(live, copy, moved, None)
        else:
            with _open_copy(partial, compress, append=False) as copy:
                moved = _copy_range(live, copy, 0, None)
            partial.rename(target)
        os.ftruncate(fd, 0)
    return {"bytes": moved, "method": "copy-truncate", "deleted": deleted}


# --- what is rotated, what is pruned --------------------------------------------------------------


def live_logs(state_dir: Path) -> list[Path]:
    """Every log rotated by this module (Kafka's log4j2 folder rolls by itself)."""
    found: list[Path] = []
    found += sorted((state_dir / "logs").glob("*.log"))
    found += sorted((state_dir / "pipelines").glob("*/token-*.log"))
    airflow_logs = state_dir / "airflow" / "logs"
    if airflow_logs.is_dir():
        for folder, subfolders, files in os.walk(airflow_logs):
            subfolders.sort()
            found += sorted(Path(folder) / name for name in files if name.endswith(".log"))
    return [path for path in found if path.is_file() and not path.is_symlink()]


def old_job_logs(pipeline_dir: Path, keep: int) -> list[Path]:
    """Launch logs (and their rotated copies) of all but the ``keep`` newest fencing tokens."""
    by_token: dict[int, list[Path]] = {}
    for path in pipeline_dir.iterdir():
        match = _TOKEN_LOG.match(path.name)
        if match:
            by_token.setdefault(int(match.group(1)), []).append(path)
    old = sorted(by_token)[:-keep] if len(by_token) > keep else []
    return sorted(path for token in old for path in by_token[token])


def expired_task_logs(airflow_logs: Path, cutoff_epoch: float) -> list[Path]:
    """Files under Airflow's log folder last written before ``cutoff_epoch``."""
    expired = []
    for folder, _, files in os.walk(airflow_logs):
        for name in files:
            path = Path(folder) / name
            with contextlib.suppress(OSError):
                if not path.is_symlink() and path.stat().st_mtime < cutoff_epoch:
                    expired.append(path)
    return sorted(expired)


def _remove_empty_folders(root: Path, emptied: list[Path]) -> None:
    """Remove the folders that deleting ``emptied`` left empty, up to (not including) ``root``.

    Only those: a folder Airflow has just made for a new run is never taken from under it.
    """
    for folder in sorted({p.parent for p in emptied}, key=lambda p: len(p.parts), reverse=True):
        while folder != root and root in folder.parents:
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone already)
                break
            folder = folder.parent


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _who(writers: list[tuple[int, int]]) -> str:
    return ", ".join(f"pid {pid}" for pid, _ in writers)


def rotate_logs(
    settings: Settings,
    *,
    policy: LogPolicy | None = None,
    dry_run: bool = False,
    report: Reporter = _quiet,
    now: float | None = None,
    writers_scan: Callable[[], Writers] = open_writers,
) -> dict[str, Any]:
    """Prune old job and task logs, then rotate every log over the size limit.

    Idempotent; safe while the platform runs. With ``dry_run`` nothing is changed and the report
    lists what would be. Each action is passed to ``report`` as it happens.
    """
    policy = policy or LogPolicy.from_settings(settings)
    state_dir = settings.state_dir
    now = time.time() if now is None else now
    writers = _LazyWriters(writers_scan)
    verb = "would delete" if dry_run else "deleted"
    result: dict[str, Any] = {
        "state_dir": str(state_dir),
        "dry_run": dry_run,
        "max_bytes": policy.max_bytes,
        "keep": policy.keep,
        "deleted": [],
        "rotated": [],
        "skipped": [],
        "freed_bytes": 0,
    }

    def delete(path: Path, why: str) -> None:
        holders = writers.of(path)
        if holders:
            reason = f"still written by {_who(holders)}"
            result["skipped"].append({"path": str(path), "reason": reason})
            report(f"kept {path}: {reason}")
            return
        size = _size(path)
        if not dry_run:
            path.unlink(missing_ok=True)
        result["deleted"].append({"path": str(path), "bytes": size, "reason": why})
        result["freed_bytes"] += size
        report(f"{verb} {path} ({size:,} bytes): {why}")

    pipelines = state_dir / "pipelines"
    if pipelines.is_dir():
        for folder in sorted(p for p in pipelines.iterdir() if p.is_dir()):
            for path in old_job_logs(folder, policy.job_logs_keep):
                delete(path, f"launch log beyond the newest {policy.job_logs_keep} tokens")

    airflow_logs = state_dir / "airflow" / "logs"
    if airflow_logs.is_dir():
        cutoff = now - policy.task_log_retention_days * 86_400
        expired = expired_task_logs(airflow_logs, cutoff)
        for path in expired:
            delete(path, f"untouched for {policy.task_log_retention_days} days")
        if not dry_run:
            _remove_empty_folders(airflow_logs, expired)

    for path in live_logs(state_dir):
        size = _size(path)
        if size <= policy.max_bytes:
            continue
        holders = [(pid, flags) for pid, flags in writers.of(path) if not flags & os.O_APPEND]
        if holders:
            reason = (
                f"{_who(holders)} writes it without O_APPEND: cutting it would leave a hole; "
                "it is rotated once that process has closed it"
            )
            result["skipped"].append({"path": str(path), "bytes": size, "reason": reason})
            report(f"skipped {path} ({size:,} bytes): {reason}")
            continue
        if dry_run:
            result["rotated"].append({"path": str(path), "bytes": size, "method": None})
            report(f"would rotate {path} ({size:,} bytes)")
            continue
        try:
            done = rotate_in_place(path, policy.keep, compress=policy.compress)
        except OSError as exc:
            result["skipped"].append({"path": str(path), "bytes": size, "reason": str(exc)})
            report(f"could not rotate {path}: {exc}")
            continue
        result["rotated"].append({"path": str(path), **done})
        result["freed_bytes"] += sum(size for _, size in done["deleted"])
        report(f"rotated {path}: {done['bytes']:,} bytes to {path.name}.1 ({done['method']})")
    return result


__all__ = [
    "LogPolicy",
    "collapse_head",
    "expired_task_logs",
    "live_logs",
    "old_job_logs",
    "open_writers",
    "rotate_in_place",
    "rotate_logs",
    "rotated_copies",
    "shift_copies",
]
