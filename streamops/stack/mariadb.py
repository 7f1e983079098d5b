"""MariaDB, the system of record, with its own data folder under the state folder."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from streamops.errors import StreamopsError
from streamops.stack.base import Component, Health


class MariaDB(Component):
    name = "mariadb"
    stop_timeout_seconds = 60.0

    def ports(self) -> dict[str, int]:
        return {"mariadb_port": self.settings.mariadb_port}

    def requires(self) -> list[tuple[str, str]]:
        fix = "Run `streamops install` (Debian package `mariadb-server`)."
        return [("mariadbd", fix), ("mariadb-install-db", fix)]

    @property
    def datadir(self) -> Path:
        return self.data_dir / "data"

    @property
    def socket_path(self) -> Path:
        return self.settings.state_dir / "run" / "mariadb.sock"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "my.cnf"

    def _user_args(self) -> list[str]:
        # mariadbd refuses to run as root unless told to; as another user it runs as that user.
        return ["--user=root"] if os.geteuid() == 0 else []

    def prepare(self) -> None:
        self.config_path.write_text(
            "\n".join(
                [
                    "# Written by streamops from its settings; edits are overwritten on start.",
                    "[mariadbd]",
                    f"datadir={self.datadir}",
                    f"socket={self.socket_path}",
                    f"port={self.settings.mariadb_port}",
                    f"bind-address={self.host}",
                    f"pid-file={self.data_dir / 'mariadbd.pid'}",
                    "character-set-server=utf8mb4",
                    "collation-server=utf8mb4_unicode_ci",
                    "default-time-zone=+00:00",
                    "skip-name-resolve",
                    "innodb_buffer_pool_size=256M",
                    "innodb_flush_log_at_trx_commit=1",
                    "max_connections=200",
                    "",
                ]
            )
        )
        if (self.datadir / "mysql").is_dir():
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [
                "mariadb-install-db",
                f"--defaults-file={self.config_path}",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
                *self._user_args(),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            shutil.rmtree(self.datadir, ignore_errors=True)
            raise StreamopsError(
                f"Initialising MariaDB's data folder {self.datadir} failed (it was removed so the "
                "next `streamops up` starts clean). Check that mariadb-server is installed "
                "(`streamops install`).",
                log_tail=(result.stdout + result.stderr)[-2000:],
            )

    def command(self) -> list[str]:
        return ["mariadbd", f"--defaults-file={self.config_path}", *self._user_args()]

    def check_health(self) -> Health:
        import mariadb

        # Health is asked as root over the socket: the application user may not exist yet.
        conn = mariadb.connect(unix_socket=str(self.socket_path), user="root", connect_timeout=2)
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT VERSION()")
            (version,) = cursor.fetchone()
            return Health(True, f"accepting connections ({version})")
        finally:
            conn.close()

    def after_start(self) -> None:
        from streamops.db import ensure_database_and_user, migrate

        ensure_database_and_user(self.settings, self.socket_path)
        migrate(self.settings)

    def version(self) -> str:
        if shutil.which("mariadbd") is None:
            return "not installed"
        out = subprocess.run(["mariadbd", "--version"], capture_output=True, text=True).stdout
        parts = out.split()
        return parts[2] if len(parts) > 2 else out.strip()
