"""The dashboard's event stream against real Redis (and Kafka for alerts): what the pipelines'
sinks write arrives at a connected page, with the right payload, within a second."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis
from pyspark.sql import Row

from spark_jobs.sinks.alerts import AlertPublisher, encode_alert
from spark_jobs.sinks.vitals import VitalsRedis
from spark_jobs.transforms.alerts import Alert
from spark_jobs.transforms.vitals import VITAL_SIGNS
from streamops.config import Settings
from streamops.contract.orders_redis import (
    DEFAULT_MAX_WINDOWS,
    DEFAULT_WINDOW_TTL_SECONDS,
    OrdersRedisKeys,
    Window,
    write_windows,
)
from streamops.contract.redis_keys import ORDERS_UPDATES_CHANNEL
from streamops.dashboard.redis_feed import VITALS_POLL_SECONDS
from streamops.disk import state_dir_status

# ISO 4217's code for testing: no pipeline writes it, so the test's windows and totals are its own.
TEST_CURRENCY = "XTS"
READ_TIMEOUT_SECONDS = 30.0
# The bar: visible within a second of the batch commit (here: of the sink's EXEC).
PUSH_LATENCY_SECONDS = 1.0


class EventStream:
    """A bounded reader of one ``/api/events`` response: every wait has a deadline."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.iter_lines()

    def next_event(self, deadline: float) -> tuple[str, dict[str, Any], float]:
        name, data = "message", None
        while time.monotonic() < deadline:
            line = next(self._lines)
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
            elif line == "" and data is not None:
                return name, data, time.monotonic()
        raise AssertionError("no complete event before the deadline")

    def wait_for(
        self, name: str, matches: Any, timeout: float = READ_TIMEOUT_SECONDS
    ) -> tuple[dict[str, Any], float]:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            event, data, at = self.next_event(deadline)
            if event == name and matches(data):
                return data, at
            seen.append(event)
        raise AssertionError(f"no matching {name!r} event within {timeout:.0f} s; saw {seen}")


@contextmanager
def event_stream(settings: Settings) -> Iterator[EventStream]:
    timeout = httpx.Timeout(10.0, read=READ_TIMEOUT_SECONDS)
    with (
        httpx.Client(base_url=settings.dashboard_url, timeout=timeout) as client,
        client.stream("GET", "/api/events") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = EventStream(response)
        # The snapshot comes after the page's queue is registered and the feed subscribed:
        # anything published from here on reaches this stream.
        stream.wait_for("snapshot", lambda data: True)
        yield stream


@pytest.fixture
def client(settings: Settings) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield connection
    connection.close()


@pytest.fixture
def test_currency(client: redis.Redis) -> Iterator[str]:
    keys = OrdersRedisKeys()

    def clean() -> None:
        for key in client.scan_iter(f"{keys.prefix}:*:{TEST_CURRENCY}*"):
            client.delete(key)
        # Every field of the currency, the writer's bookkeeping too (records, newest, floor): a
        # count of records left from another test would make the writer skip this one's windows.
        fields = [f for f in client.hkeys(keys.totals) if str(f).startswith(f"{TEST_CURRENCY}:")]
        if fields:
            client.hdel(keys.totals, *fields)

    clean()
    yield TEST_CURRENCY
    clean()


def _window(start: datetime, orders: int, items: int, revenue: str) -> Window:
    return Window(
        TEST_CURRENCY, start, start + timedelta(seconds=5), orders, items, Decimal(revenue)
    )


def test_orders_sink_batch_reaches_the_page(
    settings: Settings, client: redis.Redis, test_currency: str
) -> None:
    start = datetime(2026, 11, 24, 14, 3, 5)
    with event_stream(settings) as stream:
        published = time.monotonic()
        message = write_windows(
            redis.Redis.from_url(settings.redis_url),
            OrdersRedisKeys(),
            [_window(start, 3, 7, "1234.50"), _window(start + timedelta(seconds=5), 1, 1, "9.99")],
            batch_id=41,
            channel=ORDERS_UPDATES_CHANNEL,
            ttl_seconds=DEFAULT_WINDOW_TTL_SECONDS,
            max_windows=DEFAULT_MAX_WINDOWS,
        )
        data, arrived = stream.wait_for(
            "orders", lambda d: any(w["currency"] == test_currency for w in d["windows"])
        )
    assert arrived - published < PUSH_LATENCY_SECONDS
    assert data["batch_id"] == 41 == message["batch_id"]
    windows = {w["window_start"]: w for w in data["windows"]}
    assert windows["2026-11-24T14:03:05.000Z"] == {
        "currency": test_currency,
        "window_start": "2026-11-24T14:03:05.000Z",
        "window_end": "2026-11-24T14:03:10.000Z",
        "order_count": 3,
        "item_count": 7,
        "revenue": "1234.50",
    }
    assert windows["2026-11-24T14:03:10.000Z"]["revenue"] == "9.99"
    assert data["totals"][test_currency] == {
        "order_count": "4",
        "item_count": "8",
        "revenue": "1244.49",
    }

    # A new page starts from the same numbers, read from Redis.
    snapshot = httpx.get(f"{settings.dashboard_url}/api/snapshot", timeout=10).json()
    ours = [w for w in snapshot["orders"]["windows"] if w["currency"] == test_currency]
    assert sorted(w["revenue"] for w in ours) == ["1234.50", "9.99"]
    assert snapshot["orders"]["totals"][test_currency]["revenue"] == "1244.49"


def test_replayed_batch_pushes_the_same_totals(
    settings: Settings, client: redis.Redis, test_currency: str
) -> None:
    start = datetime(2026, 11, 24, 15, 0, 0)
    args = (OrdersRedisKeys(), [_window(start, 2, 2, "20.00")])
    writer = redis.Redis.from_url(settings.redis_url)
    with event_stream(settings) as stream:
        for _ in range(2):  # Spark re-runs an uncommitted batch: the page must not double it
            write_windows(writer, *args, 7, ORDERS_UPDATES_CHANNEL, 3600, DEFAULT_MAX_WINDOWS)
            data, _ = stream.wait_for(
                "orders", lambda d: test_currency in d["totals"], timeout=READ_TIMEOUT_SECONDS
            )
            assert data["totals"][test_currency]["revenue"] == "20.00"


def test_published_alert_reaches_the_page(settings: Settings, client: redis.Redis) -> None:
    start = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    alert = Alert(
        alert_id=f"dashboard-test-{uuid.uuid4().hex}",
        rule_id="dashboard_test",
        level="ERROR",
        service="checkout",
        window_start=start,
        window_end=start + timedelta(seconds=60),
        event_count=12,
        threshold_count=10,
        first_seen=start,
        last_seen=start + timedelta(seconds=3),
        sample_message='timeout, "upstream" said 504',
    )
    publisher = AlertPublisher(settings)
    try:
        with event_stream(settings) as stream:
            published = time.monotonic()
            publisher.publish([alert])
            data, arrived = stream.wait_for("alert", lambda d: d["alert_id"] == alert.alert_id)
    finally:
        publisher.close()
    # Kafka's flush comes first in publish(); the Redis part is what the page waits on.
    assert arrived - published < PUSH_LATENCY_SECONDS + 5
    assert data == json.loads(encode_alert(alert))

    snapshot = httpx.get(f"{settings.dashboard_url}/api/snapshot", timeout=10).json()
    assert snapshot["alerts"]["alerts"][0]["alert_id"] == alert.alert_id
    assert snapshot["alerts"]["alerts"][0]["sample_message"] == 'timeout, "upstream" said 504'


def test_query_progress_event_becomes_a_health_row_with_lag(
    settings: Settings, client: redis.Redis
) -> None:
    # What ProgressPublisher writes per progress event (docs/redis-keys.md): offsets in the hash
    # only, the rest in the message too.
    query_name = f"dashboard_test_{uuid.uuid4().hex[:8]}"
    key = f"streamops:query:dashboard_test:{query_name}"
    now = time.time()
    offsets = {"KafkaV2[Subscribe[orders]]": {"orders": {"0": 1500, "1": 900}}}
    read = {"KafkaV2[Subscribe[orders]]": {"orders": {"0": 1400, "1": 880}}}
    fields = {
        "pipeline": "dashboard_test",
        "query_name": query_name,
        "state": "running",
        "batch_id": "17",
        "heartbeat_at": f"{now:.3f}",
        "processed_rows_per_second": "812.5",
        "input_rows_per_second": "790.0",
        "batch_duration_ms": "640",
    }
    try:
        with event_stream(settings) as stream:
            with client.pipeline(transaction=True) as pipe:
                pipe.hset(
                    key,
                    mapping={
                        **fields,
                        "latest_offsets": json.dumps(offsets),
                        "end_offsets": json.dumps(read),
                    },
                )
                pipe.expire(key, 300)
                pipe.publish("streamops:query:events", json.dumps({"event": "progress", **fields}))
                pipe.execute()
            published = time.monotonic()
            data, arrived = stream.wait_for("health", lambda d: d["query_name"] == query_name)
        assert arrived - published < PUSH_LATENCY_SECONDS
        assert data["status"] == "ok"
        assert data["batch_id"] == 17
        assert data["processed_rows_per_second"] == 812.5
        assert data["lag"] == 120
    finally:
        client.delete(key)


def test_vitals_sink_writes_become_a_patient_tile(settings: Settings, client: redis.Redis) -> None:
    # The vitals job publishes no channel: the server watches its keys (docs/dashboard.md).
    patient = f"dashboard-test-{uuid.uuid4().hex[:8]}"
    sink = VitalsRedis(settings)
    now = datetime.now(UTC).replace(tzinfo=None)
    reading = {vital: None for vital in VITAL_SIGNS}
    try:
        with event_stream(settings) as stream:
            written = time.monotonic()
            sink.write_latest_readings(
                [
                    Row(
                        patient_id=patient,
                        device_id="bed-7",
                        event_time=now,
                        **{**reading, "heart_rate": 151.0, "spo2": 97.0},
                    )
                ],
                batch_id=12,
            )
            data, arrived = stream.wait_for("vitals", lambda d: d["patient_id"] == patient)
            # The poll interval bounds the delay (plus the load of the machine).
            assert arrived - written < VITALS_POLL_SECONDS + PUSH_LATENCY_SECONDS + 1
            flags = {v["name"]: v["out_of_range"] for v in data["vitals"]}
            assert flags == {"heart_rate": True, "spo2": False}  # default range 40–130
            assert (data["device_id"], data["batch_id"]) == ("bed-7", 12)

            # The pipeline flags the patient against their own range: the tile follows it.
            sink.write_alert_flags(
                [
                    {
                        "patient_id": patient,
                        "vital": "spo2",
                        "reason": "out_of_range",
                        "window_start": now.replace(second=0, microsecond=0),
                        "window_end": now.replace(second=0, microsecond=0) + timedelta(minutes=1),
                        "observed_value": 97.0,
                        "threshold_low": 98.0,
                        "threshold_high": None,
                        "out_of_range_count": 1,
                        "anomaly_count": 0,
                        "max_abs_z": None,
                        "model_version": None,
                        "last_seen": now,
                    }
                ]
            )
            data, _ = stream.wait_for(
                "vitals",
                lambda d: d["patient_id"] == patient and d["out_of_range"] == 2,
            )
            spo2 = next(v for v in data["vitals"] if v["name"] == "spo2")
            assert (spo2["low"], spo2["flag"]["reason"]) == (98.0, "out_of_range")

        snapshot = httpx.get(f"{settings.dashboard_url}/api/snapshot", timeout=10).json()
        assert patient in {tile["patient_id"] for tile in snapshot["vitals"]}
    finally:
        for part in ("latest", "flags"):
            client.delete(f"streamops:vitals:patient:{patient}:{part}")
        client.zrem("streamops:vitals:patients", patient)


def test_health_endpoint_and_page(settings: Settings) -> None:
    health = httpx.get(f"{settings.dashboard_url}/healthz", timeout=10)
    assert health.status_code == 200
    assert health.json()["subscribed"] is True
    page = httpx.get(settings.dashboard_url, timeout=10)
    assert page.status_code == 200
    # Relative: the same page is served at / and under the Airflow plugin's prefix.
    assert '<script type="module" src="static/app.js">' in page.text
    for module in ("app.js", "chart.js"):
        script = httpx.get(f"{settings.dashboard_url}/static/{module}", timeout=10)
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]


def test_snapshot_and_page_show_the_state_folders_disk(settings: Settings) -> None:
    disk = httpx.get(f"{settings.dashboard_url}/api/snapshot", timeout=10).json()["disk"]
    # The dashboard measures the same folder as `streamops status`, from its own settings.
    expected = state_dir_status(settings.state_dir)
    assert disk["path"] == str(settings.state_dir)
    assert (disk["level"], disk["total_bytes"]) == (expected.level, expected.total_bytes)
    assert 0.0 <= disk["used_percent"] <= 100.0
    assert disk["message"].startswith(f"{disk['used_percent']:.1f} % used")
    page = httpx.get(settings.dashboard_url, timeout=10).text
    assert '<span id="disk" class="badge"' in page
    script = httpx.get(f"{settings.dashboard_url}/static/app.js", timeout=10).text
    assert "renderDisk(data.disk)" in script
