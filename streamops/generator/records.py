"""Deterministic test records for the contract's input topics (shared/CONTRACT.md).

Pure: no I/O, no clock, no global random state. A :class:`RecordFactory` turns ``(topic, seed,
ratios, now, interval)`` into the same byte stream every time, so a failing pipeline run can be
replayed exactly, and :func:`validate` says whether a payload conforms to the contract.

Record ``n`` of every topic belongs to *slot* ``n``: its nominal time is ``now + n * interval`` and
it draws the ``n``-th base entity of its topic even when the slot ends up a duplicate. Two things
follow. Payment ``n`` pays order ``n`` of the same seed, so ``generate orders --seed 7`` and
``generate payments --seed 7`` line up. And the kind of each slot (valid, malformed, duplicate,
late) comes from a stream shared by all topics, so with equal ratios a duplicated order is paid by
a duplicated payment instead of leaving an orphan.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from bisect import bisect
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from itertools import accumulate
from typing import Any, ClassVar, Generic, Literal, NamedTuple, TypeVar

from streamops.contract.topics import INPUT_TOPICS

TOPICS: tuple[str, ...] = INPUT_TOPICS
RecordKind = Literal["valid", "malformed", "duplicate", "late"]
RECORD_KINDS: tuple[RecordKind, ...] = ("valid", "malformed", "duplicate", "late")

# Slot spacing when the caller does not say: ten records per second of event time.
DEFAULT_INTERVAL = timedelta(milliseconds=100)
# Late records are this much older than their slot: past a typical watermark of a minute or two.
LATE_BY_SECONDS = (60.0, 600.0)
# Payments come this long after their order at most (see _Payments.draft).
PAYMENT_DELAY_MAX_MS = 120_000
# Duplicates re-send one of the most recent records, like a producer retry or a replayed batch.
DUPLICATE_HISTORY = 1000
# How far an event time may run ahead of the record's Kafka timestamp (the receiving clock) before
# the record is rejected as `event_time_in_future`; the jobs' Settings.max_clock_skew_seconds.
DEFAULT_MAX_CLOCK_SKEW = timedelta(seconds=300)
EVENT_TIME_IN_FUTURE = "event_time_in_future"

LOG_LEVELS = frozenset({"DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL", "FATAL"})
ERROR_LOG_COLUMNS = ("timestamp", "level", "service", "message")
VITAL_SIGNS = (
    "heart_rate",
    "spo2",
    "systolic_bp",
    "diastolic_bp",
    "temperature_c",
    "respiratory_rate",
)
PAYMENT_STATUSES = frozenset({"authorized", "captured", "failed"})

Fields = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AnomalyLabel:
    """Ground truth of an abnormal reading, kept beside the record and never sent (the contract
    has no such field): ``kind`` is ``episode`` (the generator's own clinical episodes, outside the
    clinical range) or one of :data:`ANOMALY_KINDS` (injected with ``anomaly_ratio``); ``vitals``
    the signs it changed."""

    kind: str
    vitals: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GeneratedRecord:
    """One Kafka message: ``reason`` names the contract violation of a malformed record;
    ``anomaly`` labels an abnormal vitals reading (ground truth for the anomaly benchmark)."""

    key: bytes | None
    value: bytes
    kind: RecordKind
    reason: str | None = None
    anomaly: AnomalyLabel | None = None


# --- option checks (shared with the producer's validate_options) ------------------------------


def check_topic(topic: str) -> None:
    if topic not in TOPICS:
        raise ValueError(f"Unknown topic {topic!r}; use one of: {', '.join(TOPICS)}.")


def check_ratios(malformed_ratio: float, duplicate_ratio: float, late_ratio: float) -> None:
    ratios = {
        "malformed_ratio": malformed_ratio,
        "duplicate_ratio": duplicate_ratio,
        "late_ratio": late_ratio,
    }
    for name, ratio in ratios.items():
        # `not 0 <= x <= 1` is also true for NaN, which a plain `x < 0 or x > 1` would let through.
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"{name} is {ratio}; give a fraction between 0 and 1.")
    total = sum(ratios.values())
    if total > 1.0 + 1e-9:
        raise ValueError(
            f"malformed_ratio + duplicate_ratio + late_ratio is {total:g}; "
            "lower them so they sum to at most 1."
        )


def check_anomaly_ratio(topic: str, anomaly_ratio: float) -> None:
    if not 0.0 <= anomaly_ratio <= 1.0:
        raise ValueError(f"anomaly_ratio is {anomaly_ratio}; give a fraction between 0 and 1.")
    if anomaly_ratio > 0 and topic != "patient-vitals":
        raise ValueError(f"anomaly_ratio applies to patient-vitals only, not to {topic!r}.")


def check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed is {seed!r}; give a whole number ≥ 0.")


# --- shared helpers ---------------------------------------------------------------------------


def _stream(seed: int, name: str) -> random.Random:
    """An independent random stream per purpose: adding draws to one never shifts another.

    String seeds are hashed with SHA-512 by `random`, so this is stable across processes and
    Python versions (unlike `hash()`).
    """
    return random.Random(f"streamops/{name}/{seed}")


_PLUS_ONE = timezone(timedelta(hours=1))


def format_event_time(moment: datetime, rng: random.Random) -> str:
    """ISO-8601 with milliseconds, in the two forms the contract allows: ``Z`` or ``+01:00``."""
    if rng.random() < 0.7:
        return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
    return moment.astimezone(_PLUS_ONE).isoformat(timespec="milliseconds")


def parse_event_time(text: object) -> datetime | None:
    """The instant of an ISO-8601 string with an offset; None for anything else."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _money_text(amount: Decimal) -> str:
    return str(amount.quantize(Decimal("0.01")))


def _money_on_wire(text: str, rng: random.Random, as_string_share: float) -> str | float:
    # Producers in the wild send both. A float here only carries the JSON text: repr() of a float
    # parsed from a 2-decimal string prints that same string, so the wire value stays exact.
    return text if rng.random() < as_string_share else float(text)


def _int_between(rng: random.Random, low: int, high: int) -> int:
    """Like rng.randint, at a third of its cost (it is on the hot path of every record)."""
    return low + int(rng.random() * (high - low + 1))


class _Weighted(Generic[T]):
    """A weighted choice whose cumulative weights are computed once, not on every draw."""

    def __init__(self, weighted: Sequence[tuple[T, float]]) -> None:
        self._items = [item for item, _ in weighted]
        self._cumulative = list(accumulate(weight for _, weight in weighted))
        self._total = self._cumulative[-1]

    def pick(self, rng: random.Random) -> T:
        # What rng.choices(cum_weights=...) does, minus its per-call setup: this is the hot path.
        return self._items[bisect(self._cumulative, rng.random() * self._total)]


_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _encode_json(fields: Fields) -> bytes:
    return _JSON_ENCODER.encode(fields).encode()


def _encode_csv_row(values: Sequence[str]) -> bytes:
    buffer = io.StringIO()
    # One Kafka message is one CSV record, so no line terminator; QUOTE_MINIMAL is RFC 4180.
    csv.writer(buffer, lineterminator="").writerow(values)
    return buffer.getvalue().encode()


# --- contract checks --------------------------------------------------------------------------

_Check = Callable[[str, Any], str | None]


class _Rule(NamedTuple):
    name: str
    check: _Check
    required: bool = True


_DECIMAL_STRING = re.compile(r"-?\d+(\.\d+)?")
_CENT = Decimal("0.01")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | Decimal) and not isinstance(value, bool)


def _text(max_length: int | None = None) -> _Check:
    def check(name: str, value: Any) -> str | None:
        if not isinstance(value, str):
            return f"{name}_not_string"
        if not value.strip():
            return f"{name}_empty"
        if max_length is not None and len(value) > max_length:
            return f"{name}_too_long"
        return None

    return check


def _positive_integer(name: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{name}_not_integer"
    return None if value >= 1 else f"{name}_not_positive"


def _money(name: str, value: Any) -> str | None:
    if isinstance(value, str):
        if not _DECIMAL_STRING.fullmatch(value):
            return f"{name}_not_decimal"
        value = Decimal(value)
    elif not _is_number(value):
        return f"{name}_not_decimal"
    amount = Decimal(value)
    if not amount.is_finite():
        return f"{name}_not_decimal"
    if amount < 0:
        return f"{name}_negative"
    try:
        exact_cents = amount == amount.quantize(_CENT)
    except InvalidOperation:  # too many digits to quantize: certainly not 2 decimals
        exact_cents = False
    return None if exact_cents else f"{name}_too_many_decimals"


def _currency(name: str, value: Any) -> str | None:
    ok = isinstance(value, str) and len(value) == 3 and value.isascii() and value.isalpha()
    return None if ok else f"{name}_invalid"


def _timestamp(name: str, value: Any) -> str | None:
    return None if parse_event_time(value) is not None else f"bad_{name}"


def _one_of(allowed: frozenset[str], *, ignore_case: bool = False) -> _Check:
    def check(name: str, value: Any) -> str | None:
        if isinstance(value, str) and (value.upper() if ignore_case else value) in allowed:
            return None
        return f"unknown_{name}"

    return check


def _number(name: str, value: Any) -> str | None:
    return None if _is_number(value) else f"{name}_not_numeric"


def _anything(name: str, value: Any) -> str | None:
    return None


def _check_fields(rules: Sequence[_Rule], record: Mapping[str, Any]) -> str | None:
    for rule in rules:
        value = record.get(rule.name)
        if value is None:  # JSON null counts as omitted
            if rule.required:
                return f"missing_field:{rule.name}"
            continue
        reason = rule.check(rule.name, value)
        if reason is not None:
            return reason
    return None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # json.loads would otherwise accept NaN and Infinity


def _validate_json(rules: Sequence[_Rule], value: bytes) -> str | None:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8"
    try:
        record = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except ValueError:
        return "invalid_json"
    if not isinstance(record, dict):
        return "not_a_json_object"
    return _check_fields(rules, record)


def _validate_csv(rules: Sequence[_Rule], value: bytes) -> str | None:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8"
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error:
        return "csv_bad_quoting"
    if len(rows) != 1:
        return "csv_wrong_line_count"
    if len(rows[0]) != len(rules):
        return "csv_wrong_column_count"
    return _check_fields(rules, dict(zip((rule.name for rule in rules), rows[0], strict=True)))


# The longest text each identifier may be, in characters. order_id's 64 is the contract's; the
# others are the widths of the MariaDB columns the jobs write to, beyond the contract: the jobs
# reject longer ones with ``<field>_too_long`` (``validate(..., column_limits=True)`` does too;
# tests/unit/test_generator_records.py checks the transforms use the same numbers).
ORDER_ID_MAX_LENGTH = 64
CUSTOMER_ID_MAX_LENGTH = 128
PRODUCT_ID_MAX_LENGTH = 128
PAYMENT_ID_MAX_LENGTH = 64
PATIENT_ID_MAX_LENGTH = 64
DEVICE_ID_MAX_LENGTH = 128
SERVICE_MAX_LENGTH = 128

_ORDER_RULES = (
    _Rule("order_id", _text(max_length=ORDER_ID_MAX_LENGTH)),
    _Rule("customer_id", _text()),
    _Rule("product_id", _text()),
    _Rule("quantity", _positive_integer),
    _Rule("unit_price", _money),
    _Rule("currency", _currency, required=False),  # the contract defaults it to EUR
    _Rule("event_time", _timestamp),
)
_PAYMENT_RULES = (
    _Rule("payment_id", _text()),
    _Rule("order_id", _text(max_length=ORDER_ID_MAX_LENGTH)),
    _Rule("amount", _money),
    _Rule("status", _one_of(PAYMENT_STATUSES)),
    _Rule("event_time", _timestamp),
)
_VITALS_RULES = (
    _Rule("patient_id", _text()),
    _Rule("device_id", _text(), required=False),
    _Rule("event_time", _timestamp),
    *(_Rule(vital, _number, required=False) for vital in VITAL_SIGNS),
)
_ERROR_LOG_RULES = (
    _Rule("timestamp", _timestamp),
    _Rule("level", _one_of(LOG_LEVELS, ignore_case=True)),
    _Rule("service", _text()),
    _Rule("message", _anything),
)
assert tuple(rule.name for rule in _ERROR_LOG_RULES) == ERROR_LOG_COLUMNS

# topic -> {field: its column's width}: the limits the jobs add to the contract's rules.
_COLUMN_LIMITS: dict[str, dict[str, int]] = {
    "orders": {"customer_id": CUSTOMER_ID_MAX_LENGTH, "product_id": PRODUCT_ID_MAX_LENGTH},
    "payments": {"payment_id": PAYMENT_ID_MAX_LENGTH},
    "patient-vitals": {"patient_id": PATIENT_ID_MAX_LENGTH, "device_id": DEVICE_ID_MAX_LENGTH},
    "error-logs": {"service": SERVICE_MAX_LENGTH},
}


def _with_column_limits(topic: str, rules: tuple[_Rule, ...]) -> tuple[_Rule, ...]:
    """``rules`` with each limited field's text check bounded, in the same order (so the first
    failing rule, the reason, is the job's)."""
    limits = _COLUMN_LIMITS[topic]
    return tuple(
        _Rule(rule.name, _text(max_length=limits[rule.name]), rule.required)
        if rule.name in limits
        else rule
        for rule in rules
    )


# --- contract violations (malformed records) --------------------------------------------------

# A corruption takes a fresh copy of a valid record's fields and returns either new fields (still
# encoded by the topic) or raw bytes, for violations the encoder cannot produce.
_Corrupt = Callable[[Fields, random.Random], Fields | bytes]


class _Defect(NamedTuple):
    reason: str
    corrupt: _Corrupt


def _missing(name: str) -> _Defect:
    return _Defect(
        f"missing_field:{name}", lambda f, rng: {k: v for k, v in f.items() if k != name}
    )


def _replace(name: str, reason: str, make: Callable[[Any, random.Random], Any]) -> _Defect:
    return _Defect(reason, lambda f, rng: {**f, name: make(f.get(name), rng)})


def _choice(*values: Any) -> Callable[[Any, random.Random], Any]:
    return lambda current, rng: rng.choice(values)


def _garbled_time(current: str, rng: random.Random) -> Any:
    moment = parse_event_time(current) or datetime(2026, 1, 1, tzinfo=UTC)
    forms = (
        moment.strftime("%d/%m/%Y %H:%M:%S"),  # locale format
        moment.replace(tzinfo=None).isoformat(timespec="milliseconds"),  # offset dropped
        int(moment.timestamp() * 1000),  # epoch milliseconds
        "yesterday",
        "",
    )
    return forms[rng.randrange(len(forms))]


def _truncated_json(fields: Fields, rng: random.Random) -> bytes:
    encoded = _encode_json(fields)  # a proper prefix of an object never parses: the `}` is gone
    return encoded[: rng.randint(1, len(encoded) - 1)]


def _python_repr(fields: Fields, rng: random.Random) -> bytes:
    return repr(fields).encode()  # the classic str(dict) bug: single quotes, None, ...


_JSON_DEFECTS = (
    _Defect("invalid_json", _truncated_json),
    _Defect("invalid_json", _python_repr),
    _Defect("not_a_json_object", lambda f, rng: json.dumps([f]).encode()),
    _replace("event_time", "bad_event_time", _garbled_time),
    _missing("event_time"),
)


def _id_too_long(current: str, rng: random.Random) -> str:
    return current + "-" + "x" * rng.randint(60, 120)


def _unit_price_fraction(current: Any, rng: random.Random) -> Any:
    price = Decimal(str(current)) + Decimal(rng.randint(1, 9)) / 1000
    return str(price) if rng.random() < 0.5 else float(price)


_ORDER_DEFECTS = (
    *_JSON_DEFECTS,
    *(_missing(name) for name in ("order_id", "customer_id", "product_id")),
    *(_missing(name) for name in ("quantity", "unit_price")),
    _replace("order_id", "order_id_too_long", _id_too_long),
    _replace("order_id", "order_id_empty", _choice("", "   ")),
    _replace("quantity", "quantity_not_positive", _choice(0, -1, -3)),
    _replace("quantity", "quantity_not_integer", _choice("2", "two", 1.5)),
    _replace("unit_price", "unit_price_negative", lambda p, rng: -abs(float(p))),
    _replace("unit_price", "unit_price_too_many_decimals", _unit_price_fraction),
    _replace("unit_price", "unit_price_not_decimal", _choice("12,50", "€19.99", "free", True)),
    _replace("currency", "currency_invalid", _choice("EURO", "€", "eu", "")),
)

_PAYMENT_DEFECTS = (
    *_JSON_DEFECTS,
    *(_missing(name) for name in ("payment_id", "order_id", "amount", "status")),
    _replace("status", "unknown_status", _choice("pending", "refunded", "CAPTURED", "ok")),
    _replace("amount", "amount_not_decimal", _choice("n/a", "12,50", "", False)),
    _replace("amount", "amount_negative", lambda a, rng: "-" + str(a).lstrip("-")),
)

_VITALS_DEFECTS = (
    *_JSON_DEFECTS,
    _missing("patient_id"),
    _replace("patient_id", "patient_id_empty", _choice("", " ")),
    *(_replace(v, f"{v}_not_numeric", _choice("N/A", "--", "", "high")) for v in VITAL_SIGNS),
)


def _without_service(fields: Fields, rng: random.Random) -> bytes:
    return _encode_csv_row([fields["timestamp"], fields["level"], fields["message"]])


def _extra_column(fields: Fields, rng: random.Random) -> bytes:
    return _encode_csv_row([*fields.values(), f"host=web-{rng.randint(1, 9)}"])


def _unterminated_quote(fields: Fields, rng: random.Random) -> bytes:
    message = fields["message"].replace('"', "'")
    return f'{fields["timestamp"]},{fields["level"]},{fields["service"]},"{message}'.encode()


def _latin1(fields: Fields, rng: random.Random) -> bytes:
    # A Windows service writing cp1252: valid text to it, invalid UTF-8 to everyone else.
    row = [*list(fields.values())[:3], f"Échec de connexion à {fields['service']}"]
    return _encode_csv_row(row).decode().encode("cp1252")


_ERROR_LOG_DEFECTS = (
    _Defect("csv_wrong_column_count", _without_service),
    _Defect("csv_wrong_column_count", _extra_column),
    _Defect("csv_bad_quoting", _unterminated_quote),
    _Defect("invalid_utf8", _latin1),
    _replace("timestamp", "bad_timestamp", _garbled_time),
    _replace("level", "unknown_level", _choice("NOTICE", "VERBOSE", "SEVERE", "TRACE", "")),
    _replace("service", "service_empty", _choice("", " ")),
)


# --- topic models: valid records ---------------------------------------------------------------


class _Model:
    """What the factory needs from a topic: valid fields per slot, encoding, and its defects."""

    key_field: str
    time_field: str
    rules: tuple[_Rule, ...]
    defects: tuple[_Defect, ...]
    encode: Callable[[Fields], bytes] = staticmethod(_encode_json)
    # Share of slots given an injected anomaly; only topics that know how to (patient-vitals).
    anomaly_ratio: float = 0.0

    def __init__(self, seed: int) -> None:
        self._seed = seed
        # The label of the fields the last draft() returned.
        self.label: AnomalyLabel | None = None

    def draft(self, index: int, slot_time: datetime) -> Fields:
        raise NotImplementedError

    @classmethod
    def validate(cls, value: bytes, rules: tuple[_Rule, ...] | None = None) -> str | None:
        return _validate_json(cls.rules if rules is None else rules, value)

    @classmethod
    def event_time(cls, value: bytes) -> datetime | None:
        """The event time of a record ``validate`` accepted."""
        return parse_event_time(json.loads(value).get(cls.time_field))


class Product(NamedTuple):
    product_id: str
    name: str
    unit_price: Decimal
    popularity: float

    @property
    def unit_price_text(self) -> str:
        return _money_text(self.unit_price)


CATALOGUE: tuple[Product, ...] = tuple(
    Product(product_id, name, Decimal(price), popularity)
    for product_id, name, price, popularity in (
        ("SKU-10001", "USB-C charging cable, 1 m", "9.99", 14),
        ("SKU-10002", "Wireless mouse", "24.90", 9),
        ("SKU-10003", "Mechanical keyboard", "89.00", 4),
        ("SKU-10004", '27" 4K monitor', "329.99", 1.5),
        ("SKU-10005", "Noise-cancelling headphones", "199.00", 2),
        ("SKU-10006", "Laptop stand, aluminium", "39.95", 5),
        ("SKU-10007", "HDMI 2.1 cable, 2 m", "14.49", 10),
        ("SKU-10008", "Webcam 1080p", "59.99", 3.5),
        ("SKU-10009", "USB hub, 7 ports", "29.99", 6),
        ("SKU-10010", "Portable SSD 1 TB", "119.00", 2.5),
        ("SKU-20001", "Espresso beans, 1 kg", "18.50", 12),
        ("SKU-20002", "Ceramic mug", "7.95", 11),
        ("SKU-20003", "French press, 1 l", "27.00", 3),
        ("SKU-20004", "Burr grinder", "149.00", 1),
        ("SKU-30001", "Notebook A5, dotted", "4.99", 15),
        ("SKU-30002", "Gel pens, pack of 10", "6.49", 13),
        ("SKU-30003", "Desk lamp, LED", "34.90", 4),
        ("SKU-30004", "Office chair", "249.00", 0.8),
        ("SKU-40001", "Running socks, 3 pairs", "12.99", 8),
        ("SKU-40002", "Water bottle, 750 ml", "19.90", 7),
    )
)
_PRODUCTS = _Weighted([(product, product.popularity) for product in CATALOGUE])
_CURRENCIES = _Weighted([("EUR", 80), ("USD", 12), ("GBP", 8)])
_QUANTITIES = _Weighted(list(zip(range(1, 11), (40, 24, 12, 8, 5, 4, 3, 2, 1, 1), strict=True)))


class _Order(NamedTuple):
    order_id: str
    customer_id: str
    product: Product
    quantity: int
    currency: str
    event_time: datetime

    @property
    def amount(self) -> Decimal:
        return self.quantity * self.product.unit_price


class _OrderSource:
    """The valid base orders of a seed, in slot order; payments replay it to pay the same orders."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._rng = _stream(seed, "orders")

    def next(self, index: int, slot_time: datetime) -> _Order:
        rng = self._rng
        # A few regulars place most orders, like any shop's customer base.
        customer = (
            _int_between(rng, 1, 300) if rng.random() < 0.6 else _int_between(rng, 301, 20_000)
        )
        return _Order(
            order_id=f"ord-{self._seed}-{index:07d}",
            customer_id=f"cust-{customer:05d}",
            product=_PRODUCTS.pick(rng),
            quantity=_QUANTITIES.pick(rng),
            currency=_CURRENCIES.pick(rng),
            # The event happened a little before it was sent.
            event_time=slot_time - timedelta(milliseconds=_int_between(rng, 0, 800)),
        )


class _OrderStream(_Model):
    """A topic keyed by order id whose records come from the seed's orders (orders and their
    payments draw the same orders, so the joins find their pairs)."""

    key_field = "order_id"
    time_field = "event_time"
    # The name of this topic's own random stream (what it draws beyond the order).
    stream_name: ClassVar[str]

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self._orders = _OrderSource(seed)
        self._rng = _stream(seed, self.stream_name)


class _Orders(_OrderStream):
    rules = _ORDER_RULES
    defects = _ORDER_DEFECTS
    stream_name = "orders/wire"

    def draft(self, index: int, slot_time: datetime) -> Fields:
        order = self._orders.next(index, slot_time)
        return {
            "order_id": order.order_id,
            "customer_id": order.customer_id,
            "product_id": order.product.product_id,
            "quantity": order.quantity,
            "unit_price": _money_on_wire(order.product.unit_price_text, self._rng, 0.3),
            "currency": order.currency,
            "event_time": format_event_time(order.event_time, self._rng),
        }


_STATUSES = _Weighted([("captured", 80), ("authorized", 14), ("failed", 6)])


class _Payments(_OrderStream):
    rules = _PAYMENT_RULES
    defects = _PAYMENT_DEFECTS
    stream_name = "payments"

    def draft(self, index: int, slot_time: datetime) -> Fields:
        rng = self._rng
        order = self._orders.next(index, slot_time)
        status = _STATUSES.pick(rng)
        amount = order.amount
        if rng.random() < 0.03:  # the shop and the payment provider disagree on the amount
            cents = rng.choice((-1, 1)) * rng.randint(1, 500)
            amount = max(_CENT, amount + Decimal(cents) / 100)
        # Most customers pay within seconds, some come back a minute or two later. The spread is
        # also how far out of event-time order the payments stream is: keep it at 2 minutes.
        pay_after_ms = (
            _int_between(rng, 2_000, 20_000)
            if rng.random() < 0.85
            else _int_between(rng, 20_000, PAYMENT_DELAY_MAX_MS)
        )
        return {
            "payment_id": f"pay-{self._seed}-{index:07d}",
            "order_id": order.order_id,
            "amount": _money_on_wire(_money_text(amount), rng, 0.4),
            "status": status,
            "event_time": format_event_time(
                order.event_time + timedelta(milliseconds=pay_after_ms), rng
            ),
        }


_SERVICES = _Weighted(
    [
        ("api-gateway", 20),
        ("checkout", 16),
        ("payments-api", 14),
        ("inventory", 12),
        ("auth", 12),
        ("search", 10),
        ("shipping", 8),
        ("notifications", 8),
    ]
)
_DEPENDENCIES = ("db-primary:5432", "redis-cache:6379", "stripe-gateway", "kafka:9092", "s3-eu")

# Messages by canonical level. Several carry commas, double quotes and newlines on purpose: they
# are what breaks naive CSV handling downstream.
_MESSAGES: dict[str, tuple[str, ...]] = {
    "DEBUG": (
        'Resolved config key "{key}" = "{value}"',
        "SQL: SELECT id, name, price FROM products WHERE id IN ({ids})",
        "Cache lookup for cust-{customer:05d}: hit={hit}",
    ),
    "INFO": (
        "GET /api/v1/products/{sku} 200 in {ms} ms",
        "Order {order} accepted, {items} items, total {amount} EUR",
        "User cust-{customer:05d} signed in from 10.{a}.{b}.{c}",
        "Cache warmed: {count} keys, hit ratio {ratio}",
    ),
    "WARN": (
        "Slow query took {ms} ms: "
        "\"SELECT * FROM orders WHERE customer_id = 'cust-{customer:05d}'\"",
        "Retrying call to {dependency} (attempt {attempt}/5), backoff {ms} ms",
        'Deprecated header "X-Api-Version" sent by client "{client}"',
    ),
    "ERROR": (
        'Payment declined for order {order}: code="card_declined", reason="insufficient funds"',
        "Timeout after {ms} ms calling {dependency}, circuit breaker now half-open",
        "Unhandled exception in POST /api/v1/checkout\nTraceback (most recent call last):\n"
        '  File "app/handlers.py", line {line}, in checkout\n'
        "    cart = carts[cart_id]\nKeyError: 'cart-{customer:05d}'",
    ),
    "CRITICAL": (
        "Database connection pool exhausted (max={count}), rejecting requests",
        "Out of memory, worker {pid} killed\n  heap_used={ms}MB, heap_max={count}MB",
    ),
}
# Incidents: one service logging the same failure many times in a few seconds.
_INCIDENTS = (
    ("ERROR", "Connection refused: {dependency}, retrying in {attempt} s"),
    ("ERROR", 'Upstream {dependency} returned 503 "Service Unavailable", request {order} failed'),
    ("CRITICAL", "Health check failed for {dependency}: timeout after {ms} ms, marking DOWN"),
)
_LEVELS = _Weighted([("INFO", 58), ("DEBUG", 12), ("WARN", 16), ("ERROR", 11), ("CRITICAL", 3)])
# How each canonical level may be spelled on the wire (the contract is case-insensitive).
_SPELLINGS = {
    "DEBUG": _Weighted([("DEBUG", 85), ("debug", 15)]),
    "INFO": _Weighted([("INFO", 85), ("info", 10), ("Info", 5)]),
    "WARN": _Weighted([("WARN", 50), ("WARNING", 35), ("warning", 10), ("Warn", 5)]),
    "ERROR": _Weighted([("ERROR", 85), ("error", 10), ("Error", 5)]),
    "CRITICAL": _Weighted([("CRITICAL", 55), ("FATAL", 35), ("fatal", 10)]),
}


@dataclass(slots=True)
class _Burst:
    service: str
    level: str
    template: str
    remaining: int


class _ErrorLogs(_Model):
    key_field = "service"  # keeps one service's lines in order within a partition
    time_field = "timestamp"
    rules = _ERROR_LOG_RULES
    defects = _ERROR_LOG_DEFECTS
    encode = staticmethod(lambda fields: _encode_csv_row([fields[c] for c in ERROR_LOG_COLUMNS]))

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self._rng = _stream(seed, "error-logs")
        self._burst: _Burst | None = None

    @classmethod
    def validate(cls, value: bytes, rules: tuple[_Rule, ...] | None = None) -> str | None:
        return _validate_csv(cls.rules if rules is None else rules, value)

    @classmethod
    def event_time(cls, value: bytes) -> datetime | None:
        row = next(csv.reader(io.StringIO(value.decode("utf-8"), newline=""), strict=True))
        return parse_event_time(row[ERROR_LOG_COLUMNS.index(cls.time_field)])

    def draft(self, index: int, slot_time: datetime) -> Fields:
        rng = self._rng
        if self._burst is None and rng.random() < 0.008:
            level, template = rng.choice(_INCIDENTS)
            self._burst = _Burst(_SERVICES.pick(rng), level, template, rng.randint(20, 120))
        if self._burst is not None:
            service, level, template = self._burst.service, self._burst.level, self._burst.template
            self._burst.remaining -= 1
            if self._burst.remaining == 0:
                self._burst = None
        else:
            service, level = _SERVICES.pick(rng), _LEVELS.pick(rng)
            template = rng.choice(_MESSAGES[level])
        return {
            # Logs are shipped a moment after the exception happened.
            "timestamp": format_event_time(
                slot_time - timedelta(milliseconds=rng.randint(0, 2000)), rng
            ),
            "level": _SPELLINGS[level].pick(rng),
            "service": service,
            "message": template.format_map(self._placeholders(index)),
        }

    def _placeholders(self, index: int) -> dict[str, Any]:
        rng = self._rng
        return {
            "key": rng.choice(("checkout.timeout", "feature.new_cart", "db.pool.size")),
            "value": rng.choice(("30s", "true", "20, max 50")),
            "ids": ", ".join(str(rng.randint(10_000, 40_000)) for _ in range(rng.randint(1, 4))),
            "customer": rng.randint(1, 20_000),
            "hit": rng.choice(("true", "false")),
            "sku": rng.choice(CATALOGUE).product_id,
            "ms": rng.randint(3, 9_000),
            "order": f"ord-{self._seed}-{rng.randint(0, max(index, 1)):07d}",
            "items": rng.randint(1, 10),
            "amount": _money_text(Decimal(rng.randint(499, 90_000)) / 100),
            "a": rng.randint(0, 255),
            "b": rng.randint(0, 255),
            "c": rng.randint(1, 254),
            "count": rng.randint(16, 4096),
            "ratio": f"{rng.uniform(0.5, 0.99):.2f}",
            "dependency": rng.choice(_DEPENDENCIES),
            "attempt": rng.randint(1, 5),
            "client": rng.choice(("ios/5.2.1", "android/5.1.0", "web, legacy")),
            "line": rng.randint(20, 400),
            "pid": rng.randint(1000, 65_000),
        }


class _VitalSpec(NamedTuple):
    baseline: tuple[float, float]  # range a patient's resting value is drawn from
    noise: float  # reading-to-reading standard deviation
    plausible: tuple[float, float]  # clamp for normal readings
    decimals: int


_VITALS: dict[str, _VitalSpec] = {
    "heart_rate": _VitalSpec((58, 92), 3.0, (45, 120), 0),
    "spo2": _VitalSpec((95, 99), 0.8, (92, 100), 0),
    "systolic_bp": _VitalSpec((105, 138), 5.0, (90, 160), 0),
    "diastolic_bp": _VitalSpec((62, 86), 4.0, (55, 100), 0),
    "temperature_c": _VitalSpec((36.3, 37.2), 0.15, (35.8, 38.0), 1),
    "respiratory_rate": _VitalSpec((12, 18), 1.5, (10, 22), 0),
}
# Clinical episodes that should raise vitals alerts: which vital, and the abnormal range it takes.
_EPISODES: tuple[tuple[str, tuple[float, float]], ...] = (
    ("heart_rate", (130, 175)),  # tachycardia
    ("heart_rate", (35, 44)),  # bradycardia
    ("spo2", (80, 89)),  # hypoxaemia
    ("temperature_c", (38.5, 40.3)),  # fever
    ("systolic_bp", (170, 205)),  # hypertensive
    ("respiratory_rate", (25, 36)),  # tachypnoea
)
_PATIENTS = 48
ANOMALY_KINDS = ("spike", "joint")
# Injected anomalies, in units of the vital's reading-to-reading noise: a *spike* moves one sign
# far (what a per-vital z-score is built to see); a *joint* change moves three signs a little each
# in a clinically coherent direction (early deterioration: no one sign looks alarming alone).
SPIKE_NOISE_UNITS = (4.5, 8.0)
JOINT_NOISE_UNITS = (2.5, 3.5)
_JOINT_PATTERNS: tuple[dict[str, int], ...] = (
    {"heart_rate": 1, "respiratory_rate": 1, "spo2": -1},  # respiratory
    {"heart_rate": 1, "systolic_bp": -1, "diastolic_bp": -1},  # circulatory
    {"temperature_c": 1, "heart_rate": 1, "respiratory_rate": 1},  # febrile
)


@dataclass(slots=True)
class _Patient:
    patient_id: str
    devices: tuple[str, ...]
    baseline: dict[str, float]
    episode: tuple[str, tuple[float, float]] | None = None
    episode_left: int = 0


class _PatientVitals(_Model):
    key_field = "patient_id"
    time_field = "event_time"
    rules = _VITALS_RULES
    defects = _VITALS_DEFECTS

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        rng = self._rng = _stream(seed, "patient-vitals")
        # A stream of its own: injecting anomalies leaves every other draw (and so the default
        # output) exactly as it was.
        self._anomalies = _stream(seed, "patient-vitals/anomalies")
        mrns = rng.sample(range(100_000, 1_000_000), _PATIENTS)
        self._patients = [
            _Patient(
                patient_id=f"MRN-{mrn}",
                # Some beds have a second monitor (e.g. a wearable next to the bedside unit).
                devices=tuple(
                    f"monitor-{rng.getrandbits(24):06x}" for _ in range(rng.choice((1, 1, 1, 2)))
                ),
                baseline={name: rng.uniform(*spec.baseline) for name, spec in _VITALS.items()},
            )
            for mrn in mrns
        ]

    def draft(self, index: int, slot_time: datetime) -> Fields:
        rng = self._rng
        patient = rng.choice(self._patients)
        if patient.episode is None and rng.random() < 0.01:
            patient.episode, patient.episode_left = rng.choice(_EPISODES), rng.randint(3, 12)
        fields: Fields = {
            "patient_id": patient.patient_id,
            "device_id": rng.choice(patient.devices),
            "event_time": format_event_time(
                slot_time - timedelta(milliseconds=rng.randint(0, 1500)), rng
            ),
        }
        for name, spec in _VITALS.items():
            low, high = spec.plausible
            value = min(high, max(low, rng.gauss(patient.baseline[name], spec.noise)))
            fields[name] = round(value, spec.decimals) if spec.decimals else round(value)
        self.label = None
        if patient.episode is not None:
            vital, (low, high) = patient.episode
            self.label = AnomalyLabel("episode", (vital,))
            decimals = _VITALS[vital].decimals
            fields[vital] = (
                round(rng.uniform(low, high), decimals)
                if decimals
                else rng.randint(int(low), int(high))
            )
            patient.episode_left -= 1
            if patient.episode_left == 0:
                patient.episode = None
        if rng.random() < 0.06:  # a sensor that dropped out for one reading
            del fields[rng.choice(VITAL_SIGNS)]
        # The roll comes first so the slots that get an anomaly do not depend on the episodes;
        # an episode reading is abnormal already and keeps the values the episode gave it.
        injected = self.anomaly_ratio > 0 and self._anomalies.random() < self.anomaly_ratio
        if injected and self.label is None:
            self.label = self._inject(fields)
        return fields

    def _inject(self, fields: Fields) -> AnomalyLabel | None:
        """Move the reading's signs away from the patient's normal; the label of what moved."""
        rng = self._anomalies
        present = [name for name in VITAL_SIGNS if name in fields]
        if rng.random() < 0.5:
            kind, units = "spike", SPIKE_NOISE_UNITS
            directions = {rng.choice(present): rng.choice((-1, 1))} if present else {}
        else:
            kind, units = "joint", JOINT_NOISE_UNITS
            pattern = rng.choice(_JOINT_PATTERNS)
            directions = {name: sign for name, sign in pattern.items() if name in fields}
        for name, sign in directions.items():
            spec = _VITALS[name]
            moved = fields[name] + sign * rng.uniform(*units) * spec.noise
            fields[name] = round(moved, spec.decimals) if spec.decimals else round(moved)
        return AnomalyLabel(kind, tuple(directions)) if directions else None


_MODELS: dict[str, type[_Model]] = {
    "orders": _Orders,
    "payments": _Payments,
    "error-logs": _ErrorLogs,
    "patient-vitals": _PatientVitals,
}
assert set(_MODELS) == set(TOPICS), "every contract input topic needs a model"


# --- public API -------------------------------------------------------------------------------


def validate(
    topic: str,
    value: bytes,
    *,
    received_at: datetime | None = None,
    max_clock_skew: timedelta = DEFAULT_MAX_CLOCK_SKEW,
    column_limits: bool = False,
) -> str | None:
    """None when ``value`` conforms to the contract for ``topic``, else the reason it does not.

    With ``received_at`` (the record's Kafka timestamp), an event time later than it plus
    ``max_clock_skew`` is ``event_time_in_future``, checked after every other rule, as the jobs
    do. With ``column_limits``, an identifier wider than its MariaDB column is
    ``<field>_too_long`` too, as the jobs judge it (a 1 MB customer_id conforms to the contract,
    which sets no length, but no job stores it).
    """
    check_topic(topic)
    if received_at is not None and received_at.tzinfo is None:
        raise ValueError("received_at is a naive datetime; pass an aware one (UTC).")
    model = _MODELS[topic]
    reason = model.validate(
        value, _with_column_limits(topic, model.rules) if column_limits else None
    )
    if reason is not None or received_at is None:
        return reason
    moment = model.event_time(value)
    if moment is not None and _to_ms(moment) > received_at + max_clock_skew:
        return EVENT_TIME_IN_FUTURE
    return None


def _to_ms(moment: datetime) -> datetime:
    # The jobs keep event times to the millisecond (DATETIME(3)) before they compare.
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class RecordFactory(Iterator[GeneratedRecord]):
    """An endless, reproducible stream of records for one topic.

    The same ``(topic, seed, ratios, now, interval)`` always yields the same bytes. Slot ``n`` has
    the nominal time ``now + n * interval``; late records are 1–10 minutes older than their slot.
    For ``patient-vitals``, ``anomaly_ratio`` of the slots get an injected anomaly, labelled in
    :attr:`GeneratedRecord.anomaly` (never in the record's bytes); 0 leaves the output unchanged.
    """

    def __init__(
        self,
        topic: str,
        *,
        seed: int,
        now: datetime,
        malformed_ratio: float = 0.0,
        duplicate_ratio: float = 0.0,
        late_ratio: float = 0.0,
        interval: timedelta = DEFAULT_INTERVAL,
        anomaly_ratio: float = 0.0,
    ) -> None:
        check_topic(topic)
        check_seed(seed)
        check_ratios(malformed_ratio, duplicate_ratio, late_ratio)
        check_anomaly_ratio(topic, anomaly_ratio)
        if now.tzinfo is None:
            raise ValueError("now is a naive datetime; pass an aware one, e.g. datetime.now(UTC).")
        if interval < timedelta(0):
            raise ValueError(f"interval is {interval}; give a duration ≥ 0.")
        self.topic = topic
        self._model = _MODELS[topic](seed)
        self._model.anomaly_ratio = anomaly_ratio
        # Shared by all topics (see the module docstring): one draw per slot, whatever the topic.
        self._kinds = _stream(seed, "kinds")
        self._faults = _stream(seed, f"{topic}/faults")
        self._now = now
        self._interval = interval
        self._malformed = malformed_ratio
        self._duplicate = duplicate_ratio
        self._late = late_ratio
        self._history: deque[GeneratedRecord] = deque(maxlen=DUPLICATE_HISTORY)
        self._index = 0

    def __next__(self) -> GeneratedRecord:
        index = self._index
        self._index += 1
        slot_time = self._now + self._interval * index
        fields = self._model.draft(index, slot_time)  # drawn for every slot to keep topics aligned
        roll = self._kinds.random()
        if roll < self._malformed:
            return self._malformed_record(fields)
        if roll < self._malformed + self._duplicate and self._history:
            earlier = self._history[self._faults.randrange(len(self._history))]
            return GeneratedRecord(earlier.key, earlier.value, "duplicate", anomaly=earlier.anomaly)
        kind: RecordKind = "valid"
        if roll < self._malformed + self._duplicate + self._late:
            kind = "late"
            late_by = timedelta(seconds=self._faults.uniform(*LATE_BY_SECONDS))
            fields[self._model.time_field] = format_event_time(slot_time - late_by, self._faults)
        record = GeneratedRecord(
            self._key(fields), self._model.encode(fields), kind, anomaly=self._model.label
        )
        self._history.append(record)
        return record

    def take(self, count: int) -> list[GeneratedRecord]:
        return [next(self) for _ in range(count)]

    def _malformed_record(self, fields: Fields) -> GeneratedRecord:
        defect = self._faults.choice(self._model.defects)
        corrupted = defect.corrupt(dict(fields), self._faults)
        if isinstance(corrupted, bytes):
            return GeneratedRecord(self._key(fields), corrupted, "malformed", defect.reason)
        return GeneratedRecord(
            self._key(corrupted), self._model.encode(corrupted), "malformed", defect.reason
        )

    def _key(self, fields: Fields) -> bytes | None:
        key = fields.get(self._model.key_field)
        return key.encode() if isinstance(key, str) and key else None


def generate(topic: str, count: int, **options: Any) -> list[GeneratedRecord]:
    """The first ``count`` records of ``RecordFactory(topic, **options)``."""
    return RecordFactory(topic, **options).take(count)
