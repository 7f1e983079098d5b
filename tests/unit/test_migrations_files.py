"""The migration files against the data contract, without a server: the SQL is parsed here."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from streamops import db
from streamops.config import load_settings
from streamops.migrations import MIGRATIONS_DIR

# The MariaDB tables of shared/CONTRACT.md and their keys, in key order.
CONTRACT_KEYS: dict[str, tuple[str, ...]] = {
    "orders": ("order_id",),
    "order_revenue_5s": ("window_start", "currency"),
    "quarantine": ("source_topic", "source_partition", "source_offset"),
    "alert_rules": ("rule_id",),
    "alerts": ("alert_id",),
    "vitals_summary_1m": ("patient_id", "window_start"),
    "vitals_alerts": ("patient_id", "vital", "window_start"),
    "order_payments": ("order_id",),
}

VITAL_SIGNS = (
    "heart_rate",
    "spo2",
    "systolic_bp",
    "diastolic_bp",
    "temperature_c",
    "respiratory_rate",
)

# Columns the contract (and the readers built on it) rely on, beyond the keys.
CONTRACT_COLUMNS: dict[str, tuple[str, ...]] = {
    "orders": (
        "customer_id",
        "product_id",
        "quantity",
        "unit_price",
        "currency",
        "amount",
        "event_time",
        "ingested_at",
    ),
    "order_revenue_5s": ("window_end", "order_count", "item_count", "revenue", "updated_at"),
    "quarantine": ("raw_payload", "reason", "pipeline", "quarantined_at"),
    "alert_rules": (
        "level",
        "service",
        "window_seconds",
        "threshold_count",
        "enabled",
        "created_at",
        "updated_at",
    ),
    "alerts": (
        "rule_id",
        "level",
        "service",
        "window_start",
        "window_end",
        "event_count",
        "sample_message",
        "first_seen",
        "last_seen",
    ),
    "vitals_summary_1m": (
        "window_end",
        "reading_count",
        *(f"{vital}_{stat}" for vital in VITAL_SIGNS for stat in ("min", "avg", "max")),
    ),
    "vitals_alerts": (
        "window_end",
        "observed_value",
        "observed_min",
        "observed_max",
        "threshold_low",
        "threshold_high",
        "reason",
        "reading_count",
    ),
    "order_payments": (
        "payment_id",
        "order_amount",
        "paid_amount",
        "currency",
        "status",
        "order_time",
        "payment_time",
        "seconds_to_pay",
        "amount_mismatch",
    ),
}

MONEY_COLUMNS = {
    ("orders", "unit_price"): "DECIMAL(12,2)",
    ("orders", "amount"): "DECIMAL(14,2)",
    ("order_revenue_5s", "revenue"): "DECIMAL",
    ("order_payments", "order_amount"): "DECIMAL",
    ("order_payments", "paid_amount"): "DECIMAL",
}

TIME_COLUMN = re.compile(r"(_time|_at|^window_start|^window_end|_seen)$")
CONSTRAINT_WORDS = (
    "PRIMARY",
    "KEY",
    "INDEX",
    "UNIQUE",
    "CONSTRAINT",
    "CHECK",
    "FOREIGN",
    "FULLTEXT",
)


@dataclass
class Table:
    name: str
    columns: dict[str, str] = field(default_factory=dict)  # name -> upper-cased definition
    primary_key: tuple[str, ...] = ()
    indexes: list[tuple[str, ...]] = field(default_factory=list)
    options: str = ""
    if_not_exists: bool = False


def _split_top_level(text: str, separator: str = ",") -> list[str]:
    """Split on ``separator`` outside parentheses and quotes."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    start = 0
    for index, char in enumerate(text):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]


def _column_list(text: str) -> tuple[str, ...]:
    inner = text[text.index("(") + 1 : text.rindex(")")]
    return tuple(part.split()[0].strip("`") for part in _split_top_level(inner))


def _parse_create_table(statement: str) -> Table:
    header = re.match(
        r"CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?`?(\w+)`?\s*\(", statement, re.IGNORECASE
    )
    assert header, statement
    table = Table(name=header[2], if_not_exists=bool(header[1]))
    depth = 0
    quote: str | None = None
    body_start = header.end()
    body_end = -1
    for index in range(body_start - 1, len(statement)):
        char = statement[index]
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                body_end = index
                break
    assert body_end > 0, f"unbalanced parentheses in CREATE TABLE {table.name}"
    table.options = statement[body_end + 1 :].upper()
    for element in _split_top_level(statement[body_start:body_end]):
        first = element.split()[0].upper()
        if first == "PRIMARY":
            table.primary_key = _column_list(element)
        elif first in ("KEY", "INDEX", "UNIQUE"):
            table.indexes.append(_column_list(element))
        elif first in CONSTRAINT_WORDS:
            continue
        else:
            name, definition = element.split(None, 1)
            table.columns[name.strip("`")] = " ".join(definition.upper().split())
    return table


def _all_statements() -> list[tuple[db.Migration, str]]:
    return [
        (migration, statement)
        for migration in db.list_migrations()
        for statement in migration.statements
    ]


def _apply_modify_columns(tables: dict[str, Table], statement: str) -> None:
    """``ALTER TABLE t MODIFY [COLUMN] c <definition>`` clauses replace c's definition."""
    header = re.match(r"ALTER\s+TABLE\s+`?(\w+)`?\s+", statement, re.IGNORECASE)
    assert header, statement
    table = tables[header[1]]
    for clause in _split_top_level(statement[header.end() :]):
        modify = re.match(r"MODIFY\s+(COLUMN\s+)?`?(\w+)`?\s+(.*)", clause, re.I | re.S)
        if modify:
            assert modify[2] in table.columns, f"{table.name}.{modify[2]}: MODIFY of no column"
            table.columns[modify[2]] = " ".join(modify[3].upper().split())


def _schema() -> dict[str, Table]:
    tables: dict[str, Table] = {}
    # Later CREATEs win, and an ALTER's MODIFY replaces a column's definition. Other ALTER
    # clauses (keys, constraints, added columns) are not followed: a migration that needs them
    # here deserves a second look at these tests.
    for _migration, statement in _all_statements():
        if re.match(r"CREATE\s+TABLE", statement, re.IGNORECASE):
            table = _parse_create_table(statement)
            tables[table.name] = table
        elif re.match(r"ALTER\s+TABLE", statement, re.IGNORECASE):
            _apply_modify_columns(tables, statement)
    return tables


SCHEMA = _schema()


# --- the files ------------------------------------------------------------------------------


def test_migration_files_are_numbered_contiguously_from_one() -> None:
    migrations = db.list_migrations()
    assert migrations, "no migrations found"
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert [m.name for m in migrations] == sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql"))
    assert migrations[0].name == "0001_contract_tables.sql"


def test_migrations_keep_to_what_the_splitter_understands() -> None:
    for migration, statement in _all_statements():
        assert not re.search(
            r"\bDELIMITER\b|\bCREATE\s+(PROCEDURE|FUNCTION|TRIGGER)\b", statement, re.I
        ), migration.name
        assert statement.split()[0].upper() in {"CREATE", "ALTER", "INSERT", "UPDATE", "DROP"}, (
            f"{migration.name}: unexpected statement start {statement[:40]!r}"
        )


def test_statements_are_safe_to_rerun_after_a_half_applied_file() -> None:
    for migration, statement in _all_statements():
        if re.match(r"CREATE\s+TABLE", statement, re.I):
            assert re.match(r"CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS", statement, re.I), migration.name
        if re.match(r"INSERT\b", statement, re.I):
            assert re.match(r"INSERT\s+IGNORE\b", statement, re.I), migration.name


# --- the tables against the contract --------------------------------------------------------


@pytest.mark.parametrize("table_name", sorted(CONTRACT_KEYS))
def test_contract_table_exists_with_the_contract_key(table_name: str) -> None:
    assert table_name in SCHEMA, f"no CREATE TABLE {table_name} in the migrations"
    assert SCHEMA[table_name].primary_key == CONTRACT_KEYS[table_name]


@pytest.mark.parametrize("table_name", sorted(CONTRACT_COLUMNS))
def test_contract_table_has_the_contract_columns(table_name: str) -> None:
    missing = set(CONTRACT_COLUMNS[table_name]) - set(SCHEMA[table_name].columns)
    assert not missing, f"{table_name} lacks {sorted(missing)}"


@pytest.mark.parametrize("table_name", sorted(CONTRACT_KEYS))
def test_key_columns_are_not_null(table_name: str) -> None:
    table = SCHEMA[table_name]
    for column in table.primary_key:
        assert "NOT NULL" in table.columns[column], f"{table_name}.{column}"


@pytest.mark.parametrize("table_name", sorted(CONTRACT_KEYS))
def test_tables_are_innodb_utf8mb4(table_name: str) -> None:
    options = SCHEMA[table_name].options
    assert "ENGINE=INNODB" in options
    assert "CHARSET=UTF8MB4" in options


def test_every_time_column_is_datetime_with_milliseconds() -> None:
    time_columns = [
        (table.name, column, definition)
        for table in SCHEMA.values()
        for column, definition in table.columns.items()
        if TIME_COLUMN.search(column)
    ]
    assert len(time_columns) > 20  # guards the pattern itself
    for table_name, column, definition in time_columns:
        assert definition.startswith("DATETIME(3)"), f"{table_name}.{column}: {definition}"


@pytest.mark.parametrize(("table_name", "column"), sorted(MONEY_COLUMNS))
def test_money_is_decimal(table_name: str, column: str) -> None:
    definition = SCHEMA[table_name].columns[column]
    assert definition.startswith(MONEY_COLUMNS[(table_name, column)]), definition


def test_no_money_column_anywhere_is_a_float() -> None:
    for table in SCHEMA.values():
        for column, definition in table.columns.items():
            if re.search(r"(^|_)(amount|price|revenue)$", column):
                assert definition.startswith("DECIMAL"), f"{table.name}.{column}: {definition}"


@pytest.mark.parametrize(
    ("table_name", "leading_column"),
    [
        ("orders", "event_time"),
        ("quarantine", "quarantined_at"),
        ("alerts", "window_start"),
        ("vitals_summary_1m", "window_start"),
        ("vitals_alerts", "window_start"),
        ("order_payments", "payment_time"),
    ],
)
def test_time_range_queries_have_an_index(table_name: str, leading_column: str) -> None:
    assert any(index[0] == leading_column for index in SCHEMA[table_name].indexes)


def test_quarantine_keeps_any_key_and_value_the_broker_accepts() -> None:
    # A Kafka key or value may be about 1 MB (more where a topic allows it); BLOB holds 64 KiB,
    # and a rejected record that does not fit fails its batch on every retry (migration 0011).
    columns = SCHEMA["quarantine"].columns
    assert columns["record_key"].startswith("LONGBLOB"), columns["record_key"]
    assert columns["raw_payload"].startswith("LONGBLOB"), columns["raw_payload"]


def test_alert_id_is_a_fixed_width_digest() -> None:
    assert SCHEMA["alerts"].columns["alert_id"].startswith("CHAR(64)")


def test_alert_rule_service_is_nullable_meaning_any() -> None:
    assert "NOT NULL" not in SCHEMA["alert_rules"].columns["service"]


def test_default_alert_rules_are_seeded_idempotently() -> None:
    seeds = [
        statement
        for _migration, statement in _all_statements()
        if re.match(r"INSERT\s+IGNORE\s+INTO\s+alert_rules\b", statement, re.I)
    ]
    assert seeds, "no INSERT IGNORE INTO alert_rules in the migrations"
    assert "'ERROR'" in " ".join(seeds)


# --- the splitter and the loader ------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("", []),
        ("-- only a comment;\n\n", []),
        ("SELECT 1;", ["SELECT 1"]),
        ("SELECT 1;\nSELECT 2;\n", ["SELECT 1", "SELECT 2"]),
        ("CREATE TABLE t (\n  a INT,\n  b INT\n);\n", ["CREATE TABLE t (\n  a INT,\n  b INT\n)"]),
        ("-- header\nSELECT 1;\n-- between;\nSELECT 2;", ["SELECT 1", "SELECT 2"]),
        ("INSERT INTO t VALUES ('a;b', 'c');\n", ["INSERT INTO t VALUES ('a;b', 'c')"]),
        ("SELECT 1;   \n", ["SELECT 1"]),
        ("SELECT 1;\r\nSELECT 2;\r\n", ["SELECT 1", "SELECT 2"]),
        ("SELECT 1;\nSELECT 2", ["SELECT 1", "SELECT 2"]),
        ("SELECT\n\n  1\n;\n;\n", ["SELECT\n  1"]),
    ],
)
def test_split_statements(sql: str, expected: list[str]) -> None:
    assert db.split_statements(sql) == expected


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_bytes(text.encode("utf-8"))
    return directory


def test_list_migrations_reads_a_directory_in_order(tmp_path: Path) -> None:
    directory = _write(
        tmp_path, {"0002_b.sql": "SELECT 2;\nSELECT 3;\n", "0001_a.sql": "SELECT 1;\n"}
    )
    migrations = db.list_migrations(directory)
    assert [(m.version, m.name, m.statements) for m in migrations] == [
        (1, "0001_a.sql", ("SELECT 1",)),
        (2, "0002_b.sql", ("SELECT 2", "SELECT 3")),
    ]
    assert all(re.fullmatch(r"[0-9a-f]{64}", m.checksum) for m in migrations)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"0001_a.sql": "SELECT 1;", "0003_c.sql": "SELECT 3;"}, "0003_c.sql"),
        ({"0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 2;"}, "0001_b.sql"),
        ({"0002_a.sql": "SELECT 1;"}, "0002_a.sql"),
        ({"0001_a.sql": "SELECT 1;", "2_b.sql": "SELECT 2;"}, "2_b.sql"),
        ({"0001_Add-Things.sql": "SELECT 1;"}, "0001_Add-Things.sql"),
        ({"0001_a.sql": "-- nothing here\n"}, "no SQL statement"),
    ],
)
def test_list_migrations_refuses_what_would_be_skipped_or_misordered(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    with pytest.raises(db.MigrationError, match=re.escape(message)):
        db.list_migrations(_write(tmp_path, files))


def test_checksum_follows_content_but_not_line_endings(tmp_path: Path) -> None:
    lf = db.list_migrations(_write(tmp_path / "lf", {"0001_a.sql": "SELECT 1;\nSELECT 2;\n"}))
    crlf = db.list_migrations(
        _write(tmp_path / "crlf", {"0001_a.sql": "SELECT 1;\r\nSELECT 2;\r\n"})
    )
    edited = db.list_migrations(
        _write(tmp_path / "edited", {"0001_a.sql": "SELECT 1;\nSELECT 2;\n-- why\n"})
    )
    assert lf[0].checksum == crlf[0].checksum
    assert lf[0].checksum != edited[0].checksum


def test_lock_name_is_per_database() -> None:
    assert db.migration_lock_name("a") != db.migration_lock_name("b")


def _unused_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_server_is_explained_with_address_and_fix() -> None:
    port = _unused_local_port()
    settings = load_settings(mariadb_host="127.0.0.1", mariadb_port=port)
    with pytest.raises(db.DatabaseUnavailableError) as raised:
        db.connect(settings)
    message = str(raised.value)
    assert f"not reachable at 127.0.0.1:{port}" in message
    assert "streamops up" in message
    assert "streamops logs mariadb" in message


def test_unreachable_root_socket_is_explained(tmp_path: Path) -> None:
    with pytest.raises(db.DatabaseUnavailableError, match="streamops up"):
        db.ensure_database_and_user(load_settings(), tmp_path / "absent.sock")
