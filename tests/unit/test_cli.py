"""The CLI's arguments and errors, without any service running."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamops.cli import app

runner = CliRunner()
COMMANDS = [
    ["install"],
    ["up"],
    ["down"],
    ["status"],
    ["logs"],
    ["reset"],
    ["generate"],
    ["db", "migrate"],
    ["db", "version"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert "--help" in result.output


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["generate", "orders", "--rate", "-1", "--count", "5"], "rate"),
        (["generate", "orders", "--count", "0"], "count"),
        (["generate", "orders"], "count nor duration"),
        (["generate", "orders", "--count", "5", "--malformed-ratio", "1.5"], "malformed"),
        (["generate", "alerts", "--count", "5"], "orders, payments, error-logs, patient-vitals"),
    ],
)
def test_generate_rejects_bad_options_before_touching_kafka(
    arguments: list[str], expected: str
) -> None:
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert expected in result.output.replace("\n", " ")


def test_logs_of_an_unknown_component_lists_the_known_ones(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--state-dir", str(tmp_path), "logs", "zookeeper"])
    assert result.exit_code == 1
    assert "kafka" in result.output and "airflow-scheduler" in result.output


def test_logs_of_a_component_never_started(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--state-dir", str(tmp_path), "logs", "kafka"])
    assert result.exit_code == 1
    assert "not been started" in result.output


def test_reset_asks_first_and_keeps_the_state_when_declined(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "mariadb").mkdir(parents=True)
    result = runner.invoke(app, ["--state-dir", str(state), "reset"], input="n\n")
    assert result.exit_code == 1
    assert "nothing was deleted" in result.output
    assert (state / "mariadb").is_dir()


def test_reset_yes_deletes_the_state_folder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "redis").mkdir(parents=True)
    result = runner.invoke(app, ["--state-dir", str(state), "reset", "--yes"])
    assert result.exit_code == 0, result.output
    assert not state.exists()


def test_status_of_a_stopped_stack_exits_non_zero(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--state-dir", str(tmp_path), "status", "--json"])
    assert result.exit_code == 1
    assert '"healthy": false' in result.output


def test_invalid_setting_in_the_environment_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMOPS_REDIS_PORT", "70000")
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    assert "STREAMOPS_REDIS_PORT" in result.output
