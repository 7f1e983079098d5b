"""The real local stack, started once per test session and stopped at its end."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from streamops.config import Settings, load_settings
from streamops.stack import Stack


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Stack]:
    stack = Stack(settings)
    # A fresh state folder per session: leftovers of an aborted run must not decide a result.
    stack.down()
    shutil.rmtree(settings.state_dir, ignore_errors=True)
    try:
        stack.up(with_airflow=True, report=print)
        yield stack
    finally:
        stack.down(report=print)


@pytest.fixture(autouse=True)
def _running_stack(stack: Stack) -> Stack:
    """Every integration test runs against the real services: Kafka, MariaDB, Redis, Airflow."""
    return stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
