"""Redis: live state for dashboards and alerts, persisted with an append-only file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from streamops.clients import redis_client
from streamops.config import Settings
from streamops.disk import write_private
from streamops.stack.base import Component, Health

# Only keys with a TTL are evicted: the fencing tokens and the orders writer's totals have none,
# and losing one breaks the one-writer guarantee or the running sums. Once only such keys are
# left, writes fail with OOM instead (docs/redis-keys.md).
EVICTION_POLICY = "volatile-lru"
REDIS_PASSWORD_ENV = "STREAMOPS_REDIS_PASSWORD"


class Redis(Component):
    name = "redis"
    stop_timeout_seconds = 15.0

    def ports(self) -> dict[str, int]:
        return {"redis_port": self.settings.redis_port}

    def requires(self) -> list[tuple[str, str]]:
        return [("redis-server", "Run `streamops install` (Debian package `redis-server`).")]

    @property
    def config_path(self) -> Path:
        return self.data_dir / "redis.conf"

    def prepare(self) -> None:
        # Owner-only: with a password set the file holds it (requirepass), which is why the
        # password is in the file and not on the command line, where `ps` shows it to everyone.
        write_private(self.config_path, server_config(self.settings, self.host, self.data_dir))

    def command(self) -> list[str]:
        return ["redis-server", str(self.config_path)]

    def environment(self) -> dict[str, str]:
        # The server reads its password from its config file; it needs none of ours.
        return {k: v for k, v in super().environment().items() if k != REDIS_PASSWORD_ENV}

    def check_health(self) -> Health:

        client = redis_client(self.settings, timeout_seconds=2)
        try:
            client.ping()
            info = client.info("server")
            return Health(True, f"PONG (redis {info.get('redis_version')})")
        finally:
            client.close()

    def version(self) -> str:
        if shutil.which("redis-server") is None:
            return "not installed"
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
        for part in out.split():
            if part.startswith("v="):
                return part[2:]
        return out.strip()


def server_config(settings: Settings, host: str, data_dir: Path) -> str:
    """The local Redis' ``redis.conf``, a pure function of the settings."""
    lines = [
        "# Written by streamops from its settings; edits are overwritten on start.",
        f"bind {host}",
        f"port {settings.redis_port}",
        # Without a password, protected mode answers loopback clients only, whatever `bind` says.
        "protected-mode yes",
        "daemonize no",
        f"dir {data_dir}",
        # AOF keeps live state across `down`/`up`; everysec bounds loss to 1 s.
        "appendonly yes",
        "appendfsync everysec",
        "save 60 1000",
        # Bounded: over maxmemory Redis evicts the least recently used key with a TTL.
        f"maxmemory {settings.redis_maxmemory_mb}mb",
        f"maxmemory-policy {EVICTION_POLICY}",
        "loglevel notice",
        'logfile ""',
    ]
    if settings.redis_password:
        lines.append(f"requirepass {config_string(settings.redis_password)}")
    return "\n".join([*lines, ""])


def config_string(value: str) -> str:
    """``value`` as a double-quoted redis.conf string that Redis reads back as it is: quotes and
    backslashes escaped, anything not printable ASCII as ``\\xHH`` bytes (spaces and ``#`` are
    plain text inside the quotes)."""
    escaped = []
    for char in value:
        if char in ('"', "\\"):
            escaped.append("\\" + char)
        elif char.isprintable() and char.isascii():
            escaped.append(char)
        else:
            escaped.extend(f"\\x{byte:02x}" for byte in char.encode())
    return '"' + "".join(escaped) + '"'
