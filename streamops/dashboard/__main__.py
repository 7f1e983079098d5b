"""``python -m streamops.dashboard [--host H] [--port P]``: serve the dashboard with uvicorn.

This process has no login, so it listens on loopback only (the local stack). Elsewhere Airflow's
api-server serves the same app behind its login (docs/deploy.md, "Authentication").
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
from types import FrameType

import uvicorn

from streamops.config import load_settings
from streamops.dashboard.app import create_app
from streamops.dashboard.redis_feed import RedisFeed

# Open event streams would hold a graceful stop for ever: give them this long, then close.
SHUTDOWN_GRACE_SECONDS = 3


def main(argv: list[str] | None = None) -> None:
    settings = load_settings()
    parser = argparse.ArgumentParser(prog="python -m streamops.dashboard", description=__doc__)
    parser.add_argument("--host", default=settings.dashboard_host)
    parser.add_argument("--port", type=int, default=settings.dashboard_port)
    args = parser.parse_args(argv)
    if not is_loopback(args.host):
        parser.error(
            f"--host {args.host}: the dashboard shows patient vitals and has no login here; it "
            "listens on loopback only. Other machines reach it through Airflow's api-server at "
            "/streamops-dashboard/ (behind Airflow's login)."
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        # Server-sent events are plain HTTP/1.1 streaming; no websockets library needed.
        ws="none",
    )
    _Server(config, app.state.feed).run()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Server(uvicorn.Server):
    """Ends the open event streams as soon as a stop is asked for: uvicorn waits for open
    connections before it shuts the app down, and an event stream never ends by itself."""

    def __init__(self, config: uvicorn.Config, feed: RedisFeed) -> None:
        super().__init__(config)
        self.feed = feed

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Signal handlers run on the main thread, which is the event loop's thread.
        self.feed.end_streams()
        super().handle_exit(sig, frame)


if __name__ == "__main__":
    main()
