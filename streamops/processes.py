"""The processes of a session: what a stop signals, a chaos kill takes and a settled job lowers."""

from __future__ import annotations

import os

import psutil


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
