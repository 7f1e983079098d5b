"""docker compose's secrets file: generated once with every key and password, private, valid, and
never overwritten (the keys must survive restarts)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography.fernet import Fernet

from streamops.compose_secrets import SECRET_VARIABLES, ensure_secrets_file, read_env_file
from streamops.config import PROJECT_ROOT

COMMITTED = PROJECT_ROOT / "deploy" / "compose.env"
# Safe unquoted in an env file (no `$` for Compose to interpolate), in a URL and in redis.conf.
SAFE_VALUE = re.compile(r"[A-Za-z0-9_=-]+")


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    path = tmp_path / "deploy" / "compose.secrets.env"
    previous = os.umask(0)  # the file's mode must not depend on the caller's umask
    try:
        written, missing = ensure_secrets_file(path, COMMITTED)
    finally:
        os.umask(previous)
    assert (written, missing) == (True, [])
    return path


def test_a_fresh_file_has_every_key_and_password(fresh: Path) -> None:
    values = read_env_file(fresh)
    assert tuple(values) == SECRET_VARIABLES
    for name, value in values.items():
        if name != "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN":
            assert SAFE_VALUE.fullmatch(value) and len(value) >= 16, name
    Fernet(values["AIRFLOW__CORE__FERNET_KEY"].encode())  # raises on an invalid key
    assert values["MARIADB_PASSWORD"] == values["STREAMOPS_MARIADB_PASSWORD"]
    assert values["MARIADB_ROOT_PASSWORD"] != values["MARIADB_PASSWORD"]
    url = urlsplit(values["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    committed = read_env_file(COMMITTED)
    assert url.password == values["POSTGRES_PASSWORD"]
    assert (url.username, url.path) == (committed["POSTGRES_USER"], "/" + committed["POSTGRES_DB"])
    assert (url.hostname, url.port) == ("postgres", 5432)


def test_the_kafka_password_is_letters_and_digits(fresh: Path, tmp_path: Path) -> None:
    """The broker's start script puts it unquoted in the SCRAM credential of its storage format
    (split at ",") and in JAAS lines (quoted with '"'): letters and digits need no escape."""
    passwords = {read_env_file(fresh)["STREAMOPS_KAFKA_SASL_PASSWORD"]}
    for number in range(5):
        other = tmp_path / f"other-{number}.env"
        ensure_secrets_file(other, COMMITTED)
        passwords.add(read_env_file(other)["STREAMOPS_KAFKA_SASL_PASSWORD"])
    assert len(passwords) == 6
    for password in passwords:
        assert re.fullmatch(r"[A-Za-z0-9]{32}", password), password


def test_the_file_is_private(fresh: Path) -> None:
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert [p.name for p in fresh.parent.iterdir()] == [fresh.name], "no temporary left"


def test_a_second_run_keeps_the_file_byte_for_byte(fresh: Path) -> None:
    before = fresh.read_bytes()
    assert ensure_secrets_file(fresh, COMMITTED) == (False, [])
    assert fresh.read_bytes() == before


def test_each_deployment_gets_its_own_secrets(fresh: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.env"
    ensure_secrets_file(other, COMMITTED)
    mine, theirs = read_env_file(fresh), read_env_file(other)
    assert not set(mine.values()) & set(theirs.values())


def test_an_incomplete_file_is_reported_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "compose.secrets.env"
    path.write_text("AIRFLOW__CORE__FERNET_KEY=kept\n")
    before = path.read_bytes()
    written, missing = ensure_secrets_file(path, COMMITTED)
    assert not written
    assert missing == [name for name in SECRET_VARIABLES if name != "AIRFLOW__CORE__FERNET_KEY"]
    assert path.read_bytes() == before


def test_the_command_runs_on_a_bare_python(tmp_path: Path) -> None:
    """`make compose-up` runs `python3 -m streamops compose-secrets` before any virtual
    environment exists: the generator needs the standard library only (-S: no site-packages)."""
    path = tmp_path / "compose.secrets.env"
    command = [sys.executable, "-S", "-m", "streamops", "compose-secrets", "--file", str(path)]
    first = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "Wrote" in first.stdout and path.is_file()
    content = path.read_bytes()
    second = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert "kept as it is" in second.stdout
    assert path.read_bytes() == content
    # Nothing secret is printed.
    for value in read_env_file(path).values():
        assert value not in first.stdout + first.stderr
