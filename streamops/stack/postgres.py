"""PostgreSQL, Airflow's metadata database, with its own data folder under the state folder.

Debian's server binaries (``/usr/lib/postgresql/<major>/bin``) run directly: no system service,
no ``pg_ctlcluster``. PostgreSQL refuses to run as root, so as root the server and ``initdb`` run
as Debian's ``postgres`` system user, which owns the data folder. The server listens on TCP
127.0.0.1 only (no unix socket, so no socket path to fit in 107 bytes or to make writable), with
password authentication for everyone: the superuser ``postgres`` has a password generated once per
state folder, and the application role and database come from the ``STREAMOPS_POSTGRES_*``
settings.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

from streamops.errors import StreamopsError
from streamops.stack.base import Component, Health

SUPERUSER = "postgres"
# The OS account Debian's postgresql-common creates; PostgreSQL will not run as root.
OS_USER = "postgres"
CONNECT_TIMEOUT_SECONDS = 2
_FIX = "Run `streamops install` (Debian package `postgresql`)."


def server_bin_dir(root: Path = Path("/usr/lib/postgresql")) -> Path | None:
    """The newest installed major version's bin folder (``/usr/lib/postgresql/15/bin``)."""
    majors = [
        path
        for path in root.glob("*/bin")
        if path.parent.name.isdigit() and (path / "postgres").exists()
    ]
    return max(majors, key=lambda p: int(p.parent.name)) if majors else None


def server_options(
    port: int, host: str = "127.0.0.1", hba_file: Path | None = None
) -> dict[str, str]:
    """The settings the server runs with, passed as ``-c name=value``.

    Sized for a 2-core development machine: Airflow's four processes with their pools and task
    processes stay well below 100 connections.
    """
    options = {
        "listen_addresses": host,
        "port": str(port),
        "unix_socket_directories": "",
        "max_connections": "100",
        "shared_buffers": "128MB",
        "timezone": "UTC",
        "log_timezone": "UTC",
        "password_encryption": "scram-sha-256",
    }
    if hba_file is not None:
        options["hba_file"] = str(hba_file)
    return options


def hba_rules(host: str = "127.0.0.1") -> str:
    """Client authentication: password (SCRAM) over loopback TCP, nothing else."""
    return "\n".join(
        [
            "# Written by streamops; edits are overwritten on start.",
            "# TYPE  DATABASE  USER  ADDRESS  METHOD",
            f"host    all       all   {host}/32  scram-sha-256",
            "",
        ]
    )


def traversal_blockers(path: Path, uid: int, gids: set[int]) -> list[Path]:
    """Folders above ``path`` that the user ``uid`` (in groups ``gids``) cannot enter."""
    blocked = []
    for folder in reversed(path.parents):
        mode = folder.stat()
        if mode.st_uid == uid:
            allowed = bool(mode.st_mode & stat.S_IXUSR)
        elif mode.st_gid in gids:
            allowed = bool(mode.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(mode.st_mode & stat.S_IXOTH)
        if not allowed:
            blocked.append(folder)
    return blocked


class PostgreSQL(Component):
    name = "postgresql"
    stop_timeout_seconds = 60.0

    def ports(self) -> dict[str, int]:
        return {"postgres_port": self.settings.postgres_port}

    def requires(self) -> list[tuple[str, str]]:
        bin_dir = server_bin_dir()
        if bin_dir is None:
            return [("postgres", _FIX)]
        return [(str(bin_dir / "postgres"), _FIX), (str(bin_dir / "initdb"), _FIX)]

    # --- layout --------------------------------------------------------------------------------
    @property
    def datadir(self) -> Path:
        return self.data_dir / "data"

    @property
    def hba_path(self) -> Path:
        return self.data_dir / "pg_hba.conf"

    @property
    def superuser_password_path(self) -> Path:
        return self.data_dir / "superuser-password"

    def _binary(self, program: str) -> str:
        bin_dir = server_bin_dir()
        if bin_dir is None:
            raise StreamopsError(f"PostgreSQL's `{program}` is not installed. {_FIX}")
        return str(bin_dir / program)

    # --- running as the postgres OS user ---------------------------------------------------------
    def _os_user(self) -> pwd.struct_passwd | None:
        """The account the server runs as when we are root; None: run as ourselves."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(OS_USER)
        except KeyError:
            raise StreamopsError(
                f"PostgreSQL refuses to run as root, and there is no `{OS_USER}` user to run it "
                f"as. {_FIX}"
            ) from None

    def _as_server_user(self, argv: list[str]) -> list[str]:
        # setpriv execs (no fork, unlike runuser/su), so the pid we record is the postmaster's.
        account = self._os_user()
        if account is None:
            return argv
        return [
            "setpriv",
            f"--reuid={account.pw_uid}",
            f"--regid={account.pw_gid}",
            "--clear-groups",
            "--",
            *argv,
        ]

    def _give_to_server_user(self, path: Path) -> None:
        account = self._os_user()
        if account is None:
            return
        blocked = traversal_blockers(path, account.pw_uid, {account.pw_gid})
        if blocked:
            raise StreamopsError(
                f"PostgreSQL runs as the `{OS_USER}` user, which cannot enter "
                f"{', '.join(map(str, blocked))} on the way to its data folder {path}. Allow it "
                f"(`chmod o+x {blocked[0]}`), or put the state folder elsewhere with "
                "STREAMOPS_STATE_DIR (for example under /var/tmp)."
            )
        os.chown(path, account.pw_uid, account.pw_gid)
        for folder, subfolders, files in os.walk(path):
            for name in subfolders + files:
                os.chown(os.path.join(folder, name), account.pw_uid, account.pw_gid)

    def superuser_password(self) -> str:
        """The superuser's password, made once per state folder and kept there (mode 0600)."""
        path = self.superuser_password_path
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(24)
        path.touch(mode=0o600)
        path.write_text(value)
        return value

    # --- lifecycle -----------------------------------------------------------------------------
    def prepare(self) -> None:
        self.hba_path.write_text(hba_rules(self.host))
        self.hba_path.chmod(0o644)  # read by the server user; holds no secret
        if (self.datadir / "PG_VERSION").is_file():
            return
        shutil.rmtree(self.datadir, ignore_errors=True)  # a half-made folder from a failed init
        self.datadir.mkdir(parents=True, mode=0o700)
        # initdb reads the superuser's password from a file it can open as the server user (not
        # inside the data folder: initdb wants that empty).
        password_file = self.data_dir / "initdb-password"
        password_file.touch(mode=0o600)
        password_file.write_text(self.superuser_password())
        self._give_to_server_user(password_file)
        self._give_to_server_user(self.datadir)
        try:
            result = subprocess.run(
                self._as_server_user(
                    [
                        self._binary("initdb"),
                        f"--pgdata={self.datadir}",
                        f"--username={SUPERUSER}",
                        f"--pwfile={password_file}",
                        "--auth=scram-sha-256",
                        "--encoding=UTF8",
                        "--no-locale",
                    ]
                ),
                capture_output=True,
                text=True,
                check=False,
                cwd=self.data_dir,
                timeout=300,
            )
        finally:
            password_file.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(self.datadir, ignore_errors=True)
            raise StreamopsError(
                f"Initialising PostgreSQL's data folder {self.datadir} failed (it was removed so "
                f"the next `streamops up` starts clean). {_FIX}",
                log_tail=(result.stdout + result.stderr)[-2000:],
            )

    def command(self) -> list[str]:
        options = server_options(self.settings.postgres_port, self.host, self.hba_path)
        flags = [part for name, value in options.items() for part in ("-c", f"{name}={value}")]
        return self._as_server_user([self._binary("postgres"), "-D", str(self.datadir), *flags])

    def _connect(self, database: str = "postgres", **kwargs: Any) -> Any:
        import psycopg2

        return psycopg2.connect(
            host=self.host,
            port=self.settings.postgres_port,
            user=SUPERUSER,
            password=self.superuser_password(),
            dbname=database,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            **kwargs,
        )

    def check_health(self) -> Health:
        conn = self._connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT version()")
                (version,) = cursor.fetchone()
            return Health(True, f"accepting connections ({' '.join(version.split()[:2])})")
        finally:
            conn.close()

    def after_start(self) -> None:
        """Create Airflow's role and database if missing; sync the role's password."""
        from psycopg2 import sql

        user, database = self.settings.postgres_user, self.settings.postgres_database
        if user == SUPERUSER:
            raise StreamopsError(
                f"STREAMOPS_POSTGRES_USER may not be {SUPERUSER!r}, the server's superuser: "
                "Airflow gets a role of its own."
            )
        conn = self._connect()
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
                verb = "ALTER" if cursor.fetchone() else "CREATE"
                cursor.execute(
                    sql.SQL(verb + " ROLE {} WITH LOGIN PASSWORD %s").format(sql.Identifier(user)),
                    (self.settings.postgres_password,),
                )
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cursor.fetchone() is None:
                    cursor.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8'").format(
                            sql.Identifier(database), sql.Identifier(user)
                        )
                    )
        finally:
            conn.close()

    def stop(self) -> bool:
        """Fast shutdown (SIGINT to the postmaster), then the base stop for whatever is left.

        SIGTERM would be PostgreSQL's "smart" shutdown, which waits for every client to leave.
        """
        pid = self.running_pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + self.stop_timeout_seconds
        while time.monotonic() < deadline and self.running_pid() is not None:
            time.sleep(0.2)
        super().stop()
        return True

    def version(self) -> str:
        bin_dir = server_bin_dir()
        if bin_dir is None:
            return "not installed"
        out = subprocess.run(
            [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True
        ).stdout
        match = re.search(r"\d+(\.\d+)+", out)
        return match.group(0) if match else out.strip()
