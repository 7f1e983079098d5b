"""Issue 18, bounded Redis: 100,000 distinct patients and services and every possible currency,
written by the real Redis writers into the test stack's Redis under a small maxmemory.

Redis' memory stays under its bound (keys with a TTL are evicted), no write fails, the keys that
must never go (fencing tokens, the orders writer's totals) survive, and the orders totals in
Redis and the windows in MariaDB stay exact, while every currency has orders in every window.
"""

from __future__ import annotations

import itertools
import json
import random
import string
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from pyspark.sql import SparkSession

from spark_jobs.sinks.alerts import AlertPublisher, encode_alert
from spark_jobs.sinks.orders import revenue_writer
from spark_jobs.sinks.vitals import DEFAULT_MAX_PATIENTS, VitalsRedis
from spark_jobs.transforms.alerts import Alert
from spark_jobs.transforms.vitals import SUMMARY_COLUMNS, VITAL_SIGNS
from streamops.config import Settings
from streamops.contract.orders_redis import (
    DEFAULT_MAX_WINDOWS,
    DEFAULT_WINDOW_TTL_SECONDS,
    OrdersRedisKeys,
    Window,
    write_windows,
)
from streamops.stack.redis import EVICTION_POLICY
from streamops.supervision.redis_fence import fence_key, raise_mirror
from tests.integration.support import query

PATIENTS = 100_000
SERVICES = 100_000
# Currencies are three letters after cleansing: all of them.
CURRENCIES = ["".join(c) for c in itertools.product(string.ascii_uppercase, repeat=3)]
CHUNK = 5_000
CURRENCIES_PER_BATCH = 3_000
# Windows of every currency: ~500 bytes each with their hash, index and record, so the orders
# keys alone (~35 MB) take more than the headroom.
ORDERS_WINDOWS = 4
# What the test adds to the memory Redis already uses: far less than the keys it writes.
HEADROOM_BYTES = 32 * 2**20
LIMITS = {"ttl_seconds": DEFAULT_WINDOW_TTL_SECONDS, "max_windows": DEFAULT_MAX_WINDOWS}
WINDOW_SCHEMA = (
    "window_start TIMESTAMP, window_end TIMESTAMP, currency STRING, order_count BIGINT, "
    "item_count BIGINT, revenue DECIMAL(18,2), batch INT"
)


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def client(settings: Settings) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield connection
    connection.close()


@pytest.fixture
def bounded(client: redis.Redis) -> Iterator[int]:
    """A small maxmemory on the test stack's Redis for this test; the configured one after."""
    configured = client.config_get("maxmemory")["maxmemory"]
    bound = int(client.info("memory")["used_memory"]) + HEADROOM_BYTES
    client.config_set("maxmemory", bound)
    try:
        yield bound
    finally:
        client.config_set("maxmemory", configured)


@pytest.fixture
def prefix(client: redis.Redis, uid: str) -> Iterator[str]:
    prefix = f"streamops:test:{uid}"
    yield prefix
    batch: list[str] = []
    for key in client.scan_iter(f"{prefix}:*", count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


def test_the_stack_bounds_redis_and_evicts_only_keys_with_a_ttl(
    client: redis.Redis, settings: Settings
) -> None:
    assert int(client.config_get("maxmemory")["maxmemory"]) == settings.redis_maxmemory_mb * 2**20
    assert client.config_get("maxmemory-policy")["maxmemory-policy"] == EVICTION_POLICY


def test_distinct_patients_services_and_currencies_stay_within_maxmemory(
    spark: SparkSession,
    settings: Settings,
    client: redis.Redis,
    bounded: int,
    prefix: str,
    uid: str,
) -> None:
    evicted_before = int(client.info("stats")["evicted_keys"])
    peak = 0

    def sample() -> None:
        nonlocal peak
        peak = max(peak, int(client.info("memory")["used_memory"]))

    # Fencing tokens: no TTL, never evicted.
    leases = {f"test-bounds-{uid}-{n}": 1000 + n for n in range(3)}
    for lease, token in leases.items():
        raise_mirror(client, lease, token)

    # Orders first: every currency active in every window, more than the headroom by itself.
    window_start = datetime(2041, 1, 1, tzinfo=UTC) + timedelta(
        seconds=5 * random.randrange(1_000_000)
    )
    rows = [
        (
            window_start,
            window_start + timedelta(seconds=5),
            currency,
            1 + n % 7,
            2 + n % 11,
            Decimal(n % 10_000) + Decimal("0.25"),
            n // CURRENCIES_PER_BATCH,
        )
        for n, currency in enumerate(CURRENCIES)
    ]
    started = time.monotonic()
    revenue_writer(settings)(spark.createDataFrame(rows, WINDOW_SCHEMA).drop("batch"), 0)
    timings = {"mariadb windows": time.monotonic() - started}
    # What revenue_redis_writer does with a batch once collected, without Spark's overhead:
    # the first window as MariaDB has it, then ORDERS_WINDOWS - 1 more of every currency.
    keys = OrdersRedisKeys(f"{prefix}:orders")
    channel = f"{prefix}:orders:updates"
    batches: list[list[Window]] = []
    expected: dict[str, tuple[int, int, Decimal]] = {}
    for step in range(ORDERS_WINDOWS):
        start = window_start + timedelta(seconds=5 * step)
        for first in range(0, len(CURRENCIES), CURRENCIES_PER_BATCH):
            batch = []
            for n in range(first, min(first + CURRENCIES_PER_BATCH, len(CURRENCIES))):
                _, _, currency, order_count, item_count, revenue, _ = rows[n]
                window = Window(
                    currency,
                    start,
                    start + timedelta(seconds=5),
                    order_count + step,
                    item_count + step,
                    revenue + step,
                )
                batch.append(window)
                counted = expected.get(currency, (0, 0, Decimal(0)))
                expected[currency] = (
                    counted[0] + window.order_count,
                    counted[1] + window.item_count,
                    counted[2] + window.revenue,
                )
            batches.append(batch)
    started = time.monotonic()
    for batch_id, batch_windows in enumerate(batches):
        write_windows(client, keys, batch_windows, batch_id, channel, **LIMITS)
        sample()
    # A replayed batch moves nothing, whether its records are still there or were evicted.
    write_windows(client, keys, batches[0], 0, channel, **LIMITS)
    timings["redis orders"] = time.monotonic() - started
    evicted_by_orders = int(client.info("stats")["evicted_keys"]) - evicted_before

    started = time.monotonic()
    vitals = VitalsRedis(settings, key_prefix=f"{prefix}:vitals")
    base = datetime.now(UTC).replace(tzinfo=None)
    for first in range(0, PATIENTS, CHUNK):
        readings, summaries, flags = [], [], []
        for n in range(first, first + CHUNK):
            patient = f"patient-{uid}-{n:06d}"
            moment = base + timedelta(milliseconds=n)
            values = {vital: 60.0 + n % 40 for vital in VITAL_SIGNS}
            readings.append(
                SimpleNamespace(patient_id=patient, device_id=f"d-{n}", event_time=moment, **values)
            )
            summaries.append(
                SimpleNamespace(
                    patient_id=patient,
                    window_start=moment,
                    window_end=moment + timedelta(minutes=1),
                    reading_count=3,
                    **{name: 70.0 for name in SUMMARY_COLUMNS[4:]},
                )
            )
            flags.append(_flag(patient, moment))
        vitals.write_latest_readings(readings, batch_id=first)
        vitals.write_summaries(summaries, batch_id=first)
        vitals.write_alert_flags(flags)
        sample()

    timings["redis vitals"] = time.monotonic() - started
    started = time.monotonic()
    publisher = AlertPublisher(
        settings,
        stream=f"{prefix}:alerts:stream",
        channel=f"{prefix}:alerts:live",
        key_prefix=f"{prefix}:alerts",
    )
    for first in range(0, SERVICES, CHUNK):
        alerts = [_alert(f"svc-{uid}-{n:06d}", base) for n in range(first, first + CHUNK)]
        # The Redis half of publish(): Kafka is not what is bounded here.
        publisher._to_redis([(a.alert_id, encode_alert(a)) for a in alerts])
        sample()
    publisher.close()
    timings["redis alerts"] = time.monotonic() - started

    time.sleep(0.5)  # eviction that a command left over finishes in the background
    memory = client.info("memory")
    used = int(memory["used_memory"])
    evicted = int(client.info("stats")["evicted_keys"]) - evicted_before
    print(
        f"maxmemory {bounded / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB, "
        f"now {used / 2**20:.1f} MiB, evicted {evicted} keys; seconds: "
        + ", ".join(f"{name} {seconds:.1f}" for name, seconds in timings.items())
    )
    assert used <= bounded
    # A command may go past the bound before the next one evicts; never by much.
    assert peak <= bounded * 1.05
    assert evicted > 0, "the flood should have needed eviction, or the bound tested nothing"

    for lease, token in leases.items():
        assert client.get(fence_key(lease)) == str(token), lease
    assert client.zcard(f"{prefix}:vitals:patients") == DEFAULT_MAX_PATIENTS
    stream_length = client.xlen(f"{prefix}:alerts:stream")
    assert 10_000 <= stream_length < 11_000

    # The orders totals, the one orders key without a TTL, are exact, and small.
    totals = client.hgetall(f"{prefix}:orders:totals")
    assert totals.pop("batch_id") == "0"  # the replay came last
    last_window = (window_start + timedelta(seconds=5 * (ORDERS_WINDOWS - 1))).timestamp()
    for currency, (order_count, item_count, revenue) in expected.items():
        assert totals.pop(f"{currency}:order_count") == str(order_count), currency
        assert totals.pop(f"{currency}:item_count") == str(item_count), currency
        assert totals.pop(f"{currency}:revenue") == str(revenue), currency
        assert totals.pop(f"{currency}:newest") == repr(last_window), currency
        assert 0 <= int(totals.pop(f"{currency}:records")) <= ORDERS_WINDOWS, currency
        floor = totals.pop(f"{currency}:floor", None)
        assert floor is None or float(floor) <= last_window, currency
    assert totals == {}
    assert (client.memory_usage(f"{prefix}:orders:totals") or 0) < 16 * 2**20
    assert evicted_by_orders > 0, "the orders windows alone should have needed eviction"
    ttls = client.pipeline(transaction=False)
    for currency in CURRENCIES:
        ttls.ttl(keys.windows(currency))
        ttls.ttl(keys.contributions(currency))
    # -2: evicted; otherwise a TTL, never -1 (no TTL).
    assert -1 not in set(ttls.execute())

    # MariaDB, the system of record, has every window exactly.
    naive_start = window_start.replace(tzinfo=None)
    try:
        stored = query(
            settings,
            "SELECT currency, order_count, item_count, revenue FROM order_revenue_5s "
            "WHERE window_start = ?",
            (naive_start,),
        )
        assert sorted(stored) == sorted(
            (currency, order_count, item_count, revenue)
            for _, _, currency, order_count, item_count, revenue, _ in rows
        )
    finally:
        query(settings, "DELETE FROM order_revenue_5s WHERE window_start = ?", (naive_start,))
        client.delete(*(fence_key(lease) for lease in leases))


def _flag(patient: str, moment: datetime) -> dict[str, Any]:
    return {
        "patient_id": patient,
        "vital": "heart_rate",
        "window_start": moment,
        "window_end": moment + timedelta(minutes=1),
        "reason": "out_of_range",
        "observed_value": 140.0,
        "threshold_low": 40.0,
        "threshold_high": 130.0,
        "out_of_range_count": 2,
        "anomaly_count": 0,
        "max_abs_z": None,
        "model_version": None,
        "last_seen": moment,
    }


def _alert(service: str, at: datetime) -> Alert:
    return Alert(
        alert_id=uuid.uuid5(uuid.NAMESPACE_URL, service).hex,
        rule_id="error-burst",
        level="ERROR",
        service=service,
        window_start=at,
        window_end=at + timedelta(minutes=1),
        event_count=25,
        threshold_count=10,
        first_seen=at,
        last_seen=at + timedelta(seconds=30),
        sample_message=json.dumps({"service": service, "message": "connection refused"}),
    )
