"""PostgreSQL as the local stack's Airflow metadata database: settings, command, place in `up`.

Pure: nothing is started (tests/integration/test_airflow.py checks the running stack).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from pydantic import ValidationError

from streamops.config import Settings
from streamops.stack import Stack
from streamops.stack.airflow import airflow_environment, metadata_database_url
from streamops.stack.postgres import (
    PostgreSQL,
    hba_rules,
    server_bin_dir,
    server_options,
    traversal_blockers,
)
from tests.conftest import TEST_ENVIRONMENT


def test_postgres_port_must_differ_from_every_other_port(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="postgres_port and mariadb_port are both 3306"):
        Settings(state_dir=tmp_path, mariadb_port=3306, postgres_port=3306)
    with pytest.raises(ValidationError, match="airflow_port and postgres_port are both 5432"):
        Settings(state_dir=tmp_path, postgres_port=5432, airflow_port=5432)


def test_defaults_and_the_test_stack_port(tmp_path: Path) -> None:
    fields = Settings.model_fields
    assert fields["postgres_port"].default == 5432
    assert fields["postgres_user"].default == fields["postgres_database"].default == "airflow"
    # The test stack must not meet a platform started with `make up` on the same machine.
    assert TEST_ENVIRONMENT["STREAMOPS_POSTGRES_PORT"] != "5432"
    with pytest.raises(ValidationError, match="pattern"):
        Settings(state_dir=tmp_path, postgres_database="airflow; DROP DATABASE x")


def test_airflow_metadata_is_postgresql_on_the_settings_port(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, postgres_port=25432)
    url = urlsplit(metadata_database_url(settings))
    assert url.scheme == "postgresql+psycopg2"
    assert (url.hostname, url.port) == ("127.0.0.1", 25432)
    assert (url.username, url.password, url.path) == ("airflow", "airflow", "/airflow")
    env = airflow_environment(settings)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == metadata_database_url(settings)
    assert "sqlite" not in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


def test_a_password_with_url_characters_survives_the_url(tmp_path: Path) -> None:
    password = "p@ss:w/rd%$HOME"
    url = urlsplit(metadata_database_url(Settings(state_dir=tmp_path, postgres_password=password)))
    assert unquote(url.password or "") == password
    assert "$" not in metadata_database_url(Settings(state_dir=tmp_path, postgres_password="$x"))
    assert url.hostname == "127.0.0.1"


def test_server_runs_small_on_loopback_tcp_only(tmp_path: Path) -> None:
    options = server_options(25432, hba_file=tmp_path / "pg_hba.conf")
    assert options["listen_addresses"] == "127.0.0.1"
    assert options["port"] == "25432"
    assert options["unix_socket_directories"] == ""
    assert options["shared_buffers"] == "128MB"
    assert int(options["max_connections"]) <= 100
    assert options["hba_file"] == str(tmp_path / "pg_hba.conf")
    assert "fsync" not in options, "durability stays PostgreSQL's default"
    rules = [line.split() for line in hba_rules().splitlines() if not line.startswith("#")]
    assert rules == [["host", "all", "all", "127.0.0.1/32", "scram-sha-256"]]


def test_component_layout_and_command(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, postgres_port=25432)
    server = PostgreSQL(settings)
    assert server.name == "postgresql"
    assert server.ports() == {"postgres_port": 25432}
    assert server.datadir == tmp_path / "postgresql" / "data"
    assert server.log_path == tmp_path / "logs" / "postgresql.log"
    bin_dir = server_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed")
    command = server.command()
    postgres = command.index(str(bin_dir / "postgres"))
    assert command[postgres + 1 : postgres + 3] == ["-D", str(server.datadir)]
    assert "port=25432" in command
    if os.geteuid() == 0:
        # PostgreSQL refuses root: setpriv drops to the postgres user and execs (no fork), so the
        # pid the stack records is the postmaster's.
        assert command[0] == "setpriv"
        assert command[postgres - 1] == "--"


def test_server_bin_dir_takes_the_newest_major(tmp_path: Path) -> None:
    assert server_bin_dir(tmp_path) is None
    for major in ("9", "15", "16"):
        (tmp_path / major / "bin").mkdir(parents=True)
        (tmp_path / major / "bin" / "postgres").touch()
    (tmp_path / "17" / "bin").mkdir(parents=True)  # client only: no server binary
    assert server_bin_dir(tmp_path) == tmp_path / "16" / "bin"


def test_traversal_blockers_name_folders_the_server_user_cannot_enter(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    target = closed / "state" / "postgresql" / "data"
    target.mkdir(parents=True)
    stranger = os.getuid() + 12345
    assert closed not in traversal_blockers(target, stranger, set())
    closed.chmod(stat.S_IRWXU)
    try:
        assert closed in traversal_blockers(target, stranger, set())
        assert closed not in traversal_blockers(target, os.getuid(), set())
    finally:
        closed.chmod(0o755)


def test_up_starts_it_before_airflow_and_down_stops_it_after(tmp_path: Path) -> None:
    stack = Stack(Settings(state_dir=tmp_path))
    names = [component.name for component in stack.components]
    assert names.count("postgresql") == 1
    assert any(isinstance(c, PostgreSQL) for c in stack.services)
    # `up` starts every service before Airflow; `down` goes in reverse.
    assert names.index("postgresql") < names.index("airflow-api-server")


def test_up_without_airflow_leaves_postgresql_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It holds nothing but Airflow's metadata. Nothing is started: the steps are recorded.
    stack = Stack(Settings(state_dir=tmp_path))
    started: list[str] = []
    monkeypatch.setattr(
        stack, "_start", lambda component, report, **_: started.append(component.name)
    )
    for component in stack.services:
        monkeypatch.setattr(component, "after_start", lambda: None)
    stack.up(with_airflow=False)
    assert "postgresql" not in started
    assert {"mariadb", "redis", "kafka", "dashboard"} <= set(started)
