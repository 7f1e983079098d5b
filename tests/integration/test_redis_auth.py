"""Redis with a password, on a real redis-server: the local stack's (requirepass from its 0600
config file) and compose's entrypoint (which writes that file itself, run here by sh). A client
made from the settings works, one without the password is refused, and the password is on no
command line: not in the argv the server is started with (recorded as it is exec'd), nor in
`/proc/<pid>/cmdline`, what `ps` shows every user (redis-server rewrites that to its process
title once it runs, so the argv is checked where it is handed over too).

These tests start their own Redis in a temporary state folder (the shared test stack is not
needed and not touched) and stop it at the end.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from streamops.clients import redis_client
from streamops.config import PROJECT_ROOT, Settings
from streamops.stack.base import port_accepts, port_is_free
from streamops.stack.redis import Redis
from tests.integration.support import free_port

# URL-special characters, a percent escape look-alike, redis.conf's quote, escape and comment
# characters, a space and a non-ASCII letter: each must survive the URL and the config file.
AWKWARD_PASSWORD = 'p@ss:w/rd%20 "#\\ ü'
PREFERRED_PORT = 26379


@pytest.fixture
def _running_stack() -> None:
    """Overrides the package's autouse fixture: these tests bring their own Redis."""


def _port() -> int:
    if port_is_free("127.0.0.1", PREFERRED_PORT):
        return PREFERRED_PORT
    return free_port()


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def _assert_refused_without_the_password(port: int) -> None:
    for password in (None, "wrong"):
        stranger = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=5)
        try:
            with pytest.raises(redis.AuthenticationError):
                stranger.set("test:auth:stranger", "x")
        finally:
            stranger.close()


@pytest.fixture
def private(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "state_dir": tmp_path / "state",
            "redis_port": _port(),
            "redis_password": AWKWARD_PASSWORD,
        }
    )


@pytest.fixture
def local_redis(private: Settings) -> Iterator[Redis]:
    component = Redis(private)
    component.start()
    try:
        # The readiness check is a PING of an authenticated client: healthy means AUTH worked.
        assert component.wait_healthy(timeout=30).healthy
        yield component
    finally:
        component.stop()


def test_local_redis_requires_the_settings_password(private: Settings, local_redis: Redis) -> None:
    client = redis_client(private, decode_responses=True)
    try:
        client.set("test:auth:key", "value")
        assert client.get("test:auth:key") == "value"
    finally:
        client.close()
    _assert_refused_without_the_password(private.redis_port)

    pid = local_redis.running_pid()
    assert pid is not None
    # What the component exec'd, and what `ps` shows now.
    assert local_redis.command() == ["redis-server", str(local_redis.config_path)]
    cmdline = _cmdline(pid)
    assert cmdline.startswith(b"redis-server")
    assert AWKWARD_PASSWORD.encode() not in cmdline
    assert b"requirepass" not in cmdline
    # Nor in the server's environment: it reads the password from its file only.
    assert AWKWARD_PASSWORD.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
    assert stat.S_IMODE(local_redis.config_path.stat().st_mode) == 0o600


# --- compose's entrypoint, run by sh with the real redis-server ----------------------------------
def _compose_redis() -> dict[str, Any]:
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yaml").read_text())
    return dict(compose["services"]["redis"])


def _unescape(text: str) -> str:
    """What the container gets of a compose string: `$$` is compose's escape for `$`."""
    return text.replace("$$", "$")


@pytest.fixture
def image_stand_in(tmp_path: Path) -> dict[str, Any]:
    """The redis image's surroundings: its entrypoint (which drops root and execs the command;
    here it only execs) and `chown` (recorded: no redis user to give the file to here), first on
    PATH, and a folder in place of the tmpfs /run/redis."""
    bin_dir, run_dir, data_dir = tmp_path / "bin", tmp_path / "run-redis", tmp_path / "data"
    for folder in (bin_dir, run_dir, data_dir):
        folder.mkdir()
    chown_calls, exec_argv = tmp_path / "chown-calls", tmp_path / "exec-argv"
    (bin_dir / "docker-entrypoint.sh").write_text(
        f'#!/bin/sh\nprintf "%s\\0" "$@" > {exec_argv}\nexec "$@"\n'
    )
    (bin_dir / "chown").write_text(f'#!/bin/sh\necho "$@" >> {chown_calls}\n')
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    return {
        "bin": bin_dir,
        "run": run_dir,
        "data": data_dir,
        "chown_calls": chown_calls,
        "exec_argv": exec_argv,
        "env": {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    }


def _entrypoint_argv(service: dict[str, Any], run_dir: Path) -> list[str]:
    """The container's argv (entrypoint + command) with /run/redis moved to ``run_dir``."""
    tmpfs = service["tmpfs"][0]
    return [
        _unescape(part).replace(tmpfs, str(run_dir))
        for part in [*service["entrypoint"], *service["command"]]
    ]


def test_compose_entrypoint_starts_redis_with_the_password_off_the_argv(
    image_stand_in: dict[str, Any], settings: Settings
) -> None:
    service = _compose_redis()
    port = _port()
    password = "gEn3rated_by-the=generator"
    argv = _entrypoint_argv(service, image_stand_in["run"])
    # Test-only overrides, after compose's options: never the default port 6379.
    argv += ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(image_stand_in["data"])]
    env = {**image_stand_in["env"], "STREAMOPS_REDIS_PASSWORD": password}
    log = image_stand_in["data"].parent / "redis.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=image_stand_in["data"],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while not port_accepts("127.0.0.1", port) and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text(errors="replace")
            time.sleep(0.1)
        assert port_accepts("127.0.0.1", port)

        # sh exec'd the image's entrypoint, which exec'd redis-server (same pid) with an argv
        # that names the file, not the password.
        auth_conf = image_stand_in["run"] / "auth.conf"
        handed_over = image_stand_in["exec_argv"].read_bytes().split(b"\0")[:-1]
        assert handed_over[:2] == [b"redis-server", str(auth_conf).encode()]
        assert not [part for part in handed_over if password.encode() in part]
        cmdline = _cmdline(process.pid)
        assert cmdline.startswith(b"redis-server")
        assert password.encode() not in cmdline
        assert stat.S_IMODE(auth_conf.stat().st_mode) == 0o600
        assert image_stand_in["chown_calls"].read_text().split() == ["redis", str(auth_conf)]

        # A client of the settings compose gives the services.
        client = redis_client(
            settings.model_copy(update={"redis_port": port, "redis_password": password}),
            decode_responses=True,
        )
        try:
            client.set("test:auth:compose", "value")
            assert client.get("test:auth:compose") == "value"
        finally:
            client.close()
        _assert_refused_without_the_password(port)

        # The healthcheck, as compose runs it (on this port): healthy with the password only.
        check = _unescape(service["healthcheck"]["test"][1]).replace(
            "redis-cli ", f"redis-cli -p {port} ", 1
        )
        healthy = subprocess.run(["sh", "-c", check], env=env, timeout=30)
        assert healthy.returncode == 0
        wrong = {**env, "STREAMOPS_REDIS_PASSWORD": "wrong"}
        assert subprocess.run(["sh", "-c", check], env=wrong, timeout=30).returncode != 0
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.mark.parametrize("password", ["", 'has"quote', "has space", "dollar$sign"])
def test_compose_entrypoint_refuses_a_password_it_could_not_write_safely(
    image_stand_in: dict[str, Any], password: str
) -> None:
    service = _compose_redis()
    # Should the check let it through, the server must not take the default port 6379.
    argv = [*_entrypoint_argv(service, image_stand_in["run"]), "--port", str(_port())]
    argv += ["--bind", "127.0.0.1", "--dir", str(image_stand_in["data"])]
    env = {**image_stand_in["env"], "STREAMOPS_REDIS_PASSWORD": password}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "run make compose-up" in result.stderr
    assert not (image_stand_in["run"] / "auth.conf").exists()
