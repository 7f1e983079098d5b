"""The local Redis' configuration: bounded memory, and only keys with a TTL may be evicted.

Pure: nothing is started (tests/integration/test_redis_bounds.py fills a running Redis).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from streamops.config import Settings
from streamops.stack.redis import EVICTION_POLICY, Redis, server_config


def options(text: str) -> dict[str, str]:
    return dict(
        line.split(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )


def test_maxmemory_and_policy_come_from_the_settings(tmp_path: Path) -> None:
    rendered = options(server_config(Settings(state_dir=tmp_path), "127.0.0.1", tmp_path))
    assert rendered["maxmemory"] == "512mb"
    # volatile-*: the fencing tokens and the orders totals have no TTL and must never be evicted.
    assert rendered["maxmemory-policy"] == EVICTION_POLICY == "volatile-lru"
    assert rendered["appendonly"] == "yes"
    small = Settings(state_dir=tmp_path, redis_maxmemory_mb=64)
    assert options(server_config(small, "127.0.0.1", tmp_path))["maxmemory"] == "64mb"


def test_a_too_small_maxmemory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="redis_maxmemory_mb"):
        Settings(state_dir=tmp_path, redis_maxmemory_mb=8)


def test_prepare_writes_the_rendered_config(tmp_path: Path) -> None:
    server = Redis(Settings(state_dir=tmp_path, redis_port=26379))
    server.data_dir.mkdir(parents=True)
    server.prepare()
    written = options(server.config_path.read_text())
    assert (written["port"], written["dir"]) == ("26379", str(server.data_dir))
    assert written["maxmemory"] == "512mb"
