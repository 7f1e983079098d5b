"""The soak's probes: a few tagged records every probe interval, and how long each output takes
to show them.

Each probe ``n`` of run ``R`` sends five records, all with the event time of the moment it is
built (tagged ``soak-R-n``, so they are told apart from the generators' data and from other runs):

- ``orders``: a valid order ``soak-R-n`` in the test currency ``XTS`` (ISO 4217 reserves it for
  testing, and the orders transform takes any three letters), so its 5-second window in
  ``order_revenue_5s`` holds probe orders only;
- ``payments``: a captured payment of that order, for ``order_payments``;
- ``orders``: a malformed order, key ``soak-R-n-bad`` (quantity 0), for ``quarantine``;
- ``error-logs``: an ``ERROR`` line of the probe-only service ``soak-probe``, which the rule
  ``soak-probe`` (threshold 1) turns into an alert;
- ``patient-vitals``: a reading of the probe patient ``soak-R`` with a heart rate out of range,
  for ``vitals_summary_1m`` and ``vitals_alerts``.

Latency is measured from the broker's acknowledgement of the record (the delivery report) to the
first poll that sees the output: MariaDB by primary key every ~0.3 s, Redis likewise, and a
consumer at the end of the Kafka ``alerts`` topic, which records when each alert message
arrived. An output that holds a count (a window, an alert) is visible for probe ``n`` once its
count covers every probe sent into it up to ``n``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streamops.clients import kafka_consumer, kafka_producer
from streamops.config import Settings
from streamops.errors import StreamopsError

log = logging.getLogger(__name__)

PROBE_CURRENCY = "XTS"
PROBE_SERVICE = "soak-probe"
PROBE_RULE_ID = "soak-probe"
PROBE_LEVEL = "ERROR"
# The window of the probe rule when the soak creates it: 10 s is the window of the seeded ERROR
# rule, so the alerts job computes no extra window length for it.
PROBE_RULE_WINDOW_SECONDS = 10
PROBE_RULE_DESCRIPTION = "streamops soak: an alert per probe line of service soak-probe"
# Out of the default range (40–130 bpm) of streamops.contract.vitals.DEFAULT_THRESHOLDS.
PROBE_HEART_RATE = 185.0
PROBE_VITAL = "heart_rate"
PROBE_QUANTITY = 1
# How often pending outputs are polled, and how long a delivery may take.
POLL_INTERVAL_SECONDS = 0.3
FLUSH_TIMEOUT_SECONDS = 10.0

OUTPUTS: dict[str, str] = {
    "orders_row": "orders row of the probe order (query orders_records)",
    "revenue_window": (
        "order_revenue_5s row of the probe's 5-s window in XTS whose order_count covers the "
        "probe (orders_revenue, update mode)"
    ),
    "quarantine_row": (
        "quarantine row at the malformed order's Kafka position, same raw payload (orders_records)"
    ),
    "alert_mariadb": "alerts row of rule soak-probe whose event_count covers the line",
    "alert_kafka": "message on the Kafka alerts topic, same alert and count (consumer at the end)",
    "alert_redis": "streamops:alerts:alert:<alert_id> in Redis, same count",
    "vitals_summary": (
        "vitals_summary_1m row of the probe patient's 1-min window counting the reading "
        "(vitals_summary, update mode: rewritten every batch, so measured from the produce, "
        "not from the window's end)"
    ),
    "vitals_alert": (
        "vitals_alerts row (probe patient, heart_rate, window) counting the out-of-range "
        "reading (vitals_records)"
    ),
    "order_payment": (
        "order_payments row of the probe order with its payment (joins_order_payments), from "
        "the later of the order's and the payment's acknowledgement"
    ),
}
ALERT_OUTPUTS = ("alert_mariadb", "alert_kafka", "alert_redis")


class SoakError(StreamopsError):
    """The soak cannot run here; the message says what is missing and what to do."""


# --- pure: the records ----------------------------------------------------------------------


def probe_id(run_id: str, seq: int) -> str:
    return f"soak-{run_id}-{seq}"


def probe_patient(run_id: str) -> str:
    return f"soak-{run_id}"


def wire_time(moment: datetime) -> str:
    """The contract's wire format, milliseconds and ``Z`` (what the jobs keep)."""
    from streamops.contract.times import iso_utc

    return iso_utc(moment)


@dataclass(frozen=True)
class ProbeRecords:
    """The five records of one probe (key and value of each), and what they are named by."""

    run_id: str
    seq: int
    event_time: datetime  # aware UTC, whole milliseconds
    order: tuple[bytes, bytes]
    payment: tuple[bytes, bytes]
    malformed_order: tuple[bytes, bytes]
    error_line: tuple[bytes | None, bytes]
    vitals: tuple[bytes, bytes]

    @property
    def order_id(self) -> str:
        return probe_id(self.run_id, self.seq)

    @property
    def patient_id(self) -> str:
        return probe_patient(self.run_id)


def build_probe(run_id: str, seq: int, moment: datetime, product: tuple[str, str]) -> ProbeRecords:
    """Probe ``seq`` of run ``run_id`` at ``moment`` (aware); ``product`` is (product_id, unit
    price text) from the generator's catalogue, so the enrichment join finds it."""
    if moment.tzinfo is None:
        raise ValueError("moment is naive; pass an aware UTC datetime")
    moment = moment.astimezone(UTC).replace(microsecond=moment.microsecond // 1000 * 1000)
    stamp = wire_time(moment)
    order_id = probe_id(run_id, seq)
    product_id, unit_price = product
    order = {
        "order_id": order_id,
        "customer_id": f"soak-{run_id}",
        "product_id": product_id,
        "quantity": PROBE_QUANTITY,
        "unit_price": unit_price,
        "currency": PROBE_CURRENCY,
        "event_time": stamp,
    }
    payment = {
        "payment_id": f"{order_id}-pay",
        "order_id": order_id,
        "amount": unit_price,
        "status": "captured",
        "event_time": stamp,
    }
    # quantity 0 breaks the contract in one named way (quantity_not_positive); the rest is valid.
    malformed = {**order, "order_id": f"{order_id}-bad", "quantity": 0}
    patient = probe_patient(run_id)
    reading = {
        "patient_id": patient,
        "device_id": f"soak-{run_id}-device",
        "event_time": stamp,
        "heart_rate": PROBE_HEART_RATE,
        "spo2": 97.0,
        "systolic_bp": 120.0,
        "diastolic_bp": 80.0,
        "temperature_c": 36.8,
        "respiratory_rate": 14.0,
    }
    line = f'{stamp},{PROBE_LEVEL},{PROBE_SERVICE},"soak probe {order_id}"'
    return ProbeRecords(
        run_id=run_id,
        seq=seq,
        event_time=moment,
        order=(order_id.encode(), _json(order)),
        payment=(order_id.encode(), _json(payment)),
        malformed_order=(f"{order_id}-bad".encode(), _json(malformed)),
        error_line=(None, line.encode()),
        vitals=(patient.encode(), _json(reading)),
    )


def discharge_record(run_id: str, moment: datetime) -> tuple[bytes, bytes]:
    """The control record that ends the probe patient's monitoring, so no "no signal" alert
    follows the soak."""
    patient = probe_patient(run_id)
    body = {"patient_id": patient, "event_time": wire_time(moment), "discharged": True}
    return patient.encode(), _json(body)


def _json(fields: Mapping[str, Any]) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


# --- pure: what each output must show -------------------------------------------------------


@dataclass
class Expectation:
    """One output that must show one probe: ``target`` names the row (or key, or alert) and
    ``need`` the count it must reach; ``payload`` the bytes a quarantine row must hold."""

    output: str
    seq: int
    produced_at: float  # wall clock of the acknowledgement
    target: Any
    need: int = 1
    payload: bytes | None = None
    visible_at: float | None = None
    missed: bool = False

    @property
    def pending(self) -> bool:
        return self.visible_at is None and not self.missed

    @property
    def latency_seconds(self) -> float | None:
        return None if self.visible_at is None else max(0.0, self.visible_at - self.produced_at)


@dataclass
class WindowCounts:
    """How many probes each window (or alert) has been sent so far: what its count must reach."""

    counts: dict[Any, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, key: Any) -> int:
        self.counts[key] += 1
        return self.counts[key]


@dataclass(frozen=True)
class ProbeWindows:
    """Window lengths of the outputs that aggregate: the jobs' settings."""

    revenue_seconds: int = 5
    vitals_seconds: int = 60
    alert_seconds: int = PROBE_RULE_WINDOW_SECONDS


def expectations_for(
    records: ProbeRecords,
    acks: Mapping[str, Ack],
    windows: ProbeWindows,
    counts: Mapping[str, WindowCounts],
    *,
    alerts: bool,
) -> list[Expectation]:
    """What each output must show for one probe, given the acknowledgements of its records
    (a record that was not delivered expects nothing). ``counts`` (per output with a count) is
    updated: probe ``n`` of a window needs the count of every probe sent into it so far."""
    from streamops.contract.alerts import alert_id, window_start

    moment = records.event_time.replace(tzinfo=None)  # naive UTC, as MariaDB returns it
    found: list[Expectation] = []

    def expect(output: str, ack: Ack, target: Any, **extra: Any) -> None:
        found.append(Expectation(output, records.seq, ack.at, target, **extra))

    order = acks.get("order")
    if order is not None and order.ok:
        expect("orders_row", order, records.order_id)
        start = window_start(moment, windows.revenue_seconds)
        need = counts["revenue_window"].add(start)
        expect("revenue_window", order, start, need=need)
        payment = acks.get("payment")
        if payment is not None and payment.ok:
            later = order if order.at >= payment.at else payment
            expect("order_payment", later, records.order_id)
    malformed = acks.get("malformed_order")
    if malformed is not None and malformed.ok:
        expect(
            "quarantine_row",
            malformed,
            (malformed.partition, malformed.offset),
            payload=records.malformed_order[1],
        )
    line = acks.get("error_line")
    if alerts and line is not None and line.ok:
        start = window_start(moment, windows.alert_seconds)
        identifier = alert_id(PROBE_RULE_ID, start, windows.alert_seconds)
        need = counts["alerts"].add(identifier)
        for output in ALERT_OUTPUTS:
            expect(output, line, identifier, need=need)
    reading = acks.get("vitals")
    if reading is not None and reading.ok:
        start = window_start(moment, windows.vitals_seconds)
        need = counts["vitals"].add(start)
        expect("vitals_summary", reading, start, need=need)
        expect("vitals_alert", reading, start, need=need)
    return found


def satisfied_by_counts(
    pending: Iterable[Expectation], counts: Mapping[Any, int]
) -> list[Expectation]:
    """The expectations whose target's count (``counts``: target → count seen) reaches need."""
    return [e for e in pending if counts.get(e.target, 0) >= e.need]


# --- impure: sending and watching -----------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    """A delivery report: when, and where the record landed (or why it did not)."""

    at: float
    error: str | None = None
    partition: int = -1
    offset: int = -1

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ProbeRule:
    """The alert rule the probe lines need, as alert_rules holds it."""

    window_seconds: int
    inserted: bool  # created by this run: the job picks it up within its refresh interval
    usable: bool
    reason: str = ""


def ensure_probe_rule(settings: Settings) -> ProbeRule:
    """Create the rule ``soak-probe`` (ERROR lines of service soak-probe, threshold 1) unless it
    exists, and say whether it can alert on every probe line. An existing rule is never changed:
    an operator may have disabled it on purpose."""
    from streamops.db import connect

    connection = connect(settings)
    try:
        cursor = connection.cursor()
        cursor.execute(
            "INSERT IGNORE INTO alert_rules (rule_id, level, service, window_seconds, "
            "threshold_count, enabled, description) VALUES (?, ?, ?, ?, 1, TRUE, ?)",
            (
                PROBE_RULE_ID,
                PROBE_LEVEL,
                PROBE_SERVICE,
                PROBE_RULE_WINDOW_SECONDS,
                PROBE_RULE_DESCRIPTION,
            ),
        )
        inserted = cursor.rowcount == 1
        cursor.execute(
            "SELECT level, service, window_seconds, threshold_count, enabled FROM alert_rules "
            "WHERE rule_id = ?",
            (PROBE_RULE_ID,),
        )
        level, service, window, threshold, enabled = cursor.fetchone()
        connection.commit()
    finally:
        connection.close()
    problems = []
    if not enabled:
        problems.append("it is disabled (`streamops rules enable soak-probe`)")
    if int(threshold) != 1:
        problems.append(f"its threshold is {threshold}, not 1")
    if level != PROBE_LEVEL or service != PROBE_SERVICE:
        problems.append(f"it matches {level} lines of {service!r}, not ERROR of 'soak-probe'")
    return ProbeRule(
        window_seconds=int(window),
        inserted=inserted,
        usable=not problems,
        reason=f"rule {PROBE_RULE_ID}: " + "; ".join(problems) if problems else "",
    )


class Prober:
    """Sends probes and watches the outputs (a poller thread and a Kafka consumer thread)."""

    def __init__(
        self,
        settings: Settings,
        run_id: str,
        *,
        timeout_seconds: float,
        windows: ProbeWindows,
        alerts: bool,
        poll_interval: float = POLL_INTERVAL_SECONDS,
    ) -> None:
        self.settings = settings
        self.run_id = run_id
        self.timeout_seconds = timeout_seconds
        self.windows = windows
        self.alerts = alerts
        self.poll_interval = poll_interval
        self.expectations: list[Expectation] = []
        self.send_failures: list[str] = []
        self.poll_errors: dict[str, int] = defaultdict(int)
        self.last_poll_error: dict[str, str] = {}
        self.sent = 0
        self.lock = threading.Lock()
        self._counts: dict[str, WindowCounts] = defaultdict(WindowCounts)
        self._alert_messages: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._producer: Any = None
        self._consumer: Any = None
        self._product = _probe_product()

    # --- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> Prober:

        from streamops.generator.producer import PRODUCER_CONFIG

        self._producer = kafka_producer(self.settings, PRODUCER_CONFIG)
        if self.alerts:
            self._consumer = self._alerts_consumer()
            self._start_thread(self._consume_alerts, "soak-alerts-consumer")
        self._start_thread(self._poll_loop, "soak-poller")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.close()
        if self._producer is not None:
            self._producer.flush(FLUSH_TIMEOUT_SECONDS)

    def _start_thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # --- sending ------------------------------------------------------------------------------

    def send(self, seq: int) -> None:
        """Send probe ``seq`` and wait for its acknowledgements; register what each output must
        show. A record that is not delivered is counted in ``send_failures``."""
        records = build_probe(self.run_id, seq, datetime.now(UTC), self._product)
        sends: dict[str, tuple[str, tuple[bytes | None, bytes]]] = {
            "order": ("orders", records.order),
            "payment": ("payments", records.payment),
            "malformed_order": ("orders", records.malformed_order),
            "error_line": ("error-logs", records.error_line),
            "vitals": ("patient-vitals", records.vitals),
        }
        acks = self._produce(sends)
        for name, ack in acks.items():
            if not ack.ok:
                self.send_failures.append(f"probe {seq} {name}: {ack.error}")
        found = expectations_for(records, acks, self.windows, self._counts, alerts=self.alerts)
        with self.lock:
            self.expectations.extend(found)
            self.sent += 1

    def send_discharge(self) -> None:
        key, value = discharge_record(self.run_id, datetime.now(UTC))
        acks = self._produce({"discharge": ("patient-vitals", (key, value))})
        if not acks["discharge"].ok:
            self.send_failures.append(f"discharge: {acks['discharge'].error}")

    def _produce(
        self, sends: Mapping[str, tuple[str, tuple[bytes | None, bytes]]]
    ) -> dict[str, Ack]:
        acks: dict[str, Ack] = {}

        def delivered(name: str) -> Callable[[Any, Any], None]:
            def report(error: Any, message: Any) -> None:
                now = time.time()
                if error is not None:
                    acks[name] = Ack(now, error=str(error))
                else:
                    acks[name] = Ack(now, partition=message.partition(), offset=message.offset())

            return report

        for name, (topic, (key, value)) in sends.items():
            self._producer.produce(topic, value=value, key=key, on_delivery=delivered(name))
        self._producer.flush(FLUSH_TIMEOUT_SECONDS)
        for name in sends:
            acks.setdefault(name, Ack(time.time(), error="not acknowledged in time"))
        return acks

    # --- watching -----------------------------------------------------------------------------

    def pending(self) -> list[Expectation]:
        with self.lock:
            return [e for e in self.expectations if e.pending]

    def wait_drained(self, deadline: float, stop: threading.Event | None = None) -> None:
        """Until every output has shown its probes or timed out, or ``deadline`` (monotonic)."""
        while self.pending() and time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                return
            time.sleep(self.poll_interval)

    def _poll_loop(self) -> None:
        import mariadb

        from streamops.db import connect

        connection: Any = None
        redis_client: Any = None
        try:
            while not self._stop.wait(self.poll_interval):
                pending = self.pending()
                if not pending:
                    continue
                try:
                    if connection is None:
                        connection = connect(self.settings)
                        connection.autocommit = True  # each poll sees the latest commits
                    if redis_client is None:
                        from streamops.clients import redis_client as make_redis_client

                        redis_client = make_redis_client(
                            self.settings, timeout_seconds=2, decode_responses=True
                        )
                except Exception as error:
                    self._poll_error("connect", error)
                    connection = None
                    continue
                by_output: dict[str, list[Expectation]] = defaultdict(list)
                for expectation in pending:
                    by_output[expectation.output].append(expectation)
                for output, items in by_output.items():
                    asked = time.time()
                    try:
                        shown = self._check(output, items, connection.cursor(), redis_client)
                    except mariadb.Error as error:
                        # A dropped connection is reconnected on the next poll.
                        self._poll_error(output, error)
                        with contextlib.suppress(Exception):
                            connection.close()
                        connection = None
                        break
                    except Exception as error:  # Redis or Kafka hiccup: try again next poll
                        self._poll_error(output, error)
                        continue
                    with self.lock:
                        for expectation in shown:
                            if expectation.visible_at is None:
                                expectation.visible_at = asked
                self._time_out(time.time())
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.close()
            if redis_client is not None:
                with contextlib.suppress(Exception):
                    redis_client.close()

    def _time_out(self, now: float) -> None:
        with self.lock:
            for expectation in self.expectations:
                if expectation.pending and now - expectation.produced_at > self.timeout_seconds:
                    expectation.missed = True

    def _poll_error(self, where: str, error: BaseException) -> None:
        with self.lock:
            self.poll_errors[where] += 1
            self.last_poll_error[where] = f"{type(error).__name__}: {error}"

    def _check(
        self, output: str, items: Sequence[Expectation], cursor: Any, redis_client: Any
    ) -> list[Expectation]:
        """The expectations among ``items`` (all of ``output``) that the output shows now."""
        if output == "alert_kafka":
            return self._shown_on_kafka(items)
        if output == "alert_redis":
            ids = sorted({e.target for e in items})
            from streamops.contract.redis_keys import alert_key

            keys = [alert_key(identifier) for identifier in ids]
            counts = {
                identifier: int(json.loads(value).get("event_count", 0))
                for identifier, value in zip(ids, redis_client.mget(keys), strict=True)
                if value
            }
            return satisfied_by_counts(items, counts)
        sql, params, counted = _query(output, items, self.run_id)
        cursor.execute(sql, params)
        rows = cursor.fetchall()
        if output == "quarantine_row":
            landed = {(int(p), int(o)): bytes(payload or b"") for p, o, payload in rows}
            return [e for e in items if landed.get(e.target) == e.payload]
        if counted:
            return satisfied_by_counts(items, {row[0]: int(row[1]) for row in rows})
        present = {row[0] for row in rows}
        return [e for e in items if e.target in present]

    def _alerts_consumer(self) -> Any:
        """A consumer at the end of every partition of the alerts topic (no group, no commits)."""

        from confluent_kafka import OFFSET_END, TopicPartition

        from streamops.contract.topics import ALERTS_TOPIC

        consumer = kafka_consumer(self.settings, "streamops-soak", {"fetch.wait.max.ms": 50})
        topic = consumer.list_topics(ALERTS_TOPIC, timeout=10).topics.get(ALERTS_TOPIC)
        if topic is None or topic.error is not None or not topic.partitions:
            consumer.close()
            raise SoakError(
                f"The Kafka topic {ALERTS_TOPIC!r} does not exist at "
                f"{self.settings.kafka_bootstrap_servers}; `streamops up` creates it."
            )
        consumer.assign([TopicPartition(ALERTS_TOPIC, p, OFFSET_END) for p in topic.partitions])
        # The assignment resolves OFFSET_END on the first fetch: before the first probe line.
        consumer.poll(0.5)
        return consumer

    def _consume_alerts(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._consumer.poll(0.2)
            except Exception as error:
                self._poll_error("alert_kafka", error)
                time.sleep(1)
                continue
            if message is None or message.error() is not None:
                continue
            arrived = time.time()
            try:
                alert = json.loads(message.value())
            except ValueError:
                continue
            if isinstance(alert, dict) and alert.get("rule_id") == PROBE_RULE_ID:
                with self.lock:
                    self._alert_messages[str(alert.get("alert_id"))].append(
                        (int(alert.get("event_count") or 0), arrived)
                    )

    def _shown_on_kafka(self, items: Sequence[Expectation]) -> list[Expectation]:
        """Kafka's time is when the message arrived, not when this poll looked: set it here."""
        shown = []
        with self.lock:
            for expectation in items:
                arrivals = [
                    at
                    for count, at in self._alert_messages.get(expectation.target, [])
                    if count >= expectation.need
                ]
                if arrivals:
                    expectation.visible_at = min(arrivals)
                    shown.append(expectation)
        return shown

    # --- live figures -------------------------------------------------------------------------

    def snapshot(self) -> list[Expectation]:
        with self.lock:
            return list(self.expectations)


def _query(
    output: str, items: Sequence[Expectation], run_id: str
) -> tuple[str, tuple[Any, ...], bool]:
    """SQL (by primary key), its parameters, and whether its rows are (target, count)."""
    targets = sorted({e.target for e in items})
    marks = ", ".join("?" for _ in targets)
    if output == "orders_row":
        return f"SELECT order_id FROM orders WHERE order_id IN ({marks})", tuple(targets), False
    if output == "order_payment":
        return (
            f"SELECT order_id FROM order_payments WHERE order_id IN ({marks}) "
            "AND status <> 'unpaid'",
            tuple(targets),
            False,
        )
    if output == "revenue_window":
        return (
            "SELECT window_start, order_count FROM order_revenue_5s "
            f"WHERE currency = ? AND window_start IN ({marks})",
            (PROBE_CURRENCY, *targets),
            True,
        )
    if output == "quarantine_row":
        pairs = ", ".join("(?, ?)" for _ in targets)
        return (
            "SELECT source_partition, source_offset, raw_payload FROM quarantine "
            f"WHERE source_topic = 'orders' AND (source_partition, source_offset) IN ({pairs})",
            tuple(value for pair in targets for value in pair),
            False,
        )
    if output == "alert_mariadb":
        return (
            f"SELECT alert_id, event_count FROM alerts WHERE alert_id IN ({marks})",
            tuple(targets),
            True,
        )
    if output == "vitals_summary":
        return (
            "SELECT window_start, reading_count FROM vitals_summary_1m "
            f"WHERE patient_id = ? AND window_start IN ({marks})",
            (probe_patient(run_id), *targets),
            True,
        )
    if output == "vitals_alert":
        return (
            "SELECT window_start, out_of_range_count FROM vitals_alerts "
            f"WHERE patient_id = ? AND vital = ? AND window_start IN ({marks})",
            (probe_patient(run_id), PROBE_VITAL, *targets),
            True,
        )
    raise ValueError(f"unknown output {output!r}")


def _probe_product() -> tuple[str, str]:
    """The generator's most common product: the catalogue join enriches the probe order."""
    from streamops.generator.records import CATALOGUE

    product = max(CATALOGUE, key=lambda item: item.popularity)
    return product.product_id, product.unit_price_text
