"""The dashboard as a person sees it: headless Chromium opens the page, orders go through the
real orders job (Kafka → Spark → Redis), alerts through the alerts sink's publisher (Kafka and
Redis), a patient's reading through the vitals sink's Redis writer, and the numbers on the page
change to the expected values without a reload."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer
from pyspark.sql import Row
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from spark_jobs.sinks.alerts import AlertPublisher
from spark_jobs.sinks.vitals import VitalsRedis
from spark_jobs.transforms.alerts import Alert
from spark_jobs.transforms.vitals import VITAL_SIGNS
from streamops.config import PROJECT_ROOT, Settings
from tests.browser import chromium, save_screenshot, wait_for

# ISO 4217's code for testing: the orders of this test are the only ones in their windows/totals.
CURRENCY = "XTS"
# (quantity, unit_price) of each order, in two rounds into the same 5-second window.
ROUND_ONE = [(2, "10.25"), (1, "99.90"), (3, "5.00")]
ROUND_TWO = [(1, "64.60"), (4, "2.50")]
# The first micro-batch of a fresh Spark job on a loaded 2-core machine.
FIRST_BATCH_SECONDS = 240.0
UPDATE_SECONDS = 90.0


def revenue(orders: list[tuple[int, str]]) -> Decimal:
    return sum((quantity * Decimal(price) for quantity, price in orders), Decimal("0.00"))


@pytest.fixture
def clean_test_currency(settings: Settings) -> Iterator[None]:
    client = redis.Redis.from_url(settings.redis_url)

    def clean() -> None:
        for key in client.scan_iter(f"streamops:orders:*:{CURRENCY}*"):
            client.delete(key)
        # Every field of the currency, the writer's bookkeeping too (records, newest, floor): a
        # count of records left from another test would make the writer skip this one's windows.
        fields = [
            f
            for f in client.hkeys("streamops:orders:totals")
            if f.startswith(f"{CURRENCY}:".encode())
        ]
        if fields:
            client.hdel("streamops:orders:totals", *fields)

    clean()
    yield
    clean()
    client.close()


@pytest.fixture
def orders_job(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log_path = tmp_path / "orders-job.log"
    with log_path.open("wb") as log:
        job = subprocess.Popen(
            [sys.executable, "-m", "spark_jobs.jobs.orders", "--trigger-interval", "1 second"],
            cwd=PROJECT_ROOT,
            env={
                **os.environ,
                **settings.as_env(),
                "STREAMOPS_CHECKPOINT_URI": str(tmp_path / "checkpoints"),
                "STREAMOPS_ARCHIVE_URI": str(tmp_path / "archive"),
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield job
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGTERM)
            try:
                job.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait(timeout=30)
        print(log_path.read_text(errors="replace")[-3000:])


def produce(settings: Settings, orders: list[tuple[int, str]], event_time: datetime) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "acks": "all"})
    failures: list[str] = []
    for quantity, price in orders:
        order_id = f"dash-{uuid.uuid4().hex}"
        record = {
            "order_id": order_id,
            "customer_id": "customer-dashboard",
            "product_id": "product-dashboard",
            "quantity": quantity,
            "unit_price": price,
            "currency": CURRENCY,
            "event_time": event_time.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        producer.produce(
            "orders",
            key=order_id.encode(),
            value=json.dumps(record).encode(),
            on_delivery=lambda error, _: failures.append(str(error)) if error else None,
        )
    assert producer.flush(30) == 0
    assert failures == []


def text_of(driver: WebDriver, selector: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text.strip() if found else ""


def publish_alert(settings: Settings, alert_id: str, start: datetime, count: int) -> None:
    publisher = AlertPublisher(settings)
    try:
        publisher.publish(
            [
                Alert(
                    alert_id=alert_id,
                    rule_id="dashboard_browser_test",
                    level="CRITICAL",
                    service="payments",
                    window_start=start,
                    window_end=start + timedelta(seconds=60),
                    event_count=count,
                    threshold_count=1,
                    first_seen=start,
                    last_seen=start + timedelta(seconds=1),
                    sample_message="card processor unreachable",
                )
            ]
        )
    finally:
        publisher.close()


def test_page_follows_orders_alerts_and_vitals(
    settings: Settings,
    clean_test_currency: None,
    orders_job: subprocess.Popen[bytes],
) -> None:
    now = datetime.now(UTC)
    # The middle of the current 5-second window: both rounds land in the same window.
    window_start = now.replace(microsecond=0) - timedelta(seconds=now.second % 5)
    event_time = window_start + timedelta(seconds=2, milliseconds=500)
    window_key = f"{CURRENCY}|{window_start:%Y-%m-%dT%H:%M:%S}.000Z"
    row = f'tr[data-window="{window_key}"]'
    total = f'[data-total="{CURRENCY}"] .value'

    with chromium() as driver:
        driver.get(settings.dashboard_url)
        wait_for(
            driver,
            lambda d: (
                d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true"
                and text_of(d, "#connection") == "live"
            ),
            timeout_seconds=30,
            message="the page never loaded its snapshot and connected",
        )
        assert text_of(driver, row) == ""  # nothing of this window yet

        # Orders through the real pipeline.
        produce(settings, ROUND_ONE, event_time)
        first = revenue(ROUND_ONE)
        wait_for(
            driver,
            lambda d: orders_job.poll() is None and text_of(d, f"{row} td.revenue") == f"{first}",
            timeout_seconds=FIRST_BATCH_SECONDS,
            message=f"the window {window_key} never showed revenue {first} "
            f"(job {'running' if orders_job.poll() is None else 'exited'})",
        )
        assert text_of(driver, f"{row} td.order-count") == "3"
        assert text_of(driver, f"{row} td.item-count") == "6"
        assert text_of(driver, total) == f"{first} {CURRENCY}"

        produce(settings, ROUND_TWO, event_time)
        both = revenue(ROUND_ONE + ROUND_TWO)
        wait_for(
            driver,
            lambda d: text_of(d, f"{row} td.revenue") == f"{both}",
            timeout_seconds=UPDATE_SECONDS,
            message=f"the window {window_key} never changed to {both}",
        )
        assert text_of(driver, f"{row} td.order-count") == "5"
        assert text_of(driver, f"{row} td.item-count") == "11"
        wait_for(
            driver,
            lambda d: text_of(d, total) == f"{both} {CURRENCY}",
            timeout_seconds=10,
            message=f"the {CURRENCY} total never changed to {both}",
        )

        # The job's own health, from its progress listener.
        health_row = 'tr[data-query="orders/orders_revenue"]'
        wait_for(
            driver,
            lambda d: (
                text_of(d, f"{health_row} td.status") == "ok"
                and text_of(d, f"{health_row} td.batch") not in ("", "–")
            ),
            timeout_seconds=60,
            message="the orders_revenue query never showed as ok with a batch number",
        )

        # An alert, then the same alert with a higher count: one entry, updated in place.
        alert_id = f"dashboard-browser-{uuid.uuid4().hex}"
        alert_item = f'li[data-alert-id="{alert_id}"]'
        start = now.replace(tzinfo=None, microsecond=0)
        publish_alert(settings, alert_id, start, 3)
        wait_for(
            driver,
            lambda d: text_of(d, f"{alert_item} .event-count") == "3",
            timeout_seconds=15,
            message="the alert never appeared",
        )
        publish_alert(settings, alert_id, start, 8)
        wait_for(
            driver,
            lambda d: text_of(d, f"{alert_item} .event-count") == "8",
            timeout_seconds=15,
            message="the alert's count never changed to 8",
        )
        assert len(driver.find_elements(By.CSS_SELECTOR, alert_item)) == 1
        assert "card processor unreachable" in text_of(driver, alert_item)

        # A patient's tile, from the vitals sink's Redis writes (its newest reading).
        patient = f"dash-{uuid.uuid4().hex[:6]}"
        reading = dict.fromkeys(VITAL_SIGNS)
        reading.update(heart_rate=148.0, spo2=96.0, temperature_c=37.1)
        try:
            VitalsRedis(settings).write_latest_readings(
                [
                    Row(
                        patient_id=patient,
                        device_id="bed-3",
                        event_time=datetime.now(UTC).replace(tzinfo=None),
                        **reading,
                    )
                ],
                batch_id=1,
            )
            tile = f'.tile[data-patient="{patient}"]'
            wait_for(
                driver,
                lambda d: text_of(d, f'{tile} .vital[data-vital="heart_rate"] .value') == "148 bpm",
                timeout_seconds=15,
                message="the patient's tile never appeared",
            )
            flagged = driver.find_elements(By.CSS_SELECTOR, f"{tile} .vital.out")
            # Out of the pipeline's default range 40–130 bpm; SpO2 and temperature are normal.
            assert [element.get_attribute("data-vital") for element in flagged] == ["heart_rate"]
            save_screenshot(driver, "dashboard")
        finally:
            client = redis.Redis.from_url(settings.redis_url)
            client.delete(f"streamops:vitals:patient:{patient}:latest")
            client.zrem("streamops:vitals:patients", patient)
            client.close()

    assert orders_job.poll() is None, "the orders job exited during the test"
