"""The chaos suite: the whole platform under faults, on the real local stack (tests/conftest.py
starts it once per session). `pytest -m chaos` runs it alone; CI runs it in its bounded form."""

from __future__ import annotations

import pytest

from streamops.stack import Stack


@pytest.fixture(autouse=True)
def _running_stack(stack: Stack) -> Stack:
    return stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.chaos)
