"""The orders pipeline's sinks and reconciliation against the real MariaDB, Redis and Spark.

Every test writes rows under ids of its own and deletes exactly those afterwards: the database
and Redis are shared by the whole test session.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import mariadb
import pytest
import redis
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.sinks.mariadb import (
    QUARANTINE_KEY,
    QUARANTINE_TABLE,
    quarantine_writer,
    upsert_rows,
)
from spark_jobs.sinks.orders import orders_writer, revenue_redis_writer, revenue_writer
from spark_jobs.transforms.cleansing import QUARANTINE_KEEP_BYTES, quarantine_rows, with_source
from streamops.config import Settings
from streamops.contract.orders import revenue_per_window_sql
from streamops.db import connect
from streamops.maintenance.reconcile import reconcile_revenue_windows
from tests.integration.support import query

ORDER_SCHEMA = (
    "order_id STRING, customer_id STRING, product_id STRING, quantity INT, "
    "unit_price DECIMAL(12,2), currency STRING, amount DECIMAL(14,2), event_time TIMESTAMP, "
    "source_partition INT, source_offset BIGINT, kafka_timestamp TIMESTAMP"
)
QUARANTINE_SCHEMA = (
    "source_topic STRING, source_partition INT, source_offset BIGINT, raw_payload BINARY, "
    "reason STRING, pipeline STRING"
)
# As the orders job hands rejected records over: with the Kafka key and timestamp.
QUARANTINE_FULL_SCHEMA = f"{QUARANTINE_SCHEMA}, record_key BINARY, source_timestamp TIMESTAMP"
WINDOW_SCHEMA = (
    "window_start TIMESTAMP, window_end TIMESTAMP, currency STRING, order_count BIGINT, "
    "item_count BIGINT, revenue DECIMAL(18,2)"
)


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def currency(settings: Settings) -> Iterator[str]:
    """A currency code no other test uses, so windows and totals of this test are its own."""
    code = "Q" + "".join(random.choices(string.ascii_uppercase, k=2))
    yield code
    query(settings, "DELETE FROM orders WHERE currency = ?", (code,))
    query(settings, "DELETE FROM order_revenue_5s WHERE currency = ?", (code,))
    # A reconciliation writes its windows to the live totals too: take this currency's out.
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        keys = [f"streamops:orders:windows:{code}", f"streamops:orders:contributions:{code}"]
        client.delete(*keys, *client.scan_iter(f"streamops:orders:window:{code}:*"))
        client.hdel(
            "streamops:orders:totals",
            *(f"{code}:{f}" for f in ("order_count", "item_count", "revenue")),
            *(f"{code}:{f}" for f in ("floor", "newest", "records")),
        )
    finally:
        client.close()


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis, uid: str) -> Iterator[str]:
    prefix = f"streamops:test:{uid}:orders"
    yield prefix
    keys = list(redis_client.scan_iter(f"{prefix}:*"))
    if keys:
        redis_client.delete(*keys)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def naive(text: str) -> datetime:
    return datetime.fromisoformat(text)


def order(
    order_id: str,
    *,
    quantity: int = 2,
    unit_price: str = "10.25",
    currency: str = "EUR",
    event_time: str = "2031-05-06 07:08:09.123",
    partition: int = 0,
    offset: int = 0,
    customer: str = "c-1",
) -> tuple[Any, ...]:
    price = Decimal(unit_price)
    return (
        order_id,
        customer,
        "p-1",
        quantity,
        price,
        currency,
        price * quantity,
        utc(event_time),
        partition,
        offset,
        utc(event_time) + timedelta(seconds=1),
    )


def frame(spark: SparkSession, rows: list[tuple[Any, ...]], schema: str) -> DataFrame:
    # Two partitions, so writes really come from more than one executor task.
    return spark.createDataFrame(rows, schema).repartition(2)


def stored_orders(settings: Settings, uid: str) -> list[tuple[Any, ...]]:
    return query(
        settings,
        "SELECT order_id, customer_id, product_id, quantity, unit_price, currency, amount, "
        "event_time, source_partition, source_offset, ingested_at FROM orders "
        "WHERE order_id LIKE ? ORDER BY order_id",
        (f"{uid}-%",),
    )


# --- MariaDB ----------------------------------------------------------------------------------


@pytest.fixture
def order_ids(settings: Settings, uid: str) -> Iterator[str]:
    yield uid
    query(settings, "DELETE FROM orders WHERE order_id LIKE ?", (f"{uid}-%",))


def test_orders_writer_keeps_the_first_copy_and_a_replay_changes_nothing(
    spark: SparkSession, settings: Settings, order_ids: str
) -> None:
    uid = order_ids
    write = orders_writer(settings)
    batch = frame(
        spark,
        [
            order(f"{uid}-a", offset=10, event_time="2031-05-06 07:08:09.999"),
            order(f"{uid}-b", quantity=1, unit_price="0.00", offset=11),
            order(f"{uid}-c", quantity=3, unit_price="1.10", currency="USD", offset=12),
        ],
        ORDER_SCHEMA,
    )

    write(batch, 0)
    first = stored_orders(settings, uid)
    time.sleep(0.01)  # a rewrite would carry a later ingested_at
    write(batch, 0)  # the replay of the same batch after a crash

    assert stored_orders(settings, uid) == first
    assert [row[0] for row in first] == [f"{uid}-a", f"{uid}-b", f"{uid}-c"]
    a = first[0]
    assert a[3:8] == (
        2,
        Decimal("10.25"),
        "EUR",
        Decimal("20.50"),
        naive("2031-05-06 07:08:09.999"),
    )
    assert a[8:10] == (0, 10)
    now = datetime.now(UTC).replace(tzinfo=None)
    assert all(abs((now - row[10]).total_seconds()) < 60 for row in first), "ingested_at is UTC"
    assert len({row[10] for row in first}) == 1, "one ingested_at per batch"

    # A later batch repeating order a (a duplicate on the topic) does not touch the stored one.
    write(frame(spark, [order(f"{uid}-a", quantity=9, customer="c-9", offset=99)], ORDER_SCHEMA), 1)
    assert stored_orders(settings, uid) == first


def test_orders_writer_stores_a_duplicate_within_one_batch_once(
    spark: SparkSession, settings: Settings, order_ids: str
) -> None:
    uid = order_ids
    copies = [order(f"{uid}-dup", offset=offset) for offset in (5, 6, 7)]
    orders_writer(settings)(frame(spark, [*copies, order(f"{uid}-other")], ORDER_SCHEMA), 3)

    rows = stored_orders(settings, uid)
    assert [row[0] for row in rows] == [f"{uid}-dup", f"{uid}-other"]
    assert rows[0][9] in (5, 6, 7)


def test_quarantine_writer_is_idempotent_by_kafka_position(
    spark: SparkSession, settings: Settings, uid: str
) -> None:
    topic = f"test-quarantine-{uid}"
    payloads = [b"\xff\xfe not utf-8", b'{"order_id": 1', b""]
    rows = [
        (topic, partition, offset, payload, f"reason {offset}", "orders")
        for (partition, offset), payload in zip([(0, 1), (0, 2), (1, 1)], payloads, strict=True)
    ]
    write = quarantine_writer(settings)
    try:
        write(frame(spark, rows, QUARANTINE_SCHEMA), 0)
        first = query(
            settings,
            "SELECT source_partition, source_offset, raw_payload, reason, pipeline, quarantined_at "
            "FROM quarantine WHERE source_topic = ? ORDER BY source_partition, source_offset",
            (topic,),
        )
        write(frame(spark, rows, QUARANTINE_SCHEMA), 0)
        again = [(topic, 0, 1, b"other", "another reason", "orders")]
        write(frame(spark, again, QUARANTINE_SCHEMA), 1)
        after = query(
            settings,
            "SELECT source_partition, source_offset, raw_payload, reason, pipeline, quarantined_at "
            "FROM quarantine WHERE source_topic = ? ORDER BY source_partition, source_offset",
            (topic,),
        )
    finally:
        query(settings, "DELETE FROM quarantine WHERE source_topic = ?", (topic,))

    assert after == first
    assert [row[:5] for row in first] == [
        (0, 1, payloads[0], "reason 1", "orders"),
        (0, 2, payloads[1], "reason 2", "orders"),
        (1, 1, payloads[2], "reason 1", "orders"),
    ]


def stored_quarantine(settings: Settings, topic: str) -> list[tuple[Any, ...]]:
    return query(
        settings,
        "SELECT source_partition, source_offset, record_key, raw_payload, reason FROM quarantine "
        "WHERE source_topic = ? ORDER BY source_partition, source_offset",
        (topic,),
    )


def test_quarantine_keeps_a_megabyte_key_and_value_byte_for_byte(
    spark: SparkSession, settings: Settings, uid: str
) -> None:
    """A record as large as Kafka allows (its key too) is kept whole instead of failing the
    batch: record_key was a BLOB of at most 65,535 bytes before migration 0011."""
    topic = f"test-quarantine-large-{uid}"
    generator = random.Random(uid)
    key = generator.randbytes(1_000_000)  # not UTF-8, as a rejected key may well be
    value = generator.randbytes(1_000_000)
    sent = utc("2031-05-06 07:08:09.123")
    rows = [
        (topic, 3, 41, value, "invalid_json", "orders", key, sent),
        (topic, 3, 42, b"{}", "missing_field:order_id", "orders", b"k-42", sent),
    ]
    write = quarantine_writer(settings)
    try:
        write(frame(spark, rows, QUARANTINE_FULL_SCHEMA), 0)
        stored = stored_quarantine(settings, topic)
        write(frame(spark, rows, QUARANTINE_FULL_SCHEMA), 0)  # replayed
        replayed = stored_quarantine(settings, topic)
    finally:
        query(settings, "DELETE FROM quarantine WHERE source_topic = ?", (topic,))

    assert len(stored) == 2
    assert stored[0][:2] == (3, 41)
    assert stored[0][2] == key, "the key came back changed"
    assert stored[0][3] == value, "the payload came back changed"
    assert stored[1] == (3, 42, b"k-42", b"{}", "missing_field:order_id")
    assert replayed == stored


def test_a_record_past_max_allowed_packet_is_quarantined_cut_with_its_size_and_hash(
    spark: SparkSession, settings: Settings, uid: str
) -> None:
    """One record larger than the server takes in a packet (a compressed batch that inflates, or
    a topic with a raised cap): through the real transform and sink it is stored as its first
    QUARANTINE_KEEP_BYTES with its size and SHA-256 (migration 0014), not a batch that fails on
    every retry; a replay changes nothing."""
    topic = f"test-quarantine-huge-{uid}"
    ((max_allowed_packet,),) = query(settings, "SELECT @@max_allowed_packet")
    generator = random.Random(uid)
    value = generator.randbytes(max_allowed_packet + 4 * 1024 * 1024)
    key = generator.randbytes(2 * 1024 * 1024)
    sent = utc("2031-05-06 07:08:09.123")
    kafka = spark.createDataFrame(
        [(key, value, topic, 0, 7, sent, 1)],
        "key binary, value binary, topic string, partition int, offset long, "
        "timestamp timestamp, timestampType int",
    )
    rows = quarantine_rows(with_source(kafka).withColumn("reason", F.lit("invalid_json")), "orders")
    write = quarantine_writer(settings)
    try:
        write(rows, 0)
        write(rows, 0)  # replayed
        stored = query(
            settings,
            "SELECT raw_payload, raw_payload_bytes, raw_payload_sha256, record_key, "
            "record_key_bytes, record_key_sha256, reason FROM quarantine WHERE source_topic = ?",
            (topic,),
        )
    finally:
        query(settings, "DELETE FROM quarantine WHERE source_topic = ?", (topic,))

    assert len(stored) == 1
    payload, payload_bytes, payload_hash, stored_key, key_bytes, key_hash, reason = stored[0]
    assert payload == value[:QUARANTINE_KEEP_BYTES] and payload_bytes == len(value)
    assert payload_hash == hashlib.sha256(value).hexdigest()
    assert stored_key == key[:QUARANTINE_KEEP_BYTES] and key_bytes == len(key)
    assert key_hash == hashlib.sha256(key).hexdigest()
    assert reason == "invalid_json"


def test_quarantine_splits_a_batch_larger_than_max_allowed_packet(
    spark: SparkSession, settings: Settings, uid: str
) -> None:
    """Twenty ~1 MB records are more than the server takes in one packet: sent as one chunk the
    batch would fail on every retry; in byte-bounded chunks every record is stored whole."""
    topic = f"test-quarantine-burst-{uid}"
    ((max_allowed_packet,),) = query(settings, "SELECT @@max_allowed_packet")
    generator = random.Random(uid)
    rows = [
        (
            topic,
            offset % 2,
            offset,
            generator.randbytes(1_000_000),
            "invalid_json",
            "orders",
            generator.randbytes(1_000 if offset % 5 else 1_000_000),
            None,
        )
        for offset in range(20)
    ]
    total = sum(len(row[3]) + len(row[6]) for row in rows)
    assert total > max_allowed_packet  # guards the test's own premise
    columns = (*QUARANTINE_KEY, "raw_payload", "reason", "pipeline", "record_key")

    def as_db_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return (*row[:3], row[3], row[4], row[5], row[6])

    try:
        # The same rows as one chunk: the server refuses the packet (and drops the connection).
        with pytest.raises(mariadb.Error):
            upsert_rows(
                settings,
                QUARANTINE_TABLE,
                QUARANTINE_KEY,
                columns,
                [as_db_row(row) for row in rows],
                on_duplicate="ignore",
                chunk_bytes=total * 2,
            )
        assert stored_quarantine(settings, topic) == []

        quarantine_writer(settings)(frame(spark, rows, QUARANTINE_FULL_SCHEMA), 7)
        stored = stored_quarantine(settings, topic)
    finally:
        query(settings, "DELETE FROM quarantine WHERE source_topic = ?", (topic,))

    expected = sorted((row[1], row[2], row[6], row[3], row[4]) for row in rows)
    assert len(stored) == len(rows)
    # Compared row by row: a failing assert on 20 MB of bytes would print all of them.
    for got, want in zip(stored, expected, strict=True):
        assert got[:2] == want[:2]
        assert got[2] == want[2], f"record_key of offset {want[1]} changed"
        assert got[3] == want[3], f"raw_payload of offset {want[1]} changed"
        assert got[4] == want[4]


def test_revenue_writer_overwrites_windows_with_absolute_values(
    spark: SparkSession, settings: Settings, currency: str
) -> None:
    write = revenue_writer(settings)
    w0 = ("2031-05-06 07:08:05", "2031-05-06 07:08:10")
    w1 = ("2031-05-06 07:08:10", "2031-05-06 07:08:15")

    def windows(*rows: tuple[tuple[str, str], int, int, str]) -> DataFrame:
        return frame(
            spark,
            [
                (utc(w[0]), utc(w[1]), currency, count, items, Decimal(revenue))
                for w, count, items, revenue in rows
            ],
            WINDOW_SCHEMA,
        )

    def stored() -> list[tuple[Any, ...]]:
        return query(
            settings,
            "SELECT window_start, window_end, order_count, item_count, revenue, updated_at "
            "FROM order_revenue_5s WHERE currency = ? ORDER BY window_start",
            (currency,),
        )

    write(windows((w0, 2, 3, "30.00"), (w1, 1, 1, "5.00")), 0)
    # Update mode: window w0 grew; the batch carries its whole new aggregate, not the increment.
    write(windows((w0, 3, 5, "42.50")), 1)
    second = stored()
    time.sleep(0.01)
    write(windows((w0, 3, 5, "42.50")), 1)  # replayed

    assert stored() == second, "a replay must not even touch updated_at"
    assert [row[:5] for row in second] == [
        (naive(w0[0]), naive(w0[1]), 3, 5, Decimal("42.50")),
        (naive(w1[0]), naive(w1[1]), 1, 1, Decimal("5.00")),
    ]


@pytest.mark.parametrize("strategy", ["executemany", "staging"])
def test_upsert_rows_across_chunks(settings: Settings, uid: str, strategy: Any) -> None:
    table = f"test_upsert_{uid}"
    query(settings, f"CREATE TABLE {table} LIKE order_revenue_5s")
    columns = ("window_start", "currency", "window_end", "order_count", "item_count", "revenue")
    key = ("window_start", "currency")

    def row(second: int, count: int) -> tuple[Any, ...]:
        start = naive("2031-01-01 00:00:00") + timedelta(seconds=5 * second)
        return (start, "EUR", start + timedelta(seconds=5), count, count, Decimal(count))

    def contents() -> list[tuple[Any, ...]]:
        return query(settings, f"SELECT {', '.join(columns)} FROM {table} ORDER BY window_start")

    try:
        rows = [row(0, 1), row(1, 1), row(0, 2), row(2, 1), row(1, 3)]
        written = upsert_rows(
            settings, table, key, columns, iter(rows), chunk_size=2, strategy=strategy
        )
        assert written == 5
        # "update": the last copy of a key wins, also across chunks.
        assert contents() == [row(0, 2), row(1, 3), row(2, 1)]

        ignored = [row(0, 7), row(3, 4), row(3, 5)]
        upsert_rows(
            settings, table, key, columns, ignored, on_duplicate="ignore", strategy=strategy
        )
        # "ignore": a stored row stays, and so does the first new copy of a key.
        assert contents() == [row(0, 2), row(1, 3), row(2, 1), row(3, 4)]
        assert upsert_rows(settings, table, key, columns, [], strategy=strategy) == 0
    finally:
        query(settings, f"DROP TABLE IF EXISTS {table}")


# --- Redis ------------------------------------------------------------------------------------


def redis_state(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """Every key under prefix with its type, value and whether it has a TTL."""
    state: dict[str, Any] = {}
    for key in sorted(client.scan_iter(f"{prefix}:*")):
        kind = client.type(key)
        if kind == "hash":
            value: Any = client.hgetall(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        else:
            value = client.get(key)
        state[key] = (kind, value, client.ttl(key) > 0)
    return state


def next_message(pubsub: redis.client.PubSub, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is not None and message["type"] == "message":
            return dict(json.loads(message["data"]))
    raise AssertionError("no message on the channel")


def window_rows(
    *rows: tuple[str, str, int, int, str],
) -> list[tuple[Any, ...]]:
    """(currency, window start 'HH:MM:SS' on 2031-05-06, order_count, item_count, revenue)."""
    return [
        (
            utc(f"2031-05-06 {start}"),
            utc(f"2031-05-06 {start}") + timedelta(seconds=5),
            cur,
            count,
            items,
            Decimal(revenue),
        )
        for cur, start, count, items, revenue in rows
    ]


def test_redis_writer_keys_ttls_message_and_replay(
    spark: SparkSession,
    settings: Settings,
    redis_client: redis.Redis,
    redis_prefix: str,
    uid: str,
) -> None:
    channel = f"streamops:test:{uid}:updates"
    write = revenue_redis_writer(
        settings, channel=channel, ttl_seconds=600, key_prefix=redis_prefix
    )
    pubsub = redis_client.pubsub()
    pubsub.subscribe(channel)
    try:
        first = window_rows(
            ("EUR", "07:08:05", 2, 3, "30.00"),
            ("EUR", "07:08:10", 1, 1, "5.50"),
            ("USD", "07:08:05", 1, 4, "8.00"),
        )
        write(frame(spark, first, WINDOW_SCHEMA), 0)
        message = next_message(pubsub)

        eur_window = f"{redis_prefix}:window:EUR:2031-05-06T07:08:05.000Z"
        assert redis_client.hgetall(eur_window) == {
            "currency": "EUR",
            "window_start": "2031-05-06T07:08:05.000Z",
            "window_end": "2031-05-06T07:08:10.000Z",
            "order_count": "2",
            "item_count": "3",
            "revenue": "30.00",
            "batch_id": "0",
        }
        assert 0 < redis_client.ttl(eur_window) <= 600
        epoch = utc("2031-05-06 07:08:05").timestamp()
        assert redis_client.zrange(f"{redis_prefix}:windows:EUR", 0, -1, withscores=True) == [
            ("2031-05-06T07:08:05.000Z", epoch),
            ("2031-05-06T07:08:10.000Z", epoch + 5),
        ]
        totals = redis_client.hgetall(f"{redis_prefix}:totals")
        assert totals == {
            "EUR:order_count": "3",
            "EUR:item_count": "4",
            "EUR:revenue": "35.50",
            "USD:order_count": "1",
            "USD:item_count": "4",
            "USD:revenue": "8.00",
            "EUR:newest": repr(epoch + 5),
            "USD:newest": repr(epoch),
            "EUR:records": "2",
            "USD:records": "1",
            "batch_id": "0",
        }
        # Only the totals live on; an idle currency's index and records expire with its windows.
        assert redis_client.ttl(f"{redis_prefix}:totals") == -1
        for key in ("windows:EUR", "contributions:EUR", "windows:USD", "contributions:USD"):
            assert 0 < redis_client.ttl(f"{redis_prefix}:{key}") <= 600, key
        assert message["batch_id"] == 0 and message["window_count"] == 3
        assert message["totals"]["EUR"] == {
            "order_count": "3",
            "item_count": "4",
            "revenue": "35.50",
        }
        assert message["windows"][0]["window_start"] == "2031-05-06T07:08:10.000Z"

        before_replay = redis_state(redis_client, redis_prefix)
        write(frame(spark, first, WINDOW_SCHEMA), 0)  # replayed after a crash
        assert redis_state(redis_client, redis_prefix) == before_replay
        assert next_message(pubsub)["totals"] == message["totals"]

        # The EUR 07:08:05 window grew from 2 to 4 orders: totals move by the difference.
        write(frame(spark, window_rows(("EUR", "07:08:05", 4, 6, "51.00")), WINDOW_SCHEMA), 1)
        totals = redis_client.hgetall(f"{redis_prefix}:totals")
        assert (totals["EUR:order_count"], totals["EUR:item_count"], totals["EUR:revenue"]) == (
            "5",
            "7",
            "56.50",
        )
        assert totals["USD:revenue"] == "8.00"
        assert next_message(pubsub)["batch_id"] == 1
    finally:
        pubsub.close()


def test_redis_writer_keeps_the_latest_windows_and_totals_survive_trimming(
    spark: SparkSession,
    settings: Settings,
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    write = revenue_redis_writer(settings, max_windows=3, key_prefix=redis_prefix, channel="x")
    five = window_rows(*(("EUR", f"07:08:{5 * i:02d}", 1, 1, "1.00") for i in range(5)))
    write(frame(spark, five, WINDOW_SCHEMA), 0)

    kept = ["2031-05-06T07:08:10.000Z", "2031-05-06T07:08:15.000Z", "2031-05-06T07:08:20.000Z"]
    assert redis_client.zrange(f"{redis_prefix}:windows:EUR", 0, -1) == kept
    assert sorted(redis_client.hkeys(f"{redis_prefix}:contributions:EUR")) == kept
    assert not redis_client.exists(f"{redis_prefix}:window:EUR:2031-05-06T07:08:00.000Z")
    totals = redis_client.hgetall(f"{redis_prefix}:totals")
    assert totals["EUR:order_count"] == "5" and totals["EUR:revenue"] == "5.00"

    state = redis_state(redis_client, redis_prefix)
    write(frame(spark, five, WINDOW_SCHEMA), 0)  # a replay, trimmed windows included
    assert redis_state(redis_client, redis_prefix) == state

    # A newer window pushes out the oldest kept one; the totals keep its share.
    write(frame(spark, window_rows(("EUR", "07:08:25", 2, 2, "2.00")), WINDOW_SCHEMA), 1)
    assert redis_client.zrange(f"{redis_prefix}:windows:EUR", 0, -1) == [
        *kept[1:],
        "2031-05-06T07:08:25.000Z",
    ]
    totals = redis_client.hgetall(f"{redis_prefix}:totals")
    assert totals["EUR:order_count"] == "7" and totals["EUR:revenue"] == "7.00"
    # The floor is the newest window trimmed: 07:08:10, pushed out by 07:08:25.
    assert totals["EUR:floor"] == repr(utc("2031-05-06 07:08:10").timestamp())

    # Keys an earlier writer left (no TTL, no bookkeeping): a trimmed window is still skipped.
    redis_client.hdel(f"{redis_prefix}:totals", "EUR:floor", "EUR:newest", "EUR:records")
    redis_client.persist(f"{redis_prefix}:windows:EUR")
    redis_client.persist(f"{redis_prefix}:contributions:EUR")
    write(frame(spark, window_rows(("EUR", "07:08:05", 1, 1, "1.00")), WINDOW_SCHEMA), 2)
    totals = redis_client.hgetall(f"{redis_prefix}:totals")
    assert totals["EUR:order_count"] == "7" and totals["EUR:revenue"] == "7.00"
    assert totals["EUR:newest"] == repr(utc("2031-05-06 07:08:25").timestamp())
    assert totals["EUR:records"] == "3"
    assert redis_client.ttl(f"{redis_prefix}:contributions:EUR") > 0


def test_redis_writer_counts_nothing_twice_after_its_records_expire_or_are_evicted(
    spark: SparkSession,
    settings: Settings,
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    write = revenue_redis_writer(settings, ttl_seconds=600, key_prefix=redis_prefix, channel="x")
    first = window_rows(("EUR", "07:08:05", 2, 2, "4.00"), ("EUR", "07:08:10", 1, 1, "2.00"))
    write(frame(spark, first, WINDOW_SCHEMA), 0)
    # What an idle hour past the TTL (or an eviction) leaves: the totals alone.
    redis_client.delete(f"{redis_prefix}:contributions:EUR", f"{redis_prefix}:windows:EUR")

    write(frame(spark, first, WINDOW_SCHEMA), 0)  # a replay of what is counted already
    totals = redis_client.hgetall(f"{redis_prefix}:totals")
    assert (totals["EUR:order_count"], totals["EUR:revenue"]) == ("3", "6.00")
    assert totals["EUR:floor"] == repr(utc("2031-05-06 07:08:10").timestamp())
    assert not redis_client.exists(f"{redis_prefix}:contributions:EUR")

    # A newer window counts, and the index and records start over from it.
    write(frame(spark, window_rows(("EUR", "07:08:15", 4, 4, "8.00")), WINDOW_SCHEMA), 1)
    totals = redis_client.hgetall(f"{redis_prefix}:totals")
    assert (totals["EUR:order_count"], totals["EUR:revenue"]) == ("7", "14.00")
    assert redis_client.zrange(f"{redis_prefix}:windows:EUR", 0, -1) == ["2031-05-06T07:08:15.000Z"]
    assert 0 < redis_client.ttl(f"{redis_prefix}:contributions:EUR") <= 600

    # The sorted set alone evicted: rebuilt from the records, nothing counted again.
    write(frame(spark, window_rows(("EUR", "07:08:20", 1, 1, "1.00")), WINDOW_SCHEMA), 2)
    redis_client.delete(f"{redis_prefix}:windows:EUR")
    write(frame(spark, window_rows(("EUR", "07:08:20", 2, 2, "3.00")), WINDOW_SCHEMA), 3)
    totals = redis_client.hgetall(f"{redis_prefix}:totals")
    assert (totals["EUR:order_count"], totals["EUR:revenue"]) == ("9", "17.00")
    assert redis_client.zrange(f"{redis_prefix}:windows:EUR", 0, -1) == [
        "2031-05-06T07:08:15.000Z",
        "2031-05-06T07:08:20.000Z",
    ]

    # Evicted between a writer's read and its EXEC: the write made the hash anew with its own
    # record alone. The window whose record went is not counted again; the other stays exact.
    redis_client.delete(f"{redis_prefix}:contributions:EUR")
    redis_client.hset(
        f"{redis_prefix}:contributions:EUR", "2031-05-06T07:08:20.000Z", '[2, 2, "3.00"]'
    )
    write(frame(spark, window_rows(("EUR", "07:08:15", 4, 4, "8.00")), WINDOW_SCHEMA), 1)
    write(frame(spark, window_rows(("EUR", "07:08:20", 3, 3, "5.00")), WINDOW_SCHEMA), 4)
    totals = redis_client.hgetall(f"{redis_prefix}:totals")
    assert (totals["EUR:order_count"], totals["EUR:revenue"]) == ("10", "19.00")
    assert totals["EUR:records"] == "1"

    # The sorted set evicted while a write was on its way, which made it anew with its own
    # window alone: the next write lists every record again.
    write(frame(spark, window_rows(("EUR", "07:08:25", 1, 1, "1.00")), WINDOW_SCHEMA), 5)
    redis_client.delete(f"{redis_prefix}:windows:EUR")
    redis_client.zadd(
        f"{redis_prefix}:windows:EUR",
        {"2031-05-06T07:08:25.000Z": utc("2031-05-06 07:08:25").timestamp()},
    )
    write(frame(spark, window_rows(("EUR", "07:08:30", 1, 1, "1.00")), WINDOW_SCHEMA), 6)
    assert redis_client.zrange(f"{redis_prefix}:windows:EUR", 0, -1) == [
        "2031-05-06T07:08:20.000Z",
        "2031-05-06T07:08:25.000Z",
        "2031-05-06T07:08:30.000Z",
    ]
    totals = redis_client.hgetall(f"{redis_prefix}:totals")
    assert (totals["EUR:order_count"], totals["EUR:revenue"]) == ("12", "21.00")


# --- reconciliation -----------------------------------------------------------------------------


def test_reconcile_windows_agree_with_spark_at_the_boundaries(
    spark: SparkSession, settings: Settings
) -> None:
    moments = [
        "2031-05-06 07:08:04.999",
        "2031-05-06 07:08:05.000",
        "2031-05-06 07:08:09.999",
        "2031-12-31 23:59:59.999",
        "2040-02-29 12:00:02.500",  # past 2038, where UNIX_TIMESTAMP gives up
        "1969-12-31 23:59:58.000",
    ]
    # The SQL reconcile runs, over a temporary table only this connection sees.
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        cursor.execute(
            "CREATE TEMPORARY TABLE boundary_orders "
            "(event_time DATETIME(3), currency CHAR(3), quantity INT, amount DECIMAL(14,2))"
        )
        cursor.executemany(
            "INSERT INTO boundary_orders VALUES (?, 'EUR', 1, 1.00)", [(m,) for m in moments]
        )
        cursor.execute(
            revenue_per_window_sql("boundary_orders", 5),
            (naive("1000-01-01 00:00:00"), naive("9999-01-01 00:00:00")),
        )
        in_mariadb = sorted(row[0] for row in cursor.fetchall())
    starts = (
        spark.createDataFrame([(utc(m),) for m in moments], "moment TIMESTAMP")
        .select(F.window("moment", "5 seconds").start.alias("start"))
        # Formatted in the session time zone, UTC, so the local zone of Python plays no part.
        .select(F.date_format("start", "yyyy-MM-dd HH:mm:ss.SSS").alias("start"))
        .collect()
    )
    in_spark = sorted({datetime.fromisoformat(row.start) for row in starts})

    assert in_mariadb == in_spark
    assert in_mariadb == [
        naive("1969-12-31 23:59:55"),
        naive("2031-05-06 07:08:00"),
        naive("2031-05-06 07:08:05"),
        naive("2031-12-31 23:59:55"),
        naive("2040-02-29 12:00:00"),
    ]


def _store_orders_and_windows(
    settings: Settings,
    currency: str,
    orders: list[tuple[str, int, Decimal, datetime]],
    windows: list[tuple[Any, ...]],
) -> None:
    """``orders`` (id, quantity, unit price, event time) and ``order_revenue_5s`` rows, as the
    stream would have stored them."""
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        cursor.executemany(
            "INSERT INTO orders (order_id, customer_id, product_id, quantity, unit_price, "
            "currency, amount, event_time) VALUES (?, 'c', 'p', ?, ?, ?, ?, ?)",
            [(oid, qty, price, currency, qty * price, when) for oid, qty, price, when in orders],
        )
        cursor.executemany(
            "INSERT INTO order_revenue_5s (window_start, currency, window_end, order_count, "
            "item_count, revenue) VALUES (?, ?, ?, ?, ?, ?)",
            windows,
        )
        connection.commit()


def test_reconcile_fixes_wrong_windows_and_deletes_empty_ones(
    settings: Settings, currency: str, uid: str
) -> None:
    # A minute of its own, far from any other test's data.
    base = naive("2036-01-01 00:00:00") + timedelta(minutes=random.randrange(500_000))

    def at(seconds: float) -> datetime:
        return base + timedelta(seconds=seconds)

    orders = [
        (f"{uid}-1", 1, Decimal("2.50"), at(4.999)),  # last instant of window [0, 5)
        (f"{uid}-2", 2, Decimal("1.00"), at(5.000)),  # first instant of window [5, 10)
        (f"{uid}-3", 3, Decimal("0.10"), at(9.999)),
        (f"{uid}-4", 1, Decimal("9.99"), at(20.0)),  # outside the range: left alone
    ]
    _store_orders_and_windows(
        settings,
        currency,
        orders,
        [
            (at(5), currency, at(10), 1, 2, Decimal("2.00")),  # wrong: misses order 3
            (at(10), currency, at(15), 4, 4, Decimal("4.00")),  # no orders: must go
            (at(20), currency, at(25), 7, 7, Decimal("7.00")),  # outside: must stay
        ],
    )

    def windows() -> list[tuple[Any, ...]]:
        return query(
            settings,
            "SELECT window_start, window_end, order_count, item_count, revenue "
            "FROM order_revenue_5s WHERE currency = ? ORDER BY window_start",
            (currency,),
        )

    # Mid-window bounds widen to whole windows: [0, 15).
    written = reconcile_revenue_windows(settings, at(3), at(12).replace(tzinfo=None))

    assert windows() == [
        (at(0), at(5), 1, 1, Decimal("2.50")),
        (at(5), at(10), 2, 5, Decimal("2.30")),
        (at(20), at(25), 7, 7, Decimal("7.00")),
    ]
    assert written == 3  # one inserted, one corrected, one deleted
    # The live totals moved with the corrected windows (the inserted one, the corrected one).
    live = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        totals = live.hgetall("streamops:orders:totals")
        assert (
            totals[f"{currency}:order_count"],
            totals[f"{currency}:item_count"],
            totals[f"{currency}:revenue"],
        ) == ("3", "6", "4.80")
        window = live.hgetall(f"streamops:orders:window:{currency}:{at(5).isoformat()}.000Z")
        assert (window["order_count"], window["batch_id"]) == ("2", "reconciled")
    finally:
        live.close()
    assert reconcile_revenue_windows(settings, at(0).replace(tzinfo=UTC), at(15)) == 0
    assert len(windows()) == 3


def test_reconcile_moves_the_totals_for_a_window_redis_no_longer_tracks(
    settings: Settings, currency: str, uid: str
) -> None:
    """A late order in a window older than those Redis keeps (the platform was down for an hour
    and the hourly reconciliation catches up): the totals move by the correction, not by
    nothing (they stayed short of ``order_revenue_5s`` before) and not by the whole window
    (it is counted already)."""
    from streamops.contract.orders_redis import (
        DEFAULT_WINDOW_TTL_SECONDS,
        OrdersRedisKeys,
        Window,
        write_windows,
    )

    base = naive("2037-01-01 00:00:00") + timedelta(minutes=random.randrange(500_000))

    def at(seconds: float) -> datetime:
        return base + timedelta(seconds=seconds)

    # What the stream stored: window [0, 5) with one order, window [5, 10) with one.
    streamed = [
        Window(currency, at(0), at(5), 1, 2, Decimal("3.00")),
        Window(currency, at(5), at(10), 1, 1, Decimal("1.50")),
    ]
    orders = [
        (f"{uid}-1", 2, Decimal("1.50"), at(1)),
        (f"{uid}-2", 1, Decimal("1.50"), at(6)),
        (f"{uid}-late", 4, Decimal("0.25"), at(2)),  # behind the watermark: not in the stream
    ]
    _store_orders_and_windows(
        settings,
        currency,
        orders,
        [
            (w.window_start, currency, w.window_end, w.order_count, w.item_count, w.revenue)
            for w in streamed
        ],
    )
    live = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    keys = OrdersRedisKeys()
    try:
        # Redis keeps the newest window only: [0, 5) is counted, then trimmed (the floor).
        write_windows(live, keys, streamed, 1, "x", DEFAULT_WINDOW_TTL_SECONDS, 1)
        assert live.hexists(keys.contributions(currency), streamed[0].member) is False

        def totals() -> tuple[str, str, str]:
            values = live.hmget(
                keys.totals,
                [f"{currency}:order_count", f"{currency}:item_count", f"{currency}:revenue"],
            )
            return (values[0], values[1], values[2])

        assert totals() == ("2", "3", "4.50")
        assert reconcile_revenue_windows(settings, at(0), at(10)) == 1  # [0, 5) corrected
        stored = query(
            settings,
            "SELECT SUM(order_count), SUM(item_count), SUM(revenue) FROM order_revenue_5s "
            "WHERE currency = ?",
            (currency,),
        )[0]
        assert stored == (3, 7, Decimal("5.50"))
        assert totals() == ("3", "7", "5.50")  # equal to MariaDB again
        # Not tracked again: no record, no listing; a second run changes nothing.
        assert live.hexists(keys.contributions(currency), streamed[0].member) is False
        assert live.zscore(keys.windows(currency), streamed[0].member) is None
        assert reconcile_revenue_windows(settings, at(0), at(10)) == 0
        assert totals() == ("3", "7", "5.50")
    finally:
        live.close()
