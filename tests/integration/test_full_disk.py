"""A full disk on real Kafka, Spark, MariaDB and Redis: the orders job stops cleanly with exit 74
and a clear line, its checkpoint stays readable, it does not start while the disk is still full,
and once space is freed it starts again and every record lands exactly once.

The job's checkpoints and Parquet archive live on a 48 MiB tmpfs mounted by the test (root only);
a ballast file fills it while records flow. Then the same under Airflow: the orders spec's
checkpoint root on the tmpfs, the job stops with exit 74, the supervisor waits (phase
``waiting`` for ``disk``, nothing counted toward the breaker) and relaunches it once the ballast
is deleted, and every record lands exactly once.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.dataset as ds
import pytest
import yaml
from streamops_airflow.hooks import SparkJobHook

from streamops.airflow_rest import AirflowRest
from streamops.config import Settings
from streamops.errors import DISK_FULL_MARK, EXIT_DISK_FULL
from streamops.generator.producer import run_generator
from streamops.stack import Stack
from streamops.stack.pipelines import SupervisedPipeline, supervise
from streamops.supervision import job_processes
from streamops.supervision.restart import Phase
from streamops.supervision.spec import PIPELINES_FILE_ENV, PipelineSpec, load_spec
from tests.integration.orders_support import (
    RATIOS,
    assert_orders_exactly_once,
    expected_from_topic,
    orders_landed,
    reject_reason,
    start_job,
    topic_contents,
)
from tests.integration.support import (
    empty_orders_outputs,
    end_supervision,
    execute,
    kill_group,
    own_topic,
    wait_until,
)
from tests.integration.test_supervision import (
    ensure_test_spark_connection,
    pipelines_document,
    producing_orders,
    restart_airflow_workers,
    wait_for,
)

SEED = 7373
FIRST_ORDERS = 2000
CHUNK = 200
MIB = 1024 * 1024
QUERIES = ("records", "revenue")  # the orders job's checkpoints


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs of the test's own, unmounted at the end whatever happened."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount_point)]
    subprocess.run(mount, check=True)
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path) -> int:
    """Write zeros to ``path`` until the filesystem refuses (ENOSPC); the bytes written."""
    written = 0
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (MIB, 4096, 1):
            block = b"\0" * size
            try:
                while True:
                    written += os.write(descriptor, block)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
    finally:
        os.close(descriptor)
    return written


class Orders(threading.Thread):
    """Orders sent in chunks, one seed each, until told to stop: records keep flowing."""

    def __init__(self, settings: Settings, topic: str) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.topic = topic
        self.halt = threading.Event()
        self.chunks = 0
        self.failed = 0

    def run(self) -> None:
        while not self.halt.is_set():
            summary = run_generator(
                "orders",
                target_topic=self.topic,
                bootstrap_servers=self.settings.kafka_bootstrap_servers,
                rate=0,
                count=CHUNK,
                seed=SEED + 1 + self.chunks,
                now=datetime.now(UTC).replace(microsecond=0),
                progress=False,
                **RATIOS,
            )
            self.failed += summary.failed
            self.chunks += 1
            self.halt.wait(1.0)


def checkpoint_files(root: Path) -> tuple[list[Path], list[Path]]:
    """The checkpoint's visible files (what Spark reads) and its hidden ones (temporary files)."""
    visible, hidden = [], []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            parts = path.relative_to(root).parts
            (hidden if any(part.startswith(".") for part in parts) else visible).append(path)
    return visible, hidden


def assert_checkpoint_readable(root: Path) -> None:
    """No empty or partial file where Spark reads: every offsets and commits entry is complete
    (a version line, then JSON), every other visible file has content, and each query has
    planned at least what it committed."""
    visible, hidden = checkpoint_files(root)
    assert visible, f"no checkpoint under {root}"
    empty = [str(p) for p in visible if p.stat().st_size == 0]
    assert empty == [], f"empty checkpoint files: {empty}"
    for query_dir in (root / name for name in QUERIES):
        batches = {}
        for log_name in ("offsets", "commits"):
            entries = [p for p in (query_dir / log_name).iterdir() if not p.name.startswith(".")]
            assert entries, f"no {log_name} in {query_dir}"
            for entry in entries:
                assert entry.name.isdigit(), entry
                lines = entry.read_text().splitlines()
                assert lines[0] == "v1" and len(lines) >= 2, f"partial {entry}: {lines}"
                for line in lines[1:]:
                    if line != "-":  # a source with no offset yet
                        json.loads(line)
            batches[log_name] = max(int(p.name) for p in entries)
        assert batches["commits"] <= batches["offsets"], (query_dir, batches)
    # What a cut-short write may leave: only hidden temporary files, never a visible version.
    assert all(".tmp" in p.name or p.name.endswith(".crc") for p in hidden), hidden


@pytest.fixture
def scratch_topic(settings: Settings) -> Iterator[str]:
    """A topic of this test's own, made as the contract's are (the shared `orders` holds every
    earlier test's records, which the job would read first), deleted after."""
    with own_topic(settings, f"orders-full-disk-{uuid.uuid4().hex[:8]}") as topic:
        yield topic


def test_a_full_disk_stops_the_job_cleanly_and_it_recovers_once_space_is_freed(
    settings: Settings, tmp_path: Path, small_disk: Path, scratch_topic: str
) -> None:
    empty_orders_outputs(settings)
    first = run_generator(
        "orders",
        target_topic=scratch_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        rate=0,
        count=FIRST_ORDERS,
        seed=SEED,
        now=datetime.now(UTC).replace(microsecond=0),
        progress=False,
        **RATIOS,
    )
    assert (first.sent, first.failed) == (FIRST_ORDERS, 0)
    log_path = tmp_path / "job.log"
    orders = Orders(settings, scratch_topic)
    job = start_job(settings, small_disk, {}, ("--topic", scratch_topic), log_path)
    try:
        # Each query has committed a batch: the disk fills mid-stream, with history to keep.
        checkpoint = small_disk / "checkpoints" / "orders"
        wait_until(
            lambda: all((checkpoint / q / "commits" / "0").exists() for q in QUERIES),
            timeout=300,
            what="a committed batch of each query",
            job=job,
        )
        orders.start()
        ballast = fill(small_disk / "ballast")
        assert ballast > 0
        exit_code = job.wait(timeout=300)
    finally:
        orders.halt.set()
        kill_group(job)
    log = log_path.read_text(errors="replace")
    assert exit_code == EXIT_DISK_FULL, log[-4000:]
    [line] = [line for line in log.splitlines() if DISK_FULL_MARK in line]
    assert "the orders job stopped its queries: " in line
    assert "No space left on device" in line
    assert f"free of 48.0 MiB on {small_disk / 'checkpoints' / 'orders'}" in line
    assert "(checkpoints, archive; full below 2.4 MiB)" in line
    assert "docs/operations.md#a-full-disk" in line
    # A stop, not a crash: no "a query failed" (Spark still logs the failed tasks of a query
    # whose batch met the full disk while the others were being stopped).
    assert "orders: a query failed" not in log
    assert_checkpoint_readable(checkpoint)

    # Still full: the job does not start, and says so in one line with the same exit code.
    fill(small_disk / "ballast-2")
    refused_log = tmp_path / "refused.log"
    refused = start_job(settings, small_disk, {}, ("--topic", scratch_topic), refused_log)
    try:
        assert refused.wait(timeout=120) == EXIT_DISK_FULL
    finally:
        kill_group(refused)
    [refusal] = [line for line in refused_log.read_text().splitlines() if DISK_FULL_MARK in line]
    assert "the orders job does not start: " in refusal and "free of 48.0 MiB" in refusal
    assert "log4j" not in refused_log.read_text()  # refused before Spark's JVM started

    # Space freed: the job starts from its checkpoint and every record lands exactly once.
    orders.join(timeout=120)
    assert not orders.is_alive() and orders.failed == 0
    (small_disk / "ballast").unlink()
    (small_disk / "ballast-2").unlink()
    records = topic_contents(settings, scratch_topic)
    expected_orders, expected_rejects = expected_from_topic(records)
    assert len(records) == FIRST_ORDERS + CHUNK * orders.chunks
    job = start_job(settings, small_disk, {}, ("--topic", scratch_topic), log_path)
    try:
        wait_until(
            lambda: orders_landed(settings, expected_orders, expected_rejects),
            timeout=300,
            what="every record to land after space was freed",
            job=job,
        )
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=120) == 0
    finally:
        kill_group(job)

    assert_orders_exactly_once(settings, expected_orders, expected_rejects, scratch_topic)
    # The archive, whose write met the full disk: each valid record once, none lost.
    archived = ds.dataset(small_disk / "archive" / "orders", format="parquet", partitioning="hive")
    table = archived.to_table(columns=["source_partition", "source_offset"]).to_pydict()
    copies = Counter(zip(table["source_partition"], table["source_offset"], strict=True))
    valid = {(m.partition(), m.offset()) for m in records if reject_reason(m) is None}
    assert set(copies) == valid and max(copies.values()) == 1
    assert_checkpoint_readable(small_disk / "checkpoints" / "orders")


# --- under Airflow's supervision ----------------------------------------------------------------


@pytest.fixture
def supervised_orders(
    stack: Stack, settings: Settings, small_disk: Path, tmp_path: Path
) -> Iterator[PipelineSpec]:
    """The orders spec with its checkpoints on the small disk, supervised by Airflow (the
    scheduler, dag-processor and triggerer restarted with a test pipelines file, and back)."""
    document = pipelines_document(small_disk / "checkpoints")
    document["pipelines"] = {"orders": document["pipelines"]["orders"]}
    specs_file = tmp_path / "pipelines.yaml"
    specs_file.write_text(yaml.safe_dump(document))
    ensure_test_spark_connection(settings)
    empty_orders_outputs(settings)
    api = AirflowRest.login(settings)
    os.environ[PIPELINES_FILE_ENV] = str(specs_file)
    try:
        restart_airflow_workers(stack)
        execute(settings, "DELETE FROM pipeline_restart_state WHERE pipeline = 'orders'")
        yield load_spec("orders")
    finally:
        end_supervision(api, "streamops_supervise_orders")
        handle = SparkJobHook(load_spec("orders"), settings).find_job()
        if handle is not None:
            job_processes.stop_process(handle, 30)
        api.close()
        del os.environ[PIPELINES_FILE_ENV]
        restart_airflow_workers(stack)


def test_under_supervision_a_full_disk_is_waited_out_and_the_job_relaunched_once_freed(
    settings: Settings, small_disk: Path, supervised_orders: PipelineSpec
) -> None:
    spec = supervised_orders
    healths = supervise(settings, [SupervisedPipeline(settings, spec)], print)
    assert healths["pipeline-orders"].healthy, healths
    hook = SparkJobHook(spec, settings)
    job = hook.find_job()
    assert job is not None and job_processes.process_is_running(job)
    before = hook.load_restart_state()
    checkpoint = small_disk / "checkpoints" / "orders"

    with producing_orders(settings, count=3000, rate=100.0, seed=SEED + 500, **RATIOS):
        wait_for(
            lambda: all((checkpoint / q / "commits" / "0").exists() for q in QUERIES),
            timeout=300,
            what="a committed batch of each query",
        )
        fill(small_disk / "ballast")
        waiting = wait_for(
            lambda: (state := hook.load_restart_state()).phase is Phase.WAITING and state,
            timeout=300,
            what="the supervisor to wait for the disk",
        )
    assert waiting
    assert waiting.waiting_for == ("disk",), waiting
    assert waiting.failure_times == before.failure_times, "the full disk was counted"
    assert job_processes.process_exit_code(job) == EXIT_DISK_FULL
    assert not job_processes.process_is_running(job)
    assert_checkpoint_readable(checkpoint)
    # Still full: still waiting, and nothing was relaunched into it.
    assert hook.load_restart_state().phase is Phase.WAITING
    assert (current := hook.find_job()) is None or not job_processes.process_is_running(current)

    (small_disk / "ballast").unlink()
    relaunched = wait_for(
        lambda: (j := hook.find_job()) is not None and job_processes.process_is_running(j) and j,
        timeout=300,
        what="the supervisor to relaunch once space is freed",
    )
    assert relaunched and relaunched.pid != job.pid
    records = topic_contents(settings)
    expected_orders, expected_rejects = expected_from_topic(records)
    wait_for(
        lambda: orders_landed(settings, expected_orders, expected_rejects),
        timeout=300,
        what="every record to land after the relaunch",
    )
    assert_orders_exactly_once(settings, expected_orders, expected_rejects)
    after = hook.load_restart_state()
    assert after.phase is Phase.RUNNING, after
    assert after.failure_times == before.failure_times, "the full disk was counted"
    assert after.outages_total >= before.outages_total + 1
