"""The benchmarks run the jobs' own wiring and reach the core only as a child process.

A job's :class:`JobOverrides` change what a benchmark must (checkpoints, trigger, sinks) and
nothing when left at their defaults; the orders benchmark starts the orders job through them;
`streamops bench` hands its options to ``python -m benchmarks.report`` and passes its exit code on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from benchmarks.orders import support
from spark_jobs.common.runner import JobContext, JobOverrides
from spark_jobs.jobs import orders
from streamops.cli.bench import report_options
from streamops.config import PROJECT_ROOT, Settings
from streamops.supervision.spec import parse_specs


@pytest.fixture
def local_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"checkpoint_uri": "/data/ckpt"})


def _context(settings: Settings, overrides: JobOverrides | None = None) -> JobContext:
    body = {"job_module": "spark_jobs.jobs.orders", "queries": ["orders_records", "orders_revenue"]}
    spec = parse_specs({"pipelines": {"orders": body}})["orders"]
    return JobContext(spec, settings, overrides or JobOverrides())


class _Writer:
    """Stands in for a DataStreamWriter: remembers the trigger it was given."""

    def __init__(self) -> None:
        self.trigger_given: dict[str, Any] | None = None

    def trigger(self, **keywords: Any) -> _Writer:
        self.trigger_given = keywords
        return self


# --- the overrides -------------------------------------------------------------------------------


def test_without_overrides_the_job_keeps_its_checkpoints_trigger_and_sinks(
    local_settings: Settings,
) -> None:
    context = _context(local_settings)
    records, _ = context.queries("records", "revenue")
    assert records.checkpoint == "/data/ckpt/orders/records"
    built: list[Settings] = []
    written: list[int] = []

    def job_sink(settings: Settings) -> Any:
        built.append(settings)
        return lambda frame, batch_id: written.append(batch_id)

    context.batch_writer(records, job_sink)(None, 7)
    assert (built, written) == ([local_settings], [7])
    assert context.triggered(_Writer()).trigger_given is None  # type: ignore[arg-type]
    timed = context.triggered(_Writer(), "5 seconds")  # type: ignore[arg-type]
    assert timed.trigger_given == {"processingTime": "5 seconds"}  # type: ignore[attr-defined]


def test_overrides_replace_checkpoints_trigger_and_the_sink_of_a_role(
    local_settings: Settings,
) -> None:
    written: list[str] = []
    overrides = JobOverrides(
        checkpoint_location="/tmp/bench/drain-1/",
        trigger={"availableNow": True},
        sinks={"records": lambda frame, batch_id: written.append("no-op")},
    )
    context = _context(local_settings, overrides)
    records, revenue = context.queries("records", "revenue")
    assert (records.checkpoint, revenue.checkpoint) == (
        "/tmp/bench/drain-1/records",
        "/tmp/bench/drain-1/revenue",
    )
    assert context.checkpoint_location == "/tmp/bench/drain-1"

    def job_sink(settings: Settings) -> Any:
        raise AssertionError("an overridden sink is never built")

    context.batch_writer(records, job_sink)(None, 0)
    assert written == ["no-op"]
    writer = context.triggered(_Writer(), "5 seconds")  # type: ignore[arg-type]
    assert writer.trigger_given == {"availableNow": True}  # type: ignore[attr-defined]


def test_a_sink_overridden_for_a_role_the_job_lacks_fails_before_any_query(
    local_settings: Settings,
) -> None:
    overrides = JobOverrides(sinks={"totals": lambda frame, batch_id: None})
    with pytest.raises(ValueError, match=r"overridden for \['totals'\]"):
        _context(local_settings, overrides).queries("records", "revenue")


def test_the_orders_job_builds_its_queries_with_a_benchmark_s_overrides(
    spark: SparkSession, local_settings: Settings
) -> None:
    overrides = JobOverrides(
        checkpoint_location="/tmp/bench/drain", trigger={"availableNow": True}, sinks={}
    )
    writers = orders.writers(
        spark, _context(local_settings, overrides), orders.OrdersJobConfig(topic="bench-topic")
    )
    assert len(writers) == 2  # built, never started: no broker needed


def test_the_orders_benchmark_starts_the_job_s_own_queries(
    monkeypatch: pytest.MonkeyPatch, local_settings: Settings
) -> None:
    started: list[tuple[Any, ...]] = []

    def start(*args: Any) -> list[Any]:
        started.append(args)
        return []

    monkeypatch.setattr(orders, "start", start)
    support.start_pipeline(
        "spark", local_settings, "bench-t", Path("/s/c"), sinks=False, available_now=True
    )
    support.start_pipeline(
        "spark", local_settings, "bench-t", Path("/s/d"), sinks=True, available_now=False
    )
    (_, settings, config, no_op), (_, _, _, real) = started
    assert settings is local_settings
    assert config == orders.OrdersJobConfig(topic="bench-t")
    assert no_op == JobOverrides("/s/c", {"availableNow": True}, support.NO_OP_SINKS)
    assert real == JobOverrides("/s/d", None, {})
    assert set(support.NO_OP_SINKS) == {"records", "revenue"}  # the job's roles


# --- `streamops bench` runs the benchmarks as a child -------------------------------------------


def test_the_cli_hands_its_options_to_the_report_module(tmp_path: Path) -> None:
    assert report_options(["joins", "bench_vitals"], ["soak"], True, tmp_path) == [
        "--only=joins",
        "--only=bench_vitals",
        "--skip=soak",
        "--quick",
        f"--output={tmp_path.resolve()}",
    ]
    assert report_options(None, None, False, None) == []


def _streamops(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamops", "bench", *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_bench_lists_and_refuses_through_the_child_from_any_folder(tmp_path: Path) -> None:
    listed = _streamops("--list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert {"orders_pipeline", "generate_orders"} <= set(listed.stdout.split())

    refused = _streamops("--only", "no_such_thing", cwd=PROJECT_ROOT)
    assert refused.returncode == 2, refused.stderr
    assert "Unknown benchmark no_such_thing" in refused.stderr
    assert "generate_orders" in refused.stderr
