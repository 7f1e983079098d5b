"""Who a process is survives a step of the system clock (real processes, no services).

psutil's ``create_time`` is the boot time plus the process's start tick, and the boot time
(``btime`` in /proc/stat) moves with every step of the wall clock: a time synchronisation, a
virtual machine resumed and set right. Here the step is simulated by moving the boot time psutil
reads, which is exactly what the kernel reports after a real step. A stack service and a
supervised job must still be recognised at their own pids, and a process at a reused pid must
still be a stranger.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from psutil import _pslinux

from streamops.config import load_settings
from streamops.processes import (
    boot_id,
    is_same_process,
    parse_stamp,
    process_stamp,
    start_ticks,
    started_since,
)
from streamops.stack.base import Component, Health

STEP_SECONDS = 3600.0


@pytest.fixture
def clock_stepped(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The wall clock stepped an hour forward since the processes were recorded."""
    real = _pslinux.boot_time
    monkeypatch.setattr(_pslinux, "boot_time", lambda: real() + STEP_SECONDS)
    psutil.process_iter.cache_clear()  # no Process object with a cached start time
    yield
    psutil.process_iter.cache_clear()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def test_a_stamp_names_one_process_of_this_boot(sleeper: subprocess.Popen[bytes]) -> None:
    stamp = process_stamp(sleeper.pid)
    assert stamp is not None
    parsed = parse_stamp(stamp)
    assert parsed is not None and parsed[0] == boot_id()
    assert parsed[1] == start_ticks(sleeper.pid)
    assert is_same_process(sleeper.pid, stamp)
    # Another process is not the stamped one, and started before it.
    assert not is_same_process(os.getpid(), stamp)
    assert started_since(os.getpid(), stamp) is False
    assert started_since(sleeper.pid, stamp) is True
    # A stamp of another boot: whatever runs at that pid now started after the reboot.
    assert started_since(sleeper.pid, f"another-boot/{parsed[1]}") is False
    sleeper.kill()
    sleeper.wait()
    assert process_stamp(sleeper.pid) is None
    assert not is_same_process(sleeper.pid, stamp)


@pytest.mark.parametrize("bad", ["", "4121774", "boot/", "boot/-1", "/12"])
def test_a_malformed_stamp_names_nothing(bad: str) -> None:
    assert parse_stamp(bad) is None
    assert not is_same_process(os.getpid(), bad)
    assert started_since(os.getpid(), bad) is None


def test_a_command_name_with_spaces_and_parentheses_is_read_right(tmp_path: Path) -> None:
    odd = tmp_path / "a b) (c"
    odd.symlink_to(sys.executable)
    process = subprocess.Popen([str(odd), "-c", "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and ")" not in psutil.Process(process.pid).name():
            time.sleep(0.02)
        since_boot = psutil.Process(process.pid)._proc.create_time(monotonic=True)
        assert start_ticks(process.pid) == round(since_boot * os.sysconf("SC_CLK_TCK"))
    finally:
        process.kill()
        process.wait()


def test_the_simulated_step_moves_psutil_s_start_time(
    sleeper: subprocess.Popen[bytes], clock_stepped: None
) -> None:
    # What broke the supervisor: the same process, an hour "younger" to psutil...
    ticks = start_ticks(sleeper.pid)
    assert ticks is not None
    assert psutil.boot_time() + ticks / os.sysconf("SC_CLK_TCK") == pytest.approx(
        psutil.Process(sleeper.pid).create_time(), abs=0.02
    )
    # ... while its stamp is what it was.
    assert process_stamp(sleeper.pid) == f"{boot_id()}/{ticks}"


class _Sleeper(Component):
    name = "sleeper"

    def ports(self) -> dict[str, int]:
        return {}

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(60)"]

    def check_health(self) -> Health:
        return Health(True, "sleeping")


def test_a_stack_service_is_still_running_after_a_clock_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(state_dir=tmp_path)
    service = _Sleeper(settings)
    assert service.start()
    try:
        pid = service.running_pid()
        assert pid is not None
        real = _pslinux.boot_time
        monkeypatch.setattr(_pslinux, "boot_time", lambda: real() + STEP_SECONDS)
        assert service.running_pid() == pid, "the running service lost its pid file"
        assert service.health().healthy
        # A pid file of an older streamops (the wall-clock start only) is judged as before.
        record = json.loads(service.pid_path.read_text())
        service.pid_path.write_text(json.dumps({"pid": pid, "create_time": record["create_time"]}))
        assert service.running_pid() is None
    finally:
        monkeypatch.undo()
        service.pid_path.write_text(json.dumps({"pid": pid, "stamp": process_stamp(pid)}))
        service.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
