"""Redis' password in the settings: in the URL every client connects with (quoted), never in what is
shown; in the local server's config file (0600), never on its command line; in a local job's
environment, never on spark-submit's argv. Pure: nothing is started
(tests/integration/test_redis_auth.py runs a real redis-server with it)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import redis

from streamops.clients import async_redis_client, redis_client
from streamops.config import Settings
from streamops.stack.redis import Redis, config_string, server_config
from streamops.supervision.spec import parse_specs
from streamops.supervision.submit import build_submit_environment, build_submit_request

# Characters a URL gives a meaning to, a percent sign that looks like an escape, and a space.
AWKWARD_PASSWORDS = ["p@ss:w/rd", "100%25sure", "a b#c?d&e=f", "ümlaut+plus", '"quoted\\']


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("STREAMOPS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_no_password_by_default_means_no_auth(clean_env: Path) -> None:
    settings = Settings()
    assert settings.redis_password == ""
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.redis_url_redacted == settings.redis_url
    assert (
        redis.ConnectionPool.from_url(settings.redis_url).connection_kwargs.get("password") is None
    )


@pytest.mark.parametrize("password", AWKWARD_PASSWORDS)
def test_the_url_carries_the_password_quoted(clean_env: Path, password: str) -> None:
    settings = Settings(
        redis_host="redis.example", redis_port=6380, redis_db=3, redis_password=password
    )
    url = settings.redis_url
    assert url.startswith("redis://:") and url.endswith("@redis.example:6380/3")
    # redis-py's own parser reads back exactly the password, host, port and database.
    kwargs = redis.ConnectionPool.from_url(url).connection_kwargs
    assert kwargs["password"] == password
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("redis.example", 6380, 3)
    # Every client of the platform is made from that URL.
    for client in (redis_client(settings), async_redis_client(settings)):
        assert client.connection_pool.connection_kwargs["password"] == password


@pytest.mark.parametrize("password", AWKWARD_PASSWORDS)
def test_the_password_is_not_shown(clean_env: Path, password: str) -> None:
    settings = Settings(redis_password=password)
    assert settings.redis_url_redacted == "redis://:***@127.0.0.1:6379/0"
    assert password not in repr(settings) and password not in str(settings)


def test_the_password_comes_from_the_environment_and_goes_to_child_processes(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMOPS_REDIS_PASSWORD", "from:env@")
    settings = Settings()
    assert settings.redis_password == "from:env@"
    assert settings.as_env()["STREAMOPS_REDIS_PASSWORD"] == "from:env@"


def test_a_local_job_gets_the_password_in_its_environment_not_its_argv(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path / "state",
        venv_dir=tmp_path / "venv",
        spark_venv_dir=tmp_path / "venv-spark",
        redis_password="s3cret-redis",
    )
    spec = parse_specs(
        {"pipelines": {"orders": {"job_module": "spark_jobs.jobs.orders", "queries": ["q"]}}}
    )["orders"]
    env = build_submit_environment(spec, settings, "local[*,4]")
    assert env["STREAMOPS_REDIS_PASSWORD"] == "s3cret-redis"
    request = build_submit_request(spec, settings, master="local[*,4]")
    argv = [request.application, *request.jars, *request.application_args]
    argv += [f"{key}={value}" for key, value in request.conf.items()]
    assert not [part for part in argv if "s3cret-redis" in part]


def options(text: str) -> dict[str, str]:
    return dict(
        line.split(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )


def test_the_server_config_requires_the_password_only_when_one_is_set(tmp_path: Path) -> None:
    without = options(server_config(Settings(state_dir=tmp_path), "127.0.0.1", tmp_path))
    assert "requirepass" not in without
    assert without["protected-mode"] == "yes" and without["bind"] == "127.0.0.1"
    with_password = Settings(state_dir=tmp_path, redis_password="pw")
    rendered = options(server_config(with_password, "127.0.0.1", tmp_path))
    assert rendered["requirepass"] == '"pw"'
    assert rendered["protected-mode"] == "yes"


@pytest.mark.parametrize(
    ("password", "quoted"),
    [
        ("plain", '"plain"'),
        ("a b#c", '"a b#c"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("ü\n", '"\\xc3\\xbc\\x0a"'),
    ],
)
def test_config_strings_escape_what_redis_conf_would_read_otherwise(
    password: str, quoted: str
) -> None:
    assert config_string(password) == quoted


def test_prepare_writes_the_password_to_an_owner_only_file_not_the_argv(tmp_path: Path) -> None:
    server = Redis(Settings(state_dir=tmp_path, redis_port=26379, redis_password="hunter2-x"))
    server.data_dir.mkdir(parents=True)
    # A config file of an earlier start, readable by everyone, is replaced, not reused.
    server.config_path.write_text("old\n")
    server.config_path.chmod(0o644)
    previous = os.umask(0)
    try:
        server.prepare()
    finally:
        os.umask(previous)
    assert stat.S_IMODE(server.config_path.stat().st_mode) == 0o600
    assert options(server.config_path.read_text())["requirepass"] == '"hunter2-x"'
    assert not [part for part in server.command() if "hunter2-x" in part]
    assert [p.name for p in server.data_dir.iterdir()] == ["redis.conf"], "no temporary left"


def test_the_server_process_does_not_inherit_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMOPS_REDIS_PASSWORD", "hunter2-x")
    server = Redis(Settings(state_dir=tmp_path))
    assert "STREAMOPS_REDIS_PASSWORD" not in server.environment()
    assert server.environment()["PATH"] == os.environ["PATH"]
