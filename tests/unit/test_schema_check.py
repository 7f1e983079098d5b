"""A job's start-up schema check: the pure comparison, the refusal's wording, the runner's exit
and the supervisor's answer to it (no services)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from spark_jobs.common import runner
from streamops import db
from streamops.config import load_settings
from streamops.errors import EXIT_REFUSED, REFUSAL_MARK
from streamops.supervision.job_health import (
    HealthStatus,
    StallBounds,
    classify_health,
    refusal_in_log,
)

WHERE = "database 'streamops' at localhost:3306"


def _migration(version: int, slug: str, checksum: str = "") -> db.Migration:
    name = f"{version:04d}_{slug}.sql"
    return db.Migration(
        version=version,
        name=name,
        path=Path("streamops/migrations") / name,
        checksum=checksum or f"{version:064d}",
        statements=("SELECT 1",),
    )


CODE = [_migration(1, "contract_tables"), _migration(2, "alerts"), _migration(3, "rollups")]


def _applied(*migrations: db.Migration) -> dict[int, tuple[str, str]]:
    return {m.version: (m.name, m.checksum) for m in migrations}


def test_a_database_with_every_file_applied_matches() -> None:
    comparison = db.compare_schema(_applied(*CODE), CODE)
    assert comparison.matches
    assert db.schema_refusal(comparison, "The orders job", WHERE) is None


def test_a_database_behind_names_each_missing_file_and_the_command() -> None:
    comparison = db.compare_schema(_applied(CODE[0]), CODE)

    assert comparison.missing == ("0002_alerts.sql", "0003_rollups.sql")
    assert comparison.unknown == () and comparison.changed == ()
    message = db.schema_refusal(comparison, "The orders job", WHERE)
    assert message is not None
    assert message.startswith("The orders job refuses to start:")
    assert "0002_alerts.sql, 0003_rollups.sql" in message
    assert "`streamops db migrate`" in message
    assert WHERE in message


def test_a_never_migrated_database_lacks_every_file() -> None:
    comparison = db.compare_schema({}, CODE)
    assert comparison.missing == tuple(m.name for m in CODE)


def test_a_database_ahead_of_the_code_is_refused_as_newer_code_needed() -> None:
    future = _migration(4, "from_the_future")
    comparison = db.compare_schema(_applied(*CODE, future), CODE)

    assert comparison.unknown == ("0004_from_the_future.sql",)
    assert comparison.missing == ()
    message = db.schema_refusal(comparison, "The orders job", WHERE)
    assert message is not None
    assert "0004_from_the_future.sql" in message
    assert "code is older than the schema" in message
    assert "streamops db migrate" not in message


def test_a_database_on_another_branch_is_refused_as_ahead_and_names_what_it_lacks() -> None:
    other = _migration(3, "other_branch")
    comparison = db.compare_schema(_applied(CODE[0], CODE[1], other, _migration(4, "x")), CODE)
    message = db.schema_refusal(comparison, "The orders job", WHERE)
    assert message is not None
    assert "0004_x.sql" in message and "code is older than the schema" in message


def test_an_edited_applied_file_is_refused_like_migrate_refuses_it() -> None:
    applied = _applied(CODE[0], _migration(2, "alerts", checksum="f" * 64), CODE[2])
    comparison = db.compare_schema(applied, CODE)

    assert comparison.missing == () and comparison.unknown == ()
    assert len(comparison.changed) == 1
    assert "0002_alerts.sql was changed after it was applied" in comparison.changed[0]
    message = db.schema_refusal(comparison, "The orders job", WHERE)
    assert message is not None and "must never change" in message
    # migrate refuses the same database with the same sentence.
    with pytest.raises(db.MigrationChecksumError, match=r"0002_alerts\.sql was changed"):
        db._verify_applied(applied, CODE, load_settings())


def test_a_renamed_applied_file_is_a_change() -> None:
    applied = _applied(CODE[0], _migration(2, "alerts_renamed", checksum=CODE[1].checksum))
    comparison = db.compare_schema(applied, CODE[:2])
    assert comparison.changed == (
        "migration 0002 was applied as 0002_alerts_renamed.sql but the file is now "
        "0002_alerts.sql; rename it back",
    )


# --- the runner: refuses before any Spark session, with its own exit code --------------------


@pytest.fixture
def no_spark(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    def no_session(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a Spark session was built for a refused job")

    alerts: list[dict[str, object]] = []
    monkeypatch.setattr(runner, "build_spark_session", no_session)
    monkeypatch.setattr(runner, "publish_platform_alert", lambda settings, a: alerts.append(a))
    return alerts


def test_the_runner_refuses_a_database_behind_with_the_refusal_exit_code(
    monkeypatch: pytest.MonkeyPatch,
    no_spark: list[dict[str, object]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    code = db.list_migrations()
    behind = {m.version: (m.name, m.checksum) for m in code[:-1]}
    monkeypatch.setattr(db, "applied_migrations", lambda settings: behind)
    # The job log's own handler writes to stderr and stops propagation; caplog listens above it.
    monkeypatch.setattr(runner, "_log_to_job_log", lambda: None)
    monkeypatch.setattr(logging.getLogger("spark_jobs"), "propagate", True)

    with caplog.at_level("ERROR", logger="spark_jobs.common.runner"):
        exit_code = runner.run_job("orders", lambda *a: [], None, until_done=True)

    assert exit_code == EXIT_REFUSED
    logged = caplog.text
    assert REFUSAL_MARK in logged and code[-1].name in logged
    assert "`streamops pipeline reset-breaker orders`" in logged
    assert [alert["rule_id"] for alert in no_spark] == [runner.REFUSED_RULE_ID]
    assert code[-1].name in str(no_spark[0]["sample_message"])


def test_the_runner_starts_a_job_whose_database_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    applied = {m.version: (m.name, m.checksum) for m in db.list_migrations()}
    monkeypatch.setattr(db, "applied_migrations", lambda settings: applied)
    assert runner.startup_refusal(load_settings(), "orders") is None


# --- the supervisor: a refusal is read back and not retried ----------------------------------


def test_a_refused_exit_is_a_failure_that_says_so() -> None:
    health = classify_health(
        alive=False,
        exit_code=EXIT_REFUSED,
        query_states={},
        now=10.0,
        process_start_epoch=1.0,
        bounds=StallBounds(heartbeat_max_age_seconds=60, startup_grace_seconds=120),
    )
    assert health.status is HealthStatus.FAILED
    assert "refused to start" in health.detail


def test_the_refusal_is_read_from_the_last_marked_line_of_the_log() -> None:
    log = (
        f"26/12/03 10:00:00 ERROR x: {REFUSAL_MARK} old reason\n"
        "=== streamops: launch 1\n"
        f"26/12/03 10:05:00 ERROR spark_jobs.common.runner: {REFUSAL_MARK} The orders job "
        "refuses to start: lacks 0011_x.sql\nlater line\n"
    )
    assert refusal_in_log(log) == "The orders job refuses to start: lacks 0011_x.sql"
    assert refusal_in_log("no such line\n") is None


def test_the_vitals_training_refuses_a_database_behind_before_any_spark(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from spark_jobs.jobs import vitals_train

    code = db.list_migrations()
    behind = {m.version: (m.name, m.checksum) for m in code[:-1]}
    monkeypatch.setattr(db, "applied_migrations", lambda settings: behind)

    def no_session(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a Spark session was started against a database behind the code")

    monkeypatch.setattr(vitals_train, "build_spark_session", no_session)
    with caplog.at_level("ERROR", logger=vitals_train.log.name):
        assert vitals_train.main([]) == EXIT_REFUSED
    assert REFUSAL_MARK in caplog.text and code[-1].name in caplog.text
