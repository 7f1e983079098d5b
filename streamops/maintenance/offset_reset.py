"""Recovery after a query's offsets aged out of Kafka: move its checkpoint up to the log start.

A query whose checkpointed offset is below its topic's log start (retention deleted the records
before the query read them) fails on every start, because the jobs read Kafka with
``failOnDataLoss=true`` (``spark_jobs/common/source.py``). Those records are gone; what is left
is to admit it, resume from the earliest record Kafka still has, and record what was skipped.

How the checkpoint is moved (Spark 4.x, ``MicroBatchExecution.populateStartOffsets``): on a
restart Spark reads the newest ``offsets/N`` and the newest ``commits/M``. When N == M it takes
``offsets/N`` as what was consumed and plans batch N+1 from there to the latest offsets; when
N == M + 1 it re-runs batch N over ``offsets/M`` .. ``offsets/N``. So the offsets the restart
starts from are those of the last committed entry, and of the planned entry after it if any.
This module raises each Kafka partition in those entries (and only there) to the log start
where it is below, keeping everything else of the entry (batch id, watermark, timestamp, conf,
other sources) as it was, and writes Hadoop's ``.N.crc`` checksum beside each rewritten file
as the local file system expects it.

It does not append a new batch (``offsets/N+1`` plus ``commits/N+1``): a stateful query
(windows, joins, ``transformWithState``) loads state version N+1 for batch N+1 and commits
version N+2, so a batch that never ran would leave the next one looking for a state version no
one wrote. Rewriting the entries in place keeps batch ids and state versions as they are: the
state (open windows, join buffers, timers) is kept, the skipped records simply never reach it.

The parts that decide (:func:`lost_ranges`, :func:`advance_offsets_text`, :func:`hadoop_crc`,
:func:`plan_query`, :func:`decide`) are pure; :func:`apply_plan` writes files; the CLI
(``streamops pipeline reset-offsets``) checks that no job runs, asks, applies, records and alerts.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from streamops.disk import local_path, write_atomically
from streamops.maintenance import MaintenanceError
from streamops.maintenance.checkpoints import (
    CheckpointCorruptError,
    KafkaWatermarks,
    Offsets,
    inspect_checkpoint,
)

if TYPE_CHECKING:
    from streamops.config import Settings
    from streamops.supervision.spec import PipelineSpec

# Platform alert raised by every reset (level WARN: an operator decided it, the loss is recorded).
OFFSETS_RESET_RULE_ID = "streaming-offsets-reset"
# The only target today; the option exists so that another (a timestamp) can be added later.
TO_EARLIEST_AVAILABLE = "earliest-available"
# Hadoop's ChecksumFileSystem: "crc\0", bytes per checksum, then a CRC-32 per chunk.
CRC_MAGIC = b"crc\x00"
CRC_BYTES_PER_CHECKSUM = 512


class OffsetResetError(MaintenanceError):
    """The reset cannot be done safely; the message says why and what to do."""


@dataclass(frozen=True)
class LostRange:
    """Records ``[from_offset, to_offset)`` of one partition, deleted before the query read them."""

    query_name: str
    topic: str
    partition: int
    from_offset: int
    to_offset: int

    @property
    def lost_records(self) -> int:
        return self.to_offset - self.from_offset


def lost_ranges(
    query_name: str, committed: Offsets, watermarks: KafkaWatermarks
) -> list[LostRange]:
    """Per partition whose log start is above the committed offset: the range retention deleted.

    A partition Kafka no longer has (or a topic not asked about) is not a lost range: nothing
    can be resumed there (checkpoint health's ``partitions_missing``)."""
    ranges = []
    for topic, partitions in sorted(committed.items()):
        for partition, position in sorted(partitions.items()):
            marks = watermarks.get(topic, {}).get(partition)
            if marks is not None and marks[0] > position:
                ranges.append(LostRange(query_name, topic, partition, position, marks[0]))
    return ranges


def floors(ranges: list[LostRange]) -> Offsets:
    """The offset each affected partition is raised to: topic -> partition -> log start."""
    result: Offsets = {}
    for lost in ranges:
        result.setdefault(lost.topic, {})[lost.partition] = lost.to_offset
    return result


def advance_offsets_text(text: str, floor: Offsets, path: str = "offsets") -> str:
    """An ``offsets/N`` file with each listed partition raised to at least its floor.

    The version line and the batch metadata line are kept byte for byte; a source line is
    rewritten only when one of its offsets moves (as Spark writes it: compact JSON, partitions
    in their order), so the entry stays what Spark would have written for those offsets."""
    lines = text.split("\n")
    if len(lines) < 3 or lines[0].strip() != "v1":
        raise CheckpointCorruptError(f"{path}: not an offsets log entry of version v1")
    rewritten = lines[:2]
    for line in lines[2:]:
        stripped = line.strip()
        if not stripped or stripped == "-" or not stripped.startswith("{"):
            rewritten.append(line)
            continue
        try:
            source = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise CheckpointCorruptError(f"{path}: a source line is not JSON ({exc})") from exc
        changed = False
        for topic, partitions in source.items():
            if topic not in floor or not isinstance(partitions, dict):
                continue
            for key, value in partitions.items():
                target = floor[topic].get(int(key))
                if isinstance(value, int) and target is not None and value < target:
                    partitions[key] = target
                    changed = True
        rewritten.append(json.dumps(source, separators=(",", ":")) if changed else line)
    return "\n".join(rewritten)


def hadoop_crc(data: bytes) -> bytes:
    """The ``.<name>.crc`` file Hadoop's local file system keeps beside ``data``; a stale one
    makes Spark's read of the file fail with a ChecksumException."""
    sums = b"".join(
        struct.pack(">I", zlib.crc32(data[start : start + CRC_BYTES_PER_CHECKSUM]))
        for start in range(0, len(data), CRC_BYTES_PER_CHECKSUM)
    )
    return CRC_MAGIC + struct.pack(">i", CRC_BYTES_PER_CHECKSUM) + sums


@dataclass(frozen=True)
class FileRewrite:
    path: Path
    before: str
    after: str


@dataclass
class QueryPlan:
    """What resetting one query's checkpoint changes."""

    query_name: str
    checkpoint: Path
    last_committed_batch: int | None
    ranges: list[LostRange] = field(default_factory=list)
    rewrites: list[FileRewrite] = field(default_factory=list)

    @property
    def lost_records(self) -> int:
        return sum(r.lost_records for r in self.ranges)


def plan_query(query_name: str, checkpoint: Path, watermarks: KafkaWatermarks) -> QueryPlan:
    """The lost ranges of one query checkpoint and the offsets files to rewrite; reads only.

    Refuses a checkpoint with unreadable files (Spark would refuse it too; see checkpoint
    health) and one that lost records before committing its first batch (its start comes from
    ``sources/<i>/0``: move the checkpoint aside instead, a new one starts at the earliest)."""
    snapshot = inspect_checkpoint(checkpoint)
    if snapshot.problems:
        raise OffsetResetError(
            f"{query_name}: the checkpoint {checkpoint} has unreadable files, so it is not "
            f"rewritten: {'; '.join(snapshot.problems)}. See docs/maintenance.md (checkpoint "
            "health) first."
        )
    plan = QueryPlan(query_name, checkpoint, snapshot.last_committed_batch)
    plan.ranges = lost_ranges(query_name, snapshot.committed_offsets, watermarks)
    if not plan.ranges:
        return plan
    if snapshot.last_committed_batch is None:  # pragma: no cover - committed_offsets is empty then
        raise OffsetResetError(f"{query_name}: nothing committed yet in {checkpoint}")
    floor = floors(plan.ranges)
    offsets_dir = checkpoint / "offsets"
    batches = sorted(
        int(p.name)
        for p in offsets_dir.iterdir()
        if p.name.isdigit() and int(p.name) >= snapshot.last_committed_batch
    )
    for batch in batches:
        path = offsets_dir / str(batch)
        before = path.read_text(encoding="utf-8")
        after = advance_offsets_text(before, floor, str(path))
        if after != before:
            plan.rewrites.append(FileRewrite(path, before, after))
    return plan


def backup_offsets(plan: QueryPlan, now: datetime | None = None) -> Path:
    """Copy the query's ``offsets`` and ``commits`` folders (small: a line of JSON per batch)
    beside the checkpoint, ``<query>.offsets-before-reset-<UTC time>``; the state store is not
    touched by a reset and not copied."""
    moment = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    target = plan.checkpoint.with_name(f"{plan.checkpoint.name}.offsets-before-reset-{moment}")
    for folder in ("offsets", "commits"):
        if (plan.checkpoint / folder).is_dir():
            shutil.copytree(plan.checkpoint / folder, target / folder, dirs_exist_ok=True)
    return target


def apply_plan(plan: QueryPlan) -> None:
    """Rewrite the planned offsets files, each with its checksum, each replaced atomically.

    The checksum goes first: between the two renames Spark could only read a file whose
    checksum does not match, never a silently wrong one; no job runs meanwhile anyway (the
    caller holds the checkpoint's lease)."""
    for rewrite in plan.rewrites:
        if rewrite.path.read_text(encoding="utf-8") != rewrite.before:
            raise OffsetResetError(
                f"{rewrite.path} changed since the plan was made: is a job running on this "
                "checkpoint? Nothing more was rewritten; run the command again."
            )
        data = rewrite.after.encode("utf-8")
        write_atomically(rewrite.path.with_name(f".{rewrite.path.name}.crc"), hadoop_crc(data))
        write_atomically(rewrite.path, data)


class Decision(Enum):
    APPLY = "apply"
    ASK = "ask"
    DRY_RUN = "dry-run"
    NOTHING = "nothing"
    REFUSE_NO_TTY = "refuse-no-tty"


def decide(*, lost_records: int, dry_run: bool, yes: bool, interactive: bool) -> Decision:
    """What the command does once the plan is printed."""
    if lost_records == 0:
        return Decision.NOTHING
    if dry_run:
        return Decision.DRY_RUN
    if yes:
        return Decision.APPLY
    return Decision.ASK if interactive else Decision.REFUSE_NO_TTY


def query_checkpoints(location: str, queries: tuple[str, ...], pipeline: str) -> dict[str, Path]:
    """Each query's checkpoint folder under the pipeline's (``orders_records`` ->
    ``<location>/records``, as the jobs lay them out); local paths and ``file:`` URIs only."""
    root = local_path(location)
    if root is None:
        raise OffsetResetError(
            f"The checkpoint {location} is not on a local file system; reset-offsets rewrites "
            "local checkpoints only. Stop the pipeline and move its checkpoint aside instead "
            "(a new checkpoint reads the topics from their earliest records)."
        )
    return {query: root / query.removeprefix(f"{pipeline}_") for query in queries}


def describe(plans: list[QueryPlan]) -> list[str]:
    """One line per lost range, for the terminal and the alert."""
    return [
        f"{r.query_name}: {r.topic}[{r.partition}] offsets {r.from_offset}..{r.to_offset - 1} "
        f"({r.lost_records} records) deleted by retention; resumes at {r.to_offset}"
        for plan in plans
        for r in plan.ranges
    ]


def topics_of(checkpoints: Mapping[str, Path]) -> list[str]:
    """Every topic the committed offsets of these checkpoints name."""
    topics: set[str] = set()
    for path in checkpoints.values():
        if path.is_dir():
            topics.update(inspect_checkpoint(path).committed_offsets)
    return sorted(topics)


# --- I/O: the lease, Kafka, MariaDB, the alert ------------------------------------------------


def refuse_while_running(settings: Settings, spec: PipelineSpec) -> None:
    """A clear error when a job of the pipeline may write to its checkpoint: a live lease (a
    supervised or foreground job, or a supervisor between two launches), the lease holder's
    job still alive after its lease ran out, or an orphan job of the pipeline on this host (in
    cluster mode: any live driver pod of the pipeline)."""
    from contextlib import closing

    from streamops.db import connect
    from streamops.supervision import job_processes
    from streamops.supervision import lease as leases
    from streamops.supervision.foreground import refuse_stray_jobs

    stop_first = f"Stop it first: `streamops pipeline stop {spec.name}`, then run this again."
    location = spec.checkpoint_location(settings.checkpoint_root)
    with closing(connect(settings)) as connection:
        held = leases.current(connection, location)
        cursor = connection.cursor()
        cursor.execute("SELECT UTC_TIMESTAMP(3)")
        (now,) = cursor.fetchone()
        connection.commit()
    if held is not None and held.owner is not None and held.expires_at and held.expires_at > now:
        where = f", job pid {held.pid} on {held.host}" if held.pid else ""
        raise OffsetResetError(
            f"{spec.name}: its checkpoint is in use: the lease of {location} is held by "
            f"{held.owner}{where} until {held.expires_at:%Y-%m-%d %H:%M:%S} UTC. One checkpoint "
            f"never has two writers, so its offsets are not moved while a job may run. {stop_first}"
        )
    if spec.kubernetes is None:
        if held is not None and held.pid:
            handle = job_processes.handle_from_lease(spec, settings, held)
            if job_processes.process_is_running(handle):
                raise OffsetResetError(
                    f"{spec.name}: its job (pid {held.pid} on {held.host}) is still alive "
                    f"although its lease expired. {stop_first}"
                )
        refuse_stray_jobs(
            settings,
            spec,
            "Stop it first (`kill -TERM <the python pid>` stops it gracefully), then run this "
            "again.",
        )
    else:
        # Cluster mode: any live driver pod of the pipeline (the lease's, after its lease ran
        # out, or an orphan) may still write to the checkpoint.
        from streamops.supervision import kubernetes as k8s

        live = [pod for pod in k8s.DriverPods.of(spec).find(k8s.driver_selector(spec)) if pod.alive]
        if live:
            raise OffsetResetError(
                f"{spec.name}: {live[0].describe()} may still write to its checkpoint. {stop_first}"
            )


def plan_pipeline(settings: Settings, spec: PipelineSpec) -> list[QueryPlan]:
    """A plan per query checkpoint of the pipeline that exists, against Kafka's watermarks now."""
    from streamops.maintenance.checkpoints import kafka_watermarks

    checkpoints = query_checkpoints(
        spec.checkpoint_location(settings.checkpoint_root), spec.queries, spec.name
    )
    existing = {query: path for query, path in checkpoints.items() if path.is_dir()}
    topics = topics_of(existing)
    watermarks = kafka_watermarks(settings, topics) if topics else {}
    return [plan_query(query, path, watermarks) for query, path in existing.items()]


def record_resets(
    settings: Settings, pipeline: str, plans: list[QueryPlan], reset_by: str, at: datetime
) -> int:
    """One ``offset_resets`` row per lost range, in one transaction; the number of rows."""
    from contextlib import closing

    from streamops.db import connect

    rows = [
        (
            pipeline,
            r.query_name,
            r.topic,
            r.partition,
            r.from_offset,
            r.to_offset,
            r.lost_records,
            at.astimezone(UTC).replace(tzinfo=None),
            reset_by[:255],
            str(plan.checkpoint),
        )
        for plan in plans
        for r in plan.ranges
    ]
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        cursor.executemany(
            "INSERT INTO offset_resets (pipeline, query_name, topic, `partition`, from_offset, "
            "to_offset, lost_records, reset_at, reset_by, checkpoint_path) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        connection.commit()
    return len(rows)


def publish_reset_alert(
    settings: Settings, pipeline: str, plans: list[QueryPlan], reset_by: str, at: datetime
) -> dict[str, object]:
    """The platform alert of a reset (``streaming-offsets-reset``, WARN), ``event_count`` = the
    records skipped; to the ``alerts`` topic and ``streamops:alerts:platform``."""
    from streamops.supervision.platform_alerts import platform_alert, publish_platform_alert

    lost = sum(plan.lost_records for plan in plans)
    message = (
        f"{pipeline}: {reset_by} moved the checkpoint past {lost} records that Kafka's "
        "retention deleted before they were read (recorded in offset_resets): "
        + "; ".join(describe(plans))
    )
    return publish_platform_alert(
        settings,
        platform_alert(
            rule_id=OFFSETS_RESET_RULE_ID,
            service=pipeline,
            identity=f"{pipeline}:{at.isoformat()}",
            message=message,
            at=at,
            event_count=lost,
            level="WARN",
        ),
    )


class _HeldLease:
    """The checkpoint's lease, held by this command while it rewrites: no launcher starts a job
    on the checkpoint meanwhile (it would get "held by reset-offsets…")."""

    TTL_SECONDS = 300.0

    def __init__(self, settings: Settings, spec: PipelineSpec) -> None:
        import getpass
        import socket

        self.settings = settings
        self.spec = spec
        self.owner = f"reset-offsets:{getpass.getuser()}@{socket.gethostname()}:{os.getpid()}"

    def __enter__(self) -> _HeldLease:
        from streamops.db import connect
        from streamops.supervision import lease as leases

        self.connection = connect(self.settings)
        location = self.spec.checkpoint_location(self.settings.checkpoint_root)
        try:
            self.lease = leases.acquire(
                self.connection, location, self.owner, self.TTL_SECONDS, pipeline=self.spec.name
            )
        except leases.LeaseHeldError as held:
            self.connection.close()
            raise OffsetResetError(
                f"{held} Stop the pipeline first (`streamops pipeline stop {self.spec.name}`)."
            ) from None
        except BaseException:
            self.connection.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        from contextlib import suppress

        from streamops.supervision import lease as leases

        with suppress(Exception):  # else it is released by expiry
            leases.release(self.connection, self.lease)
        self.connection.close()


def reset_offsets(
    settings: Settings,
    spec: PipelineSpec,
    *,
    dry_run: bool,
    yes: bool,
    interactive: bool,
    confirm: Callable[[str], bool],
    say: Callable[[str], None],
    reset_by: str,
) -> int:
    """The whole command; its exit code (0 done or nothing to do; an error is raised)."""
    refuse_while_running(settings, spec)
    plans = plan_pipeline(settings, spec)
    lost = sum(plan.lost_records for plan in plans)
    decision = decide(lost_records=lost, dry_run=dry_run, yes=yes, interactive=interactive)
    if decision is Decision.NOTHING:
        say(
            f"{spec.name}: nothing to do: every query checkpoint ({len(plans)}) is at or past its "
            "topics' log start."
        )
        return 0
    say(f"{spec.name}: records deleted by Kafka's retention before the queries read them:")
    for line in describe(plans):
        say(f"  {line}")
    say(
        f"{lost} records in all are skipped for good; stateful queries keep their state (open "
        "windows and join buffers simply never see them)."
    )
    if decision is Decision.DRY_RUN:
        say("dry run: nothing was changed.")
        return 0
    if decision is Decision.REFUSE_NO_TTY:
        raise OffsetResetError(
            f"{spec.name}: not moving the checkpoint past {lost} lost records without a "
            "confirmation, and there is no terminal to ask: pass --yes to confirm."
        )
    if decision is Decision.ASK and not confirm(
        f"Move {spec.name}'s checkpoints to the earliest available offsets, skipping {lost} "
        "records?"
    ):
        raise OffsetResetError(f"{spec.name}: not confirmed; nothing was changed.")
    with _HeldLease(settings, spec):
        # Planned again under the lease: a job may have run, or retention moved on, meanwhile.
        plans = plan_pipeline(settings, spec)
        if not any(plan.ranges for plan in plans):
            say(f"{spec.name}: nothing to do any more: the offsets moved meanwhile.")
            return 0
        at = datetime.now(UTC)
        for plan in plans:
            if plan.rewrites:
                backup = backup_offsets(plan, at)
                apply_plan(plan)
                say(
                    f"  {plan.query_name}: rewrote {len(plan.rewrites)} offsets file(s) of "
                    f"{plan.checkpoint} (copy of the old ones in {backup})"
                )
        rows = record_resets(settings, spec.name, plans, reset_by, at)
    publish_reset_alert(settings, spec.name, plans, reset_by, at)
    say(
        f"{spec.name}: checkpoints moved to the earliest available offsets; {rows} row(s) in "
        f"offset_resets, a {OFFSETS_RESET_RULE_ID} alert published. Start it: "
        f"`streamops pipeline start {spec.name}`."
    )
    return 0
