"""Integration tests: each runs against the real local stack (tests/conftest.py starts it once
per session)."""

from __future__ import annotations

import pytest

from streamops.stack import Stack


@pytest.fixture(autouse=True)
def _running_stack(stack: Stack) -> Stack:
    """Every integration test runs against the real services: Kafka, MariaDB, Redis, Airflow."""
    return stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
