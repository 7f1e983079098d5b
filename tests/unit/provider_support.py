"""Helpers of the Spark provider's unit tests (Airflow's environment)."""

from __future__ import annotations

import json

import pytest


def env_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: object) -> None:
    """A Connection from the environment: enough for a unit test; the platform's own is a
    database row (`streamops up`), which the integration tests use."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def option(command: list[str], name: str) -> str:
    """The value after ``name`` on a command line."""
    return command[command.index(name) + 1]
