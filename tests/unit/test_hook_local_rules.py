"""The supervision hook's local rules that need no Spark: the refusal read from a job's exit file
and log, the start gate that keeps two jobs from starting at once, a full disk read from the exit
code and probed where the spec writes. Apart from test_schema_check, test_stall_rule and
test_disk_full, which run Spark code: each test file runs in one of the two environments
(tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamops_airflow.hooks import SparkJobHook

from streamops.config import Settings, load_settings
from streamops.errors import EXIT_DISK_FULL, EXIT_REFUSED, REFUSAL_MARK
from streamops.supervision import dependencies, job_processes
from streamops.supervision import lease as leases
from streamops.supervision.dependencies import LAUNCH_MARK
from streamops.supervision.job_processes import JobHandle
from streamops.supervision.spec import load_specs


def _ended_job(tmp_path: Path) -> tuple[JobHandle, Path, Path]:
    """A local job of another host (no process of it lives here: it has ended), with its exit
    file and launch log under ``tmp_path``."""
    exit_file, log_file = tmp_path / "pid-10.exit", tmp_path / "token-3.log"
    handle = JobHandle(
        pipeline="orders",
        queries=("q",),
        checkpoint_location="/c/orders",
        owner="airflow:d.supervise",
        fencing_token=3,
        host="another-host",
        pid=10,
        process_start_epoch=1.0,
        exit_file=str(exit_file),
        log_file=str(log_file),
    )
    return handle, exit_file, log_file


def test_the_hook_reads_a_local_refusal_from_the_exit_file_and_the_launch_log(
    tmp_path: Path,
) -> None:
    handle, exit_file, log_file = _ended_job(tmp_path)
    hook = SparkJobHook(load_specs()["orders"], load_settings())
    log_file.write_text(
        f"{LAUNCH_MARK} 9\nERROR x: {REFUSAL_MARK} an older launch's reason\n"
        f"{LAUNCH_MARK} 10\nERROR spark_jobs.common.runner: {REFUSAL_MARK} lacks 0012_x.sql\n"
    )

    exit_file.write_text("1\n")
    assert hook.refusal(handle) is None  # a crash: the breaker counts it as usual
    exit_file.write_text(f"{EXIT_REFUSED}\n")
    assert hook.refusal(handle) == "lacks 0012_x.sql"
    log_file.write_text("")
    assert "refused to start (exit 78)" in str(hook.refusal(handle))


def test_a_launch_waits_for_another_start_then_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    locks = [False, True]  # another launch holds the lock first
    answers = [["vitals"], ["vitals"], []]
    kept: list[int] = []
    monkeypatch.setattr(leases, "try_named_lock", lambda connection, name: locks.pop(0))
    monkeypatch.setattr(job_processes, "starting_pipelines", lambda settings, specs: answers.pop(0))
    hook = SparkJobHook(load_specs()["orders"], load_settings())
    assert hook.wait_for_other_starts(None, keep_alive=lambda: kept.append(1), poll_seconds=0)
    assert answers == []  # it looked until nobody was starting
    assert len(kept) == 3  # the lease was renewed at every wait


def test_the_start_gate_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leases, "try_named_lock", lambda connection, name: True)
    monkeypatch.setattr(job_processes, "starting_pipelines", lambda settings, specs: ["joins"])
    spec = load_specs()["orders"]
    health = spec.health.model_copy(update={"start_alone_seconds": 0.05})
    hook = SparkJobHook(spec.model_copy(update={"health": health}), load_settings())
    # Past the budget it launches anyway, holding the lock it took.
    assert hook.wait_for_other_starts(None, poll_seconds=0.01) is True


def test_the_hook_takes_exit_74_for_a_disk_outage_even_without_the_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle, exit_file, log_file = _ended_job(tmp_path)
    hook = SparkJobHook(load_specs()["orders"], load_settings())
    monkeypatch.setattr(dependencies, "probe", lambda settings: [])  # space is back already
    monkeypatch.setattr(hook, "query_states", lambda handle: {})
    log_file.write_text("ERROR x: the orders job does not start: 0 B free\n")

    exit_file.write_text("1\n")
    assert hook.outage(handle, "failed: the job process exited with 1") is None
    exit_file.write_text(f"{EXIT_DISK_FULL}\n")
    outage = hook.outage(handle, "failed: the job stopped on a full disk (exit 74)")
    assert outage is not None
    assert (outage.dependencies, outage.confirmed) == (("disk",), False)


def test_the_supervisor_probes_the_disk_of_a_spec_s_own_checkpoint_root() -> None:
    settings = Settings(checkpoint_uri="/srv/checkpoints")
    spec = load_specs()["orders"]
    assert SparkJobHook(spec, settings).probe_settings.checkpoint_root == (
        spec.checkpoint_root or "/srv/checkpoints"
    )
    own = spec.model_copy(update={"checkpoint_root": "/mnt/small/checkpoints"})
    probed = SparkJobHook(own, settings).probe_settings
    assert Path("/mnt/small/checkpoints") in dependencies.disk_paths(probed)
