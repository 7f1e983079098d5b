"""The generator's records: contract conformance, defect ratios, determinism, order/payment match.

Conformance is checked twice: by ``validate`` (the generator's own reading of the contract) and by
``conforms`` below, written separately from the CONTRACT.md tables so that a mistake shared by the
generator and its validator does not go unnoticed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from streamops.generator.records import (
    CATALOGUE,
    TOPICS,
    GeneratedRecord,
    RecordFactory,
    generate,
    validate,
)

NOW = datetime(2026, 11, 24, 14, 0, 0, 250_000, tzinfo=UTC)
INTERVAL = timedelta(milliseconds=100)
RATIOS = {"malformed_ratio": 0.10, "duplicate_ratio": 0.05, "late_ratio": 0.05}
SAMPLE = 5000
PROJECT_ROOT = Path(__file__).resolve().parents[2]

ISO_WITH_OFFSET = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)")
LEVELS = {"DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL", "FATAL"}
VITALS = ("heart_rate", "spo2", "systolic_bp", "diastolic_bp", "temperature_c", "respiratory_rate")


def records(
    topic: str, count: int = SAMPLE, seed: int = 7, **ratios: float
) -> list[GeneratedRecord]:
    return generate(topic, count, seed=seed, now=NOW, interval=INTERVAL, **ratios)


def as_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def json_value(record: GeneratedRecord) -> dict[str, Any]:
    return json.loads(record.value, parse_float=Decimal)


# --- an independent reading of CONTRACT.md ----------------------------------------------------


def _text(value: Any, max_length: int = 10_000) -> bool:
    return isinstance(value, str) and len(value.strip()) > 0 and len(value) <= max_length


def _number(value: Any) -> bool:
    return isinstance(value, int | Decimal) and not isinstance(value, bool)


def _decimal_2(value: Any) -> bool:
    if isinstance(value, str):
        return re.fullmatch(r"\d+(\.\d+)?", value) is not None and _decimal_2(Decimal(value))
    if not _number(value) or value < 0:
        return False
    hundredths = Decimal(value) * 100
    return hundredths == hundredths.to_integral_value()


def _time(value: Any) -> bool:
    return isinstance(value, str) and ISO_WITH_OFFSET.fullmatch(value) is not None


def _json_object(value: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(value.decode("utf-8"), parse_float=Decimal)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def conforms(topic: str, value: bytes) -> bool:
    if topic == "error-logs":
        try:
            rows = list(csv.reader(io.StringIO(value.decode("utf-8"), newline=""), strict=True))
        except (UnicodeDecodeError, csv.Error):
            return False
        if len(rows) != 1 or len(rows[0]) != 4:
            return False
        timestamp, level, service, _message = rows[0]
        return _time(timestamp) and level.upper() in LEVELS and _text(service)
    record = _json_object(value)
    if record is None:
        return False
    if topic == "orders":
        currency = record.get("currency")
        return (
            _text(record.get("order_id"), max_length=64)
            and _text(record.get("customer_id"))
            and _text(record.get("product_id"))
            and _number(record.get("quantity"))
            and isinstance(record["quantity"], int)
            and record["quantity"] >= 1
            and _decimal_2(record.get("unit_price"))
            and (currency is None or re.fullmatch(r"[A-Za-z]{3}", str(currency)) is not None)
            and _time(record.get("event_time"))
        )
    if topic == "payments":
        amount = record.get("amount")
        return (
            _text(record.get("payment_id"))
            and _text(record.get("order_id"), max_length=64)
            and (_decimal_2(amount) if amount is not None else False)
            and record.get("status") in {"authorized", "captured", "failed"}
            and _time(record.get("event_time"))
        )
    assert topic == "patient-vitals"
    return (
        _text(record.get("patient_id"))
        and _time(record.get("event_time"))
        and all(record.get(vital) is None or _number(record[vital]) for vital in VITALS)
    )


# --- valid records ----------------------------------------------------------------------------


@pytest.mark.parametrize("topic", TOPICS)
def test_valid_records_conform_to_the_contract(topic: str) -> None:
    generated = records(topic, 2000)

    assert {record.kind for record in generated} == {"valid"}
    assert [validate(topic, r.value) for r in generated] == [None] * len(generated)
    assert all(conforms(topic, r.value) for r in generated)
    assert all(r.key for r in generated), "every valid record has a key"


def test_orders_look_like_a_shop() -> None:
    orders = [(r, json_value(r)) for r in records("orders", 2000)]
    prices = {p.product_id: p.unit_price for p in CATALOGUE}

    assert len({o["order_id"] for _, o in orders}) == len(orders), "order ids are unique"
    assert all(r.key == o["order_id"].encode() for r, o in orders)
    assert all(Decimal(str(o["unit_price"])) == prices[o["product_id"]] for _, o in orders)
    assert {type(o["unit_price"]) for _, o in orders} == {str, Decimal}, "both wire forms"
    assert all(1 <= o["quantity"] <= 10 for _, o in orders)
    currencies = Counter(o["currency"] for _, o in orders)
    assert set(currencies) == {"EUR", "USD", "GBP"}
    assert currencies["EUR"] > 0.7 * len(orders)
    suffixes = Counter(
        "Z" if o["event_time"].endswith("Z") else o["event_time"][-6:] for _, o in orders
    )
    assert set(suffixes) == {"Z", "+01:00"}
    assert len({o["customer_id"] for _, o in orders}) > 200


def test_error_logs_carry_csv_hazards_and_bursts() -> None:
    generated = records("error-logs", SAMPLE)
    rows = [next(csv.reader(io.StringIO(r.value.decode(), newline=""))) for r in generated]
    messages = [row[3] for row in rows]

    assert all(len(row) == 4 for row in rows)
    for hazard in (",", '"', "\n"):
        hazardous = [r for r, m in zip(generated, messages, strict=True) if hazard in m]
        assert hazardous, f"some messages contain {hazard!r}"
        assert all(conforms("error-logs", r.value) for r in hazardous)
    assert any(b"\n" in r.value for r in generated), "a newline travels inside a quoted field"
    levels = Counter(row[1] for row in rows)
    assert {"WARNING", "FATAL", "WARN", "CRITICAL"} <= set(levels)
    assert any(level != level.upper() for level in levels), "mixed case levels occur"
    assert {"payments-api", "checkout", "inventory", "auth"} <= {row[2] for row in rows}
    canonical = {"WARNING": "WARN", "FATAL": "CRITICAL"}
    severities = [(canonical.get(row[1].upper(), row[1].upper()), row[2]) for row in rows]
    longest_run, run = 1, 1
    for previous, current in itertools.pairwise(severities):
        run = run + 1 if current == previous and current[0] in {"ERROR", "CRITICAL"} else 1
        longest_run = max(longest_run, run)
    assert longest_run >= 20, "bursts: one service logging errors many times in a row"


def test_patient_vitals_are_plausible_with_gaps_and_alarms() -> None:
    readings = [json_value(r) for r in records("patient-vitals", SAMPLE)]
    bounds = {
        "heart_rate": (30, 200),
        "spo2": (70, 100),
        "systolic_bp": (80, 220),
        "diastolic_bp": (40, 130),
        "temperature_c": (34, 42),
        "respiratory_rate": (6, 40),
    }

    for reading in readings:
        for vital, (low, high) in bounds.items():
            if vital in reading:
                assert low <= reading[vital] <= high, (vital, reading)
    omitted = sum(1 for reading in readings if not set(VITALS) <= set(reading))
    assert 0.02 * len(readings) < omitted < 0.12 * len(readings)
    alarming = [r for r in readings if r.get("heart_rate", 80) >= 130 or r.get("spo2", 98) < 90]
    assert 0 < len(alarming) < 0.1 * len(readings)
    assert 10 < len({r["patient_id"] for r in readings}) < 200


# --- defects ----------------------------------------------------------------------------------


@pytest.mark.parametrize("topic", TOPICS)
def test_kinds_follow_the_requested_ratios(topic: str) -> None:
    kinds = Counter(record.kind for record in records(topic, **RATIOS))

    for kind, ratio in (("malformed", 0.10), ("duplicate", 0.05), ("late", 0.05)):
        assert abs(kinds[kind] / SAMPLE - ratio) < 0.015, (kind, kinds)
    assert abs(kinds["valid"] / SAMPLE - 0.80) < 0.02


@pytest.mark.parametrize("topic", TOPICS)
def test_malformed_records_violate_the_contract_for_their_reason(topic: str) -> None:
    malformed = [r for r in records(topic, **RATIOS) if r.kind == "malformed"]

    assert [validate(topic, r.value) for r in malformed] == [r.reason for r in malformed]
    assert not any(conforms(topic, r.value) for r in malformed)
    assert len({r.reason for r in malformed}) >= 6, "a variety of violations"


def test_order_defects_include_the_named_violations() -> None:
    reasons = {r.reason for r in records("orders", **RATIOS)}

    assert {
        "invalid_json",
        "missing_field:customer_id",
        "quantity_not_positive",
        "unit_price_too_many_decimals",
        "bad_event_time",
    } <= reasons


@pytest.mark.parametrize("topic", TOPICS)
def test_duplicates_resend_an_earlier_record_exactly(topic: str) -> None:
    generated = records(topic, **RATIOS)
    seen: set[tuple[bytes | None, bytes]] = set()
    duplicates = 0
    for record in generated:
        if record.kind == "duplicate":
            duplicates += 1
            assert (record.key, record.value) in seen
        seen.add((record.key, record.value))
    assert duplicates > 0


@pytest.mark.parametrize("topic", TOPICS)
def test_late_records_are_minutes_older_than_their_slot(topic: str) -> None:
    late = 0
    for index, record in enumerate(records(topic, **RATIOS)):
        if record.kind not in ("late", "valid"):
            continue
        if topic == "error-logs":
            stamp = next(csv.reader(io.StringIO(record.value.decode(), newline="")))[0]
        else:
            stamp = json_value(record)["event_time"]
        behind = NOW + index * INTERVAL - as_time(stamp)
        if record.kind == "late":
            late += 1
            assert timedelta(minutes=1) <= behind <= timedelta(minutes=10), stamp
        elif topic != "payments":  # payments happen after their order, see the alignment test
            assert timedelta(0) <= behind <= timedelta(seconds=2), stamp
    assert late > 0


# --- determinism ------------------------------------------------------------------------------


@pytest.mark.parametrize("topic", TOPICS)
def test_same_seed_same_bytes_other_seed_other_bytes(topic: str) -> None:
    first = records(topic, 1000, **RATIOS)

    assert records(topic, 1000, **RATIOS) == first
    other = records(topic, 1000, seed=8, **RATIOS)
    assert sum(a.value != b.value for a, b in zip(first, other, strict=True)) > 900
    later = generate(topic, 1000, seed=7, now=NOW + timedelta(hours=1), **RATIOS)
    assert later != first, "event times follow `now`"


def test_output_does_not_depend_on_the_process() -> None:
    """Seeds must not go through hash(), which differs per process (PYTHONHASHSEED)."""
    script = (
        "import hashlib, sys\n"
        "from datetime import datetime, UTC\n"
        "from streamops.generator.records import generate, TOPICS\n"
        "digest = hashlib.sha256()\n"
        "for topic in TOPICS:\n"
        "    for r in generate(topic, 300, seed=7, now=datetime(2026, 11, 24, tzinfo=UTC),\n"
        "                      malformed_ratio=0.2, duplicate_ratio=0.1, late_ratio=0.1):\n"
        "        digest.update((r.key or b'-') + r.value)\n"
        "print(digest.hexdigest())\n"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(PROJECT_ROOT)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for hash_seed in ("1", "2")
    }
    local = hashlib.sha256()
    for topic in TOPICS:
        for r in generate(
            topic,
            300,
            seed=7,
            now=datetime(2026, 11, 24, tzinfo=UTC),
            malformed_ratio=0.2,
            duplicate_ratio=0.1,
            late_ratio=0.1,
        ):
            local.update((r.key or b"-") + r.value)
    assert digests == {local.hexdigest()}


# --- orders and payments ----------------------------------------------------------------------


def test_payment_n_pays_order_n_of_the_same_seed() -> None:
    orders = [json_value(r) for r in records("orders", 2000)]
    payments = [json_value(r) for r in records("payments", 2000)]

    assert [p["order_id"] for p in payments] == [o["order_id"] for o in orders]
    assert len({p["payment_id"] for p in payments}) == len(payments)
    matching = 0
    for order, payment in zip(orders, payments, strict=True):
        due = order["quantity"] * Decimal(str(order["unit_price"]))
        matching += Decimal(str(payment["amount"])) == due
        delay = as_time(payment["event_time"]) - as_time(order["event_time"])
        assert timedelta(seconds=2) <= delay <= timedelta(minutes=2), (order, payment)
    assert 0.9 * len(orders) < matching < len(orders), "mostly exact, with a few mismatches"
    statuses = Counter(p["status"] for p in payments)
    assert set(statuses) == {"authorized", "captured", "failed"}
    assert statuses["failed"] < 0.15 * len(payments)


def test_orders_and_payments_share_record_kinds_for_the_same_ratios() -> None:
    orders = records("orders", 2000, **RATIOS)
    payments = records("payments", 2000, **RATIOS)

    assert [r.kind for r in orders] == [r.kind for r in payments]
    for order, payment in zip(orders, payments, strict=True):
        if order.kind in ("valid", "late"):
            assert payment.key == order.key


# --- the validator on hand-written payloads ---------------------------------------------------

GOOD_ORDER = {
    "order_id": "o-1",
    "customer_id": "c-1",
    "product_id": "p-1",
    "quantity": 2,
    "unit_price": "19.99",
    "currency": "EUR",
    "event_time": "2026-11-24T14:03:05.120Z",
}


def order(**changes: Any) -> bytes:
    fields = {**GOOD_ORDER, **changes}
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("topic", "value", "expected"),
    [
        ("orders", order(), None),
        ("orders", order(currency=...), None),  # currency defaults to EUR
        ("orders", order(unit_price=19.9, event_time="2026-11-24T15:03:05+01:00"), None),
        ("orders", order(unit_price=0), None),
        ("orders", order(unit_price="1.999"), "unit_price_too_many_decimals"),
        ("orders", order(unit_price=1.005), "unit_price_too_many_decimals"),
        ("orders", order(unit_price="-1.00"), "unit_price_negative"),
        ("orders", order(unit_price="1e3"), "unit_price_not_decimal"),
        ("orders", order(quantity=0), "quantity_not_positive"),
        ("orders", order(quantity=True), "quantity_not_integer"),
        ("orders", order(customer_id=...), "missing_field:customer_id"),
        ("orders", order(customer_id=None), "missing_field:customer_id"),
        ("orders", order(order_id="x" * 65), "order_id_too_long"),
        ("orders", order(event_time="2026-11-24T14:03:05"), "bad_event_time"),
        ("orders", order(currency="EURO"), "currency_invalid"),
        ("orders", b'{"order_id": "o-1", "unit_price": NaN}', "invalid_json"),
        ("orders", b"[1, 2]", "not_a_json_object"),
        ("orders", b"\xff\xfe{}", "invalid_utf8"),
        (
            "payments",
            b'{"payment_id":"p","order_id":"o","amount":"5.00","status":"failed",'
            b'"event_time":"2026-11-24T14:03:05Z"}',
            None,
        ),
        (
            "payments",
            b'{"payment_id":"p","order_id":"o","amount":5,"status":"paid",'
            b'"event_time":"2026-11-24T14:03:05Z"}',
            "unknown_status",
        ),
        ("patient-vitals", b'{"patient_id":"p","event_time":"2026-11-24T14:03:05Z"}', None),
        (
            "patient-vitals",
            b'{"patient_id":"p","event_time":"2026-11-24T14:03:05Z","spo2":"97"}',
            "spo2_not_numeric",
        ),
        ("patient-vitals", b'{"event_time":"2026-11-24T14:03:05Z"}', "missing_field:patient_id"),
        ("error-logs", b'2026-11-24T14:03:05Z,fatal,auth,"a, ""quoted""\nline"', None),
        ("error-logs", b"2026-11-24T14:03:05Z,Warning,auth,", None),
        ("error-logs", b"2026-11-24T14:03:05Z,ERROR,auth,a,b", "csv_wrong_column_count"),
        ("error-logs", b"2026-11-24T14:03:05Z,NOTICE,auth,x", "unknown_level"),
        ("error-logs", b'2026-11-24T14:03:05Z,ERROR,auth,"open', "csv_bad_quoting"),
        ("error-logs", b"24/11/2026 14:03,ERROR,auth,x", "bad_timestamp"),
        ("error-logs", b"", "csv_wrong_line_count"),
    ],
)
def test_validate_reads_the_contract(topic: str, value: bytes, expected: str | None) -> None:
    assert validate(topic, value) == expected
    assert conforms(topic, value) == (expected is None)


# --- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"topic": "clicks"}, "Unknown topic 'clicks'; use one of: orders, payments"),
        ({"malformed_ratio": 1.5}, "malformed_ratio is 1.5"),
        ({"late_ratio": -0.1}, "late_ratio is -0.1"),
        ({"malformed_ratio": 0.6, "duplicate_ratio": 0.6}, "sum to at most 1"),
        ({"seed": -1}, "seed is -1"),
        ({"now": datetime(2026, 11, 24)}, "naive"),
    ],
)
def test_factory_rejects_bad_options(options: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"topic": "orders", "seed": 1, "now": NOW, **options}
    with pytest.raises(ValueError, match=re.escape(message)):
        RecordFactory(**arguments)


def test_validate_rejects_an_unknown_topic() -> None:
    with pytest.raises(ValueError, match="Unknown topic 'alerts'"):
        validate("alerts", b"{}")


# --- identifier lengths: the validator and the jobs draw the line at the same character ----------

# (topic, field, the constant in records and in the transform module, that module)
ID_LIMITS = [
    ("orders", "order_id", "ORDER_ID_MAX_LENGTH", "orders"),
    ("orders", "customer_id", "CUSTOMER_ID_MAX_LENGTH", "orders"),
    ("orders", "product_id", "PRODUCT_ID_MAX_LENGTH", "orders"),
    ("payments", "payment_id", "PAYMENT_ID_MAX_LENGTH", "payments"),
    ("payments", "order_id", "ORDER_ID_MAX_LENGTH", "orders"),
    ("patient-vitals", "patient_id", "PATIENT_ID_MAX_LENGTH", "vitals"),
    ("patient-vitals", "device_id", "DEVICE_ID_MAX_LENGTH", "vitals"),
]
# The contract's own limit; the rest are the columns' widths, which it does not set.
CONTRACT_LIMITS = {("orders", "order_id"), ("payments", "order_id")}


@pytest.mark.parametrize(("topic", "field", "constant", "module"), ID_LIMITS)
def test_identifier_limits_match_the_jobs(
    topic: str, field: str, constant: str, module: str
) -> None:
    """A record the job quarantines as ``<field>_too_long`` is one ``validate(...,
    column_limits=True)`` rejects too: the integration tests' ground truth and the chaos truth
    come from it (a 1 MB customer_id from the chaos run once made them expect a stored order)."""
    import importlib

    from streamops.generator import records

    limit = getattr(records, constant)
    transform = importlib.import_module(f"spark_jobs.transforms.{module}")
    assert getattr(transform, constant) == limit

    valid = next(
        r for r in generate(topic, 50, seed=3, now=NOW) if validate(topic, r.value) is None
    )
    fields = json.loads(valid.value)
    at_limit = json.dumps({**fields, field: "é" * limit}).encode()
    beyond = json.dumps({**fields, field: "é" * (limit + 1)}).encode()
    assert validate(topic, at_limit, column_limits=True) is None
    assert validate(topic, beyond, column_limits=True) == f"{field}_too_long"
    contract = validate(topic, beyond)
    assert contract == (f"{field}_too_long" if (topic, field) in CONTRACT_LIMITS else None)


def test_service_limit_matches_the_error_logs_job() -> None:
    from spark_jobs.transforms import error_logs
    from streamops.generator import records

    assert error_logs.SERVICE_MAX_LENGTH == records.SERVICE_MAX_LENGTH
    line = "2026-11-24T14:00:00Z,ERROR,{service},disk full\r\n"
    at_limit = line.format(service="s" * records.SERVICE_MAX_LENGTH).encode()
    beyond = line.format(service="s" * (records.SERVICE_MAX_LENGTH + 1)).encode()
    assert validate("error-logs", at_limit, column_limits=True) is None
    assert validate("error-logs", beyond, column_limits=True) == "service_too_long"
    assert validate("error-logs", beyond) is None


def test_column_limits_keep_the_jobs_order_of_reasons() -> None:
    """Two faults: the first rule in the job's order names the record (customer_id before
    quantity), so the chaos truth's reasons are the job's."""
    valid = next(
        r for r in generate("orders", 50, seed=3, now=NOW) if validate("orders", r.value) is None
    )
    fields = json.loads(valid.value)
    both = json.dumps({**fields, "customer_id": "c" * 1_000_000, "quantity": 0}).encode()
    assert validate("orders", both, column_limits=True) == "customer_id_too_long"
    assert validate("orders", both) == "quantity_not_positive"
