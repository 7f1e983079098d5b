"""A job that has settled yields the CPU to one that is starting.

On a machine the running jobs already saturate (two cores, four JVMs), a relaunched job spent
minutes getting its JVM, its SparkSession and its first batches through (issue 16: a killed
JVM took 3–4 minutes to be back). Every job therefore starts at the niceness it was launched
with and, once each of its queries has caught up with its topics, lowers its own priority: its
session's scheduling autogroup and every thread of every process of the session (the JVM, the
Python driver, its workers) to the niceness ``STREAMOPS_SETTLED_NICE`` names (the spec's
``settled_nice``; 0 leaves it alone). The scheduler then gives a starting job, and Kafka, MariaDB,
Redis and Airflow, the CPU first; the settled jobs share what is left in the same proportions
among themselves as before.

Raising a niceness needs no privilege, and threads started later inherit it from the thread
that starts them. Linux keeps a niceness per thread, so each thread is set, not only each
process.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from streamops.processes import session_members
from streamops.supervision.submit import SETTLED_NICE_ENV

MAX_NICE = 19


def settled_nice(environ: dict[str, str] | None = None) -> int:
    """The niceness a settled job takes (0: none), from ``STREAMOPS_SETTLED_NICE``.

    A value that is not a whole number from 0 to 19 raises ``ValueError`` naming it: the
    submit environment sets it from a validated spec, so anything else is a launch gone wrong.
    """
    text = (os.environ if environ is None else environ).get(SETTLED_NICE_ENV, "0").strip()
    try:
        value = int(text)
    except ValueError:
        raise ValueError(
            f"{SETTLED_NICE_ENV} is {text!r}; give a whole number from 0 to {MAX_NICE}."
        ) from None
    if not 0 <= value <= MAX_NICE:
        raise ValueError(
            f"{SETTLED_NICE_ENV} is {value}; give a whole number from 0 to {MAX_NICE}."
        )
    return value


def threads_of(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """The thread ids of ``pid`` (none once it ended)."""
    try:
        return [int(task.name) for task in (proc / str(pid) / "task").iterdir()]
    except (OSError, ValueError):
        return []


def autogroup_nice(pid: int, proc: Path = Path("/proc")) -> int | None:
    """The niceness of ``pid``'s scheduling autogroup; None without autogroups (or the pid)."""
    try:
        return int((proc / str(pid) / "autogroup").read_text().rsplit("nice", 1)[1])
    except (OSError, ValueError, IndexError):
        return None


def lower_session_priority(nice: int, session_id: int | None = None) -> int:
    """Every thread of ``session_id`` (default: this process's session) to niceness ``nice``
    at least (a thread already nicer keeps its own), and the session's scheduling autogroup
    too; returns how many threads were lowered.

    With autogroups on (``kernel.sched_autogroup_enabled``, the default of most distributions),
    the kernel first shares the CPU between sessions by their autogroup's niceness, and the
    threads' own only within a session: a job is a session of its own, so the autogroup is
    what puts it behind the others (measured: a relaunched JVM got 25 % of a core with only
    its peers' threads at niceness 10, 85 % with their autogroups at 10 as well)."""
    if nice <= 0:
        return 0
    members = session_members(os.getsid(0) if session_id is None else session_id)
    for pid in members[:1]:  # the members of a session share its autogroup
        group = autogroup_nice(pid)
        if group is not None and group < nice:
            with contextlib.suppress(OSError):  # refused: the threads' niceness still applies
                (Path("/proc") / str(pid) / "autogroup").write_text(f"{nice}\n")
    lowered = 0
    for tid in (tid for pid in members for tid in threads_of(pid)):
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                lowered += 1
        except OSError:
            continue  # the thread ended meanwhile
    return lowered
