"""Retention of the raw Parquet archive (spark_jobs/common/archive.py), by whole days.

The archive is ``<archive_root>/<pipeline>/date=YYYY-MM-DD/hour=H/batch_id=N/part-*.parquet``.
A ``date=`` partition is deleted once all of its day is older than ``archive_retention_days``,
so at least that many whole days stay. Partitions whose name is not a date (Spark's
``__HIVE_DEFAULT_PARTITION__`` for a null event time, anything put there by hand) are never
deleted, only reported.

A partition is first renamed to a hidden ``.expired-date=…`` folder, which Spark's readers skip,
then removed: a run killed half way leaves no half-deleted day in the archive, and the next run
removes what is left of the hidden folder.

Only local roots (a path or ``file://``) are handled here. For an object store (``s3a://…``) a
bucket lifecycle rule that expires objects under the archive prefix after the same number of days
does the job without listing the bucket; this reports the root as not supported instead of
failing the maintenance DAG every hour.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from streamops.config import Settings

log = logging.getLogger(__name__)

PARTITION_PREFIX = "date="
EXPIRED_PREFIX = ".expired-"


@dataclass(frozen=True)
class ArchivePartition:
    pipeline: str
    name: str
    path: Path


def partition_day(name: str) -> date | None:
    """The day of a ``date=YYYY-MM-DD`` folder, or None for any other name."""
    if not name.startswith(PARTITION_PREFIX):
        return None
    try:
        return date.fromisoformat(name[len(PARTITION_PREFIX) :])
    except ValueError:
        return None


def retention_cutoff_day(now: datetime, retention_days: int) -> date:
    """Days before this one are expired: each of them ended ``retention_days`` or more ago."""
    if retention_days < 1:
        raise ValueError(f"archive retention of {retention_days} days; give 1 or more")
    # The partitions are UTC days (the jobs' session time zone); a naive time is taken as UTC.
    moment = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    return (moment - timedelta(days=retention_days)).date()


def partitions_to_delete(names: Iterable[str], now: datetime, retention_days: int) -> list[str]:
    """The ``date=`` partition names that are expired at ``now`` (UTC), oldest first (pure)."""
    cutoff = retention_cutoff_day(now, retention_days)
    expired = []
    for name in names:
        day = partition_day(name)
        if day is not None and day < cutoff:
            expired.append((day, name))
    return [name for _, name in sorted(expired)]


def local_archive_root(uri: str) -> Path | None:
    """The archive root as a local path, or None when it lives elsewhere (``s3a://``, ``hdfs://``)."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(parts.path)
    if parts.scheme and len(parts.scheme) > 1:  # one letter: a Windows drive, not a scheme
        return None
    return Path(uri)


def list_partitions(root: Path) -> tuple[list[ArchivePartition], list[str]]:
    """Every ``date=`` folder under ``root``'s pipelines, and the other names found beside them."""
    partitions: list[ArchivePartition] = []
    unrecognised: list[str] = []
    if not root.is_dir():
        return partitions, unrecognised
    for pipeline in sorted(p for p in root.iterdir() if p.is_dir()):
        if pipeline.name.startswith((".", "_")):
            continue
        for child in sorted(pipeline.iterdir()):
            if child.name.startswith((".", "_")) or not child.is_dir():
                continue  # Spark's staging folders and _SUCCESS markers, hidden leftovers
            if partition_day(child.name) is None:
                unrecognised.append(f"{pipeline.name}/{child.name}")
            else:
                partitions.append(ArchivePartition(pipeline.name, child.name, child))
    return partitions, unrecognised


def folder_size(path: Path) -> tuple[int, int]:
    """Bytes and number of files under ``path``."""
    size = files = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                size += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                continue
            files += 1
    return size, files


def _remove_leftovers(root: Path) -> list[str]:
    """Remove the hidden folders of a run that was killed while removing them."""
    removed = []
    for leftover in sorted(root.glob(f"*/{EXPIRED_PREFIX}*")):
        shutil.rmtree(leftover, ignore_errors=True)
        removed.append(f"{leftover.parent.name}/{leftover.name}")
    return removed


def apply_archive_retention(
    settings: Settings, *, dry_run: bool = False, now: datetime | None = None
) -> dict[str, Any]:
    """Delete the archive's expired day partitions (or with ``dry_run`` only list them).

    Returns a JSON-ready report: what was (or would be) deleted, per partition with its bytes and
    files, the totals, and the names that were left alone.
    """
    now = now or datetime.now(UTC)
    retention_days = settings.archive_retention_days
    cutoff = retention_cutoff_day(now, retention_days)
    report: dict[str, Any] = {
        "root": settings.archive_root,
        "retention_days": retention_days,
        "delete_before": cutoff.isoformat(),
        "dry_run": dry_run,
        "supported": True,
        "deleted": [],
        "deleted_partitions": 0,
        "deleted_bytes": 0,
        "kept_partitions": 0,
        "unrecognised": [],
    }
    root = local_archive_root(settings.archive_root)
    if root is None:
        report["supported"] = False
        report["reason"] = (
            f"{settings.archive_root} is not a local path: expire it with the store's own "
            f"lifecycle rule ({retention_days} days; docs/maintenance.md)"
        )
        log.warning("archive retention skipped: %s", report["reason"])
        return report
    if not dry_run:
        report["leftovers_removed"] = _remove_leftovers(root)
    partitions, report["unrecognised"] = list_partitions(root)
    by_pipeline: dict[str, list[ArchivePartition]] = {}
    for partition in partitions:
        by_pipeline.setdefault(partition.pipeline, []).append(partition)
    for pipeline, own in sorted(by_pipeline.items()):
        expired = set(partitions_to_delete([p.name for p in own], now, retention_days))
        for partition in own:
            if partition.name not in expired:
                report["kept_partitions"] += 1
                continue
            size, files = folder_size(partition.path)
            if not dry_run:
                hidden = partition.path.with_name(EXPIRED_PREFIX + partition.name)
                partition.path.rename(hidden)
                shutil.rmtree(hidden)
            report["deleted"].append(
                {"pipeline": pipeline, "partition": partition.name, "bytes": size, "files": files}
            )
            report["deleted_partitions"] += 1
            report["deleted_bytes"] += size
    log.info(
        "archive retention%s: %d partition(s), %d bytes before %s under %s",
        " (dry run)" if dry_run else "",
        report["deleted_partitions"],
        report["deleted_bytes"],
        report["delete_before"],
        root,
    )
    return report
