"""`streamops rules`: help on every command and clear errors, without a database."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from streamops.cli.rules import normalise_rule_level, rules_app

runner = CliRunner()


@pytest.mark.parametrize("command", ["list", "add", "enable", "disable"])
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(rules_app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["add", "r1", "--level", "NOTICE", "--window-seconds", "10", "--threshold", "5"],
            "Unknown level",
        ),
        (
            ["add", "bad id!", "--level", "ERROR", "--window-seconds", "10", "--threshold", "5"],
            "Rule id",
        ),
        (
            [
                "add",
                "r1",
                "--level",
                "ERROR",
                "--window-seconds",
                "10",
                "--threshold",
                "5",
                "--service",
                " ",
            ],
            "Service",
        ),
    ],
)
def test_add_rejects_bad_input_before_touching_the_database(args: list[str], message: str) -> None:
    result = runner.invoke(rules_app, args)
    assert result.exit_code == 1
    assert message in result.output


def test_add_rejects_a_zero_window() -> None:
    result = runner.invoke(
        rules_app, ["add", "r1", "--level", "ERROR", "--window-seconds", "0", "--threshold", "5"]
    )
    assert result.exit_code == 2


@pytest.mark.parametrize(
    ("given", "stored"), [("warning", "WARN"), ("FATAL", "CRITICAL"), ("error", "ERROR")]
)
def test_levels_are_stored_canonical(given: str, stored: str) -> None:
    assert normalise_rule_level(given) == stored
