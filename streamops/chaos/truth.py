"""The outputs of a chaos run held to the ground truth: the input topics themselves.

A run brackets what its generators produced with the end offsets of the input topics taken
before it starts and after its producers stopped (:func:`end_offsets`); :func:`check_outputs`
reads back exactly the records at offsets ``[start, end)`` and checks every pipeline's outputs
against them:

- per record, restricted to those records: every valid record is in its table once (``orders``,
  ``vitals_readings``, ``order_payments``), every rejected one is in ``quarantine`` at its Kafka
  position, and no record of the range landed where it does not belong;
- per window, over every row of the table (a long-lived stack holds rows from before the run),
  restricted to windows a record of the range falls in and that are closed (their end at or
  before the watermark the query published): a window never holds more than SQL over the rows
  (a double count would), and equals it unless a record of it may have come behind the
  watermark, which the stream drops by design.

"Valid" is the contract's validator (:func:`streamops.generator.records.validate`), which the
Spark rules of every pipeline are tested against record by record. A duplicate (the same
order_id, reading or payment_id again) keeps its first copy, as the sinks do.

"Possibly late" is decided from the topic, conservatively: a record is possibly late when its
event time is at or before the largest event time Spark may have seen before it, minus the
query's watermark delay. "Seen before" is every record earlier in its partition, every record of
another partition the broker stamped no more than :data:`CROSS_PARTITION_SLACK` after it, and
the last :data:`LOOKBACK_RECORDS` records of each partition before the range. A watermark
published ahead of all that means records outside the range moved it: lateness is then unknown,
and windows short of the rows are reported, not failed.

Pure functions decide what the records say and compare it with what was read; the functions
that talk to Kafka, MariaDB and Redis only fetch. Each check says in its detail what it did not
decide.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from streamops.config import Settings
from streamops.errors import StreamopsError
from streamops.generator.records import parse_event_time, validate

if TYPE_CHECKING:
    import mariadb
    import redis
    from confluent_kafka import Consumer

    from streamops.contract.alerts import AlertRule

Offsets = dict[str, dict[int, int]]  # topic -> partition -> offset
Position = tuple[int, int]  # (partition, offset)
K = TypeVar("K", bound=Hashable)
W = TypeVar("W", bound=tuple[Any, ...])  # a window's key: its start and what it groups by

ORDERS_TOPIC = "orders"
PAYMENTS_TOPIC = "payments"
ERROR_LOGS_TOPIC = "error-logs"
VITALS_TOPIC = "patient-vitals"
TRUTH_TOPICS = (ORDERS_TOPIC, PAYMENTS_TOPIC, ERROR_LOGS_TOPIC, VITALS_TOPIC)

REVENUE_WINDOW = timedelta(seconds=5)  # order_revenue_5s
VITALS_WINDOW = timedelta(seconds=60)  # vitals_summary_1m (the job's default window)
CATEGORY_WINDOW = timedelta(seconds=60)  # category_revenue_1m (the job's default window)
SECOND = timedelta(seconds=1)  # error_counts_1s

# Generous: a run of an hour at the generators' default rates is ~360,000 records a topic.
READ_TIMEOUT_SECONDS = 120.0
# Records read before the range, per partition: they may have moved the watermark, and they
# bound the event times of what the tables held before the run.
LOOKBACK_RECORDS = 1000
# How much later (broker timestamp) a record of another partition may be and still have been
# read by Spark before a given record: a batch reads every partition up to about the same time.
CROSS_PARTITION_SLACK = timedelta(seconds=1)
# Records before the run have event times at most this far past their broker timestamp (the
# generators stamp events before sending them); it bounds where the run's windows start clean.
PRE_RUN_MARGIN = timedelta(seconds=5)
# A published watermark this far past what the records read explain was moved by other records.
WATERMARK_TOLERANCE = timedelta(seconds=1)
MAX_OFFENDERS = 3
IN_CHUNK = 1000
CONSUME_BATCH = 1000
# spark_jobs.transforms.joins.UNKNOWN_CATEGORY: the category of a product not in the catalogue.
UNKNOWN_CATEGORY = "unknown"
CONNECT_TIMEOUT_SECONDS = 5.0
_EPOCH = datetime(1970, 1, 1)

ORDERS_CHECK = "orders exactly once"
REVENUE_CHECK = "order revenue windows"
ALERTS_CHECK = "alerts once per rule and window"
READINGS_CHECK = "vitals readings exactly once"
SUMMARIES_CHECK = "vitals summary windows"
PAYMENTS_CHECK = "order payments joined"
CATEGORY_CHECK = "category revenue windows"


class TruthError(StreamopsError):
    """The ground truth could not be read; the message names what and where."""


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str  # one line a person reads: numbers, and on failure the first few offenders
    counts: dict[str, int | float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "detail": self.detail,
            "counts": dict(self.counts),
        }


@dataclass(frozen=True)
class KafkaRecord:
    partition: int
    offset: int
    value: bytes | None
    timestamp_ms: int | None = None  # the broker's record timestamp; None when unknown

    @property
    def position(self) -> Position:
        return (self.partition, self.offset)


@dataclass(frozen=True)
class TopicRecords:
    """The records of one topic in ``[start, end)`` by partition and offset, and up to
    :data:`LOOKBACK_RECORDS` per partition just before ``start``."""

    topic: str
    records: tuple[KafkaRecord, ...] = ()
    before: tuple[KafkaRecord, ...] = ()


# --- pure: time ---------------------------------------------------------------------------------


def utc_ms(moment: datetime) -> datetime:
    """Naive UTC, cut to the millisecond as the jobs store event times (``DATETIME(3)``)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def window_of(moment: datetime, size: timedelta) -> datetime:
    """Start of the epoch-aligned tumbling window of ``size`` holding ``moment`` (naive UTC)."""
    return moment - (moment - _EPOCH) % size


_INTERVAL_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(millisecond|second|minute|hour|day)s?", re.I)


def parse_interval(text: str) -> timedelta:
    """A Spark interval as the jobs' options spell it (``10 seconds``, ``1 minute 30 seconds``)."""
    parts = _INTERVAL_PART.findall(text)
    if not parts or _INTERVAL_PART.sub("", text).strip():
        raise ValueError(f"{text!r} is not an interval like '10 seconds' or '2 minutes'.")
    units = {"millisecond": 0.001, "second": 1, "minute": 60, "hour": 3600, "day": 86_400}
    return timedelta(seconds=sum(float(n) * units[unit.lower()] for n, unit in parts))


def _iso(moment: datetime | None) -> str:
    return "none" if moment is None else moment.isoformat(timespec="milliseconds") + "Z"


def _ts_datetime(timestamp_ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=timestamp_ms)


# --- pure: lateness and watermarks --------------------------------------------------------------


class Event(Protocol):
    @property
    def position(self) -> Position: ...
    @property
    def timestamp_ms(self) -> int | None: ...
    @property
    def event_time(self) -> datetime: ...


C = TypeVar("C", bound=Event)


def possibly_late(
    events: Sequence[Event],
    delay: timedelta,
    *,
    seen_before: datetime | None = None,
    slack: timedelta = CROSS_PARTITION_SLACK,
) -> set[Position]:
    """Positions of the events Spark may have dropped behind a watermark ``delay`` behind the
    largest event time it had seen; see the module. ``seen_before``: the largest event time of
    the records before the range. An event without a broker timestamp counts as read last."""
    if not events:
        return set()

    def stamp(event: Event) -> float:
        return math.inf if event.timestamp_ms is None else float(event.timestamp_ms)

    by_stamp = sorted(events, key=lambda event: (stamp(event), event.position))
    stamps = [stamp(event) for event in by_stamp]
    running: list[datetime] = []
    for event in by_stamp:
        running.append(event.event_time if not running else max(running[-1], event.event_time))
    slack_ms = slack / timedelta(milliseconds=1)
    partition_max: dict[int, datetime] = {}
    late: set[Position] = set()
    for event in sorted(events, key=lambda event: event.position):
        partition = event.position[0]
        # Index >= 0: the event itself is stamped within its own slack.
        ceiling = running[bisect_right(stamps, stamp(event) + slack_ms) - 1]
        for earlier in (seen_before, partition_max.get(partition)):
            if earlier is not None and earlier > ceiling:
                ceiling = earlier
        if event.event_time <= ceiling - delay:  # Spark drops rows at or before the watermark
            late.add(event.position)
        if partition not in partition_max or event.event_time > partition_max[partition]:
            partition_max[partition] = event.event_time
    return late


@dataclass(frozen=True)
class Watermark:
    """Windows ending at or before ``at`` are closed. ``ahead``: the watermark is past what the
    records read explain, so records outside the range moved it and lateness is unknown."""

    at: datetime | None
    source: str
    ahead: bool = False

    def closes(self, window_end: datetime) -> bool:
        return self.at is not None and window_end <= self.at

    def describe(self) -> str:
        text = f"watermark {_iso(self.at)} ({self.source})"
        return text + (", ahead of every record read: lateness unknown" if self.ahead else "")


def decide_watermark(
    published: datetime | None, estimate: datetime | None, source: str
) -> Watermark:
    """The query's published watermark, else ``estimate`` (the largest event time read minus the
    delay). ``source`` says where ``published`` came from."""
    if published is not None:
        ahead = estimate is not None and published > estimate + WATERMARK_TOLERANCE
        return Watermark(published, source, ahead)
    if estimate is not None:
        return Watermark(estimate, "not published: estimated from the records")
    return Watermark(None, "not published and no record to estimate it from")


def pre_run_horizon(
    before: Iterable[KafkaRecord], event_times: Iterable[datetime]
) -> datetime | None:
    """The earliest moment no record before the range can have an event time at or after: the
    latest broker timestamp or event time of those records, plus :data:`PRE_RUN_MARGIN`. None
    when the topic held nothing before the range (nothing of it can be in any table)."""
    moments = [_ts_datetime(r.timestamp_ms) for r in before if r.timestamp_ms is not None]
    moments += list(event_times)
    return max(moments) + PRE_RUN_MARGIN if moments else None


# --- pure: comparisons ------------------------------------------------------------------------


def _few(items: Iterable[object]) -> str:
    listed = [str(item) for item in items]
    shown = ", ".join(listed[:MAX_OFFENDERS])
    return shown + (", …" if len(listed) > MAX_OFFENDERS else "")


def _problems(*listed: tuple[str, Sequence[object]]) -> list[str]:
    """``<how many> <what> (<the first few>)`` for each kind of offender there is."""
    return [f"{len(items)} {what} ({_few(items)})" for what, items in listed if items]


def _verdict(
    name: str,
    problems: Sequence[str],
    counts: dict[str, int | float],
    passed: str,
    watermark: Watermark | None = None,
) -> Check:
    """Failed with ``problems`` when there are any, else passed with ``passed``; either detail
    ends with the watermark when the check used one."""
    tail = "" if watermark is None else f"; {watermark.describe()}"
    if problems:
        return Check(name, False, "; ".join(problems) + tail, counts)
    return Check(name, True, passed + tail, counts)


def _key_text(key: object) -> str:
    if isinstance(key, tuple):
        return "/".join(_iso(part) if isinstance(part, datetime) else str(part) for part in key)
    return _iso(key) if isinstance(key, datetime) else str(key)


@dataclass
class QuarantineComparison:
    expected: int
    missing: list[Position]
    unexpected: list[Position]

    @property
    def problems(self) -> list[str]:
        return _problems(
            ("rejected records not in quarantine", [f"{p}:{o}" for p, o in self.missing]),
            ("valid records in quarantine", [f"{p}:{o}" for p, o in self.unexpected]),
        )

    @property
    def counts(self) -> dict[str, int | float]:
        return {"rejects_missing": len(self.missing), "valid_in_quarantine": len(self.unexpected)}


def compare_quarantine(
    rejects: Iterable[Position], quarantined: Iterable[Position]
) -> QuarantineComparison:
    """Rejected records of the range against the quarantine rows at positions of the range (one
    row per position is the table's key, so "once" holds whenever the row is there)."""
    expected, found = set(rejects), set(quarantined)
    return QuarantineComparison(len(expected), sorted(expected - found), sorted(found - expected))


@dataclass
class WindowComparison(Generic[K]):
    checked: int = 0
    equal: int = 0
    exceeded: list[K] = field(default_factory=list)  # above the rows: counted twice
    short: list[K] = field(default_factory=list)  # below the rows beyond what lateness explains
    excused: list[K] = field(default_factory=list)  # below the rows, by possibly-late records
    unsure: list[K] = field(default_factory=list)  # not compared (the caller says why)
    open: int = 0  # not closed yet

    @property
    def passed(self) -> bool:
        return not self.exceeded and not self.short


def compare_windows(
    keys: Iterable[K],
    stored: Mapping[K, Sequence[Any]],
    computed: Mapping[K, Sequence[Any]],
    *,
    closed: Callable[[K], bool],
    late_allowance: Mapping[K, int],
    lateness_unknown: bool = False,
    unsure: Iterable[K] = (),
) -> WindowComparison[K]:
    """Each closed window of ``keys``: the stored values against those computed over the rows.

    Values are tuples whose first member is a count. Any member above the rows fails
    (``exceeded``); a window below them is ``excused`` when its count is short by no more than
    its ``late_allowance`` (distinct possibly-late records in it), or by anything when
    ``lateness_unknown``; else it is ``short``. A missing row counts as all zeros.
    """
    skip = set(unsure)
    result: WindowComparison[K] = WindowComparison()
    for key in dict.fromkeys(keys):
        if not closed(key):
            result.open += 1
            continue
        if key in skip:
            result.unsure.append(key)
            continue
        result.checked += 1
        have, want = stored.get(key), computed.get(key)
        width = len(have if have is not None else want or ())
        have = tuple(have) if have is not None else (0,) * width
        want = tuple(want) if want is not None else (0,) * width
        if have == want:
            result.equal += 1
        elif any(h > w for h, w in zip(have, want, strict=True)):
            result.exceeded.append(key)
        elif lateness_unknown or 0 < want[0] - have[0] <= late_allowance.get(key, 0):
            result.excused.append(key)
        else:
            result.short.append(key)
    return result


def _values(values: Sequence[Any] | None) -> str:
    return "none" if values is None else "/".join(str(value) for value in values)


def _first_count(values: Sequence[Any] | None) -> int:
    """The count a window's values start with (orders, readings); 0 for no values."""
    if not values:
        return 0
    try:
        return int(values[0])
    except (TypeError, ValueError):
        return 0


def _window_check(
    name: str,
    copies: Sequence[C],
    late: set[Position],
    watermark: Watermark,
    stored: Mapping[W, Sequence[Any]],
    computed: Mapping[W, Sequence[Any]],
    *,
    size: timedelta,
    key: Callable[[C, datetime], W],
    entity: Callable[[C], Hashable],
    ids_stored_elsewhere: Iterable[Hashable] = (),
    above: str,
    windows: str,
    never_above: str | None = None,
    late_what: str,
    note: str,
    more_problems: Sequence[str] = (),
    more_counts: Mapping[str, int | float] | None = None,
) -> Check:
    """:func:`compare_windows` over every window of ``size`` a copy falls in (``key``: its key
    from the copy and the window's start), closed when the watermark passed its end.

    A window's late allowance is how many distinct ``entity`` (order ids, readings) have a
    possibly-late copy in it; a window holding an entity of ``ids_stored_elsewhere`` is not
    compared. The rest words the detail: ``above`` names what the windows are compared with
    (``never_above`` in a pass, when it reads differently there).
    """
    elsewhere = set(ids_stored_elsewhere)
    keyed = []
    for copy in copies:
        start = window_of(copy.event_time, size)
        keyed.append((key(copy, start), start + size, copy))
    ends = {k: end for k, end, _ in keyed}
    late_entities: dict[W, set[Hashable]] = defaultdict(set)
    in_range: dict[W, set[Hashable]] = defaultdict(set)
    for k, _, copy in keyed:
        in_range[k].add(entity(copy))
        if copy.position in late:
            late_entities[k].add(entity(copy))
    # SQL over the table counts more in a window than the run's records can explain: rows from
    # before the run are in it, whose lateness is unknown (a record behind the watermark before
    # the run leaves its window short for good). Such a window may be short by anything, but
    # never above the rows.
    before_run = {k for k in ends if _first_count(computed.get(k)) > len(in_range[k])}
    allowance = {k: len(entities) for k, entities in late_entities.items()}
    allowance |= {k: _first_count(computed.get(k)) for k in before_run}
    result = compare_windows(
        sorted(ends),
        stored,
        computed,
        closed=lambda k: watermark.closes(ends[k]),
        late_allowance=allowance,
        lateness_unknown=watermark.ahead,
        unsure={k for k, _, copy in keyed if entity(copy) in elsewhere},
    )
    counts: dict[str, int | float] = {
        "windows_checked": result.checked,
        "windows_equal": result.equal,
        "windows_exceeded": len(result.exceeded),
        "windows_short": len(result.short),
        "windows_exempted_late": len(result.excused),
        "windows_not_compared": len(result.unsure),
        "windows_with_rows_before_run": len(before_run),
        "windows_open": result.open,
        **(more_counts or {}),
    }

    def show(keys: list[W]) -> str:
        return _few(
            f"{_key_text(k)}: {_values(stored.get(k))} vs {_values(computed.get(k))}" for k in keys
        )

    problems = []
    if result.exceeded:
        problems.append(
            f"{len(result.exceeded)} windows above {above} (counted twice): {show(result.exceeded)}"
        )
    if result.short:
        problems.append(
            f"{len(result.short)} windows short of {above} beyond possibly-late records: "
            f"{show(result.short)}"
        )
    unsure = (
        f", {len(result.unsure)} not compared (an order_id stored before the run)"
        if result.unsure
        else ""
    )
    detail = (
        f"{result.checked} closed {windows} never above {never_above or above}, "
        f"{result.equal} equal, {len(result.excused)} short only by possibly-late {late_what} "
        f"or rows from before the run ({len(before_run)} windows hold such rows; exempted)"
        f"{unsure}, {result.open} still open; {note}"
    )
    return _verdict(name, [*problems, *more_problems], counts, detail, watermark)


# --- pure: what the records say -----------------------------------------------------------------


@dataclass
class TopicTruth(Generic[K, C]):
    """The valid copies of a topic's records by what makes them one (first copy first), and the
    positions of the rejected records."""

    copies: dict[K, list[C]] = field(default_factory=dict)
    rejects: set[Position] = field(default_factory=set)

    @property
    def all_copies(self) -> list[C]:
        return [copy for copies in self.copies.values() for copy in copies]


def _reject_reason(topic: str, value: bytes | None, timestamp_ms: int | None = None) -> str | None:
    """Why a record of ``topic`` is rejected, None when it is valid. ``timestamp_ms`` (the
    record's Kafka timestamp) is the receiving clock of the ``event_time_in_future`` rule."""
    received_at = None if timestamp_ms is None else _ts_datetime(timestamp_ms).replace(tzinfo=UTC)
    if topic == VITALS_TOPIC:
        return vitals_reason(value, received_at)
    if value is None:
        return "missing_payload"
    return validate(topic, value, received_at=received_at, column_limits=True)


def _validated(
    topic: str, records: Iterable[KafkaRecord]
) -> tuple[list[tuple[KafkaRecord, bytes]], set[Position]]:
    """The valid records of ``topic`` in position order, each with its value, and the positions
    of the rejected ones."""
    valid: list[tuple[KafkaRecord, bytes]] = []
    rejects: set[Position] = set()
    for record in sorted(records, key=lambda r: r.position):
        if (
            record.value is None
            or _reject_reason(topic, record.value, record.timestamp_ms) is not None
        ):
            rejects.add(record.position)
        else:
            valid.append((record, record.value))
    return valid, rejects


def _valid_time(text: str) -> datetime:
    """The event time of a valid record, as the jobs store it."""
    moment = parse_event_time(text)
    assert moment is not None  # validate() checked it
    return utc_ms(moment)


@dataclass(frozen=True)
class StoredRow:
    """What a keyed table holds for one key: a value to compare and the Kafka position of the
    copy it was written from (None when the table did not record one)."""

    value: Any
    position: Position | None


def stored_elsewhere(
    copies: Mapping[Any, Sequence[Event]], stored: Mapping[Any, StoredRow]
) -> set[Any]:
    """Keys whose stored row came from no copy in the range: a record before the run had it."""
    return {
        key
        for key, row in stored.items()
        if key in copies and row.position not in {copy.position for copy in copies[key]}
    }


@dataclass
class RowsComparison:
    missing: list[str]  # keys of the range without a row
    extra: list[str]  # rows written from a record of the range that is not a copy of their key
    before_run: int  # keys whose row came from a record before the range (copies ignored)
    quarantine: QuarantineComparison


def compare_rows(
    truth: TopicTruth[K, C],
    stored: Mapping[K, StoredRow],
    rows_in_range: Mapping[Position, K],
    quarantined: Iterable[Position],
) -> RowsComparison:
    """The records of the range against a table keyed as ``truth.copies``, and its rejected
    records against quarantine. ``stored``: key → row for the keys of the range;
    ``rows_in_range``: source position → key of the rows written from the range."""
    positions = {key: {copy.position for copy in copies} for key, copies in truth.copies.items()}
    return RowsComparison(
        missing=[_key_text(key) for key in truth.copies if key not in stored],
        extra=[
            f"{_key_text(key)}@{p}:{o}"
            for (p, o), key in rows_in_range.items()
            if (p, o) not in positions.get(key, set())
        ],
        before_run=sum(
            stored[key].position not in rows_in_range
            for key in stored_elsewhere(truth.copies, stored)
        ),
        quarantine=compare_quarantine(truth.rejects, quarantined),
    )


# --- pure: orders -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectedOrder:
    """One valid copy of an order on the topic."""

    position: Position
    timestamp_ms: int | None
    event_time: datetime
    order_id: str
    product_id: str
    quantity: int
    currency: str
    amount: Decimal


@dataclass
class OrdersTruth(TopicTruth[str, ExpectedOrder]):  # by order_id
    @property
    def first_copies(self) -> dict[str, ExpectedOrder]:
        return {order_id: copies[0] for order_id, copies in self.copies.items()}


def expected_orders(records: Iterable[KafkaRecord]) -> OrdersTruth:
    """What ``orders`` and ``quarantine`` must hold for ``records``: every valid copy of each
    order_id (the first is the one stored; amount = quantity × unit_price, exact) and the
    position of every rejected record. ``expected_from_topic`` of the orders integration test,
    with positions and event times added."""
    truth = OrdersTruth()
    valid, truth.rejects = _validated(ORDERS_TOPIC, records)
    for record, value in valid:
        fields = json.loads(value, parse_float=Decimal)
        currency = fields.get("currency")
        truth.copies.setdefault(fields["order_id"], []).append(
            ExpectedOrder(
                position=record.position,
                timestamp_ms=record.timestamp_ms,
                event_time=_valid_time(fields["event_time"]),
                order_id=fields["order_id"],
                product_id=fields["product_id"],
                quantity=int(fields["quantity"]),
                currency="EUR" if currency is None else str(currency).upper(),
                amount=Decimal(fields["quantity"]) * Decimal(str(fields["unit_price"])),
            )
        )
    return truth


def check_orders(
    truth: OrdersTruth,
    stored: Mapping[str, StoredRow],
    rows_in_range: Mapping[Position, str],
    quarantined: Iterable[Position],
) -> Check:
    """Every order_id of the range in ``orders`` with its amount, no row written from a record
    that is not a valid copy of it, and every rejected record in ``quarantine``.

    ``stored``: order_id → (amount, source position) for the order_ids of the range;
    ``rows_in_range``: source position → order_id of the rows written from the range.
    """
    rows = compare_rows(truth, stored, rows_in_range, quarantined)
    wrong_amount, later_copy = [], 0
    for order_id, copies in truth.copies.items():
        row = stored.get(order_id)
        positions = [copy.position for copy in copies]
        if row is not None and row.position in positions:
            copy = copies[positions.index(row.position)]
            if Decimal(row.value) != copy.amount:
                wrong_amount.append(f"{order_id} {row.value} not {copy.amount}")
            later_copy += row.position != positions[0]
    valid, orders = len(truth.all_copies), len(truth.copies)
    counts: dict[str, int | float] = {
        "valid_records": valid,
        "orders": orders,
        "duplicate_copies": valid - orders,
        "rejected_records": len(truth.rejects),
        "missing": len(rows.missing),
        "wrong_amount": len(wrong_amount),
        "rows_from_wrong_record": len(rows.extra),
        "stored_before_run": rows.before_run,
        "stored_from_later_copy": later_copy,
        **rows.quarantine.counts,
    }
    problems = _problems(
        ("orders lost", rows.missing),
        ("with a wrong amount", wrong_amount),
        ("rows written from a record that is not a valid copy", rows.extra),
    )
    before_run = (
        f" ({rows.before_run} first stored before the run, amount not compared)"
        if rows.before_run
        else ""
    )
    detail = (
        f"{orders} orders of {valid} valid records ({valid - orders} duplicate copies) each in "
        f"orders once with quantity × unit_price{before_run}; {rows.quarantine.expected} "
        f"rejected records each in quarantine at its position"
    )
    return _verdict(ORDERS_CHECK, problems + rows.quarantine.problems, counts, detail)


WindowValues = tuple[int, int, Decimal]  # order_count, item_count, revenue


def _totals_problems(
    redis_totals: Mapping[str, str], table_totals: Mapping[str, WindowValues]
) -> tuple[list[str], int]:
    """Redis ``streamops:orders:totals`` against SUM over ``order_revenue_5s`` per currency."""
    currencies = {field.split(":", 1)[0] for field in redis_totals if ":" in field}
    mismatched = []
    for currency in sorted(currencies | set(table_totals)):
        table = table_totals.get(currency, (0, 0, Decimal(0)))
        try:
            held = (
                int(redis_totals.get(f"{currency}:order_count", "0")),
                int(redis_totals.get(f"{currency}:item_count", "0")),
                Decimal(redis_totals.get(f"{currency}:revenue", "0")),
            )
        except (ValueError, ArithmeticError):
            held = None
        if held != tuple(table):
            mismatched.append(f"{currency}: Redis {held} vs MariaDB {tuple(table)}")
    return mismatched, len(currencies | set(table_totals))


def check_revenue_windows(
    truth: OrdersTruth,
    late: set[Position],
    watermark: Watermark,
    stored: Mapping[tuple[datetime, str], WindowValues],
    computed: Mapping[tuple[datetime, str], WindowValues],
    *,
    ids_stored_elsewhere: Iterable[str] = (),
    redis_totals: Mapping[str, str],
    table_totals: Mapping[str, WindowValues],
) -> Check:
    """Every closed 5-s window (and currency) a valid record of the range falls in against SQL
    over ``orders`` (``stored``/``computed``: order_count, item_count, revenue), and the Redis
    totals against the table's sums per currency.

    A window holding an order whose id ``orders`` holds from before the run is not compared: the
    stream counts such a copy anew, ``orders`` keeps the old one.
    """
    mismatched, currencies = _totals_problems(redis_totals, table_totals)
    return _window_check(
        REVENUE_CHECK,
        truth.all_copies,
        late,
        watermark,
        stored,
        computed,
        size=REVENUE_WINDOW,
        key=lambda copy, start: (start, copy.currency),
        entity=lambda copy: copy.order_id,
        ids_stored_elsewhere=ids_stored_elsewhere,
        above="SQL over orders",
        windows="windows",
        late_what="records",
        note=f"Redis totals equal MariaDB in {currencies} currencies",
        more_problems=(
            [f"Redis totals differ from order_revenue_5s: {_few(mismatched)}"] if mismatched else []
        ),
        more_counts={"currencies": currencies, "totals_mismatched": len(mismatched)},
    )


# --- pure: alerts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    position: Position
    timestamp_ms: int | None
    event_time: datetime
    level: str  # canonical: WARNING → WARN, FATAL → CRITICAL
    service: str


def _csv_fields(value: bytes) -> list[str]:
    (row,) = csv.reader(io.StringIO(value.decode("utf-8"), newline=""), strict=True)
    return row


def expected_lines(records: Iterable[KafkaRecord]) -> tuple[list[LogLine], set[Position]]:
    """The valid error-log lines of ``records`` (level normalised as the job does) and the
    positions of the rejected ones."""
    from streamops.contract.error_logs import LEVEL_ALIASES

    valid, rejects = _validated(ERROR_LOGS_TOPIC, records)
    lines = []
    for record, value in valid:
        timestamp, level, service, _message = _csv_fields(value)
        lines.append(
            LogLine(
                record.position,
                record.timestamp_ms,
                _valid_time(timestamp),
                LEVEL_ALIASES[level.upper()],
                service,
            )
        )
    return lines, rejects


@dataclass(frozen=True)
class StoredAlert:
    alert_id: str
    rule_id: str
    window_start: datetime
    window_end: datetime
    event_count: int


SecondKey = tuple[str, str, datetime]  # service, level, second_start


def check_alerts(
    rules: Sequence[AlertRule],
    lines: Sequence[LogLine],
    late: set[Position],
    watermark: Watermark,
    *,
    horizon: datetime | None,
    alerts: Sequence[StoredAlert],
    seconds: Mapping[SecondKey, int],
    redis_counts: Mapping[str, int | None],
    rejects: Iterable[Position],
    quarantined: Iterable[Position],
) -> Check:
    """Alerts against the lines of the range.

    - No two alerts for one rule and window, and each id is the hash of its rule and window.
    - Each closed second a line falls in: ``error_counts_1s`` holds at least the lines that
      cannot be late, and at most all of them once no line before the run can be in it (the
      second starts at or after ``horizon``).
    - Each enabled rule and closed window a matching line falls in: the alert's event_count is
      SQL over ``error_counts_1s`` (the sum of its seconds) and within the same bounds; it exists
      when that sum reaches the threshold; Redis holds the same count.

    ``alerts`` are the rows in the windows' span; ``seconds`` every ``error_counts_1s`` row of it.
    """
    from streamops.contract.alerts import alert_id

    by_rule_window: dict[tuple[str, datetime, datetime], list[str]] = defaultdict(list)
    wrong_ids = []
    for alert in alerts:
        by_rule_window[(alert.rule_id, alert.window_start, alert.window_end)].append(alert.alert_id)
        length = int((alert.window_end - alert.window_start).total_seconds())
        if alert.alert_id != alert_id(alert.rule_id, alert.window_start, length):
            wrong_ids.append(f"{alert.rule_id}@{_iso(alert.window_start)}")
    duplicated = [
        f"{r}@{_iso(s)} ×{len(ids)}" for (r, s, _), ids in by_rule_window.items() if len(ids) > 1
    ]

    def clean(start: datetime) -> bool:
        return horizon is None or start >= horizon

    # Seconds against the lines.
    per_second: dict[SecondKey, list[LogLine]] = defaultdict(list)
    for line in lines:
        per_second[(line.service, line.level, window_of(line.event_time, SECOND))].append(line)
    second_checked = second_exact = 0
    seconds_lost, seconds_doubled = [], []
    for key, group in sorted(per_second.items()):
        if not watermark.closes(key[2] + SECOND):
            continue
        second_checked += 1
        have = seconds.get(key, 0)
        lower = sum(line.position not in late for line in group)
        if have < lower and not watermark.ahead:
            seconds_lost.append(f"{_key_text(key)}: {have} < {lower}")
        if clean(key[2]):
            second_exact += 1
            if have > len(group):
                seconds_doubled.append(f"{_key_text(key)}: {have} > {len(group)}")

    # Rule windows against the seconds and the lines.
    by_id = {alert.alert_id: alert for alert in alerts}
    level_second: Counter[tuple[str, datetime]] = Counter()
    for (_service, level, second), count in seconds.items():
        level_second[(level, second)] += count
    compared = quiet = open_windows = closed_windows = exact = 0
    missing: list[str] = []
    differs: list[str] = []
    lost: list[str] = []
    doubled: list[str] = []
    redis_wrong: list[str] = []
    for rule in rules:
        if not rule.enabled:
            continue
        size = timedelta(seconds=rule.window_seconds)
        windows: dict[datetime, list[LogLine]] = defaultdict(list)
        for line in lines:
            if line.level == rule.level and rule.service in (None, line.service):
                windows[window_of(line.event_time, size)].append(line)
        for start, group in sorted(windows.items()):
            if not watermark.closes(start + size):
                open_windows += 1
                continue
            closed_windows += 1
            steps = [start + k * SECOND for k in range(rule.window_seconds)]
            if rule.service is None:
                total = sum(level_second.get((rule.level, s), 0) for s in steps)
            else:
                total = sum(seconds.get((rule.service, rule.level, s), 0) for s in steps)
            lower = sum(line.position not in late for line in group)
            upper = len(group) if clean(start) else None
            exact += upper is not None and lower == upper
            name = f"{rule.rule_id}@{_iso(start)}"
            found = by_id.get(alert_id(rule.rule_id, start, rule.window_seconds))
            if found is None:
                if max(total, 0 if watermark.ahead else lower) >= rule.threshold_count:
                    missing.append(f"{name} ({total} lines)")
                else:
                    quiet += 1
                continue
            compared += 1
            if found.event_count != total:
                differs.append(f"{name}: {found.event_count} vs {total}")
            if found.event_count < lower and not watermark.ahead:
                lost.append(f"{name}: {found.event_count} < {lower}")
            if upper is not None and found.event_count > upper:
                doubled.append(f"{name}: {found.event_count} > {upper}")
            if redis_counts.get(found.alert_id) != found.event_count:
                redis_wrong.append(
                    f"{name}: Redis {redis_counts.get(found.alert_id)} vs {found.event_count}"
                )
    quarantine = compare_quarantine(rejects, quarantined)
    problems = _problems(
        ("rule windows with more than one alert", duplicated),
        ("alerts whose id is not their rule and window's", wrong_ids),
        ("seconds of error_counts_1s missing lines", seconds_lost),
        ("seconds of error_counts_1s above the lines", seconds_doubled),
        ("alerts missing for windows at their threshold", missing),
        ("alerts whose event_count is not the sum of error_counts_1s", differs),
        ("alerts missing lines", lost),
        ("alerts counting more lines than there are", doubled),
        ("alerts whose Redis state differs", redis_wrong),
    )
    counts: dict[str, int | float] = {
        "valid_lines": len(lines),
        "rejected_lines": quarantine.expected,
        "alerts_compared": compared,
        "windows_closed": closed_windows,
        "windows_exact": exact,
        "windows_quiet": quiet,
        "windows_open": open_windows,
        "seconds_checked": second_checked,
        "seconds_exact": second_exact,
        "duplicated": len(duplicated),
        "wrong_ids": len(wrong_ids),
        "missing": len(missing),
        "not_sum_of_seconds": len(differs),
        "lost_lines": len(lost) + len(seconds_lost),
        "counted_twice": len(doubled) + len(seconds_doubled),
        "redis_differs": len(redis_wrong),
        **quarantine.counts,
    }
    horizon_text = (
        "no line before the run"
        if horizon is None
        else f"lines before the run may fall before {_iso(horizon)}"
    )
    detail = (
        f"{compared} alerts of closed rule windows each once per rule and window, event_count = "
        f"SUM over error_counts_1s, Redis equal; {exact} of {closed_windows} closed rule windows "
        f"decided exactly by the lines read, the others bounded ({horizon_text} or a line "
        f"possibly late); {quiet} under threshold without alert, {open_windows} still open; "
        f"{second_checked} per-second counts within the lines' bounds; {quarantine.expected} "
        "rejected lines in quarantine"
    )
    return _verdict(ALERTS_CHECK, problems + quarantine.problems, counts, detail, watermark)


# --- pure: vitals -------------------------------------------------------------------------------

ReadingKey = tuple[str, datetime, str]  # patient_id, event_time, device_id ('' for none)


@dataclass(frozen=True)
class Reading:
    position: Position
    timestamp_ms: int | None
    event_time: datetime
    patient_id: str
    device_id: str

    @property
    def key(self) -> ReadingKey:
        return (self.patient_id, self.event_time, self.device_id)


@dataclass
class VitalsTruth(TopicTruth[ReadingKey, Reading]):
    discharges: int = 0  # control records: valid, not readings


def vitals_reason(value: bytes | None, received_at: datetime | None = None) -> str | None:
    """The contract's validator with the columns' limits, plus the rule the vitals job adds for the
    ``discharged`` control field (migration 0007): present and not a JSON boolean is a rejected
    record. The receiving clock's rule comes last, as in the job."""
    if value is None:
        return "missing_payload"
    reason = validate(VITALS_TOPIC, value, column_limits=True)
    if reason is None and json.loads(value).get("discharged") not in (None, True, False):
        return "discharged_not_boolean"
    if reason is None and received_at is not None:
        return validate(VITALS_TOPIC, value, received_at=received_at, column_limits=True)
    return reason


def expected_readings(records: Iterable[KafkaRecord]) -> VitalsTruth:
    """Every valid reading of ``records`` by its key (patient, event time, device: a repeat is a
    duplicate), discharge records apart, and the positions of the rejected records."""
    truth = VitalsTruth()
    valid, truth.rejects = _validated(VITALS_TOPIC, records)
    for record, value in valid:
        fields = json.loads(value)
        if fields.get("discharged") is True:
            truth.discharges += 1
            continue
        reading = Reading(
            record.position,
            record.timestamp_ms,
            _valid_time(fields["event_time"]),
            fields["patient_id"],
            fields.get("device_id") or "",
        )
        truth.copies.setdefault(reading.key, []).append(reading)
    return truth


def check_readings(
    truth: VitalsTruth,
    stored: Mapping[ReadingKey, StoredRow],
    rows_in_range: Mapping[Position, ReadingKey],
    quarantined: Iterable[Position],
) -> Check:
    """Every reading of the range in ``vitals_readings`` (one row per key is the table's key),
    no row written from a record that is not a copy of it, every rejected record in quarantine.
    ``rows_in_range`` covers the event-time span of the readings only."""
    rows = compare_rows(truth, stored, rows_in_range, quarantined)
    valid, readings = len(truth.all_copies), len(truth.copies)
    counts: dict[str, int | float] = {
        "valid_readings": valid,
        "readings": readings,
        "duplicate_copies": valid - readings,
        "discharge_records": truth.discharges,
        "rejected_records": rows.quarantine.expected,
        "missing": len(rows.missing),
        "rows_from_wrong_record": len(rows.extra),
        "stored_before_run": rows.before_run,
        **rows.quarantine.counts,
    }
    problems = _problems(
        ("readings lost", rows.missing),
        ("rows written from a record that is not a copy", rows.extra),
    )
    detail = (
        f"{readings} readings of {valid} valid records ({valid - readings} duplicate copies, "
        f"{truth.discharges} discharge records apart) each in vitals_readings once; "
        f"{rows.quarantine.expected} rejected records each in quarantine at its position"
    )
    return _verdict(READINGS_CHECK, problems + rows.quarantine.problems, counts, detail)


def readings_per_window(
    rows: Iterable[tuple[str, datetime]], size: timedelta = VITALS_WINDOW
) -> dict[tuple[str, datetime], tuple[int]]:
    """COUNT(*) of ``vitals_readings`` rows (patient_id, event_time) per patient and window."""
    counts = Counter((patient, window_of(moment, size)) for patient, moment in rows)
    return {key: (count,) for key, count in counts.items()}


def check_summaries(
    truth: VitalsTruth,
    late: set[Position],
    watermark: Watermark,
    stored: Mapping[tuple[str, datetime], tuple[int]],
    computed: Mapping[tuple[str, datetime], tuple[int]],
) -> Check:
    """Each closed (patient, 1-min window) a reading of the range falls in: ``reading_count`` of
    ``vitals_summary_1m`` against COUNT(*) over ``vitals_readings`` in that window (one summary
    row per patient and window is the table's key)."""
    return _window_check(
        SUMMARIES_CHECK,
        truth.all_copies,
        late,
        watermark,
        stored,
        computed,
        size=VITALS_WINDOW,
        key=lambda reading, start: (reading.patient_id, start),
        entity=lambda reading: reading.key,
        above="COUNT(*) over vitals_readings",
        windows="patient windows",
        never_above="the readings stored",
        late_what="readings",
        note="min/avg/max not compared",
    )


# --- pure: joins --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectedPayment:
    position: Position
    timestamp_ms: int | None
    event_time: datetime
    payment_id: str
    order_id: str
    amount: Decimal
    status: str


class PaymentsTruth(TopicTruth[str, ExpectedPayment]):  # by payment_id
    pass


def expected_payments(records: Iterable[KafkaRecord]) -> PaymentsTruth:
    """Every valid copy of each payment_id of ``records`` and the positions of rejected ones
    (``Expected.add_payment`` of the joins integration test, with positions)."""
    truth = PaymentsTruth()
    valid, truth.rejects = _validated(PAYMENTS_TOPIC, records)
    for record, value in valid:
        fields = json.loads(value, parse_float=Decimal)
        truth.copies.setdefault(fields["payment_id"], []).append(
            ExpectedPayment(
                record.position,
                record.timestamp_ms,
                _valid_time(fields["event_time"]),
                fields["payment_id"],
                fields["order_id"],
                Decimal(str(fields["amount"])),
                fields["status"],
            )
        )
    return truth


@dataclass(frozen=True)
class StoredPayment:
    """A row of ``order_payments``."""

    payment_id: str | None
    status: str
    order_amount: Decimal


@dataclass(frozen=True)
class JoinBounds:
    pay_within: timedelta
    paid_early_tolerance: timedelta


def check_order_payments(
    orders: OrdersTruth,
    orders_late: set[Position],
    payments: PaymentsTruth,
    payments_late: set[Position],
    watermark: Watermark,
    stored: Mapping[str, StoredPayment],
    *,
    bounds: JoinBounds,
    ids_stored_elsewhere: Iterable[str] = (),
    quarantined: Iterable[Position],
) -> Check:
    """``order_payments`` against the orders and payments of the range, by the joins test's
    rules: a payment matches an order when its time is within ``[order − tolerance, order +
    pay_within]``; of several, the best by status (captured > authorized > failed), then time,
    then payment_id, is kept.

    - An order (not possibly late) with a matching payment (not possibly late) has a paid row
      with the order's amount; when none of its matching payments is possibly late the row holds
      exactly the best of them, else one at least as good.
    - An order without any matching payment in the range whose bound the watermark passed has a
      row (``unpaid``, or paid by a payment from outside the range).
    - Every rejected payment record is in quarantine (pipeline ``joins``).

    One row per order is the table's key. Orders whose id ``orders`` holds from before the run,
    and orders or payments possibly late, are not decided.
    """
    from streamops.contract.joins import STATUS_RANKING

    def rank(payment: ExpectedPayment) -> tuple[int, datetime, str]:
        return (STATUS_RANKING.index(payment.status), payment.event_time, payment.payment_id)

    by_order: dict[str, list[ExpectedPayment]] = defaultdict(list)
    for copies in payments.copies.values():
        by_order[copies[0].order_id].append(copies[0])
    elsewhere = set(ids_stored_elsewhere)
    missing_paid, wrong_amount, wrong_choice, missing_unpaid = [], [], [], []
    paid_checked = exact = unpaid_checked = undecided = waiting = 0
    for order_id, order in orders.first_copies.items():
        if order_id in elsewhere or order.position in orders_late:
            undecided += 1
            continue
        matches = [
            p
            for p in by_order.get(order_id, [])
            if order.event_time - bounds.paid_early_tolerance
            <= p.event_time
            <= order.event_time + bounds.pay_within
        ]
        on_time = [p for p in matches if p.position not in payments_late]
        row = stored.get(order_id)
        if on_time:
            paid_checked += 1
            best = max(on_time, key=rank)
            if row is None or row.payment_id is None:
                missing_paid.append(f"{order_id} ({'no row' if row is None else row.status})")
                continue
            if Decimal(row.order_amount) != order.amount:
                wrong_amount.append(f"{order_id}: {row.order_amount} not {order.amount}")
            held = STATUS_RANKING.index(row.status) if row.status in STATUS_RANKING else -1
            if len(on_time) == len(matches):
                exact += 1
                if (row.payment_id, row.status) != (best.payment_id, best.status):
                    wrong_choice.append(f"{order_id}: {row.payment_id} not {best.payment_id}")
            elif held < STATUS_RANKING.index(best.status):
                wrong_choice.append(f"{order_id}: {row.status} below {best.status}")
        elif matches:
            undecided += 1  # its only payments may have been dropped as late
        elif (
            watermark.closes(order.event_time + bounds.pay_within + WATERMARK_TOLERANCE)
            and not watermark.ahead
        ):
            unpaid_checked += 1
            if row is None:
                missing_unpaid.append(order_id)
        else:
            waiting += 1
    quarantine = compare_quarantine(payments.rejects, quarantined)
    problems = _problems(
        ("paid orders without their payment", missing_paid),
        ("rows with a wrong order amount", wrong_amount),
        ("rows not holding the best payment", wrong_choice),
        ("orders past the join bound without a row", missing_unpaid),
    )
    counts: dict[str, int | float] = {
        "orders": len(orders.copies),
        "valid_payments": len(payments.copies),
        "rejected_payments": quarantine.expected,
        "paid_checked": paid_checked,
        "paid_exact": exact,
        "unpaid_checked": unpaid_checked,
        "waiting_for_bound": waiting,
        "not_decided": undecided,
        "missing_paid": len(missing_paid),
        "wrong_amount": len(wrong_amount),
        "wrong_payment": len(wrong_choice),
        "missing_unpaid": len(missing_unpaid),
        **quarantine.counts,
    }
    detail = (
        f"{paid_checked} paid orders each in order_payments once with its payment "
        f"({exact} holding exactly the best one); {unpaid_checked} orders past the join bound "
        f"without a payment have their row; {waiting} still within the bound and {undecided} "
        f"possibly late or first stored before the run not decided; {quarantine.expected} "
        "rejected payments in quarantine"
    )
    return _verdict(PAYMENTS_CHECK, problems + quarantine.problems, counts, detail, watermark)


CategoryKey = tuple[datetime, str, str]  # window_start, category, currency


def category_revenue(
    rows: Iterable[tuple[datetime, str, str, int, Decimal]],
    categories: Mapping[str, str],
    size: timedelta = CATEGORY_WINDOW,
) -> dict[CategoryKey, WindowValues]:
    """Orders, items and revenue per window, category (``unknown`` for a product not in the
    catalogue) and currency over ``orders`` rows (event_time, product_id, currency, quantity,
    amount): ``Expected.category_revenue`` of the joins integration test."""
    sums: dict[CategoryKey, list[Any]] = defaultdict(lambda: [0, 0, Decimal(0)])
    for event_time, product_id, currency, quantity, amount in rows:
        entry = sums[
            (window_of(event_time, size), categories.get(product_id, UNKNOWN_CATEGORY), currency)
        ]
        entry[0] += 1
        entry[1] += int(quantity)
        entry[2] += Decimal(amount)
    return {key: (count, items, revenue) for key, (count, items, revenue) in sums.items()}


def check_category_windows(
    orders: OrdersTruth,
    late: set[Position],
    watermark: Watermark,
    stored: Mapping[CategoryKey, WindowValues],
    computed: Mapping[CategoryKey, WindowValues],
    categories: Mapping[str, str],
    *,
    ids_stored_elsewhere: Iterable[str] = (),
) -> Check:
    """Each closed 1-min window, category and currency an order of the range falls in:
    ``category_revenue_1m`` (added to batch by batch, so a replay would count twice) against
    the same sums over ``orders`` joined with today's catalogue."""
    return _window_check(
        CATEGORY_CHECK,
        orders.all_copies,
        late,
        watermark,
        stored,
        computed,
        size=CATEGORY_WINDOW,
        key=lambda copy, start: (
            start,
            categories.get(copy.product_id, UNKNOWN_CATEGORY),
            copy.currency,
        ),
        entity=lambda copy: copy.order_id,
        ids_stored_elsewhere=ids_stored_elsewhere,
        above="SQL over orders ⋈ products",
        windows="category windows",
        late_what="orders",
        note="a product recategorised during the run would show as a difference",
    )


# --- I/O: Kafka ---------------------------------------------------------------------------------


def _consumer(settings: Settings) -> Consumer:
    from streamops.clients import kafka_consumer

    return kafka_consumer(
        settings,
        "streamops-chaos-truth",
        {"enable.partition.eof": True, "socket.timeout.ms": 10_000},
    )


def _watermarks(
    consumer: Consumer, settings: Settings, topic: str, partition: int, timeout: float
) -> tuple[int, int]:
    from confluent_kafka import KafkaException, TopicPartition

    error: KafkaException | None = None
    try:
        offsets = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=timeout, cached=False
        )
    except KafkaException as exc:
        offsets, error = None, exc
    if offsets is None:
        raise TruthError(
            f"Could not read the offsets of {topic}[{partition}] from Kafka at "
            f"{settings.kafka_bootstrap_servers} within {timeout:.0f} s"
            + (f" ({error})" if error else "")
            + ": is the broker up?"
        )
    return int(offsets[0]), int(offsets[1])


def end_offsets(settings: Settings, topics: Iterable[str], timeout: float = 30.0) -> Offsets:
    """The current end (high watermark) of every partition of ``topics``."""
    from confluent_kafka import KafkaException

    consumer = _consumer(settings)
    try:
        result: Offsets = {}
        for topic in topics:
            try:
                metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            except KafkaException as exc:
                raise TruthError(
                    f"Could not list the partitions of Kafka topic {topic!r} at "
                    f"{settings.kafka_bootstrap_servers} ({exc}): is the broker up?"
                ) from exc
            if metadata is None or metadata.error is not None or not metadata.partitions:
                reason = metadata.error if metadata is not None else "no such topic"
                raise TruthError(f"Kafka topic {topic!r} has no readable partitions ({reason}).")
            result[topic] = {
                partition: _watermarks(consumer, settings, topic, partition, timeout)[1]
                for partition in sorted(metadata.partitions)
            }
        return result
    finally:
        consumer.close()


def read_records(
    settings: Settings,
    topic: str,
    start: Mapping[int, int],
    end: Mapping[int, int],
    *,
    lookback: int = LOOKBACK_RECORDS,
    timeout: float = READ_TIMEOUT_SECONDS,
) -> TopicRecords:
    """The records of ``topic`` at offsets ``[start, end)`` of each partition of ``end`` (a
    partition missing from ``start`` starts at 0), and up to ``lookback`` before them.

    Raises :class:`TruthError` naming the partition when records of the range are gone from
    Kafka or cannot all be read within ``timeout`` seconds.
    """
    from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, TopicPartition

    consumer = _consumer(settings)
    try:
        first: dict[int, int] = {}
        for partition, stop in sorted(end.items()):
            begin = start.get(partition, 0)
            low, _ = _watermarks(consumer, settings, topic, partition, timeout)
            if begin < stop and low > begin:
                raise TruthError(
                    f"Offsets {begin}–{min(low, stop) - 1} of {topic}[{partition}] are no longer "
                    "in Kafka (retention deleted them): the run's records cannot be read back. "
                    "Keep the topic's retention.ms longer than a run."
                )
            if max(low, begin - lookback) < stop:
                first[partition] = max(low, begin - lookback)
        consumer.assign([TopicPartition(topic, p, offset) for p, offset in first.items()])
        remaining = set(first)
        reached = dict(first)
        records: list[KafkaRecord] = []
        before: list[KafkaRecord] = []
        last_error = ""
        deadline = time.monotonic() + timeout
        while remaining:
            if time.monotonic() > deadline:
                partition = min(remaining)
                raise TruthError(
                    f"Could not read {topic}[{partition}] offsets {reached[partition]}–"
                    f"{end[partition] - 1} from Kafka at {settings.kafka_bootstrap_servers} "
                    f"within {timeout:.0f} s ({last_error or 'no error reported'})."
                )
            for message in consumer.consume(num_messages=CONSUME_BATCH, timeout=0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        eof_partition, eof_offset = _message_position(message)
                        if eof_partition in remaining and eof_offset >= end[eof_partition]:
                            remaining.discard(eof_partition)
                    elif error.fatal():
                        raise TruthError(f"Reading {topic} from Kafka failed: {error}")
                    else:
                        last_error = str(error)
                    continue
                partition, offset = _message_position(message)
                if partition not in remaining or offset >= end[partition]:
                    continue
                kind, stamp = message.timestamp()
                record = KafkaRecord(
                    partition,
                    offset,
                    message.value(),
                    None if kind == TIMESTAMP_NOT_AVAILABLE or stamp < 0 else int(stamp),
                )
                (records if offset >= start.get(partition, 0) else before).append(record)
                reached[partition] = offset + 1
                if offset + 1 >= end[partition]:
                    remaining.discard(partition)
        return TopicRecords(topic, tuple(records), tuple(before))
    finally:
        consumer.close()


def _message_position(message: Any) -> Position:
    partition, offset = message.partition(), message.offset()
    assert partition is not None and offset is not None  # set on every consumed message
    return int(partition), int(offset)


def _before_times(records: TopicRecords) -> list[datetime]:
    """The event times of the valid records before the range."""
    valid, _ = _validated(records.topic, records.before)
    if records.topic == ERROR_LOGS_TOPIC:
        return [_valid_time(_csv_fields(value)[0]) for _, value in valid]
    return [_valid_time(json.loads(value)["event_time"]) for _, value in valid]


def _lateness(
    records: TopicRecords, events: Sequence[Event], delay: timedelta
) -> tuple[set[Position], datetime | None]:
    """The positions of ``events`` (of ``records``' range) possibly late behind a watermark
    ``delay`` behind, and that watermark as the records estimate it (None without records)."""
    seen_before = _latest(_before_times(records))
    late = possibly_late(events, delay, seen_before=seen_before)
    latest = _latest([e.event_time for e in events] + ([seen_before] if seen_before else []))
    return late, None if latest is None else latest - delay


def _span(times: Sequence[datetime], *sizes: timedelta) -> tuple[datetime, datetime]:
    """From the start of the first window of any of ``sizes`` that ``times`` fall in to the end
    of the last one (an empty span when there are no times)."""
    if not times:
        return _EPOCH, _EPOCH
    return (
        min(window_of(min(times), size) for size in sizes),
        max(window_of(max(times), size) + size for size in sizes),
    )


# --- I/O: MariaDB and Redis ---------------------------------------------------------------------


def _rows(
    connection: mariadb.Connection, sql: str, params: Sequence[Any] = ()
) -> list[tuple[Any, ...]]:
    cursor = connection.cursor()
    try:
        cursor.execute(sql, tuple(params))
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def _rows_in(
    connection: mariadb.Connection, sql: str, values: Sequence[Any]
) -> list[tuple[Any, ...]]:
    """``sql`` with ``{}`` replaced by placeholders, run per chunk of ``values``."""
    rows: list[tuple[Any, ...]] = []
    for index in range(0, len(values), IN_CHUNK):
        chunk = values[index : index + IN_CHUNK]
        rows += _rows(connection, sql.format(", ".join("?" for _ in chunk)), chunk)
    return rows


Bounds = dict[int, tuple[int, int]]  # partition -> [start, end)


def _bounds(start: Mapping[int, int], end: Mapping[int, int]) -> Bounds:
    return {p: (start.get(p, 0), stop) for p, stop in end.items() if stop > start.get(p, 0)}


def _in_bounds(position: Position | None, bounds: Bounds) -> bool:
    if position is None or position[0] not in bounds:
        return False
    low, high = bounds[position[0]]
    return low <= position[1] < high


def _position_filter(bounds: Bounds) -> tuple[str, list[int]]:
    """SQL matching ``source_partition``/``source_offset`` in ``bounds`` (false when empty)."""
    if not bounds:
        return "FALSE", []
    clauses, params = [], []
    for partition, (low, high) in sorted(bounds.items()):
        clauses.append("(source_partition = ? AND source_offset >= ? AND source_offset < ?)")
        params += [partition, low, high]
    return "(" + " OR ".join(clauses) + ")", params


def _quarantined(
    connection: mariadb.Connection, topic: str, pipeline: str, bounds: Bounds
) -> set[Position]:
    where, params = _position_filter(bounds)
    rows = _rows(
        connection,
        f"SELECT source_partition, source_offset FROM quarantine "
        f"WHERE source_topic = ? AND pipeline = ? AND {where}",
        [topic, pipeline, *params],
    )
    return {(int(p), int(o)) for p, o in rows}


def _redis(settings: Settings) -> redis.Redis:
    from streamops.clients import redis_client

    return redis_client(settings, timeout_seconds=CONNECT_TIMEOUT_SECONDS, decode_responses=True)


def _published_watermark(
    settings: Settings, connection: mariadb.Connection, pipeline: str, query: str
) -> tuple[datetime | None, str]:
    """The watermark the query last published: its Redis hash, else its last ``query_progress``
    row (the listener writes both, spark_jobs/common/listener.py)."""
    import redis

    from streamops.contract.redis_keys import query_key

    key = query_key(pipeline, query)
    try:
        with closing(_redis(settings)) as client:
            text = client.hget(key, "watermark")
        if text:
            return utc_ms(datetime.fromisoformat(str(text))), f"{key} in Redis"
    except redis.RedisError:
        pass
    rows = _rows(
        connection,
        "SELECT watermark FROM query_progress WHERE pipeline = ? AND query_name = ? "
        "ORDER BY progress_at DESC LIMIT 1",
        [pipeline, query],
    )
    if rows and rows[0][0] is not None:
        return utc_ms(rows[0][0]), f"last query_progress row of {pipeline}/{query}"
    return None, ""


def _watermark(
    settings: Settings,
    connection: mariadb.Connection,
    pipeline: str,
    query: str,
    estimate: datetime | None,
) -> Watermark:
    published, source = _published_watermark(settings, connection, pipeline, query)
    return decide_watermark(published, estimate, source)


def _latest(times: Iterable[datetime]) -> datetime | None:
    return max(times, default=None)


@dataclass(frozen=True)
class JobDelays:
    """The watermark delays and join bounds of the jobs, as their configs default them (the
    supervised jobs run with the defaults: pipelines.yaml passes no --watermark)."""

    orders: timedelta
    alerts: timedelta
    vitals: timedelta
    joins_orders: timedelta
    joins_payments: timedelta
    join_bounds: JoinBounds


def job_delays() -> JobDelays:
    from streamops.contract import job_defaults as jobs

    return JobDelays(
        orders=parse_interval(jobs.ORDERS_WATERMARK),
        alerts=parse_interval(jobs.ALERTS_WATERMARK),
        vitals=parse_interval(jobs.VITALS_WATERMARK),
        joins_orders=parse_interval(jobs.JOINS_ORDERS_WATERMARK),
        joins_payments=parse_interval(jobs.JOINS_PAYMENTS_WATERMARK),
        join_bounds=JoinBounds(
            pay_within=parse_interval(jobs.JOINS_PAY_WITHIN),
            paid_early_tolerance=parse_interval(jobs.JOINS_PAID_EARLY_TOLERANCE),
        ),
    )


# --- I/O: one check each ------------------------------------------------------------------------


@dataclass
class _Run:
    """What the checks share: the records read and what the orders table says of them."""

    settings: Settings
    delays: JobDelays
    topics: dict[str, TopicRecords]
    bounds: dict[str, Bounds]
    orders: OrdersTruth
    stored_orders: dict[str, StoredRow] | None = None

    def connect(self) -> Any:
        from streamops.db import connect

        return closing(connect(self.settings))

    def orders_stored(self, connection: mariadb.Connection) -> dict[str, StoredRow]:
        if self.stored_orders is None:
            rows = _rows_in(
                connection,
                "SELECT order_id, amount, source_partition, source_offset FROM orders "
                "WHERE order_id IN ({})",
                sorted(self.orders.copies),
            )
            self.stored_orders = {
                str(order_id): StoredRow(
                    Decimal(amount), None if p is None or o is None else (int(p), int(o))
                )
                for order_id, amount, p, o in rows
            }
        return self.stored_orders


def _check_orders(run: _Run) -> Check:
    with run.connect() as connection:
        stored = run.orders_stored(connection)
        where, params = _position_filter(run.bounds[ORDERS_TOPIC])
        rows = _rows(
            connection,
            f"SELECT order_id, source_partition, source_offset FROM orders WHERE {where}",
            params,
        )
        quarantined = _quarantined(connection, ORDERS_TOPIC, "orders", run.bounds[ORDERS_TOPIC])
    in_range = {(int(p), int(o)): str(order_id) for order_id, p, o in rows}
    return check_orders(run.orders, stored, in_range, quarantined)


def _sums(order_count: Any, item_count: Any, revenue: Any) -> WindowValues:
    return (int(order_count), int(item_count), Decimal(revenue))


def _check_revenue(run: _Run) -> Check:
    from streamops.contract.orders import revenue_per_window_sql
    from streamops.contract.redis_keys import orders_totals_key

    copies = run.orders.all_copies
    late, estimate = _lateness(run.topics[ORDERS_TOPIC], copies, run.delays.orders)
    with run.connect() as connection:
        watermark = _watermark(run.settings, connection, "orders", "orders_revenue", estimate)
        low, high = _span([c.event_time for c in copies], REVENUE_WINDOW)
        stored = {
            (start, currency): _sums(n, items, revenue)
            for start, currency, n, items, revenue in _rows(
                connection,
                "SELECT window_start, currency, order_count, item_count, revenue "
                "FROM order_revenue_5s WHERE window_start >= ? AND window_start < ?",
                [low, high],
            )
        }
        computed = {
            (start, currency): _sums(n, items, revenue)
            for start, currency, n, items, revenue in _rows(
                connection, revenue_per_window_sql("orders", 5), [low, high]
            )
        }
        table_totals = {
            str(currency): _sums(n, items, revenue)
            for currency, n, items, revenue in _rows(
                connection,
                "SELECT currency, SUM(order_count), SUM(item_count), SUM(revenue) "
                "FROM order_revenue_5s GROUP BY currency",
            )
        }
        elsewhere = stored_elsewhere(run.orders.copies, run.orders_stored(connection))
    with closing(_redis(run.settings)) as client:
        redis_totals = {str(k): str(v) for k, v in client.hgetall(orders_totals_key()).items()}
    return check_revenue_windows(
        run.orders,
        late,
        watermark,
        stored,
        computed,
        ids_stored_elsewhere=elsewhere,
        redis_totals=redis_totals,
        table_totals=table_totals,
    )


def _check_alerts(run: _Run) -> Check:
    from streamops.alert_rules import load_enabled_rules
    from streamops.contract.redis_keys import alert_key

    records = run.topics[ERROR_LOGS_TOPIC]
    lines, rejects = expected_lines(records.records)
    late, estimate = _lateness(records, lines, run.delays.alerts)
    horizon = pre_run_horizon(records.before, _before_times(records))
    rules = load_enabled_rules(run.settings)
    sizes = [timedelta(seconds=r.window_seconds) for r in rules] + [SECOND]
    with run.connect() as connection:
        watermark = _watermark(run.settings, connection, "alerts", "alerts_counts", estimate)
        low, high = _span([line.event_time for line in lines], *sizes)
        alerts = [
            StoredAlert(str(a), str(r), start, stop, int(n))
            for a, r, start, stop, n in _rows(
                connection,
                "SELECT alert_id, rule_id, window_start, window_end, event_count FROM alerts "
                "WHERE window_start >= ? AND window_start < ?",
                [low, high],
            )
        ]
        seconds = {
            (str(service), str(level), second): int(n)
            for service, level, second, n in _rows(
                connection,
                "SELECT service, level, second_start, event_count FROM error_counts_1s "
                "WHERE second_start >= ? AND second_start < ?",
                [low, high],
            )
        }
        quarantined = _quarantined(
            connection, ERROR_LOGS_TOPIC, "alerts", run.bounds[ERROR_LOGS_TOPIC]
        )
    redis_counts: dict[str, int | None] = {}
    if alerts:
        with closing(_redis(run.settings)) as client:
            values = client.mget([alert_key(a.alert_id) for a in alerts])
        for alert, value in zip(alerts, values, strict=True):
            redis_counts[alert.alert_id] = (
                None if value is None else int(json.loads(value)["event_count"])
            )
    return check_alerts(
        rules,
        lines,
        late,
        watermark,
        horizon=horizon,
        alerts=alerts,
        seconds=seconds,
        redis_counts=redis_counts,
        rejects=rejects,
        quarantined=quarantined,
    )


def _check_vitals(run: _Run) -> list[Check]:
    records = run.topics[VITALS_TOPIC]
    truth = expected_readings(records.records)
    copies = truth.all_copies
    late, estimate = _lateness(records, copies, run.delays.vitals)
    bounds = run.bounds[VITALS_TOPIC]
    with run.connect() as connection:
        watermark = _watermark(run.settings, connection, "vitals", "vitals_summary", estimate)
        low, high = _span([c.event_time for c in copies], VITALS_WINDOW)
        rows = _rows(
            connection,
            "SELECT patient_id, event_time, device_id, source_partition, source_offset "
            "FROM vitals_readings WHERE event_time >= ? AND event_time < ?",
            [low, high],
        )
        summaries = {
            (str(patient), start): (int(n),)
            for patient, start, n in _rows(
                connection,
                "SELECT patient_id, window_start, reading_count FROM vitals_summary_1m "
                "WHERE window_start >= ? AND window_start < ?",
                [low, high],
            )
        }
        quarantined = _quarantined(connection, VITALS_TOPIC, "vitals", bounds)
    stored: dict[ReadingKey, StoredRow] = {}
    in_range: dict[Position, ReadingKey] = {}
    for patient, moment, device, p, o in rows:
        key = (str(patient), moment, str(device))
        position = None if p is None or o is None else (int(p), int(o))
        stored[key] = StoredRow(None, position)
        if position is not None and _in_bounds(position, bounds):
            in_range[position] = key
    computed = readings_per_window((str(patient), moment) for patient, moment, *_ in rows)
    return [
        check_readings(truth, stored, in_range, quarantined),
        check_summaries(truth, late, watermark, summaries, computed),
    ]


def _check_joins(run: _Run) -> list[Check]:
    payments = expected_payments(run.topics[PAYMENTS_TOPIC].records)
    orders = run.orders.all_copies
    orders_late, order_estimate = _lateness(
        run.topics[ORDERS_TOPIC], orders, run.delays.joins_orders
    )
    payments_late, payment_estimate = _lateness(
        run.topics[PAYMENTS_TOPIC], payments.all_copies, run.delays.joins_payments
    )
    # Two inputs: Spark's global watermark is the lower of the two (multipleWatermarkPolicy min).
    join_estimate = min(
        (e for e in (order_estimate, payment_estimate) if e is not None), default=None
    )
    with run.connect() as connection:
        stored_orders = run.orders_stored(connection)
        elsewhere = stored_elsewhere(run.orders.copies, stored_orders)
        join_watermark = _watermark(
            run.settings, connection, "joins", "joins_order_payments", join_estimate
        )
        category_watermark = _watermark(
            run.settings, connection, "joins", "joins_category_revenue", order_estimate
        )
        stored = {
            str(order_id): StoredPayment(
                None if payment_id is None else str(payment_id), str(status), Decimal(amount)
            )
            for order_id, payment_id, status, amount in _rows_in(
                connection,
                "SELECT order_id, payment_id, status, order_amount FROM order_payments "
                "WHERE order_id IN ({})",
                sorted(run.orders.copies),
            )
        }
        quarantined = _quarantined(connection, PAYMENTS_TOPIC, "joins", run.bounds[PAYMENTS_TOPIC])
        categories = {
            str(p): str(c)
            for p, c in _rows(connection, "SELECT product_id, category FROM products")
        }
        low, high = _span([c.event_time for c in orders], CATEGORY_WINDOW)
        category_stored = {
            (start, str(category), str(currency)): _sums(n, items, revenue)
            for start, category, currency, n, items, revenue in _rows(
                connection,
                "SELECT window_start, category, currency, order_count, item_count, revenue "
                "FROM category_revenue_1m WHERE window_start >= ? AND window_start < ?",
                [low, high],
            )
        }
        order_rows = _rows(
            connection,
            "SELECT event_time, product_id, currency, quantity, amount FROM orders "
            "WHERE event_time >= ? AND event_time < ?",
            [low, high],
        )
    return [
        check_order_payments(
            run.orders,
            orders_late,
            payments,
            payments_late,
            join_watermark,
            stored,
            bounds=run.delays.join_bounds,
            ids_stored_elsewhere=elsewhere,
            quarantined=quarantined,
        ),
        check_category_windows(
            run.orders,
            orders_late,
            category_watermark,
            category_stored,
            category_revenue(order_rows, categories),
            categories,
            ids_stored_elsewhere=elsewhere,
        ),
    ]


def _guarded(names: Sequence[str], produce: Callable[[], Check | list[Check]]) -> list[Check]:
    """The checks ``produce`` makes, or each of ``names`` failed with the error that stopped it
    (a service that does not answer leaves the check undecided, which is not a pass)."""
    try:
        made = produce()
    except Exception as error:
        reason = f"could not be checked: {type(error).__name__}: {error}".replace("\n", " ")
        return [Check(name, False, reason[:500]) for name in names]
    return made if isinstance(made, list) else [made]


def check_outputs(settings: Settings, start: Offsets, end: Offsets) -> list[Check]:
    """Every check of the module over the records of the input topics in ``[start, end)``.

    ``end`` must be taken after the run's producers stopped and ``start`` before they started.
    Raises :class:`TruthError` when the records cannot be read back; a table or Redis that does
    not answer fails only the checks that needed it.
    """
    topics = {
        topic: read_records(settings, topic, start.get(topic, {}), end.get(topic, {}))
        for topic in TRUTH_TOPICS
    }
    run = _Run(
        settings=settings,
        delays=job_delays(),
        topics=topics,
        bounds={topic: _bounds(start.get(topic, {}), end.get(topic, {})) for topic in TRUTH_TOPICS},
        orders=expected_orders(topics[ORDERS_TOPIC].records),
    )
    return [
        *_guarded([ORDERS_CHECK], lambda: _check_orders(run)),
        *_guarded([REVENUE_CHECK], lambda: _check_revenue(run)),
        *_guarded([ALERTS_CHECK], lambda: _check_alerts(run)),
        *_guarded([READINGS_CHECK, SUMMARIES_CHECK], lambda: _check_vitals(run)),
        *_guarded([PAYMENTS_CHECK, CATEGORY_CHECK], lambda: _check_joins(run)),
    ]
