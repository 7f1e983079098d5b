"""The dashboard as a component of the local stack: its setting, command and place in `up`."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from streamops.config import Settings
from streamops.stack import Stack
from streamops.stack.dashboard import Dashboard


def test_dashboard_port_must_differ_from_every_other_port(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="dashboard_port and airflow_port are both 8080"):
        Settings(state_dir=tmp_path, airflow_port=8080, dashboard_port=8080)


def test_component_serves_the_configured_address(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, dashboard_port=28090)
    dashboard = Dashboard(settings)
    assert dashboard.ports() == {"dashboard_port": 28090}
    assert dashboard.command()[-4:] == ["--host", "127.0.0.1", "--port", "28090"]
    assert dashboard.command()[1:3] == ["-m", "streamops.dashboard"]
    assert settings.dashboard_url == "http://127.0.0.1:28090"
    # The job-style settings reach the server, so it reads the same Redis as the stack.
    assert dashboard.environment()["STREAMOPS_REDIS_PORT"] == str(settings.redis_port)


def test_up_starts_it_after_redis_and_down_stops_it_before(tmp_path: Path) -> None:
    stack = Stack(Settings(state_dir=tmp_path))
    names = [component.name for component in stack.services]
    assert names.index("dashboard") > names.index("redis")
    assert stack.component("dashboard").log_path == tmp_path / "logs" / "dashboard.log"
