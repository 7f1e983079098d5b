"""`--realtime-path kafka-sink`: the first-line alert built and sent in the JVM by a real-time
query, then written once into MariaDB and Redis by the feed query, on real Kafka, Spark, MariaDB
and Redis. The rule is added while the job runs: the rules side is re-read without a restart."""

from __future__ import annotations

import json
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import redis
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from spark_jobs.sinks.alerts import encode_alert
from spark_jobs.sinks.alerts_feed import decode_first_line_alert
from spark_jobs.transforms.alerts import FIRST_LINE_HEADER
from streamops.config import Settings
from streamops.contract.alerts import alert_id, window_start
from streamops.contract.redis_keys import ALERTS_STREAM
from tests.integration.alerts_support import (
    PATIENT_WATERMARK,
    alert_rows,
    counts_batches,
    csv_line,
    produce,
    start_job,
    wait_for_counting_lull,
)
from tests.integration.support import execute, kill_group, query, wait_until

# A long window keeps every line of the test in one alert; a slow counting trigger leaves the
# first state to the real-time path.
WINDOW_SECONDS = 3600
COUNTING_TRIGGER_SECONDS = 90


def _batches(settings: Settings, name: str) -> int:
    rows = query(
        settings,
        "SELECT COUNT(*) FROM query_progress WHERE pipeline = 'alerts' AND query_name = ?",
        (name,),
    )
    return int(rows[0][0])


def _consumer_at_end(settings: Settings) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": uuid.uuid4().hex,
            "enable.auto.commit": False,
        }
    )
    partitions = consumer.list_topics("alerts", timeout=10).topics["alerts"].partitions
    consumer.assign([TopicPartition("alerts", p, OFFSET_END) for p in partitions])
    consumer.poll(0.5)
    return consumer


def _stream_entries(client: redis.Redis, wanted: str) -> list[dict]:
    return [
        json.loads(fields["alert"])
        for _, fields in client.xrange(ALERTS_STREAM)
        if fields["alert_id"] == wanted
    ]


def test_the_jvm_path_opens_the_alert_and_the_feed_writes_it_once(
    settings: Settings, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:10]
    service, rule_id = f"jvm-{tag}", f"it-jvm-{tag}"
    # A fresh checkpoint's counting query starts at the topic's start: a line of another
    # service gives it a first batch to finish.
    produce(settings, f"warm-{tag}", 1, level="info")
    names = ("alerts_realtime", "alerts_feed", "alerts_counts")
    before = {name: _batches(settings, name) for name in names}
    job = start_job(
        settings,
        tmp_path,
        extra_args=(
            "--realtime-batch",
            "5 seconds",
            "--realtime-path",
            "kafka-sink",
            "--trigger-interval",
            f"{COUNTING_TRIGGER_SECONDS} seconds",
            *PATIENT_WATERMARK,
        ),
    )
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    consumer = _consumer_at_end(settings)
    try:
        wait_until(
            lambda: all(_batches(settings, name) > before[name] for name in names),
            300,
            "a first batch of the real-time, the feed and the counting query",
            job,
        )
        # The rule arrives while the job runs; lines go every 2 s until the real-time query's
        # next batch has re-read the rules and one opens the alert.
        execute(
            settings,
            "INSERT INTO alert_rules (rule_id, level, service, window_seconds, threshold_count) "
            "VALUES (?, 'CRITICAL', ?, ?, 1)",
            (rule_id, service, WINDOW_SECONDS),
        )
        wait_for_counting_lull(settings, job, COUNTING_TRIGGER_SECONDS, lull_seconds=60)
        counted_before = counts_batches(settings)
        # Every line at one event time: one window, one alert, however long the wait.
        moment = datetime.now(UTC)
        key = alert_id(rule_id, window_start(moment, WINDOW_SECONDS), WINDOW_SECONDS)
        stamp = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
        records: list[tuple[str, list]] = []
        deadline = time.monotonic() + 60
        sent = 0
        while not records and time.monotonic() < deadline:
            line = csv_line(stamp, "CRITICAL", service, f"line {sent}")
            producer.produce("error-logs", key=service.encode(), value=line)
            assert producer.flush(10) == 0
            sent += 1
            until = time.monotonic() + 2
            while time.monotonic() < until:
                message = consumer.poll(0.2)
                if message is not None and not message.error() and message.key() == key.encode():
                    records.append((message.value().decode(), message.headers()))
        assert records, f"no alert record on the topic after {sent} lines; see {tmp_path}"
        value, headers = records[0]
        name, marker = FIRST_LINE_HEADER
        assert headers == [(name, marker.encode())]
        first = decode_first_line_alert(value)
        assert (first.rule_id, first.service, first.event_count) == (rule_id, service, 1)

        # The feed writes it into MariaDB and Redis, before the counting query's next batch.
        assert first.alert_id == key
        redis_key = f"streamops:alerts:alert:{key}"
        wait_until(lambda: alert_rows(settings, rule_id) != [], 60, "the feed's MariaDB row", job)
        wait_until(lambda: client.exists(redis_key) == 1, 60, "the feed's Redis key", job)
        assert counts_batches(settings) == counted_before, "the counting query was not first"
        assert [(r[0], r[3]) for r in alert_rows(settings, rule_id)] == [(key, 1)]
        stored = client.get(redis_key)
        assert stored == encode_alert(first)
        assert _stream_entries(client, key) == [json.loads(stored)]

        # Two more lines of the window: two more count-1 records on the topic (Spark 4.2's
        # real-time mode cannot deduplicate), but no second first state in Redis or MariaDB.
        produce(settings, service, 2, level="critical", moment=first.first_seen)
        more = []
        until = time.monotonic() + 60
        while len(more) < 2 and time.monotonic() < until:
            message = consumer.poll(0.5)
            if message is not None and not message.error() and message.key().decode() == key:
                more.append(json.loads(message.value()))
        assert [m["event_count"] for m in more] == [1, 1]
        feed = _batches(settings, "alerts_feed")
        wait_until(lambda: _batches(settings, "alerts_feed") > feed, 60, "a feed batch", job)
        opened = [e for e in _stream_entries(client, key) if e["event_count"] == 1]
        assert opened == [json.loads(stored)]

        # The counting query then publishes the grown count under the same id.
        total = sent + 2
        wait_until(
            lambda: [r[3] for r in alert_rows(settings, rule_id)] == [total],
            COUNTING_TRIGGER_SECONDS + 120,
            "the counting path's update",
            job,
        )
        assert json.loads(client.get(redis_key) or "{}")["event_count"] == total
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=120) == 0
    finally:
        consumer.close()
        client.close()
        kill_group(job)
