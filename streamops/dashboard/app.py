"""The dashboard's web app: the page, its snapshot, and a server-sent event stream fed by Redis.

GET /                 the page (plain ES modules from ./static, no build step)
GET /api/snapshot     everything the page shows, read from Redis, and the free space of the
                      state folder's disk (``disk``: level, used %, free bytes, message)
GET /api/events       text/event-stream: ``snapshot`` first, then ``orders``, ``alert``,
                      ``health``, ``vitals`` and ``status`` events as Redis publishes them, and
                      ``disk`` when the disk's figure or level changes
GET /healthz          200 when Redis answers and the subscription is live, else 503
GET /static/<file>    the page's scripts and style sheet

Every URL the page uses is relative, so the same app serves at ``/`` (``python -m
streamops.dashboard``, the local stack, loopback only) and under a prefix: the Airflow plugin
mounts it at ``/streamops-dashboard`` of the api-server with Airflow's login as a dependency of
every route (``dependencies``; plugins/streamops_airflow/ui/dashboard_app.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, params
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from redis.exceptions import RedisError

from streamops.config import Settings
from streamops.dashboard import state
from streamops.dashboard.redis_feed import RedisFeed, snapshot
from streamops.disk import state_dir_status

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The page's own files, served by a route (a mounted StaticFiles app would skip the routes'
# dependencies, i.e. the login when Airflow serves the dashboard).
STATIC_FILES = frozenset(path.name for path in STATIC_DIR.iterdir() if path.is_file())
# A comment line this often keeps proxies from closing an idle stream and lets the server notice
# a page that went away.
KEEPALIVE_SECONDS = 15.0
# How long a new page waits for the subscription before it gets its snapshot anyway.
SUBSCRIBE_WAIT_SECONDS = 5.0
# EventSource reconnects after this many milliseconds when the stream drops.
RETRY_MILLISECONDS = 1000
# The state folder's disk is measured this often; a page hears of a change within one interval.
DISK_POLL_SECONDS = 30.0


def create_app(settings: Settings, *, dependencies: Sequence[params.Depends] = ()) -> FastAPI:
    """The dashboard's app; ``dependencies`` run before every route (Airflow's ``get_user``)."""
    feed = RedisFeed(settings)

    async def disk() -> dict[str, Any]:
        # statvfs is quick on a local disk but may hang on a network mount: off the event loop.
        status = await asyncio.to_thread(state_dir_status, settings.state_dir)
        return status.as_dict()

    async def page_snapshot() -> dict[str, Any]:
        return {**await snapshot(feed.client, feed.ranges, feed.bounds), "disk": await disk()}

    async def watch_disk() -> None:
        last: dict[str, Any] | None = None
        while True:
            await asyncio.sleep(DISK_POLL_SECONDS)
            try:
                current = await disk()
            except OSError as error:
                log.warning("could not measure the state folder's disk: %s", error)
                continue
            if current != last:
                feed.broadcast(("disk", current))
                last = current

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await feed.start()
        watcher = asyncio.create_task(watch_disk(), name="disk-watch")
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await feed.stop()

    app = FastAPI(
        title="streamops dashboard",
        lifespan=lifespan,
        dependencies=list(dependencies),
        # No schema or docs routes: they would not get the dependencies.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.feed = feed

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        # The page is small and changes with the code: never let a browser keep an old copy.
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        if name not in STATIC_FILES:  # only the folder's own files: no path ever reaches disk
            raise HTTPException(404, "Not Found")
        return FileResponse(STATIC_DIR / name, headers={"Cache-Control": "no-cache"})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        try:
            pong = await feed.client.ping()
        except (RedisError, OSError) as error:
            return JSONResponse({"healthy": False, "redis": str(error)}, status_code=503)
        healthy = bool(pong) and feed.subscribed.is_set()
        return JSONResponse(
            {
                "healthy": healthy,
                "redis": "PONG",
                "subscribed": feed.subscribed.is_set(),
                "clients": feed.clients,
            },
            status_code=200 if healthy else 503,
        )

    @app.get("/api/snapshot")
    async def api_snapshot() -> dict[str, Any]:
        return await page_snapshot()

    @app.get("/api/events")
    async def api_events(request: Request) -> StreamingResponse:
        return StreamingResponse(
            _event_stream(feed, request, page_snapshot),
            media_type="text/event-stream",
            # No buffering by a reverse proxy (nginx honours X-Accel-Buffering), no caching.
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


async def _event_stream(
    feed: RedisFeed, request: Request, page_snapshot: Callable[[], Awaitable[dict[str, Any]]]
) -> AsyncIterator[bytes]:
    # Listen before reading the snapshot, so nothing published in between is lost (a window
    # seen twice is harmless: events carry absolute values).
    async with feed.listen() as queue:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(feed.subscribed.wait(), SUBSCRIBE_WAIT_SECONDS)
        yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
        yield state.sse_message(
            "status", {"redis": "connected" if feed.subscribed.is_set() else "reconnecting"}
        )
        yield state.sse_message("snapshot", await page_snapshot())
        sequence = 0
        while not await request.is_disconnected():
            try:
                event = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield f": keepalive {time.time():.0f}\n\n".encode()
                continue
            if event is None:  # the server is stopping, or this page fell behind
                return
            sequence += 1
            name, data = event
            yield state.sse_message(name, data, event_id=str(sequence))
