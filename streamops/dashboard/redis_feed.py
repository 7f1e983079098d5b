"""Redis → browsers: the snapshot a page starts from, and one subscription fanned out to every page.

One pub/sub connection per dashboard process listens to the pipelines' channels; each message is
turned into the page's event (reading the one hash it names when the message alone is not
enough, e.g. a query's Kafka offsets) and put on every connected page's queue. MariaDB is never
read: Redis holds the live state by design (docs/redis-keys.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from streamops.clients import async_redis_client
from streamops.config import Settings
from streamops.contract import redis_keys as keys
from streamops.dashboard import state
from streamops.supervision.job_health import StallBounds

log = logging.getLogger(__name__)

CHANNELS = (
    keys.ORDERS_UPDATES_CHANNEL,
    keys.ALERTS_CHANNEL,
    keys.QUERY_EVENTS_CHANNEL,
)
# A page that cannot keep up (a stalled tab) is dropped; its EventSource reconnects and starts
# again from a fresh snapshot, which is cheaper than buffering without bound.
CLIENT_QUEUE_SIZE = 1000
RECONNECT_SECONDS = 1.0
IDLE_PING_SECONDS = 5.0

Event = tuple[str, dict[str, Any]]
Ranges = dict[str, tuple[float | None, float | None]]
# Pipeline → the stall bounds of its spec.
Bounds = dict[str, StallBounds]
# The vitals job publishes no channel: its keys are read this often and changed tiles pushed.
VITALS_POLL_SECONDS = 0.5


async def snapshot(client: aioredis.Redis, ranges: Ranges, bounds: Bounds) -> dict[str, Any]:
    """Everything the page shows, read from Redis (a few dozen keys)."""
    return {
        "orders": await _orders_snapshot(client),
        "alerts": await _alerts_snapshot(client),
        "health": await _health_snapshot(client, bounds),
        "vitals": list((await vitals_tiles(client, ranges)).values()),
        "server_time": round(time.time(), 3),
    }


def default_vital_ranges() -> Ranges:
    """The vitals pipeline's default clinical ranges (one definition for job and page)."""
    from streamops.contract.vitals import DEFAULT_THRESHOLDS

    return dict(DEFAULT_THRESHOLDS)


async def _orders_snapshot(client: aioredis.Redis) -> dict[str, Any]:
    totals = await _hash(client, keys.orders_totals_key())
    currencies = set(state.currencies_of_totals(totals))
    async for key in client.scan_iter(match=keys.orders_windows_key("*")):
        currencies.add(key.rsplit(":", 1)[1])
    windows: list[dict[str, Any]] = []
    for currency in sorted(currencies):
        key = keys.orders_windows_key(currency)
        members = await client.zrevrange(key, 0, state.CHART_WINDOWS - 1)
        if not members:
            continue
        reads = client.pipeline(transaction=False)
        for member in members:
            reads.hgetall(keys.orders_window_key(currency, str(member)))
        for fields in await reads.execute():
            window = state.revenue_window(cast(dict[str, str], fields))
            if window is not None:
                windows.append(window)
    return {
        "batch_id": totals.get("batch_id"),
        "windows": windows,
        "totals": state.orders_totals(totals),
    }


async def _alerts_snapshot(client: aioredis.Redis) -> dict[str, Any]:
    # A changed alert is re-sent to the stream: read more than we show, keep one per alert.
    entries = cast(
        list[tuple[str, dict[str, str]]],
        await client.xrevrange(keys.ALERTS_STREAM, count=state.LATEST_ALERTS * 5),
    )
    platform = []
    for text in await client.lrange(keys.PLATFORM_ALERTS_KEY, 0, state.LATEST_ALERTS - 1):
        with contextlib.suppress(ValueError):
            platform.append(state.alert_entry(str(text)))
    return {"alerts": state.latest_alerts(entries), "platform": platform}


def pipeline_bounds() -> Bounds:
    """Each pipeline's stall bounds from its spec, so the page judges a query as its supervisor
    does; no spec file (a dashboard away from the repo) leaves the specs' defaults."""
    from streamops.supervision.spec import PipelineSpecError, load_specs

    try:
        return {name: spec.stall_bounds for name, spec in load_specs().items()}
    except PipelineSpecError as exc:
        log.warning("pipeline specs not read (%s); the default stall bounds apply", exc)
        return {}


async def _health_snapshot(client: aioredis.Redis, bounds: Bounds) -> list[dict[str, Any]]:
    now = time.time()
    rows = []
    async for key in client.scan_iter(match=keys.QUERY_KEY_PATTERN):
        try:
            fields = await _hash(client, key)
        except ResponseError:  # not a query hash (WRONGTYPE)
            continue
        if fields:
            rows.append(state.pipeline_health(fields, now, bounds.get(fields.get("pipeline", ""))))
    return sorted(rows, key=lambda row: (row["pipeline"], row["query_name"]))


async def vitals_tiles(client: aioredis.Redis, ranges: Ranges) -> dict[str, dict[str, Any]]:
    """Tiles of the patients with the newest readings, by patient id, in one round trip."""
    patients = [
        str(p) for p in await client.zrevrange(keys.VITALS_PATIENTS_KEY, 0, state.MAX_PATIENTS - 1)
    ]
    if not patients:
        return {}
    reads = client.pipeline(transaction=False)
    for patient in patients:
        reads.hgetall(keys.vitals_patient_key(patient, "latest"))
        reads.hgetall(keys.vitals_patient_key(patient, "flags"))
    replies = await reads.execute()
    tiles = {}
    for patient, latest, flags in sorted(zip(patients, replies[::2], replies[1::2], strict=True)):
        if latest:  # expired or discharged since the list was read
            tiles[patient] = state.vitals_tile(patient, latest, flags, ranges)
    return tiles


class RedisFeed:
    """One subscription to the pipelines' channels, broadcast to every connected page."""

    def __init__(self, settings: Settings) -> None:
        self.client: aioredis.Redis = async_redis_client(settings)
        self.subscribed = asyncio.Event()
        self.ranges = default_vital_ranges()
        self.bounds = pipeline_bounds()
        self._queues: set[asyncio.Queue[Event | None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._tiles: dict[str, dict[str, Any]] = {}

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name="redis-feed"),
            asyncio.create_task(self._poll_vitals(), name="vitals-poll"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.end_streams()
        await self.client.aclose()

    def end_streams(self) -> None:
        """Tell every page's stream to end (at shutdown, so it does not wait for browsers)."""
        for queue in list(self._queues):
            with contextlib.suppress(asyncio.QueueEmpty):
                while queue.full():
                    queue.get_nowait()
            queue.put_nowait(None)

    @property
    def clients(self) -> int:
        return len(self._queues)

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[asyncio.Queue[Event | None]]:
        """A queue of this page's events, registered for as long as the context lasts."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=CLIENT_QUEUE_SIZE)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)

    def broadcast(self, event: Event) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                log.warning("a dashboard client fell %s events behind; dropped", queue.qsize())
                self._queues.discard(queue)
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(None)

    async def _run(self) -> None:
        while True:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                log.warning("redis subscription lost (%s); retrying", error)
            self.subscribed.clear()
            self.broadcast(("status", {"redis": "reconnecting"}))
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _poll_vitals(self) -> None:
        """Push each tile that changed since the last look, and each patient that left."""
        while True:
            await asyncio.sleep(VITALS_POLL_SECONDS)
            if not self._queues:
                continue  # nobody watching; a new page reads its own snapshot
            try:
                tiles = await vitals_tiles(self.client, self.ranges)
            except (RedisError, OSError) as error:
                log.warning("could not read the vitals keys: %s", error)
                continue
            for patient, tile in tiles.items():
                if self._tiles.get(patient) != tile:
                    self.broadcast(("vitals", tile))
            for patient in self._tiles.keys() - tiles.keys():
                self.broadcast(("vitals_removed", {"patient_id": patient}))
            self._tiles = tiles

    async def _listen_once(self) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*CHANNELS)
            self.subscribed.set()
            self.broadcast(("status", {"redis": "connected"}))
            last_ping = time.monotonic()
            while True:
                # None also stands for an ignored reply (a subscribe confirmation, a PONG), so
                # pings are paced by the clock, not by None: a PING per None would spin.
                message = await pubsub.get_message(timeout=IDLE_PING_SECONDS)
                if time.monotonic() - last_ping >= IDLE_PING_SECONDS:
                    # A dead Redis is noticed within two intervals, not at the next message.
                    await pubsub.ping()
                    last_ping = time.monotonic()
                if message is None or message.get("type") != "message":
                    continue
                event = await self.translate(str(message["channel"]), str(message["data"]))
                if event is not None:
                    self.broadcast(event)
        finally:
            await pubsub.aclose()

    async def translate(self, channel: str, data: str) -> Event | None:
        """A channel message as the page's event, or None when it is not one we understand."""
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("ignored a message on %s that is not JSON", channel)
            return None
        if not isinstance(message, dict):
            return None
        if channel == keys.ORDERS_UPDATES_CHANNEL:
            return "orders", state.orders_update(message)
        if channel == keys.ALERTS_CHANNEL:
            return "alert", state.alert_entry(message)
        if channel == keys.QUERY_EVENTS_CHANNEL:
            pipeline, query_name = message.get("pipeline"), message.get("query_name")
            if not pipeline or not query_name:
                return None
            # Offsets stay in the hash (the message leaves them out): read it for the lag.
            fields = await _hash(self.client, keys.query_key(pipeline, query_name))
            return "health", state.pipeline_health(
                fields or _as_fields(message), time.time(), self.bounds.get(pipeline)
            )
        return None


async def _hash(client: aioredis.Redis, key: str) -> dict[str, str]:
    # The client decodes responses, so every field and value is text.
    return cast(dict[str, str], await client.hgetall(key))


def _as_fields(message: dict[str, Any]) -> dict[str, str]:
    return {k: "" if v is None else str(v) for k, v in message.items()}
