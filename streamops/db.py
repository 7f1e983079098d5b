"""MariaDB for streamops: connections, the first-start bootstrap and versioned schema migrations.

Migrations are the numbered ``.sql`` files in :mod:`streamops.migrations`, applied in order and
recorded in ``schema_migrations`` with the sha256 of each file. ``migrate`` takes a server-side
advisory lock, so any number of processes (``streamops up``, an Airflow task, a test session) may
call it at once and each migration is still applied exactly once.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mariadb

from streamops.config import Settings
from streamops.errors import StreamopsError
from streamops.migrations import MIGRATIONS_DIR

MIGRATIONS_TABLE = "schema_migrations"
MIGRATION_FILE_PATTERN = re.compile(r"^(?P<version>\d{4})_(?P<slug>[a-z0-9]+(?:_[a-z0-9]+)*)\.sql$")
CONNECT_TIMEOUT_SECONDS = 5
DEFAULT_LOCK_TIMEOUT_SECONDS = 60.0
# 'localhost' covers the unix socket, '127.0.0.1' TCP on loopback when the server skips name
# resolution, '%' every other client (containers, Kubernetes pods).
ACCOUNT_HOSTS = ("localhost", "127.0.0.1", "%")
DATABASE_CHARSET = "utf8mb4"
# Same collation as the tables of the migrations, so a table created without one compares text
# the way the others do.
DATABASE_COLLATION = "utf8mb4_nopad_bin"

# Connector/C client errors meaning "nobody answered", as opposed to the server saying no.
_UNREACHABLE_ERRNOS = frozenset({2002, 2003, 2005, 2006, 2013})
_ACCESS_DENIED_ERRNOS = frozenset({1044, 1045, 1698})
# For a user without global privileges a missing database looks like a forbidden one.
_DATABASE_DENIED_ERRNOS = frozenset({1044, 1049})
_IDENTIFIER = re.compile(r"^[A-Za-z0-9_]{1,64}$")

_CREATE_MIGRATIONS_TABLE = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
    version    INT          NOT NULL,
    name       VARCHAR(255) NOT NULL,
    checksum   CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL
               COMMENT 'sha256 of the migration file',
    applied_at DATETIME(3)  NOT NULL COMMENT 'UTC',
    PRIMARY KEY (version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='migrations of streamops/migrations applied to this database'
"""


class DatabaseUnavailableError(StreamopsError):
    """MariaDB could not be reached or refused us; the message says why and what to do."""


class MigrationError(StreamopsError):
    """The migration files or the migration state of a database are not usable as they are."""


class MigrationChecksumError(MigrationError):
    """An already-applied migration file differs from what was applied."""


class MigrationLockTimeoutError(MigrationError):
    """Another ``migrate`` held the advisory lock for longer than we were willing to wait."""


@dataclass(frozen=True)
class Migration:
    """One migration file: ``name`` is the file name, e.g. ``0001_contract_tables.sql``."""

    version: int
    name: str
    path: Path
    checksum: str
    statements: tuple[str, ...]


def split_statements(sql: str) -> list[str]:
    """Statements of a migration file, without their terminating ``;``.

    A statement ends at a ``;`` that ends a line; full-line ``--`` comments and blank lines are
    dropped. Deliberately no SQL tokenizer: the files keep to this shape instead (see
    :mod:`streamops.migrations`), so a ``;`` inside a string or comment mid-line is harmless.
    """
    statements: list[str] = []
    current: list[str] = []
    for line in sql.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        current.append(line.rstrip())
        if stripped.endswith(";"):
            statement = "\n".join(current).strip()[:-1].rstrip()
            if statement:
                statements.append(statement)
            current = []
    # Like the mysql client, accept a last statement that has no ';'.
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return statements


def file_checksum(text: str) -> str:
    """sha256 of a migration's text; callers read it in text mode, so CRLF checkouts match LF."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def list_migrations(directory: Path | None = None) -> list[Migration]:
    """The migrations in ``directory`` (default: the package's), in order. Reads files only.

    Raises :class:`MigrationError` for a misnamed ``.sql`` file, a gap or repeat in the
    numbering, or a file without statements: any of those would otherwise be skipped silently.
    """
    directory = MIGRATIONS_DIR if directory is None else directory
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_FILE_PATTERN.match(path.name)
        if match is None:
            raise MigrationError(
                f"{path} is not named like a migration, so it would never be applied. "
                "Rename it to NNNN_description.sql (four digits, lower case, underscores), "
                "numbered right after the last migration."
            )
        text = path.read_text(encoding="utf-8")
        statements = split_statements(text)
        if not statements:
            raise MigrationError(f"{path} contains no SQL statement; add some or delete the file.")
        migrations.append(
            Migration(
                version=int(match["version"]),
                name=path.name,
                path=path,
                checksum=file_checksum(text),
                statements=tuple(statements),
            )
        )
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"Migrations in {directory} must be numbered 0001, 0002, ... without gaps or "
                f"repeats, but {migration.name} comes where {expected:04d}_<description>.sql "
                "was expected. Renumber the newest files (never one that is already applied)."
            )
    return migrations


def connect(settings: Settings, *, database: bool = True) -> mariadb.Connection:
    """A new connection as the application user, autocommit off, session time zone UTC.

    ``database=False`` connects without selecting the database, e.g. to check the server itself.
    Raises :class:`DatabaseUnavailableError` with the cause and the fix when that fails.
    """
    params: dict[str, object] = {
        "host": settings.mariadb_host,
        "port": settings.mariadb_port,
        "user": settings.mariadb_user,
        "password": settings.mariadb_password,
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "autocommit": False,
        # DATETIME has no time zone and CURRENT_TIMESTAMP follows the session's: pin it so the
        # column defaults are UTC like everything else we store.
        "init_command": "SET time_zone = '+00:00'",
    }
    if database:
        params["database"] = settings.mariadb_database
    try:
        return mariadb.connect(**params)
    except mariadb.Error as exc:
        raise _explain_connect_error(exc, settings) from exc


def execute(settings: Settings, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """One statement on a connection of its own, committed; its rows (none without a result).
    For tools, tests and benchmarks: the pipelines keep their connections."""
    connection = connect(settings)
    try:
        cursor = connection.cursor()
        cursor.execute(sql, tuple(params))
        rows = list(cursor.fetchall()) if cursor.description is not None else []
        connection.commit()
        return rows
    finally:
        connection.close()


def ensure_database_and_user(
    settings: Settings, root_unix_socket: Path, *, admin_user: str | None = None
) -> None:
    """Create the database and the application user if missing, and sync the user's password.

    Connects over ``root_unix_socket`` with unix_socket authentication, which admits only the OS
    user of the same name. ``admin_user`` defaults to the OS user running us: ``root`` as root,
    otherwise the account ``mariadb-install-db --auth-root-authentication-method=socket`` also
    creates for the user it ran as. Safe to run on every start: a changed
    ``STREAMOPS_MARIADB_PASSWORD`` is applied to existing accounts.
    """
    if admin_user is None:
        # The name unix_socket authentication compares against: the peer's uid, not $USER.
        admin_user = pwd.getpwuid(os.geteuid()).pw_name
    database = _identifier(settings.mariadb_database, "STREAMOPS_MARIADB_DATABASE")
    user = _identifier(settings.mariadb_user, "STREAMOPS_MARIADB_USER")
    try:
        connection = mariadb.connect(
            unix_socket=str(root_unix_socket),
            user=admin_user,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            autocommit=True,
        )
    except mariadb.Error as exc:
        if exc.errno in _ACCESS_DENIED_ERRNOS:
            raise DatabaseUnavailableError(
                f"MariaDB refused '{admin_user}' on its socket {root_unix_socket} ({exc}). "
                "The local stack relies on unix_socket authentication, which only admits the OS "
                f"user named '{admin_user}': run the stack as that OS user, or re-create the "
                "data directory with `mariadb-install-db --auth-root-authentication-method=socket`"
                " (`streamops reset` then `streamops up`)."
            ) from exc
        raise DatabaseUnavailableError(
            f"MariaDB is not reachable through its socket {root_unix_socket} ({exc}). The server "
            "is not running yet or listens on another socket: run `streamops up`, or check "
            "`streamops logs mariadb` for why it did not start."
        ) from exc
    with closing(connection):
        cursor = connection.cursor()
        cursor.execute(
            f"CREATE DATABASE IF NOT EXISTS `{database}` "
            f"CHARACTER SET {DATABASE_CHARSET} COLLATE {DATABASE_COLLATION}"
        )
        for host in ACCOUNT_HOSTS:
            account = f"'{user}'@'{host}'"
            cursor.execute(
                f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY ?",
                (settings.mariadb_password,),
            )
            # CREATE USER IF NOT EXISTS leaves an existing password alone; this re-syncs it.
            cursor.execute(f"ALTER USER {account} IDENTIFIED BY ?", (settings.mariadb_password,))
            cursor.execute(f"GRANT ALL PRIVILEGES ON `{database}`.* TO {account}")


def migrate(
    settings: Settings,
    *,
    migrations_dir: Path | None = None,
    lock_timeout_seconds: float = DEFAULT_LOCK_TIMEOUT_SECONDS,
) -> list[str]:
    """Apply pending migrations in order; return the file names applied (``[]`` when current).

    Checks first that every applied migration still matches its file
    (:class:`MigrationChecksumError` otherwise) and that the database is not ahead of the files.
    """
    # Read and validate the files before touching the database: a bad file fails fast.
    migrations = list_migrations(migrations_dir)
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        with _advisory_lock(cursor, settings, lock_timeout_seconds):
            cursor.execute(_CREATE_MIGRATIONS_TABLE)
            # End any snapshot taken before we held the lock, so we see what the previous
            # holder committed.
            connection.commit()
            applied = _applied_migrations(cursor)
            _verify_applied(applied, migrations, settings)
            applied_now: list[str] = []
            for migration in migrations:
                if migration.version not in applied:
                    _apply(connection, cursor, migration)
                    applied_now.append(migration.name)
            return applied_now


def _has_migrations_table(cursor: Any) -> bool:
    cursor.execute(
        "SELECT COUNT(*) FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
        (MIGRATIONS_TABLE,),
    )
    (tables,) = cursor.fetchone()
    return bool(tables)


def schema_version(settings: Settings) -> int:
    """Highest applied migration version; 0 for a database that was never migrated."""
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        if not _has_migrations_table(cursor):
            return 0
        cursor.execute(f"SELECT COALESCE(MAX(version), 0) FROM {MIGRATIONS_TABLE}")
        (version,) = cursor.fetchone()
        return int(version)


@dataclass(frozen=True)
class SchemaComparison:
    """A database's applied migrations against this code's files (:func:`compare_schema`)."""

    # Files of this code the database has not applied, in order.
    missing: tuple[str, ...] = ()
    # Migrations the database applied that this code has no file for: it is older than the schema.
    unknown: tuple[str, ...] = ()
    # Applied migrations whose file was renamed or changed since, each as a sentence.
    changed: tuple[str, ...] = ()

    @property
    def matches(self) -> bool:
        return not (self.missing or self.unknown or self.changed)


def compare_schema(
    applied: Mapping[int, tuple[str, str]], migrations: Sequence[Migration]
) -> SchemaComparison:
    """What separates a database (``applied``: version -> (file name, sha256), as recorded in
    ``schema_migrations``) from the code's migration files. Pure."""
    by_version = {migration.version: migration for migration in migrations}
    return SchemaComparison(
        missing=tuple(m.name for m in migrations if m.version not in applied),
        unknown=tuple(applied[v][0] for v in sorted(applied) if v not in by_version),
        changed=tuple(_changed_migrations(applied, by_version)),
    )


class SchemaMismatchError(MigrationError):
    """The database's schema is not the one this code was written for; a restart cannot fix it."""


def schema_refusal(comparison: SchemaComparison, what: str, where: str) -> str | None:
    """Why ``what`` (e.g. "the orders job") must not run against the database ``where``, with the
    command that fixes it; None when the schema matches the code. Pure."""
    if comparison.unknown:
        behind = (
            f" It also lacks {', '.join(comparison.missing)} of this code."
            if comparison.missing
            else ""
        )
        return (
            f"{what} refuses to start: {where} has migrations this code does not know "
            f"({', '.join(comparison.unknown)}), so the code is older than the schema.{behind} "
            "Deploy the streamops version that added them (or newer); never roll a schema back "
            "by hand."
        )
    if comparison.changed:
        return (
            f"{what} refuses to start: applied migrations of {where} no longer match their "
            f"files: {'; '.join(comparison.changed)}. An applied migration must never change; "
            "put the schema change in a new migration file."
        )
    if comparison.missing:
        return (
            f"{what} refuses to start: {where} lacks migration(s) "
            f"{', '.join(comparison.missing)} of streamops/migrations, which this code needs. "
            "Run `streamops db migrate` (or `streamops up`, which migrates too), then start the "
            "job again."
        )
    return None


def applied_migrations(settings: Settings) -> dict[int, tuple[str, str]]:
    """version -> (file name, sha256) of every migration applied to the database; {} for a
    database that was never migrated."""
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        if not _has_migrations_table(cursor):
            return {}
        return _applied_migrations(cursor)


def check_schema(settings: Settings, what: str, *, migrations_dir: Path | None = None) -> None:
    """Raise :class:`SchemaMismatchError` naming the fix when the database's applied migrations
    are not exactly this code's files (``what`` names the caller in the message). For a job's
    start: without it, a job against an older schema crash-loops on its first missing column.
    Connection failures raise :class:`DatabaseUnavailableError` as usual (an outage, not a
    mismatch)."""
    comparison = compare_schema(applied_migrations(settings), list_migrations(migrations_dir))
    refusal = schema_refusal(comparison, what, _where(settings))
    if refusal is not None:
        raise SchemaMismatchError(refusal)


def _where(settings: Settings) -> str:
    return (
        f"database '{settings.mariadb_database}' at {settings.mariadb_host}:{settings.mariadb_port}"
    )


def migration_lock_name(database: str) -> str:
    """Name of the advisory lock; such locks are server-wide, hence the database in it."""
    return f"streamops.migrate.{database}"


@contextmanager
def _advisory_lock(
    cursor: mariadb.Cursor, settings: Settings, timeout_seconds: float
) -> Iterator[None]:
    name = migration_lock_name(settings.mariadb_database)
    cursor.execute("SELECT GET_LOCK(?, ?)", (name, timeout_seconds))
    (acquired,) = cursor.fetchone()
    if acquired != 1:
        raise MigrationLockTimeoutError(
            f"Another migrate held the lock '{name}' on MariaDB at "
            f"{settings.mariadb_host}:{settings.mariadb_port} for more than "
            f"{timeout_seconds:g} s. Wait for it to finish and run migrate again; if no migrate "
            f"is running, `SELECT IS_USED_LOCK('{name}')` gives the connection holding it, "
            "which `KILL <id>` ends."
        )
    try:
        yield
    finally:
        try:
            cursor.execute("SELECT RELEASE_LOCK(?)", (name,))
            cursor.fetchall()
        except mariadb.Error:
            # The connection is broken; its closing releases the lock, and raising here would
            # hide the error that brought us here.
            pass


def _applied_migrations(cursor: mariadb.Cursor) -> dict[int, tuple[str, str]]:
    cursor.execute(f"SELECT version, name, checksum FROM {MIGRATIONS_TABLE} ORDER BY version")
    return {int(version): (name, checksum) for version, name, checksum in cursor.fetchall()}


def _verify_applied(
    applied: Mapping[int, tuple[str, str]], migrations: list[Migration], settings: Settings
) -> None:
    where = _where(settings)
    comparison = compare_schema(applied, migrations)
    if comparison.unknown:
        names = ", ".join(comparison.unknown)
        raise MigrationError(
            f"{where} has migrations this checkout does not have ({names}): it was migrated by a "
            f"newer streamops (schema version {max(applied)}, these files go up to "
            f"{len(migrations)}). Update this checkout rather than running older code against it."
        )
    next_name = f"{len(migrations) + 1:04d}_<description>.sql"
    if comparison.changed:
        raise MigrationChecksumError(
            f"Applied migrations of {where} no longer match their files: "
            + "; ".join(comparison.changed)
            + f". An applied migration must never change, because other databases already ran "
            f"the old version. Put the schema change in a new migration, {next_name}."
        )


def _changed_migrations(
    applied: Mapping[int, tuple[str, str]], by_version: Mapping[int, Migration]
) -> list[str]:
    """Applied migrations that were renamed or edited since, each as a sentence with its fix."""
    problems: list[str] = []
    for version, (name, checksum) in sorted(applied.items()):
        migration = by_version.get(version)
        if migration is None:
            continue
        if migration.name != name:
            problems.append(
                f"migration {version:04d} was applied as {name} but the file is now "
                f"{migration.name}; rename it back"
            )
        elif migration.checksum != checksum:
            problems.append(
                f"{migration.path} was changed after it was applied (recorded sha256 "
                f"{checksum[:12]}..., file now {migration.checksum[:12]}...); restore it, "
                f"e.g. `git checkout -- {migration.path}`"
            )
    return problems


def _apply(connection: mariadb.Connection, cursor: mariadb.Cursor, migration: Migration) -> None:
    total = len(migration.statements)
    for number, statement in enumerate(migration.statements, start=1):
        try:
            cursor.execute(statement)
            if cursor.description is not None:
                cursor.fetchall()
        except mariadb.Error as exc:
            connection.rollback()
            raise MigrationError(
                f"Migration {migration.name} failed at statement {number} of {total}: {exc}. "
                "MariaDB commits DDL at once, so the statements before it stay applied, but the "
                "migration is not recorded as applied. Fix the file (unapplied, so editing it is "
                "fine; keep every statement re-runnable) and run migrate again."
            ) from exc
    # In the same transaction as the file's DML (e.g. seed rows), so those land with the record.
    cursor.execute(
        f"INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum, applied_at) "
        "VALUES (?, ?, ?, UTC_TIMESTAMP(3))",
        (migration.version, migration.name, migration.checksum),
    )
    connection.commit()


def _identifier(value: str, variable: str) -> str:
    # Names go into DDL unquoted by the server (no placeholders there), so refuse anything that
    # is not a plain identifier even if a caller bypassed Settings validation.
    if not _IDENTIFIER.match(value):
        raise ValueError(f"{variable}={value!r} must be 1-64 letters, digits or underscores.")
    return value


def _explain_connect_error(exc: mariadb.Error, settings: Settings) -> DatabaseUnavailableError:
    where = f"{settings.mariadb_host}:{settings.mariadb_port}"
    errno = getattr(exc, "errno", None)
    if errno in _UNREACHABLE_ERRNOS:
        return DatabaseUnavailableError(
            f"MariaDB is not reachable at {where} ({exc}). Start the local stack with "
            "`streamops up`, or if it is running check `streamops logs mariadb`; for a server "
            "elsewhere set STREAMOPS_MARIADB_HOST and STREAMOPS_MARIADB_PORT."
        )
    if errno in _DATABASE_DENIED_ERRNOS:
        return DatabaseUnavailableError(
            f"MariaDB at {where} gives user '{settings.mariadb_user}' no database "
            f"'{settings.mariadb_database}' ({exc}). `streamops up` creates it and grants it to "
            "that user on start: run it, or set STREAMOPS_MARIADB_DATABASE to the database "
            "the user was created for."
        )
    if errno in _ACCESS_DENIED_ERRNOS:
        return DatabaseUnavailableError(
            f"MariaDB at {where} refused user '{settings.mariadb_user}' ({exc}). `streamops up` "
            "creates that user with STREAMOPS_MARIADB_PASSWORD and re-syncs the password on "
            "start: run it again after changing the password, or fix STREAMOPS_MARIADB_USER / "
            "STREAMOPS_MARIADB_PASSWORD to match the server."
        )
    return DatabaseUnavailableError(
        f"Could not connect to MariaDB at {where} as '{settings.mariadb_user}': {exc}. "
        "Check `streamops logs mariadb`."
    )
