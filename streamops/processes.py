"""Processes on this host: a session's members, and who a process is across clock changes.

A pid alone does not name a process: pids are reused (``kernel.pid_max`` is 32768 here, and a
JVM's threads use pids too, so they come round within hours). The start time tells a reused pid
apart, but the wall-clock start time psutil gives (``create_time``) is the boot time plus the
kernel's start tick, and the boot time moves with every step of the system clock: a time
synchronisation, a virtual machine resumed and set to the right time. After a step of more than
the tolerance, every running process would look like a stranger at its own pid: the stack would
drop the pid files of its running services, and the supervisor would call every live job dead.

So a process is named by its :func:`process_stamp`: the kernel's boot id and the process's start
in clock ticks since boot, both read from ``/proc`` and both untouched by the clock.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import psutil

PROC = Path("/proc")


def session_members(session_id: int) -> list[int]:
    """The pids of the live processes in session ``session_id`` (zombies excluded)."""
    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(proc.pid) == session_id:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return members


@functools.cache
def boot_id(proc: Path = PROC) -> str:
    """This boot's id (a new one after every reboot): read once, as it cannot change while this
    process lives, though every stamp and every session member checked asks for it."""
    return (proc / "sys/kernel/random/boot_id").read_text().strip()


def start_ticks(pid: int, proc: Path = PROC) -> int | None:
    """When ``pid`` started, in clock ticks since boot; None once it is gone.

    Field 22 of ``/proc/<pid>/stat``. The command name (field 2) may hold spaces and
    parentheses, so the fields are counted from its last ``)``.
    """
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[19])  # fields[0] is field 3 (the state)


def process_stamp(pid: int, proc: Path = PROC) -> str | None:
    """``<boot id>/<start ticks>`` of ``pid``: equal for the same process whatever the clock
    does, different for any other process at that pid; None once it is gone."""
    ticks = start_ticks(pid, proc)
    return None if ticks is None else f"{boot_id(proc)}/{ticks}"


def parse_stamp(stamp: str) -> tuple[str, int] | None:
    """The boot id and start ticks of a stamp; None for an empty or malformed one."""
    boot, _, ticks = stamp.partition("/")
    if not boot or not ticks.isdigit():
        return None
    return boot, int(ticks)


def is_same_process(pid: int, stamp: str, proc: Path = PROC) -> bool:
    """``pid`` is still the process ``stamp`` was taken of (a zombie still counts: the caller
    decides what a zombie means)."""
    return bool(stamp) and process_stamp(pid, proc) == stamp


def started_since(pid: int, stamp: str, proc: Path = PROC) -> bool | None:
    """``pid`` started no earlier than the process of ``stamp`` (in this boot); None when that
    cannot be told (``pid`` gone, or a malformed stamp), False for a stamp of another boot."""
    parsed = parse_stamp(stamp)
    ticks = start_ticks(pid, proc)
    if parsed is None or ticks is None:
        return None
    boot, since = parsed
    return boot == boot_id(proc) and ticks >= since
