"""The job is its whole session, not the ``sh`` wrapper's pid (real processes, no services).

A job launched as the supervisor launches it (``sh -c '<job>; echo $? > pid-$$.exit'`` leading
a new session): a kill -9 of the wrapper alone must not read as a dead job while its children
(spark-submit's JVM and the Python driver, here stand-ins) still run; a stop must leave nothing
of the session; and a pipeline's processes outside the lease holder's job are found as strays.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from psutil import _pslinux

from streamops.config import Settings, load_settings
from streamops.processes import process_stamp
from streamops.supervision import job_processes
from streamops.supervision.job_processes import JobHandle
from streamops.supervision.lease import Lease

# A stand-in for the Python driver: exits 0 on SIGTERM (the job's graceful stop).
DRIVER = (
    "import pathlib, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
    "pathlib.Path(sys.argv[1]).touch()\n"
    "while True: time.sleep(0.1)\n"
)


def _handle(pid: int, start: float, folder: Path) -> JobHandle:
    """The handle the supervisor records for a job led by ``pid``."""
    return JobHandle(
        process_stamp=process_stamp(pid) or "",
        pipeline="orders",
        queries=("orders_records",),
        checkpoint_location=str(folder / "checkpoint"),
        owner="test",
        fencing_token=1,
        host=socket.gethostname(),
        pid=pid,
        process_start_epoch=start,
        exit_file=str(folder / f"pid-{pid}.exit"),
        log_file=str(folder / "job.log"),
    )


def _launch(folder: Path, env: dict[str, str] | None = None) -> tuple[JobHandle, int]:
    """(the handle the supervisor would record, the driver's pid)."""
    folder.mkdir(parents=True, exist_ok=True)
    ready = folder / "ready"
    command = f"{sys.executable} -c '{DRIVER}' {ready} & wait $!"
    wrapper = f'{command}; echo $? > "$0/pid-$$.exit"'
    process = subprocess.Popen(
        ["/bin/sh", "-c", wrapper, str(folder)],
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    handle = _handle(process.pid, psutil.Process(process.pid).create_time(), folder)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        drivers = job_processes.python_drivers(job_processes.job_processes(handle))
        if drivers and ready.exists():
            return handle, drivers[0].pid
        time.sleep(0.05)
    raise AssertionError("the stand-in driver never started")


def _session_members(session: int) -> list[int]:
    members = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
        except (psutil.Error, OSError):
            continue
    return members


@pytest.fixture
def launched(tmp_path: Path) -> Iterator[tuple[JobHandle, int]]:
    handle, driver = _launch(tmp_path)
    yield handle, driver
    job_processes.kill_job(handle)


def test_a_killed_wrapper_does_not_hide_a_live_job(launched: tuple[JobHandle, int]) -> None:
    handle, driver = launched
    os.kill(handle.pid, signal.SIGKILL)
    psutil.Process(driver)  # still there
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and job_processes.wrapper_is_running(handle):
        time.sleep(0.05)
    assert not job_processes.wrapper_is_running(handle)
    # The driver, reparented, is still the job: alive, and not "killed" to the health rule.
    assert job_processes.process_is_running(handle)
    assert [p.pid for p in job_processes.job_processes(handle)] == [driver]
    # A stop reaches it though the wrapper is gone: gracefully, by SIGTERM to the driver.
    job_processes.stop_process(handle, timeout_seconds=10)
    assert not job_processes.process_is_running(handle)
    assert _session_members(handle.pid) == []


def test_a_stop_leaves_nothing_of_the_session(launched: tuple[JobHandle, int]) -> None:
    handle, _driver = launched
    assert job_processes.stop_process(handle, timeout_seconds=10) == 0  # the wrapper recorded 0
    assert _session_members(handle.pid) == []


def test_a_driver_that_ignores_sigterm_is_killed_with_its_session(tmp_path: Path) -> None:
    stubborn = DRIVER.replace("sys.exit(0)", "None")
    ready = tmp_path / "ready"
    command = f"{sys.executable} -c '{stubborn}' {ready} & wait $!"
    process = subprocess.Popen(["/bin/sh", "-c", command], start_new_session=True)
    handle = _handle(process.pid, psutil.Process(process.pid).create_time(), tmp_path)
    deadline = time.monotonic() + 20
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # the wrapper first: the stubborn child is orphaned
    process.wait()
    assert job_processes.process_is_running(handle)
    assert job_processes.stop_process(handle, timeout_seconds=1) is None  # had to be killed
    assert _session_members(handle.pid) == []


def test_a_recycled_pid_is_not_the_job(launched: tuple[JobHandle, int]) -> None:
    handle, _driver = launched
    boot, _, ticks = handle.process_stamp.partition("/")
    earlier = JobHandle(**{**handle.to_dict(), "process_stamp": f"{boot}/{int(ticks) - 1}"})
    assert job_processes.job_processes(earlier) == []
    assert not job_processes.process_is_running(earlier)
    # A handle recorded before stamps were: by the wall-clock start time, as then.
    legacy = JobHandle(**{**handle.to_dict(), "process_stamp": "", "process_start_epoch": 1.0})
    assert job_processes.job_processes(legacy) == []


def test_a_step_of_the_system_clock_does_not_make_the_job_a_stranger(
    launched: tuple[JobHandle, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # After a time synchronisation or a resumed VM, psutil puts every process's start an hour
    # later; the job is still its wrapper and its driver, and still alive.
    handle, driver = launched
    real = _pslinux.boot_time
    monkeypatch.setattr(_pslinux, "boot_time", lambda: real() + 3600.0)
    psutil.process_iter.cache_clear()
    assert psutil.Process(handle.pid).create_time() > handle.process_start_epoch + 3500
    assert {p.pid for p in job_processes.job_processes(handle)} >= {handle.pid, driver}
    assert job_processes.process_is_running(handle)
    # Judged by the wall-clock start alone (a handle without a stamp), the job would be gone:
    # what the supervisor and the operations page said of every job after such a step.
    legacy = JobHandle(**{**handle.to_dict(), "process_stamp": ""})
    assert not job_processes.process_is_running(legacy)
    monkeypatch.undo()
    psutil.process_iter.cache_clear()


def test_stray_processes_of_a_pipeline_are_found_outside_the_holders_job(
    tmp_path: Path,
) -> None:
    settings: Settings = load_settings(state_dir=tmp_path / "state")
    marked = {
        **job_processes.job_environment("orders", Lease("/tmp/checkpoints/orders", "test", 7)),
        job_processes.STATE_DIR_ENV: str(settings.state_dir),
    }
    holder, _ = _launch(tmp_path / "holder", marked)
    stray, stray_driver = _launch(tmp_path / "stray", marked)
    other_state = {**marked, job_processes.STATE_DIR_ENV: str(tmp_path / "elsewhere")}
    elsewhere, _ = _launch(tmp_path / "other", other_state)
    try:
        found = job_processes.stray_jobs(settings, "orders", holder)
        assert [s.session for s in found] == [stray.pid]
        assert stray_driver in found[0].pids and found[0].fencing_token == "7"
        assert "started" in found[0].describe() and str(stray.pid) in found[0].describe()
        assert job_processes.stray_jobs(settings, "vitals", holder) == []
        # Without a holder both launches are strays; the other state folder's never is.
        assert {s.session for s in job_processes.stray_jobs(settings, "orders")} == {
            holder.pid,
            stray.pid,
        }
        job_processes.stop_stray_job(found[0], timeout_seconds=10)
        assert _session_members(stray.pid) == []
        assert job_processes.process_is_running(holder)
    finally:
        for handle in (holder, stray, elsewhere):
            job_processes.kill_job(handle)


def test_a_job_launched_under_the_holders_token_is_not_a_stray_before_its_pid_is_recorded(
    tmp_path: Path,
) -> None:
    # The supervisor records the job's pid in the lease only after spark-submit's wrapper is
    # up; a `pipeline start` in between once refused to start, calling that job an orphan.
    settings: Settings = load_settings(state_dir=tmp_path / "state")

    def marked(token: int) -> dict[str, str]:
        lease = Lease("/tmp/checkpoints/orders", "test", token)
        return {
            **job_processes.job_environment("orders", lease),
            job_processes.STATE_DIR_ENV: str(settings.state_dir),
        }

    starting, _ = _launch(tmp_path / "starting", marked(7))
    older, _ = _launch(tmp_path / "older", marked(6))
    try:
        unrecorded = JobHandle(**{**starting.to_dict(), "pid": 0, "fencing_token": 7})
        assert job_processes.job_processes(unrecorded) == []
        found = job_processes.stray_jobs(settings, "orders", unrecorded)
        assert [s.session for s in found] == [older.pid]
        assert found[0].fencing_token == "6"
    finally:
        for handle in (starting, older):
            job_processes.kill_job(handle)


def test_the_process_at_the_pid_is_the_job_though_it_leads_no_session(tmp_path: Path) -> None:
    me = psutil.Process(os.getpid())
    if os.getsid(me.pid) == me.pid:
        pytest.skip("pytest leads its own session here; the case needs a non-leader")
    handle = _handle(me.pid, me.create_time(), tmp_path)
    assert [p.pid for p in job_processes.job_processes(handle)] == [me.pid]


def test_the_supervisor_watches_the_wrapper_and_the_driver(
    launched: tuple[JobHandle, int],
) -> None:
    """Their exit wakes the health trigger at once: a kill is seen in moments, not at the next
    poll (``triggers.sleep_until_exit`` over pidfds)."""
    import asyncio

    from streamops_airflow.triggers import sleep_until_exit

    handle, driver = launched
    watched = job_processes.exit_watch_pids(handle)
    assert sorted(watched) == sorted([handle.pid, driver])

    async def killed_during_sleep() -> float:
        began = time.monotonic()
        asyncio.get_running_loop().call_later(0.3, os.kill, driver, signal.SIGKILL)
        await sleep_until_exit(watched, 30.0)
        return time.monotonic() - began

    waited = asyncio.run(killed_during_sleep())
    assert 0.25 <= waited < 10.0, waited  # woken by the kill, not by the 30-s timeout

    async def already_gone() -> float:
        began = time.monotonic()
        await sleep_until_exit([driver], 30.0)
        return time.monotonic() - began

    assert asyncio.run(already_gone()) < 10.0
