"""A transient start failure restarts the one query in its own driver, from its checkpoint.

The failure is Spark's own: ``transformWithState``'s pre-init Python worker must connect back to
the driver's JVM within a fixed 10 s (``PythonWorkerFactory``). On a loaded machine it did not.
Here the Python the JVM launches for its workers is a wrapper that holds that one worker, the
first time only, for longer than 10 s: Spark fails ``vitals_signal`` with "Python worker failed to
connect back". The job (real Kafka, Spark, MariaDB and Redis, run as the supervisor runs it:
``runner.run_queries``) must keep running, say ``restarting`` (never ``failed``) in the query's
Redis hash while it waits, start the query again, and commit its batches after.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Producer

from spark_jobs.common.listener import status_redis
from streamops.config import PROJECT_ROOT, Settings
from streamops.contract.redis_keys import query_key
from streamops.supervision.job_health import HealthStatus, StallBounds, classify_health
from streamops.topics import ensure_topics
from tests.integration.support import kill_group

WAIT_SECONDS = 300
SLOW_WORKER = """#!/bin/sh
# Hold transformWithState's pre-init worker past Spark's 10 s, the first time only.
case "$*" in
  *transform_with_state_driver_worker*)
    if mkdir "{marker}" 2>/dev/null; then sleep 14; fi ;;
esac
exec "{python}" "$@"
"""


def _produce(settings: Settings, topic: str, tag: str) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "acks": "all"})
    start = datetime.now(UTC) - timedelta(minutes=5)
    for second in range(0, 60, 5):
        body = {
            "patient_id": f"RS-{tag}",
            "device_id": "dev-rs",
            "event_time": (start + timedelta(seconds=second)).isoformat().replace("+00:00", "Z"),
            "heart_rate": 70,
        }
        producer.produce(topic, value=json.dumps(body).encode(), partition=0)
    assert producer.flush(30) == 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _committed_batches(checkpoint: Path) -> list[int]:
    commits = checkpoint / "commits"
    if not commits.is_dir():
        return []
    return sorted(int(p.name) for p in commits.iterdir() if p.name.isdigit())


def test_a_slow_python_worker_restarts_the_query_not_the_job(
    settings: Settings, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    topic = f"vitals-restart-{tag}"
    ensure_topics(settings, (topic,))
    _produce(settings, topic, tag)
    wrapper = tmp_path / "python"
    wrapper.write_text(SLOW_WORKER.format(marker=tmp_path / "held", python=sys.executable))
    wrapper.chmod(0o755)
    log_path = tmp_path / "job.log"
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spark_jobs.jobs.vitals",
            "--topic",
            topic,
            "--trigger-interval",
            "2 seconds",
            "--model-dir",
            str(tmp_path / "models"),
        ],
        cwd=PROJECT_ROOT,
        env={
            **os.environ,
            "STREAMOPS_CHECKPOINT_URI": str(tmp_path / "checkpoints"),
            "PYSPARK_PYTHON": str(wrapper),
        },
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started = time.time()
    client = status_redis(settings)
    key = query_key("vitals", "vitals_signal")
    bounds = StallBounds(heartbeat_max_age_seconds=60.0, startup_grace_seconds=180.0)
    signal_checkpoint = tmp_path / "checkpoints" / "vitals" / "signal"
    seen_restarting: dict[str, str] = {}
    verdicts: list[tuple[HealthStatus, str]] = []
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            assert job.poll() is None, log_path.read_text()[-6000:]
            fields = {_text(k): _text(v) for k, v in client.hgetall(key).items()}
            if fields.get("state") == "restarting" and not seen_restarting:
                seen_restarting = fields
            if fields:
                health = classify_health(
                    alive=True,
                    exit_code=None,
                    query_states={"vitals_signal": fields},
                    now=time.time(),
                    process_start_epoch=started,
                    bounds=bounds,
                )
                verdicts.append((health.status, health.detail))
            if seen_restarting and _committed_batches(signal_checkpoint):
                break
            time.sleep(0.25)
        log = log_path.read_text()
        assert (tmp_path / "held").is_dir(), "the wrapper never held the pre-init worker"
        assert "Python worker failed to connect back" in log, log[-6000:]
        assert seen_restarting, f"never saw vitals_signal restarting: {verdicts[-5:]}"
        assert seen_restarting["restart_attempt"] == "1 of 5"
        assert seen_restarting["restart_reason"] == "Python worker failed to connect back"
        assert seen_restarting["last_exception"] == ""
        assert "restarting query vitals_signal (attempt 1 of 5)" in log
        assert _committed_batches(signal_checkpoint), log[-6000:]
        failed = [v for v in verdicts if v[0] in (HealthStatus.FAILED, HealthStatus.STALLED)]
        assert not failed, failed
        assert any(
            status is HealthStatus.STARTING and "restarting" in detail
            for status, detail in verdicts
        ), verdicts
        # The job carries on as one process, and stops cleanly on request.
        assert job.poll() is None
        job.send_signal(signal.SIGTERM)  # the driver: it stops its queries, then its JVM
        assert job.wait(timeout=60) == 0, log_path.read_text()[-6000:]
    finally:
        kill_group(job)
