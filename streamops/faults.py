"""Kill points: where a test makes a process die with SIGKILL, as a crash or `kill -9` would.

A process dies at the kill point named by ``STREAMOPS_FAULT_KILL_AT`` — no cleanup, no rollback
by the process, open transactions left for the server to abort — once: the marker file
(``STREAMOPS_FAULT_MARKER``) records it, so the restarted process runs through. Unset in
production, a kill point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

KILL_AT_ENV = "STREAMOPS_FAULT_KILL_AT"
MARKER_ENV = "STREAMOPS_FAULT_MARKER"


def kill_point(name: str) -> None:
    """Die here (SIGKILL) when ``STREAMOPS_FAULT_KILL_AT`` is ``name`` and no marker exists."""
    if os.environ.get(KILL_AT_ENV) != name:
        return
    marker = Path(os.environ.get(MARKER_ENV, f"/tmp/streamops-fault-{name.replace(':', '-')}"))
    if marker.exists():
        return
    marker.write_text(f"killed at {name}\n")
    os.kill(os.getpid(), signal.SIGKILL)
