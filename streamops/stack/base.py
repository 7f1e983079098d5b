"""Processes of the local stack: start, find, health-check and stop one service.

Each service runs in its own session (process group) with its data, log and pid file under the
state folder. A pid file records the process's start time too, so a recycled pid is never taken
for our service, and `up` run twice finds the running copy instead of starting a second one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import psutil

from streamops.config import Settings
from streamops.disk import write_atomically
from streamops.errors import StreamopsError
from streamops.processes import is_same_process, process_stamp, session_members


@dataclass(frozen=True)
class Health:
    healthy: bool
    detail: str


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    ports: dict[str, int]
    health: Health
    version: str


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _who_listens(port: int) -> str:
    """Best effort: 'pid 123 (redis-server)' for the process bound to port, else ''."""
    try:
        for conn in psutil.net_connections(kind="inet"):
            listening = conn.status == psutil.CONN_LISTEN
            if conn.laddr and conn.laddr.port == port and listening and conn.pid:
                return f" by pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except (psutil.Error, OSError):
        pass
    return ""


# Popen objects of the services this process started: polled so exited ones are reaped, not left
# as zombies that still look alive to a pid check.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return f"(no log at {path})"
    with path.open("r", errors="replace") as handle:
        return "".join(deque(handle, maxlen=lines)).rstrip()


class Component(ABC):
    """One long-running service of the local stack."""

    #: name used in pid/log files and on the command line (`streamops logs NAME`)
    name: str
    #: seconds a graceful stop may take before the process group is killed
    stop_timeout_seconds: float = 30.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # --- what each service defines ------------------------------------------------------------
    @abstractmethod
    def ports(self) -> dict[str, int]:
        """Ports this service listens on, by role."""

    @abstractmethod
    def command(self) -> list[str]:
        """argv of the long-running process."""

    @abstractmethod
    def check_health(self) -> Health:
        """Ask the running service whether it serves (not merely whether the process lives)."""

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Create config files and initialise data on first start; idempotent."""

    def after_start(self) -> None:  # noqa: B027 - optional hook
        """Work that needs the service up (users, schema, topics); idempotent."""

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def version(self) -> str:
        return "unknown"

    def requires(self) -> list[tuple[str, str]]:
        """Executables this service needs, with the fix when one is missing."""
        return []

    # --- layout under the state folder ---------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.settings.state_dir / self.name

    @property
    def log_path(self) -> Path:
        return self.settings.state_dir / "logs" / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.settings.state_dir / "run" / f"{self.name}.pid"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    # --- process management --------------------------------------------------------------------
    def running_pid(self) -> int | None:
        """The pid of our running copy, or None (a stale pid file is removed)."""
        for child_pid, child in list(_CHILDREN.items()):
            if child.poll() is not None:
                del _CHILDREN[child_pid]
        try:
            record = json.loads(self.pid_path.read_text())
            pid = int(record["pid"])
            proc = psutil.Process(pid)
            stamp = record.get("stamp")
            if isinstance(stamp, str):
                # The boot id and start tick: the same process whatever the clock did since.
                ours = is_same_process(pid, stamp)
            else:  # a pid file of an older streamops: its wall-clock start time
                ours = abs(proc.create_time() - float(record["create_time"])) < 1.0
            if ours and proc.status() != psutil.STATUS_ZOMBIE:
                return pid
        except FileNotFoundError:
            return None
        except (psutil.Error, ValueError, KeyError, json.JSONDecodeError):
            pass
        self.pid_path.unlink(missing_ok=True)
        return None

    def health(self) -> Health:
        if self.running_pid() is None:
            return Health(False, "not running")
        try:
            return self.check_health()
        except Exception as exc:  # a probe that raises means "not healthy yet", never a crash
            return Health(False, f"{type(exc).__name__}: {exc}")

    def status(self) -> ComponentStatus:
        return ComponentStatus(
            self.name, self.running_pid(), self.ports(), self.health(), self.version()
        )

    def _check_requirements(self) -> None:
        import shutil

        for executable, fix in self.requires():
            if shutil.which(executable) is None and not Path(executable).exists():
                raise StreamopsError(
                    f"{self.name} needs `{executable}`, which is not installed. {fix}"
                )

    def _check_ports_free(self) -> None:
        for role, port in self.ports().items():
            if not port_is_free(self.host, port):
                variable = f"STREAMOPS_{role.upper()}"
                raise StreamopsError(
                    f"Cannot start {self.name}: port {port} ({role}) on {self.host} is already in "
                    f"use{_who_listens(port)}. Stop that process, or give {self.name} another "
                    f"port with {variable}=<port> (or `{role} = <port>` in streamops.toml)."
                )

    def start(self) -> bool:
        """Start the service unless our copy already runs; returns True when it was started."""
        if self.running_pid() is not None:
            return False
        self._check_requirements()
        self._check_ports_free()
        for folder in (self.data_dir, self.log_path.parent, self.pid_path.parent):
            folder.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with self.log_path.open("ab") as log:
            log.write(f"\n=== streamops: starting {self.name} at {time.ctime()} ===\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    self.command(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.data_dir,
                    env=self.environment(),
                    start_new_session=True,
                )
            except OSError as exc:
                raise StreamopsError(
                    f"Could not launch {self.name} ({self.command()[0]}): {exc}. "
                    "Run `streamops install` to install what is missing."
                ) from exc
        _CHILDREN[proc.pid] = proc
        record = {
            "pid": proc.pid,
            "stamp": process_stamp(proc.pid),
            "create_time": psutil.Process(proc.pid).create_time(),  # for people reading it
        }
        # Atomic: on a full disk an empty pid file would make the running service a stranger.
        write_atomically(self.pid_path, json.dumps(record))
        return True

    def wait_healthy(self, timeout: float | None = None) -> Health:
        """Wait until healthy; on death or time-out stop it and raise with the log's tail."""
        deadline = time.monotonic() + (timeout or self.settings.startup_timeout_seconds)
        health = Health(False, "not checked")
        while time.monotonic() < deadline:
            if self.running_pid() is None:
                raise StreamopsError(
                    f"{self.name} exited during start-up ({health.detail}). Read its log with "
                    f"`streamops logs {self.name}` ({self.log_path}); fix the cause shown below "
                    "and run `streamops up` again.",
                    log_tail=tail(self.log_path),
                )
            health = self.health()
            if health.healthy:
                return health
            time.sleep(0.5)
        self.stop()
        raise StreamopsError(
            f"{self.name} did not become healthy within "
            f"{timeout or self.settings.startup_timeout_seconds:.0f} s (last check: "
            f"{health.detail}); it was stopped. Read `streamops logs {self.name}`, or raise "
            "STREAMOPS_STARTUP_TIMEOUT_SECONDS on a slow machine.",
            log_tail=tail(self.log_path),
        )

    def stop(self) -> bool:
        """Stop gracefully (SIGTERM to the group), then kill; returns True when it was running.

        Whatever is left of the service's session after the grace period is killed, including
        children that moved to process groups of their own (Airflow's task processes do).
        """
        pid = self.running_pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_seconds
        while time.monotonic() < deadline and session_members(pid):
            self.running_pid()  # reaps our own child once it has exited
            time.sleep(0.2)
        for member in session_members(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGKILL)
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            child.wait(timeout=10)
        self.pid_path.unlink(missing_ok=True)
        return True
