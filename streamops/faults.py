"""Kill points: where a test makes a process die with SIGKILL, as a crash or `kill -9` would.

A process dies at a kill point — no cleanup, no rollback by the process, open transactions left
for the server to abort — in one of two ways:

- ``STREAMOPS_FAULT_KILL_AT`` names it when the process starts: it dies there once, and the
  marker file (``STREAMOPS_FAULT_MARKER``) records it so the restarted process runs through;
- the chaos suite arms it in a running platform: a file ``<state>/faults/<name>`` (``:`` as
  ``-``, :func:`arm`). The first process of that state folder to reach the point removes the
  file and dies; removal is atomic, so exactly one process dies per arming.

Unset in production, a kill point costs one environment lookup and one ``stat``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

KILL_AT_ENV = "STREAMOPS_FAULT_KILL_AT"
MARKER_ENV = "STREAMOPS_FAULT_MARKER"
# Every job process has it (``streamops.supervision.job_processes.STATE_DIR_ENV``).
STATE_DIR_ENV = "STREAMOPS_STATE_DIR"
ARMED_FOLDER = "faults"


def armed_path(state_dir: Path | str, name: str) -> Path:
    """The file that arms kill point ``name`` for the processes of ``state_dir``."""
    return Path(state_dir) / ARMED_FOLDER / name.replace(":", "-")


def arm(state_dir: Path | str, name: str) -> Path:
    """Arm kill point ``name`` once: the next process of ``state_dir`` to reach it dies."""
    path = armed_path(state_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"armed {name}\n")
    return path


def disarm(state_dir: Path | str, name: str) -> bool:
    """Remove the arming of ``name``; True when this call removed it (it was still armed).

    Any error (no such file, a read-only or foreign state folder) means "not armed": a kill point
    must never break the process it sits in."""
    path = armed_path(state_dir, name)
    try:
        if not path.exists():
            return False
        path.unlink()
    except OSError:
        return False
    return True


def kill_point(name: str) -> None:
    """Die here (SIGKILL) when ``STREAMOPS_FAULT_KILL_AT`` is ``name`` and no marker exists, or
    when the chaos suite armed ``name`` for this process's state folder."""
    if os.environ.get(KILL_AT_ENV) == name:
        marker = Path(os.environ.get(MARKER_ENV, f"/tmp/streamops-fault-{name.replace(':', '-')}"))
        if not marker.exists():
            marker.write_text(f"killed at {name}\n")
            os.kill(os.getpid(), signal.SIGKILL)
    state_dir = os.environ.get(STATE_DIR_ENV)
    if state_dir and disarm(state_dir, name):
        os.kill(os.getpid(), signal.SIGKILL)
