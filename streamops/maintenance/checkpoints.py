"""Health of the streaming checkpoints, read from Spark's on-disk layout and compared with Kafka.

A checkpoint directory (``<checkpoint_root>/<pipeline>/<query>``) holds:

- ``metadata``: ``{"id": "<query id>"}``;
- ``offsets/N``: written when batch N is planned: ``v1``, a JSON line of batch metadata
  (``batchWatermarkMs``, ``batchTimestampMs``, ``conf``), then one line per source with the
  offsets the batch reads up to (``{"orders": {"0": 1125, "1": 1120}}`` for Kafka, ``-`` for none);
- ``commits/N``: written when batch N's sink finished: ``v1`` and ``{"nextBatchWatermarkMs": …}``;
- ``sources/<i>/0``: the initial offsets of each source;
- ``state/<operator>/<partition>/N.delta|N.snapshot``: the state store;
- ``.N.crc`` checksums next to each file and ``.N.<uuid>.tmp`` files while one is being written.

The parsing functions are pure (text in, values out) and raise :class:`CheckpointCorruptError` on
anything unreadable; :func:`inspect_checkpoint` reads a directory; :func:`evaluate` turns a
snapshot, Kafka's offsets and the previous check into findings; :func:`run_checkpoint_check` does
all of that for one checkpoint and records, publishes and alerts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamops.clients import kafka_consumer, kafka_producer, redis_client
from streamops.config import Settings
from streamops.contract.redis_keys import CHECKPOINT_KEY_PREFIX, query_key
from streamops.contract.topics import ALERTS_TOPIC
from streamops.maintenance import MaintenanceError
from streamops.supervision.spec import PipelineSpec, load_specs

log = logging.getLogger(__name__)

REDIS_TTL_SECONDS = 3600
SEVERITIES = ("ok", "info", "warning", "critical")
_BATCH_FILE = re.compile(r"^\d+$")
_TEMP_FILE = re.compile(r"^\..+\.tmp$")
_CRC_FILE = re.compile(r"^\.(?P<name>.+)\.crc$")

Offsets = dict[str, dict[int, int]]


class CheckpointCorruptError(MaintenanceError):
    """A checkpoint file is unreadable or partial; the message names it."""


class CriticalCheckpointFinding(MaintenanceError):
    """A check found something critical; the results were recorded before this was raised."""


# --- pure parsing -----------------------------------------------------------------------------


def _lines(text: str, path: str) -> list[str]:
    # sources/<i>/0 of the Kafka source starts with a NUL byte before its version line.
    lines = text.lstrip("\x00").split("\n")
    if not lines or not re.fullmatch(r"v\d+", lines[0].strip()):
        raise CheckpointCorruptError(f"{path}: no version line (v1) at the start")
    return lines


def parse_metadata(text: str, path: str = "metadata") -> str:
    """The query id of a checkpoint's ``metadata`` file."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointCorruptError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(value, dict) or not isinstance(value.get("id"), str):
        raise CheckpointCorruptError(f"{path}: no query id")
    return value["id"]


@dataclass(frozen=True)
class OffsetsEntry:
    batch_timestamp_ms: int | None
    watermark_ms: int | None
    # Kafka offsets per source that has them: topic -> partition -> offset.
    kafka: Offsets


def parse_offsets(text: str, path: str = "offsets") -> OffsetsEntry:
    """An ``offsets/N`` file: batch metadata and the offsets of every Kafka source."""
    lines = _lines(text, path)
    if len(lines) < 3 or not text.endswith(("}", "}\n", "-", "-\n")):
        raise CheckpointCorruptError(f"{path}: truncated (no source offsets after the metadata)")
    try:
        metadata = json.loads(lines[1])
    except json.JSONDecodeError as exc:
        raise CheckpointCorruptError(f"{path}: batch metadata is not JSON ({exc})") from exc
    kafka: Offsets = {}
    for number, line in enumerate(lines[2:], start=3):
        line = line.strip()
        if not line or line == "-":
            continue
        try:
            source = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CheckpointCorruptError(f"{path}: line {number} is not JSON ({exc})") from exc
        if not isinstance(source, dict):
            continue
        for topic, partitions in source.items():
            if isinstance(partitions, dict) and all(
                isinstance(v, int) for v in partitions.values()
            ):
                kafka.setdefault(topic, {}).update({int(p): int(o) for p, o in partitions.items()})
    return OffsetsEntry(
        batch_timestamp_ms=metadata.get("batchTimestampMs"),
        watermark_ms=metadata.get("batchWatermarkMs"),
        kafka=kafka,
    )


def parse_commit(text: str, path: str = "commits") -> int | None:
    """A ``commits/N`` file; returns the next batch's watermark (ms) when recorded."""
    lines = _lines(text, path)
    if len(lines) < 2 or not lines[1].strip():
        raise CheckpointCorruptError(f"{path}: truncated (no commit metadata)")
    try:
        value = json.loads(lines[1])
    except json.JSONDecodeError as exc:
        raise CheckpointCorruptError(f"{path}: commit metadata is not JSON ({exc})") from exc
    watermark = value.get("nextBatchWatermarkMs") if isinstance(value, dict) else None
    return int(watermark) if isinstance(watermark, int) else None


def parse_source(text: str, path: str = "sources") -> None:
    """A ``sources/<i>/0`` file: only checked for being whole (version line, then JSON)."""
    lines = _lines(text, path)
    body = "\n".join(lines[1:]).strip()
    try:
        json.loads(body)
    except json.JSONDecodeError as exc:
        raise CheckpointCorruptError(f"{path}: initial offsets are not JSON ({exc})") from exc


# --- reading a directory ----------------------------------------------------------------------


@dataclass
class CheckpointSnapshot:
    path: str
    exists: bool
    query_id: str | None = None
    last_offsets_batch: int | None = None
    last_committed_batch: int | None = None
    # mtime (epoch seconds) of the last commit, and of the newest uncommitted offsets file.
    last_commit_at: float | None = None
    oldest_uncommitted_at: float | None = None
    uncommitted_batches: int = 0
    committed_offsets: Offsets = field(default_factory=dict)
    checkpoint_bytes: int = 0
    state_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    stale_temp_files: list[str] = field(default_factory=list)


def _batches(directory: Path) -> dict[int, Path]:
    if not directory.is_dir():
        return {}
    return {int(p.name): p for p in directory.iterdir() if _BATCH_FILE.match(p.name)}


def _read(path: Path, snapshot: CheckpointSnapshot) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        snapshot.problems.append(f"{path}: unreadable ({exc})")
        return None


def find_stale_temp_files(root: Path, now: float, min_age_seconds: float) -> list[Path]:
    """Leftovers of interrupted writes older than ``min_age_seconds``: ``.*.tmp`` files, and
    ``.X.crc`` checksums whose ``X`` is gone. Younger ones may belong to a write in progress."""
    stale: list[Path] = []
    for directory, _, files in os.walk(root):
        names = set(files)
        for name in files:
            path = Path(directory) / name
            crc = _CRC_FILE.match(name)
            orphan_crc = crc is not None and crc["name"] not in names
            if not (_TEMP_FILE.match(name) or orphan_crc):
                continue
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if age >= min_age_seconds:
                stale.append(path)
    return sorted(stale)


def inspect_checkpoint(
    path: Path, now: float | None = None, temp_file_min_age_seconds: float = 3600
) -> CheckpointSnapshot:
    """Everything :func:`evaluate` needs from one checkpoint directory; reads files only."""
    now = datetime.now(UTC).timestamp() if now is None else now
    snapshot = CheckpointSnapshot(path=str(path), exists=path.is_dir())
    if not snapshot.exists:
        return snapshot
    metadata_text = _read(path / "metadata", snapshot) if (path / "metadata").exists() else None
    if metadata_text is None:
        snapshot.problems.append(f"{path / 'metadata'}: missing or unreadable")
    else:
        try:
            snapshot.query_id = parse_metadata(metadata_text, str(path / "metadata"))
        except CheckpointCorruptError as exc:
            snapshot.problems.append(str(exc))

    offsets = _batches(path / "offsets")
    commits = _batches(path / "commits")
    snapshot.last_offsets_batch = max(offsets, default=None)
    # The newest commit whose file parses is the one Spark resumes from; a corrupt newest commit
    # is a problem of its own.
    for batch in sorted(commits, reverse=True):
        text = _read(commits[batch], snapshot)
        if text is None:
            continue
        try:
            parse_commit(text, str(commits[batch]))
        except CheckpointCorruptError as exc:
            snapshot.problems.append(str(exc))
            continue
        snapshot.last_committed_batch = batch
        snapshot.last_commit_at = commits[batch].stat().st_mtime
        break
    uncommitted = [
        b
        for b in offsets
        if snapshot.last_committed_batch is None or b > snapshot.last_committed_batch
    ]
    snapshot.uncommitted_batches = len(uncommitted)
    if uncommitted:
        snapshot.oldest_uncommitted_at = min(offsets[b].stat().st_mtime for b in uncommitted)
    # Every offsets file from the last committed one on must parse: Spark reads them on restart.
    for batch in sorted(offsets):
        if snapshot.last_committed_batch is not None and batch < snapshot.last_committed_batch:
            continue
        text = _read(offsets[batch], snapshot)
        if text is None:
            continue
        try:
            entry = parse_offsets(text, str(offsets[batch]))
        except CheckpointCorruptError as exc:
            snapshot.problems.append(str(exc))
            continue
        if batch == snapshot.last_committed_batch:
            snapshot.committed_offsets = entry.kafka
    if snapshot.last_committed_batch is not None and snapshot.last_committed_batch not in offsets:
        snapshot.problems.append(
            f"{path / 'commits' / str(snapshot.last_committed_batch)} has no offsets file"
        )
    sources = path / "sources"
    if sources.is_dir():
        for source in sorted(sources.iterdir()):
            initial = source / "0"
            if initial.is_file():
                text = _read(initial, snapshot)
                if text is not None:
                    try:
                        parse_source(text, str(initial))
                    except CheckpointCorruptError as exc:
                        snapshot.problems.append(str(exc))

    for directory, _, files in os.walk(path):
        for name in files:
            try:
                size = (Path(directory) / name).stat().st_size
            except FileNotFoundError:
                continue
            snapshot.checkpoint_bytes += size
            if Path(directory).is_relative_to(path / "state"):
                snapshot.state_bytes += size
    snapshot.stale_temp_files = [
        str(p) for p in find_stale_temp_files(path, now, temp_file_min_age_seconds)
    ]
    return snapshot


def remove_files(paths: list[str]) -> list[str]:
    """Delete the given leftover files; returns those removed (a vanished one is not an error)."""
    removed = []
    for name in paths:
        try:
            Path(name).unlink()
            removed.append(name)
        except FileNotFoundError:
            continue
    return removed


def backup_checkpoint(path: Path, now: datetime | None = None) -> Path:
    """Copy a checkpoint next to itself (``<path>.backup-<UTC time>``) before any repair by hand;
    nothing here ever deletes or rewrites checkpoint files other than stale temp files."""
    import shutil

    moment = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.backup-{moment}")
    shutil.copytree(path, target, symlinks=True)
    return target


# --- evaluation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointThresholds:
    """When a check becomes a finding; every field is a setting of the DAG spec."""

    # A query is stalled when it has work (lag or a planned batch) but committed nothing for
    # max(stall_min_seconds, stall_trigger_multiple x its trigger interval).
    stall_min_seconds: float = 300.0
    stall_trigger_multiple: float = 10.0
    uncommitted_after_seconds: float = 300.0
    lag_warning: int = 10_000
    lag_critical: int = 1_000_000
    growth_warning_fraction: float = 0.5
    growth_min_bytes: int = 16 * 1024 * 1024
    temp_file_min_age_seconds: float = 3600.0
    # Findings at or above this severity go to the alerts topic.
    alert_min_severity: str = "warning"
    # One alert id per finding and this period, so a finding repeated every 5 minutes updates
    # one alert instead of raising a new one each time.
    alert_period_seconds: int = 3600

    def __post_init__(self) -> None:
        if self.alert_min_severity not in SEVERITIES[1:]:
            raise ValueError(f"alert_min_severity must be one of {SEVERITIES[1:]}")
        if self.lag_critical < self.lag_warning:
            raise ValueError("lag_critical must be >= lag_warning")


@dataclass(frozen=True)
class Finding:
    finding: str
    severity: str
    detail: str


@dataclass(frozen=True)
class PreviousCheck:
    total_lag: int | None
    checkpoint_bytes: int | None
    state_bytes: int | None


KafkaWatermarks = dict[str, dict[int, tuple[int, int]]]


def partition_lag(committed: Offsets, watermarks: KafkaWatermarks) -> dict[str, dict[int, int]]:
    """Per partition: Kafka's end offset minus the committed offset. A partition the checkpoint
    does not know yet counts from Kafka's log start, where Spark would start it."""
    lag: dict[str, dict[int, int]] = {}
    for topic, partitions in watermarks.items():
        for partition, (low, high) in partitions.items():
            position = committed.get(topic, {}).get(partition, low)
            lag.setdefault(topic, {})[partition] = max(high - position, 0)
    return lag


def lost_offsets(committed: Offsets, watermarks: KafkaWatermarks) -> dict[str, dict[int, int]]:
    """Per partition whose log start is past the committed offset: how many records were deleted
    (by retention) before the query read them."""
    lost: dict[str, dict[int, int]] = {}
    for topic, partitions in committed.items():
        for partition, position in partitions.items():
            low = watermarks.get(topic, {}).get(partition, (position, position))[0]
            if low > position:
                lost.setdefault(topic, {})[partition] = low - position
    return lost


def offsets_past_end(committed: Offsets, watermarks: KafkaWatermarks) -> dict[str, dict[int, int]]:
    """Per partition whose committed offset is above Kafka's end offset: by how many records.

    An offset is where the query reads next, so one equal to the end is caught up; above it, the
    partition was deleted and recreated (it starts again at 0) or truncated. A partition Kafka
    does not have is :func:`missing_partitions`' business."""
    ahead: dict[str, dict[int, int]] = {}
    for topic, partitions in committed.items():
        for partition, position in partitions.items():
            marks = watermarks.get(topic, {}).get(partition)
            if marks is not None and position > marks[1]:
                ahead.setdefault(topic, {})[partition] = position - marks[1]
    return ahead


def missing_partitions(committed: Offsets, watermarks: KafkaWatermarks) -> dict[str, list[int]]:
    """The partitions the checkpoint has offsets for that Kafka no longer has: the topic was
    deleted (``watermarks`` gives it no partitions, as :func:`kafka_watermarks` does for a topic
    the broker does not know), or recreated with fewer partitions. A topic absent from
    ``watermarks`` was not asked about: nothing is known of it, so nothing is reported."""
    missing: dict[str, list[int]] = {}
    for topic, partitions in committed.items():
        if topic not in watermarks:
            continue
        gone = sorted(p for p in partitions if p not in watermarks[topic])
        if gone:
            missing[topic] = gone
    return missing


# What the two findings of a recreated topic tell the operator to do (docs/maintenance.md).
RECREATED_TOPIC_ADVICE = (
    "Stop the pipeline (`streamops pipeline stop <pipeline>`), back up and move its checkpoint "
    "aside, then start it: a new checkpoint reads the topic from its start. See "
    "docs/maintenance.md, 'Recreated or truncated topic'."
)


def evaluate(
    snapshot: CheckpointSnapshot,
    watermarks: KafkaWatermarks,
    previous: PreviousCheck | None,
    thresholds: CheckpointThresholds,
    now: float,
    query_state: str | None = None,
    trigger_interval_seconds: float = 0.0,
) -> list[Finding]:
    """Findings for one checkpoint. Pure: all inputs are values."""
    if not snapshot.exists:
        return [Finding("checkpoint_missing", "info", f"{snapshot.path} does not exist yet")]
    findings = [Finding("metadata_unreadable", "critical", p) for p in snapshot.problems]
    lag = partition_lag(snapshot.committed_offsets, watermarks)
    total_lag = sum(v for parts in lag.values() for v in parts.values())
    lost = lost_offsets(snapshot.committed_offsets, watermarks)
    if lost:
        findings.append(
            Finding(
                "data_lost",
                "critical",
                f"committed offsets are below Kafka's log start, records deleted unread: {lost}",
            )
        )
    ahead = offsets_past_end(snapshot.committed_offsets, watermarks)
    if ahead:
        findings.append(
            Finding(
                "offsets_past_end",
                "critical",
                f"committed offsets are past Kafka's end offset (records ahead per partition: "
                f"{ahead}): the topic was deleted and recreated, or truncated. The query fails on "
                "it, or skips the new topic's records up to the old offsets. "
                + RECREATED_TOPIC_ADVICE,
            )
        )
    gone = missing_partitions(snapshot.committed_offsets, watermarks)
    if gone:
        findings.append(
            Finding(
                "partitions_missing",
                "critical",
                f"Kafka no longer has partitions the checkpoint reads ({gone}): the topic was "
                "deleted, or recreated with fewer partitions; the query cannot resume from them. "
                "Recreate the topic with its partitions (`streamops up` creates missing topics) "
                "if it was deleted by mistake; then "
                + RECREATED_TOPIC_ADVICE[0].lower()
                + RECREATED_TOPIC_ADVICE[1:],
            )
        )
    stall_after = max(
        thresholds.stall_min_seconds, thresholds.stall_trigger_multiple * trigger_interval_seconds
    )
    commit_age = None if snapshot.last_commit_at is None else now - snapshot.last_commit_at
    has_work = total_lag > 0 or snapshot.uncommitted_batches > 0
    idle_too_long = commit_age is None or commit_age > stall_after
    if has_work and idle_too_long and query_state == "running":
        age = "never" if commit_age is None else f"{commit_age:.0f} s ago"
        findings.append(
            Finding(
                "stalled",
                "critical",
                f"reported running, with {total_lag} records waiting and "
                f"{snapshot.uncommitted_batches} planned batch(es), but last committed {age} "
                f"(threshold {stall_after:.0f} s)",
            )
        )
    elif has_work and query_state != "running":
        findings.append(
            Finding(
                "stopped_with_lag",
                "warning",
                f"query is {query_state or 'not reporting'} with {total_lag} records waiting",
            )
        )
    if previous is not None and previous.total_lag is not None and total_lag > previous.total_lag:
        findings.append(
            Finding("lag_growing", "warning", f"lag grew from {previous.total_lag} to {total_lag}")
        )
    if total_lag >= thresholds.lag_critical:
        findings.append(Finding("lag_high", "critical", f"lag {total_lag}: {lag}"))
    elif total_lag >= thresholds.lag_warning:
        findings.append(Finding("lag_high", "warning", f"lag {total_lag}: {lag}"))
    if (
        snapshot.oldest_uncommitted_at is not None
        and now - snapshot.oldest_uncommitted_at > thresholds.uncommitted_after_seconds
    ):
        findings.append(
            Finding(
                "uncommitted_batch",
                "warning",
                f"offsets of batch {snapshot.last_offsets_batch} written "
                f"{now - snapshot.oldest_uncommitted_at:.0f} s ago and never committed; a restart "
                "re-runs it",
            )
        )
    if previous is not None:
        for label, current, before in (
            ("checkpoint", snapshot.checkpoint_bytes, previous.checkpoint_bytes),
            ("state store", snapshot.state_bytes, previous.state_bytes),
        ):
            if before and current - before >= max(
                thresholds.growth_min_bytes, before * thresholds.growth_warning_fraction
            ):
                findings.append(
                    Finding(
                        "checkpoint_growth",
                        "warning",
                        f"{label} grew from {before} to {current} bytes since the last check",
                    )
                )
    return findings


def worst(findings: list[Finding]) -> str:
    return max((f.severity for f in findings), key=SEVERITIES.index, default="ok")


# --- I/O: Kafka, MariaDB, Redis ---------------------------------------------------------------


def kafka_watermarks(settings: Settings, topics: list[str]) -> KafkaWatermarks:
    """(log start, end) offset of every partition of the topics; a topic the broker does not
    have maps to no partitions (deleted: see :func:`missing_partitions`)."""
    from confluent_kafka import TopicPartition

    consumer = kafka_consumer(settings, "streamops-checkpoint-health", own_group=False)
    try:
        result: KafkaWatermarks = {}
        metadata = consumer.list_topics(timeout=10)
        for topic in topics:
            if topic not in metadata.topics:
                result[topic] = {}
                continue
            for partition in metadata.topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10, cached=False
                )
                result.setdefault(topic, {})[partition] = (int(low), int(high))
        return result
    finally:
        consumer.close()


@dataclass(frozen=True)
class CheckpointTarget:
    """One query's checkpoint: ``path`` is relative to the checkpoint root unless absolute."""

    pipeline: str
    query_name: str
    path: str
    trigger_interval_seconds: float = 0.0

    def location(self, settings: Settings) -> Path:
        path = Path(self.path)
        return path if path.is_absolute() else Path(settings.checkpoint_root) / path


def default_targets(
    specs: Mapping[str, PipelineSpec] | None = None,
) -> tuple[CheckpointTarget, ...]:
    """Every query of every pipeline spec (default: :func:`load_specs`, one local file, no other
    I/O), at the checkpoint its job writes, with the spec's trigger interval."""
    specs = load_specs() if specs is None else specs
    return tuple(
        CheckpointTarget(
            spec.name, query, _checkpoint_path(spec, query), spec.trigger_interval_seconds or 0.0
        )
        for spec in specs.values()
        for query in spec.queries
    )


def _checkpoint_path(spec: PipelineSpec, query: str) -> str:
    """``PipelineSpec.query_checkpoint`` (``orders_records`` -> ``<root>/orders/records``)."""
    if spec.checkpoint_root is not None:
        return spec.query_checkpoint(query, spec.checkpoint_root)
    # Relative: CheckpointTarget.location puts it under the settings' root of the process that
    # runs the check, as the job does with its own settings.
    return f"{spec.name}/{spec.query_role(query)}"


def redis_key(pipeline: str, query_name: str) -> str:
    return f"{CHECKPOINT_KEY_PREFIX}:{pipeline}:{query_name}"


def _previous(settings: Settings, target: CheckpointTarget) -> PreviousCheck | None:
    from streamops.db import connect

    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        cursor.execute(
            "SELECT total_lag, checkpoint_bytes, state_bytes FROM checkpoint_health "
            "WHERE pipeline = ? AND query_name = ? ORDER BY checked_at DESC LIMIT 1",
            (target.pipeline, target.query_name),
        )
        row = cursor.fetchone()
    return None if row is None else PreviousCheck(*row)


def _query_state(settings: Settings, target: CheckpointTarget) -> str | None:
    client = redis_client(settings)
    try:
        state = client.hget(query_key(target.pipeline, target.query_name), "state")
    finally:
        client.close()
    return None if state is None else state.decode() if isinstance(state, bytes) else state


def _record(settings: Settings, result: dict[str, Any]) -> None:
    from streamops.db import connect

    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        cursor.execute(
            "INSERT INTO checkpoint_health (pipeline, query_name, checked_at, checkpoint_path, "
            "status, query_state, last_offsets_batch, last_committed_batch, last_commit_at, "
            "commit_age_seconds, uncommitted_batches, total_lag, lag_by_partition, lost_offsets, "
            "offsets_past_end, missing_partitions, checkpoint_bytes, state_bytes, "
            "temp_files_removed, findings) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                result["pipeline"],
                result["query_name"],
                datetime.fromisoformat(result["checked_at"]).replace(tzinfo=None),
                result["checkpoint_path"],
                result["status"],
                result["query_state"],
                result["last_offsets_batch"],
                result["last_committed_batch"],
                None
                if result["last_commit_at"] is None
                else datetime.fromisoformat(result["last_commit_at"]).replace(tzinfo=None),
                result["commit_age_seconds"],
                result["uncommitted_batches"],
                result["total_lag"],
                json.dumps(result["lag_by_partition"]),
                result["lost_offsets"],
                result["offsets_past_end"],
                result["missing_partitions"],
                result["checkpoint_bytes"],
                result["state_bytes"],
                len(result["temp_files_removed"]),
                json.dumps(result["findings"]),
            ),
        )
        connection.commit()


def _publish(settings: Settings, result: dict[str, Any], thresholds: CheckpointThresholds) -> int:
    """Latest result to Redis; findings at or above the alert severity to the alerts topic."""
    key = redis_key(result["pipeline"], result["query_name"])
    client = redis_client(settings)
    try:
        with client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(
                key,
                mapping={
                    name: value if isinstance(value, str) else json.dumps(value)
                    for name, value in result.items()
                },
            )
            pipe.expire(key, REDIS_TTL_SECONDS)
            pipe.execute()
    finally:
        client.close()
    alerts = alerts_for(result, thresholds)
    if alerts:
        producer = kafka_producer(settings)
        for alert in alerts:
            producer.produce(
                ALERTS_TOPIC, key=str(alert["alert_id"]).encode(), value=json.dumps(alert).encode()
            )
        if producer.flush(10):
            raise MaintenanceError(f"could not deliver {len(alerts)} alert(s) to Kafka in 10 s")
    return len(alerts)


def alerts_for(result: Mapping[str, Any], thresholds: CheckpointThresholds) -> list[dict[str, Any]]:
    """The contract's alert objects for the findings at or above ``alert_min_severity``."""
    checked_at = datetime.fromisoformat(result["checked_at"])
    period = thresholds.alert_period_seconds
    start = datetime.fromtimestamp(checked_at.timestamp() // period * period, UTC)
    end = datetime.fromtimestamp(start.timestamp() + period, UTC)
    minimum = SEVERITIES.index(thresholds.alert_min_severity)
    alerts = []
    for finding in result["findings"]:
        if SEVERITIES.index(finding["severity"]) < minimum:
            continue
        rule = f"checkpoint-{finding['finding'].replace('_', '-')}"
        identity = f"{rule}:{result['pipeline']}:{result['query_name']}:{start.isoformat()}"
        alerts.append(
            {
                "alert_id": hashlib.sha256(identity.encode()).hexdigest(),
                "rule_id": rule,
                "level": "CRITICAL" if finding["severity"] == "critical" else "WARN",
                "service": f"{result['pipeline']}/{result['query_name']}",
                "window_start": start.isoformat().replace("+00:00", "Z"),
                "window_end": end.isoformat().replace("+00:00", "Z"),
                "event_count": 1,
                "sample_message": finding["detail"][:1000],
            }
        )
    return alerts


def check_checkpoint(
    settings: Settings,
    target: CheckpointTarget,
    thresholds: CheckpointThresholds,
    now: datetime | None = None,
    *,
    clean_temp_files: bool = True,
) -> dict[str, Any]:
    """Inspect one checkpoint against Kafka and the previous check; JSON-safe result. No writes
    except removing stale temp files (when ``clean_temp_files``)."""
    moment = now or datetime.now(UTC)
    epoch = moment.timestamp()
    path = target.location(settings)
    snapshot = inspect_checkpoint(path, epoch, thresholds.temp_file_min_age_seconds)
    removed = remove_files(snapshot.stale_temp_files) if clean_temp_files else []
    topics = sorted(snapshot.committed_offsets) or ([target.pipeline] if snapshot.exists else [])
    watermarks = kafka_watermarks(settings, topics) if topics else {}
    previous = _previous(settings, target)
    state = _query_state(settings, target)
    findings = evaluate(
        snapshot, watermarks, previous, thresholds, epoch, state, target.trigger_interval_seconds
    )
    if removed:
        findings.append(
            Finding("temp_files_removed", "info", f"removed {len(removed)} stale temp file(s)")
        )
    lag = partition_lag(snapshot.committed_offsets, watermarks) if snapshot.exists else {}
    lost = lost_offsets(snapshot.committed_offsets, watermarks)
    ahead = offsets_past_end(snapshot.committed_offsets, watermarks)
    gone = missing_partitions(snapshot.committed_offsets, watermarks)
    return {
        "pipeline": target.pipeline,
        "query_name": target.query_name,
        "checked_at": moment.astimezone(UTC).isoformat(),
        "checkpoint_path": str(path),
        "status": worst(findings),
        "query_state": state,
        "query_id": snapshot.query_id,
        "last_offsets_batch": snapshot.last_offsets_batch,
        "last_committed_batch": snapshot.last_committed_batch,
        "last_commit_at": None
        if snapshot.last_commit_at is None
        else datetime.fromtimestamp(snapshot.last_commit_at, UTC).isoformat(),
        "commit_age_seconds": None
        if snapshot.last_commit_at is None
        else round(epoch - snapshot.last_commit_at, 3),
        "uncommitted_batches": snapshot.uncommitted_batches,
        "total_lag": sum(v for parts in lag.values() for v in parts.values())
        if snapshot.exists
        else None,
        "lag_by_partition": {t: {str(p): v for p, v in parts.items()} for t, parts in lag.items()},
        "lost_offsets": sum(v for parts in lost.values() for v in parts.values()),
        "offsets_past_end": sum(v for parts in ahead.values() for v in parts.values()),
        "missing_partitions": sum(len(parts) for parts in gone.values()),
        "checkpoint_bytes": snapshot.checkpoint_bytes,
        "state_bytes": snapshot.state_bytes,
        "temp_files_removed": removed,
        "findings": [asdict(f) for f in findings],
    }


def run_checkpoint_check(
    settings: Settings,
    target: CheckpointTarget,
    thresholds: CheckpointThresholds,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Check, record in ``checkpoint_health``, publish to Redis and alert; raise
    :class:`CriticalCheckpointFinding` (after recording) when a finding is critical."""
    result = check_checkpoint(settings, target, thresholds, now)
    _record(settings, result)
    result["alerts_sent"] = _publish(settings, result, thresholds)
    if result["status"] == "critical":
        critical = [f for f in result["findings"] if f["severity"] == "critical"]
        raise CriticalCheckpointFinding(
            f"checkpoint {result['checkpoint_path']} of {target.pipeline}/{target.query_name}: "
            + "; ".join(f"{f['finding']}: {f['detail']}" for f in critical)
            + ". See docs/maintenance.md for what to do."
        )
    return result
