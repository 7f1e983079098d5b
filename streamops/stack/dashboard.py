"""The live dashboard (streamops/dashboard): a small web server fed by Redis pub/sub."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

from streamops.stack.base import Component, Health


class Dashboard(Component):
    name = "dashboard"
    # Open event streams are closed by the server itself within a few seconds of SIGTERM.
    stop_timeout_seconds = 15.0

    def ports(self) -> dict[str, int]:
        return {"dashboard_port": self.settings.dashboard_port}

    @property
    def host(self) -> str:
        return self.settings.dashboard_host

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "streamops.dashboard",
            "--host",
            self.settings.dashboard_host,
            "--port",
            str(self.settings.dashboard_port),
        ]

    def environment(self) -> dict[str, str]:
        return {**super().environment(), **self.settings.as_env()}

    def check_health(self) -> Health:
        # The server's own probe: Redis answers and the subscription is live.
        url = f"{self.settings.dashboard_url}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            return Health(False, f"{url}: HTTP {error.code}")
        return Health(bool(body.get("healthy")), f"{self.settings.dashboard_url}")

    def version(self) -> str:
        from importlib import metadata

        return f"fastapi {metadata.version('fastapi')}"
