"""Migrations against a real MariaDB.

Needs a ``settings`` fixture: a streamops Settings whose database and user exist on a running
server. Each test starts from an empty database (every table dropped) and leaves it fully
migrated, so tests of other modules find the schema in place whatever the order.

The bootstrap test logs in as root over the stack's MariaDB socket (unix_socket authentication).
"""

from __future__ import annotations

import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import mariadb
import pytest

from streamops import db
from streamops.config import Settings
from streamops.stack.mariadb import MariaDB

pytestmark = pytest.mark.integration

CONTRACT_TABLES = (
    "orders",
    "order_revenue_5s",
    "quarantine",
    "alert_rules",
    "alerts",
    "vitals_summary_1m",
    "vitals_alerts",
    "order_payments",
)
# Tables the platform adds beside the contract's.
PLATFORM_TABLES = (
    "query_progress",
    "query_status",
    "error_counts_1s",
    "error_counts",
    "order_revenue_1m",
    "order_revenue_1h",
    "maintenance_state",
    "checkpoint_health",
    "pipeline_leases",
    "pipeline_restart_state",
    # vitals (0007)
    "patient_thresholds",
    "vitals_readings",
    "vitals_reading_flags",
    # joins (0008)
    "products",
    "category_revenue_1m",
    "joins_applied_batches",
    # rollups (0009)
    "error_counts_1m",
    "error_counts_1h",
    "vitals_summary_1h",
    # recovery after offsets aged out (0013)
    "offset_resets",
)


def _tables(settings: Settings) -> list[str]:
    with closing(db.connect(settings)) as connection:
        cursor = connection.cursor()
        cursor.execute(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
            "ORDER BY TABLE_NAME"
        )
        return [name for (name,) in cursor.fetchall()]


def _drop_all_tables(settings: Settings) -> None:
    tables = _tables(settings)
    with closing(db.connect(settings)) as connection:
        cursor = connection.cursor()
        for table in tables:
            cursor.execute(f"DROP TABLE `{table}`")


def _show_create_tables(settings: Settings) -> dict[str, str]:
    with closing(db.connect(settings)) as connection:
        cursor = connection.cursor()
        statements: dict[str, str] = {}
        for table in _tables(settings):
            cursor.execute(f"SHOW CREATE TABLE `{table}`")
            statements[table] = cursor.fetchone()[1]
        return statements


@pytest.fixture
def empty_database(settings: Settings) -> Iterator[Settings]:
    _drop_all_tables(settings)
    yield settings
    _drop_all_tables(settings)
    db.migrate(settings)


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    """A private copy of the migration files, for tests that change them."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    for migration in db.list_migrations():
        shutil.copyfile(migration.path, directory / migration.name)
    return directory


def test_migrate_applies_every_file_in_order(empty_database: Settings) -> None:
    migrations = db.list_migrations()

    applied = db.migrate(empty_database)

    assert applied == [migration.name for migration in migrations]
    recorded = db.execute(
        empty_database, "SELECT version, name, checksum, applied_at FROM schema_migrations"
    )
    assert [row[:3] for row in recorded] == [(m.version, m.name, m.checksum) for m in migrations]
    now_utc = datetime.now(UTC).replace(tzinfo=None)
    assert all(abs((now_utc - row[3]).total_seconds()) < 120 for row in recorded)
    assert set(CONTRACT_TABLES) <= set(_tables(empty_database))


def test_default_alert_rules_are_seeded(empty_database: Settings) -> None:
    db.migrate(empty_database)
    rules = db.execute(
        empty_database,
        "SELECT level, service, window_seconds, threshold_count, enabled FROM alert_rules "
        "WHERE rule_id = 'error-burst-any-service'",
    )
    assert rules == [("ERROR", None, 10, 5, 1)]


def test_second_migrate_changes_nothing(empty_database: Settings) -> None:
    db.migrate(empty_database)
    schema_before = _show_create_tables(empty_database)
    rules_before = db.execute(empty_database, "SELECT * FROM alert_rules ORDER BY rule_id")

    assert db.migrate(empty_database) == []

    assert _show_create_tables(empty_database) == schema_before
    assert db.execute(empty_database, "SELECT * FROM alert_rules ORDER BY rule_id") == rules_before
    assert set(schema_before) == {*CONTRACT_TABLES, *PLATFORM_TABLES, db.MIGRATIONS_TABLE}


def test_schema_version_counts_applied_files(empty_database: Settings) -> None:
    assert db.schema_version(empty_database) == 0
    db.migrate(empty_database)
    assert db.schema_version(empty_database) == len(db.list_migrations())


def test_changed_applied_file_stops_migrate_and_names_it(
    empty_database: Settings, migrations_copy: Path
) -> None:
    db.migrate(empty_database, migrations_dir=migrations_copy)
    changed = migrations_copy / "0001_contract_tables.sql"
    changed.write_text(changed.read_text() + "\nALTER TABLE orders ADD COLUMN note TEXT;\n")
    (migrations_copy / f"{len(db.list_migrations()) + 1:04d}_pending.sql").write_text(
        "CREATE TABLE IF NOT EXISTS pending_probe (id INT PRIMARY KEY);\n"
    )

    with pytest.raises(db.MigrationChecksumError) as raised:
        db.migrate(empty_database, migrations_dir=migrations_copy)

    message = str(raised.value)
    assert "0001_contract_tables.sql" in message
    assert "new migration" in message
    # Nothing runs past a failed check, not even the pending file.
    assert "pending_probe" not in _tables(empty_database)


def test_tampered_recorded_checksum_stops_migrate(empty_database: Settings) -> None:
    db.migrate(empty_database)
    db.execute(
        empty_database, "UPDATE schema_migrations SET checksum = REPEAT('0', 64) WHERE version = 1"
    )

    with pytest.raises(db.MigrationChecksumError, match=re.escape("0001_contract_tables.sql")):
        db.migrate(empty_database)


def test_database_ahead_of_the_files_stops_migrate(empty_database: Settings) -> None:
    db.migrate(empty_database)
    future = len(db.list_migrations()) + 1
    db.execute(
        empty_database,
        "INSERT INTO schema_migrations (version, name, checksum, applied_at) "
        "VALUES (?, ?, REPEAT('f', 64), UTC_TIMESTAMP(3))",
        (future, f"{future:04d}_from_the_future.sql"),
    )

    with pytest.raises(db.MigrationError, match="from_the_future"):
        db.migrate(empty_database)


def test_failed_migration_is_not_recorded_and_names_the_file(
    empty_database: Settings, migrations_copy: Path
) -> None:
    broken = f"{len(db.list_migrations()) + 1:04d}_broken.sql"
    (migrations_copy / broken).write_text(
        "CREATE TABLE IF NOT EXISTS broken_probe (id INT PRIMARY KEY);\n"
        "CREATE TABLE IF NOT EXISTS broken_probe_2 (id INT PRIMARY KEY,);\n"
    )

    with pytest.raises(db.MigrationError, match=re.escape(f"{broken} failed at statement 2 of 2")):
        db.migrate(empty_database, migrations_dir=migrations_copy)

    assert db.schema_version(empty_database) == len(db.list_migrations())


def test_concurrent_migrates_apply_each_file_once(empty_database: Settings) -> None:
    workers = 4
    start = threading.Barrier(workers)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            results.append(db.migrate(empty_database))
        except BaseException as exc:
            # Collected, not raised: an exception in a thread would otherwise only be printed.
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors
    names = [migration.name for migration in db.list_migrations()]
    # The lock holder applies everything pending; whoever comes after finds nothing to do.
    assert sorted(results, key=len) == [[]] * (workers - 1) + [names]
    assert db.execute(empty_database, "SELECT COUNT(*) FROM schema_migrations") == [(len(names),)]
    assert db.execute(empty_database, "SELECT COUNT(*) FROM alert_rules") == [(2,)]


def test_migrate_gives_up_when_another_holds_the_lock(empty_database: Settings) -> None:
    lock_name = db.migration_lock_name(empty_database.mariadb_database)
    with closing(db.connect(empty_database)) as holder:
        cursor = holder.cursor()
        cursor.execute("SELECT GET_LOCK(?, 0)", (lock_name,))
        assert cursor.fetchone() == (1,)

        with pytest.raises(db.MigrationLockTimeoutError, match=re.escape(lock_name)):
            db.migrate(empty_database, lock_timeout_seconds=0.2)

    assert db.schema_version(empty_database) == 0


def test_connections_are_utc_and_transactional(settings: Settings) -> None:
    with closing(db.connect(settings)) as connection:
        assert connection.autocommit is False
        cursor = connection.cursor()
        cursor.execute("SELECT @@session.time_zone, DATABASE()")
        assert cursor.fetchone() == ("+00:00", settings.mariadb_database)


def test_wrong_password_is_explained(settings: Settings) -> None:
    wrong = settings.model_copy(update={"mariadb_password": settings.mariadb_password + "-wrong"})
    with pytest.raises(db.DatabaseUnavailableError, match="STREAMOPS_MARIADB_PASSWORD"):
        db.connect(wrong)


def test_missing_database_is_explained(settings: Settings) -> None:
    absent = settings.model_copy(update={"mariadb_database": f"absent_{uuid.uuid4().hex[:8]}"})
    with pytest.raises(db.DatabaseUnavailableError, match="STREAMOPS_MARIADB_DATABASE"):
        db.connect(absent)


def test_orders_enforce_the_contract(empty_database: Settings) -> None:
    db.migrate(empty_database)
    insert = (
        "INSERT INTO orders (order_id, customer_id, product_id, quantity, unit_price, currency, "
        "amount, event_time) VALUES (?, 'c', 'p', ?, ?, 'EUR', ?, '2026-11-24 14:03:05.120')"
    )
    # Ids compare byte for byte, as in Spark: these are three orders, not one.
    for order_id in ("A1", "a1", "A1 "):
        db.execute(empty_database, insert, (order_id, 2, Decimal("1.25"), Decimal("2.50")))
    assert db.execute(empty_database, "SELECT COUNT(*) FROM orders") == [(3,)]
    stored = db.execute(
        empty_database, "SELECT event_time, ingested_at FROM orders WHERE order_id = 'A1'"
    )
    assert stored[0][0] == datetime(2026, 11, 24, 14, 3, 5, 120000)
    now_utc = datetime.now(UTC).replace(tzinfo=None)
    assert abs((now_utc - stored[0][1]).total_seconds()) < 120  # default is UTC, not local

    with pytest.raises(mariadb.IntegrityError):
        db.execute(empty_database, insert, ("bad-amount", 2, Decimal("1.25"), Decimal("9.99")))
    with pytest.raises(mariadb.IntegrityError):
        db.execute(empty_database, insert, ("bad-quantity", 0, Decimal("1.25"), Decimal("0.00")))


def test_bootstrap_creates_database_and_user_and_syncs_password(settings: Settings) -> None:
    root_socket = MariaDB(settings).socket_path
    suffix = uuid.uuid4().hex[:8]
    bootstrap = settings.model_copy(
        update={
            "mariadb_database": f"bootstrap_{suffix}",
            "mariadb_user": f"bootstrap_{suffix}",
            "mariadb_password": "first'pass\\word",
        }
    )
    try:
        db.ensure_database_and_user(bootstrap, root_socket)
        db.ensure_database_and_user(bootstrap, root_socket)  # idempotent
        assert db.migrate(bootstrap) == [m.name for m in db.list_migrations()]

        changed = bootstrap.model_copy(update={"mariadb_password": "second-pass"})
        db.ensure_database_and_user(changed, root_socket)
        assert db.schema_version(changed) == len(db.list_migrations())
        with pytest.raises(db.DatabaseUnavailableError):
            db.connect(bootstrap)
    finally:
        with closing(mariadb.connect(unix_socket=str(root_socket), user="root")) as root:
            cursor = root.cursor()
            cursor.execute(f"DROP DATABASE IF EXISTS `bootstrap_{suffix}`")
            for host in db.ACCOUNT_HOSTS:
                cursor.execute(f"DROP USER IF EXISTS 'bootstrap_{suffix}'@'{host}'")


def test_quarantine_keys_longer_than_a_blob_survive_the_upgrade(
    empty_database: Settings, migrations_copy: Path
) -> None:
    """0011 widens quarantine.record_key on a database that already holds rejected records."""
    later = [m.name for m in db.list_migrations() if m.version >= 11]
    for name in later:  # the copy stops at 0010, without a gap
        (migrations_copy / name).unlink()
    db.migrate(empty_database, migrations_dir=migrations_copy)
    insert = (
        "INSERT INTO quarantine (source_topic, source_partition, source_offset, record_key, "
        "raw_payload, reason, pipeline) VALUES ('orders', 0, ?, ?, ?, 'invalid_json', 'orders')"
    )
    blob_sized_key = bytes(range(256)) * 256  # 65,536 bytes: one more than a BLOB holds
    with pytest.raises(mariadb.Error, match="too long"):  # strict mode, as the stack runs
        db.execute(empty_database, insert, (1, blob_sized_key, b"{"))
    kept_key = blob_sized_key[:65_535]
    db.execute(empty_database, insert, (2, kept_key, b"{"))

    assert db.migrate(empty_database) == later
    assert later[0] == "0011_quarantine_long_keys.sql"

    column_type = db.execute(
        empty_database,
        "SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
        "AND TABLE_NAME = 'quarantine' AND COLUMN_NAME = 'record_key'",
    )
    assert column_type == [("longblob",)]
    megabyte_key = bytes(range(256)) * 4096  # 1,048,576 bytes
    db.execute(empty_database, insert, (3, megabyte_key, b"{"))
    stored = db.execute(
        empty_database,
        "SELECT source_offset, record_key FROM quarantine ORDER BY source_offset",
    )
    assert stored == [(2, kept_key), (3, megabyte_key)]


def test_a_job_refuses_to_start_against_a_database_behind_or_ahead_of_the_code(
    empty_database: Settings, migrations_copy: Path
) -> None:
    """The start-up check of every job (spark_jobs.common.runner.startup_refusal) against the
    real server: a database one migration behind, then current, then ahead."""
    from spark_jobs.common.runner import startup_refusal

    latest = db.list_migrations()[-1]
    (migrations_copy / latest.name).unlink()
    db.migrate(empty_database, migrations_dir=migrations_copy)

    behind = startup_refusal(empty_database, "orders")

    assert behind is not None
    assert behind.startswith("The orders job refuses to start:")
    assert latest.name in behind and "`streamops db migrate`" in behind
    assert "`streamops pipeline reset-breaker orders`" in behind

    assert db.migrate(empty_database) == [latest.name]
    assert startup_refusal(empty_database, "orders") is None

    future = f"{latest.version + 1:04d}_from_the_future.sql"
    db.execute(
        empty_database,
        "INSERT INTO schema_migrations (version, name, checksum, applied_at) "
        "VALUES (?, ?, REPEAT('f', 64), UTC_TIMESTAMP(3))",
        (latest.version + 1, future),
    )
    ahead = startup_refusal(empty_database, "orders")
    db.execute(empty_database, "DELETE FROM schema_migrations WHERE name = ?", (future,))

    assert ahead is not None
    assert future in ahead and "code is older than the schema" in ahead


def test_checkpoint_health_gains_the_high_end_columns_on_a_filled_table(
    empty_database: Settings, migrations_copy: Path
) -> None:
    """0012 adds offsets_past_end and missing_partitions; rows recorded before it read 0."""
    later = [m.name for m in db.list_migrations() if m.version >= 12]
    for name in later:  # the copy stops at 0011, without a gap
        (migrations_copy / name).unlink()
    db.migrate(empty_database, migrations_dir=migrations_copy)
    db.execute(
        empty_database,
        "INSERT INTO checkpoint_health (pipeline, query_name, checked_at, checkpoint_path, status, "
        "lag_by_partition, findings) VALUES ('orders', 'orders_records', UTC_TIMESTAMP(3), "
        "'/c', 'ok', '{}', '[]')",
    )

    assert db.migrate(empty_database) == later
    assert later[0] == "0012_checkpoint_offsets_past_end.sql"

    assert db.execute(
        empty_database,
        "SELECT lost_offsets, offsets_past_end, missing_partitions FROM checkpoint_health",
    ) == [(0, 0, 0)]


def test_quarantine_gains_the_cut_off_columns_on_a_filled_table(
    empty_database: Settings, migrations_copy: Path
) -> None:
    """0014 adds the size and hash columns of a cut-off key or payload; rows quarantined before
    it read NULL (kept whole), and the job's rows with the new columns are taken."""
    later = [m.name for m in db.list_migrations() if m.version >= 14]
    for name in later:  # the copy stops at 0013, without a gap
        (migrations_copy / name).unlink()
    db.migrate(empty_database, migrations_dir=migrations_copy)
    db.execute(
        empty_database,
        "INSERT INTO quarantine (source_topic, source_partition, source_offset, raw_payload, "
        "reason, pipeline) VALUES ('orders', 0, 1, '{', 'invalid_json', 'orders')",
    )

    assert db.migrate(empty_database) == later
    assert later[0] == "0014_quarantine_cut_off.sql"

    cut_off = "raw_payload_bytes, raw_payload_sha256, record_key_bytes, record_key_sha256"
    assert db.execute(empty_database, f"SELECT {cut_off} FROM quarantine") == [
        (None, None, None, None)
    ]
    db.execute(
        empty_database,
        "INSERT INTO quarantine (source_topic, source_partition, source_offset, raw_payload, "
        f"reason, pipeline, {cut_off}) VALUES ('orders', 0, 2, 'x', 'invalid_json', 'orders', "
        "20971520, REPEAT('a', 64), NULL, NULL)",
    )
    assert db.execute(
        empty_database, f"SELECT {cut_off} FROM quarantine WHERE source_offset = 2"
    ) == [(20971520, "a" * 64, None, None)]
