"""The orders' live records in Redis: the latest revenue windows per currency and running totals,
for dashboards. One writer (:func:`write_windows`) for the stream's sink
(``spark_jobs.sinks.orders``) and the maintenance's reconciliation alike.

Keys (documented with types and TTLs in docs/redis-keys.md), ``<prefix>`` = ``streamops:orders``:

- ``<prefix>:window:<CUR>:<window_start>`` hash: one window's absolute values; TTL.
- ``<prefix>:windows:<CUR>`` sorted set: window starts (ISO) scored by epoch seconds, the latest
  ``max_windows`` kept; TTL.
- ``<prefix>:contributions:<CUR>`` hash: window start → the values that window added to the
  totals, for the windows still in the sorted set; TTL.
- ``<prefix>:totals`` hash: ``<CUR>:order_count``, ``<CUR>:item_count``, ``<CUR>:revenue``,
  the writer's bookkeeping ``<CUR>:floor`` and ``<CUR>:newest`` (epoch seconds) and
  ``<CUR>:records``, and the last ``batch_id``. The one key here without a TTL: 6 fields for each
  of at most 26³ currencies.

The maintenance's reconciliation of late windows (``streamops.maintenance.reconcile``) writes the
windows it corrected here too, the same way, with no batch id (``"reconciled"`` in the window's
hash, the totals' ``batch_id`` left alone): while a currency's records are whole, the totals stay
equal to ``order_revenue_5s``. A window it corrected that Redis no longer tracks (at or before
the floor: older than the newest ``max_windows``, as after the platform was down for an hour and
the hourly reconciliation catches up) carries MariaDB's row from before the correction, and the
totals move by the difference; such a window gets no record and no place in the sorted set.

Idempotent under replay: each batch carries the *absolute* values of the windows it changed, and
the totals move by the difference between a window's new values and its recorded contribution,
so writing the same batch twice moves them by zero. A window trimmed from the sorted set keeps
its share of the totals but loses its contribution record, and the currency's ``floor`` rises to
it: a later window without a record at or before the floor (only a replay from long ago, far
behind any watermark) is skipped, since adding it again would count it twice.

An idle currency's sorted set and contributions expire together after the TTL, and under memory
pressure Redis may evict them (they carry a TTL, so ``volatile-lru`` may take them), even between
a writer's read and its ``EXEC``: the totals stay, and the next write finds fewer records than
``<CUR>:records`` says, raises the floor to ``newest`` and goes on with the records left. Nothing
is counted twice. What Redis no longer follows from then on: any window at or before that floor
without a record, whether an update of one already counted or one never counted (a window first
emitted late and out of order); the batch's message counts them in ``skipped_windows``.
MariaDB's ``order_revenue_5s`` stays the system of record.

The writes of up to ``TRANSACTION_CURRENCIES`` currencies go in one ``MULTI``/``EXEC``, guarded
by ``WATCH`` on the totals, which every writer changes in every transaction; the last
transaction of a batch sets ``batch_id`` and carries the ``PUBLISH`` that announces it. A live
batch has a handful of currencies: one transaction. A larger one can be half-applied if the job
dies between two transactions, until the replay of the batch applies the rest.

Keys an earlier version of this writer left (no TTLs, no bookkeeping) get both on their
currency's next write: ``newest`` from the records kept, and ``floor`` from the oldest record
when ``max_windows`` are kept (the old rule skipped windows older than those). Until then they
keep no TTL: an idle currency's keys from that version stay until deleted.

"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from streamops.contract.redis_keys import ORDERS_KEY_PREFIX
from streamops.contract.times import iso_utc

log = logging.getLogger(__name__)

# 720 windows of 5 s: the last hour per currency.
DEFAULT_MAX_WINDOWS = 720
# A safety net: a trimmed window's hash is deleted at once; the TTL clears them if the job stops.
DEFAULT_WINDOW_TTL_SECONDS = 6 * 3600
# The message lists at most this many windows (the latest); window_count says how many changed.
MAX_WINDOWS_IN_MESSAGE = 50
WATCH_ATTEMPTS = 8
# Doubled after each aborted attempt, up to 1 s.
WATCH_BACKOFF_SECONDS = 0.05
# Currencies per transaction (see write_windows).
TRANSACTION_CURRENCIES = 256
CENT = Decimal("0.01")
# The batch id of a window the maintenance's reconciliation wrote.
RECONCILED = "reconciled"


@dataclass(frozen=True)
class Window:
    currency: str
    window_start: datetime
    window_end: datetime
    order_count: int
    item_count: int
    revenue: Decimal
    # A reconciliation's window: what the totals hold for it, MariaDB's row before the
    # correction ((0, 0, 0) for a window it had not). Used when Redis keeps no record of the
    # window any more (at or before the floor): the totals then move by the difference instead
    # of skipping it. None from the stream, whose windows there are skipped.
    counted_before: tuple[int, int, Decimal] | None = None

    @property
    def member(self) -> str:
        return iso_utc(self.window_start)

    @property
    def score(self) -> float:
        return self.window_start.replace(tzinfo=UTC).timestamp()

    def contribution(self) -> str:
        return json.dumps([self.order_count, self.item_count, str(self.revenue)])

    def as_hash(self, batch_id: int | None) -> dict[FieldT, EncodableT]:
        return {
            "currency": self.currency,
            "window_start": iso_utc(self.window_start),
            "window_end": iso_utc(self.window_end),
            "order_count": str(self.order_count),
            "item_count": str(self.item_count),
            "revenue": str(self.revenue),
            "batch_id": RECONCILED if batch_id is None else str(batch_id),
        }


@dataclass(frozen=True)
class OrdersRedisKeys:
    prefix: str = ORDERS_KEY_PREFIX

    def window(self, currency: str, window_start: str) -> str:
        return f"{self.prefix}:window:{currency}:{window_start}"

    def windows(self, currency: str) -> str:
        return f"{self.prefix}:windows:{currency}"

    def contributions(self, currency: str) -> str:
        return f"{self.prefix}:contributions:{currency}"

    @property
    def totals(self) -> str:
        return f"{self.prefix}:totals"


def write_windows(
    client: redis.Redis,
    keys: OrdersRedisKeys,
    windows: Sequence[Window],
    batch_id: int | None,
    channel: str,
    ttl_seconds: int,
    max_windows: int,
) -> dict[str, Any]:
    """Apply one batch of windows; return the message published.
    ``batch_id`` None: a reconciliation's corrected windows, not a batch of the stream.

    One transaction per ``TRANSACTION_CURRENCIES`` currencies (a live batch has a handful: one
    transaction), which bounds what Redis queues for one ``EXEC``. Each is replay-safe on its own,
    so a crash between two leaves nothing a replay does not mend; the last one sets ``batch_id``
    and publishes the message of the whole batch."""
    # The last copy of a window in the batch wins, as in MariaDB.
    latest = {(w.currency, w.member): w for w in windows}
    by_currency: dict[str, list[Window]] = {}
    for window in latest.values():
        by_currency.setdefault(window.currency, []).append(window)
    currencies = sorted(by_currency)
    done = _Applied()
    # Called with no windows, it still runs one transaction: it publishes, and moves batch_id.
    for first in range(0, max(len(currencies), 1), TRANSACTION_CURRENCIES):
        chunk = {c: by_currency[c] for c in currencies[first : first + TRANSACTION_CURRENCIES]}
        last = first + TRANSACTION_CURRENCIES >= len(currencies)
        apply = functools.partial(
            _apply,
            client,
            keys=keys,
            by_currency=chunk,
            earlier=done,
            batch_id=batch_id,
            channel=channel if last else None,
            ttl_seconds=ttl_seconds,
            max_windows=max_windows,
        )
        done = _transaction(client, keys, batch_id, apply)
    if done.skipped:
        log.warning(
            "batch %s: %s windows at or before the newest window Redis no longer tracks were "
            "skipped (MariaDB has them)",
            batch_id,
            done.skipped,
        )
    return done.message


@dataclass(frozen=True)
class _Applied:
    """What the transactions of a batch applied so far, and the message the last one sent."""

    accepted: tuple[Window, ...] = ()
    skipped: int = 0
    totals: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    message: dict[str, Any] = dataclasses.field(default_factory=dict)


def _transaction(
    client: redis.Redis,
    keys: OrdersRedisKeys,
    batch_id: int | None,
    apply: Callable[[redis.client.Pipeline], _Applied],
) -> _Applied:
    """One WATCHed transaction: ``apply`` reads and queues the writes of some currencies."""
    # Every writer of these keys (the job, the reconciliation) writes the totals in every
    # transaction, so watching them alone catches any other writer. The per-currency keys carry
    # a TTL: under memory pressure Redis evicts before it runs EXEC, and watching them would
    # abort nearly every transaction then. A record evicted between our read and EXEC is caught
    # on the next read instead (``<CUR>:records``).
    watched = [keys.totals]
    for attempt in range(1, WATCH_ATTEMPTS + 1):
        with client.pipeline(transaction=True) as transaction:
            try:
                transaction.watch(*watched)
                applied = apply(transaction)
                transaction.execute()
                return applied
            except redis.WatchError:
                # Another writer (the reconciliation) changed the totals between our read and
                # EXEC: read again.
                log.warning(
                    "redis keys of %s changed during batch %s (attempt %s of %s)",
                    keys.prefix,
                    batch_id,
                    attempt,
                    WATCH_ATTEMPTS,
                )
                if attempt < WATCH_ATTEMPTS:
                    time.sleep(min(WATCH_BACKOFF_SECONDS * 2 ** (attempt - 1), 1.0))
    raise RuntimeError(
        f"Redis keys under {keys.prefix} kept changing during batch {batch_id}; is a second "
        f"writer running with the same keys? Gave up after {WATCH_ATTEMPTS} attempts."
    )


def _apply(
    client: redis.Redis,
    transaction: redis.client.Pipeline,
    *,
    keys: OrdersRedisKeys,
    by_currency: Mapping[str, list[Window]],
    earlier: _Applied,
    batch_id: int | None,
    channel: str | None,
    ttl_seconds: int,
    max_windows: int,
) -> _Applied:
    """The currencies of ``by_currency``, read and queued in ``transaction``; ``channel``: the
    last transaction of the batch, which publishes."""
    currencies = sorted(by_currency)
    # Reads on a second connection, in one round trip. WATCH on the totals is already armed, so
    # another writer's commit before EXEC aborts the transaction; an eviction of these keys
    # does not, and the next write finds it by ``<CUR>:records``.
    reads = client.pipeline(transaction=False)
    for currency in currencies:
        reads.hgetall(keys.contributions(currency))
        reads.zcard(keys.windows(currency))
        reads.hmget(keys.totals, _total_fields(currency) + _bookkeeping_fields(currency))
    replies = reads.execute()

    transaction.multi()
    gone: list[str] = []
    accepted: list[Window] = []
    skipped = 0
    totals: dict[str, dict[str, str]] = {}
    for index, currency in enumerate(currencies):
        recorded_all, listed, stored = replies[3 * index : 3 * index + 3]
        recorded = {_text(member): value for member, value in recorded_all.items()}
        order_count, item_count, revenue = _parse_total(stored[:3])
        floor, newest, records = (None if v is None else float(_text(v)) for v in stored[3:])
        merged = {member: _score(member) for member in recorded}
        if records is None and merged:
            # Written before the bookkeeping: what the old rule knew, from the records kept.
            newest = max(merged.values()) if newest is None else max(newest, *merged.values())
            if len(merged) >= max_windows:
                oldest = min(merged.values())
                floor = oldest if floor is None else max(floor, oldest)
        lost = records is not None and len(recorded) != records
        if lost and newest is not None:
            # Fewer records than the last write left: the hash expired after the currency was
            # idle for the TTL, or Redis evicted it (perhaps while a write was on its way, which
            # then made it anew with its own records alone). Every window up to the newest one
            # counted is in the totals already; those without a record can no longer be told
            # apart from new ones, so only newer windows are added from here on. The sorted set,
            # if it is still there, may list windows nothing trims any more: it starts over.
            gone.append(f"{currency} ({int(records or 0) - len(recorded)} of {int(records or 0)})")
            floor = newest if floor is None else max(floor, newest)
        added: dict[str, float] = {}
        for window in by_currency[currency]:
            contribution = recorded.get(window.member)
            untracked = contribution is None and floor is not None and window.score <= floor
            if contribution is not None:
                old = _parse_contribution(contribution)
            elif not untracked:
                old = (0, 0, Decimal(0))
            elif window.counted_before is not None:
                # A reconciliation's correction of a window no longer tracked: the totals hold
                # its old row, so they move by the difference.
                old = window.counted_before
            else:
                # No record of it, and at or before a window the totals already hold and no
                # longer track: counting it could count it twice. MariaDB has it either way.
                skipped += 1
                continue
            order_count += window.order_count - old[0]
            item_count += window.item_count - old[1]
            revenue += window.revenue - old[2]
            accepted.append(window)
            if untracked:
                continue  # no record, no listing: it stays out of the tracked (newest) windows
            if contribution is None:
                added[window.member] = window.score
            merged[window.member] = window.score
            newest = window.score if newest is None else max(newest, window.score)
            transaction.hset(keys.window(currency, window.member), mapping=window.as_hash(batch_id))
            transaction.expire(keys.window(currency, window.member), ttl_seconds)
            transaction.hset(keys.contributions(currency), window.member, window.contribution())
        # The sorted set is the dashboards' index, in step with the records: if it went alone
        # (evicted, perhaps while a write was on its way) or lists what no record does any more,
        # it is made anew from the records.
        stale = lost or listed != len(recorded)
        if stale and listed:
            transaction.delete(keys.windows(currency))
        listing = merged if stale else added
        if listing:
            transaction.zadd(keys.windows(currency), listing)
        # Trim to the newest max_windows: the trimmed windows' shares stay in the totals, and
        # the floor rises to the newest of them.
        trimmed = sorted(merged, key=lambda member: (merged[member], member))[:-max_windows]
        if trimmed:
            transaction.zrem(keys.windows(currency), *trimmed)
            transaction.hdel(keys.contributions(currency), *trimmed)
            transaction.delete(*(keys.window(currency, member) for member in trimmed))
            highest = max(merged[member] for member in trimmed)
            floor = highest if floor is None else max(floor, highest)
        if merged:
            # Idle currencies leave nothing behind but their totals: both keys expire together
            # (a batch that changes nothing for the currency does not refresh them).
            transaction.expire(keys.windows(currency), ttl_seconds)
            transaction.expire(keys.contributions(currency), ttl_seconds)
        records = len(merged) - len(trimmed)
        totals[currency] = {
            "order_count": str(order_count),
            "item_count": str(item_count),
            "revenue": str(revenue.quantize(CENT)),
        }
        fields: dict[FieldT, EncodableT] = {
            field: totals[currency][name]
            for field, name in zip(
                _total_fields(currency), ("order_count", "item_count", "revenue"), strict=True
            )
        }
        floor_field, newest_field, records_field = _bookkeeping_fields(currency)
        if floor is not None:
            fields[floor_field] = _epoch_text(floor)
        if newest is not None:
            fields[newest_field] = _epoch_text(newest)
        fields[records_field] = str(records)
        transaction.hset(keys.totals, mapping=fields)
    if gone:
        log.warning(
            "contribution records of %s currencies under %s are gone (expired after the TTL, or "
            "evicted): %s; each one's windows without a record up to its newest counted are "
            "taken as counted",
            len(gone),
            keys.prefix,
            ", ".join(gone[:10]) + (", …" if len(gone) > 10 else ""),
        )
    applied = _Applied(
        accepted=(*earlier.accepted, *accepted),
        skipped=earlier.skipped + skipped,
        totals={**earlier.totals, **totals},
    )
    if channel is None:
        return applied
    if batch_id is not None:
        transaction.hset(keys.totals, "batch_id", str(batch_id))
    newest_first = sorted(applied.accepted, key=lambda w: (w.score, w.currency), reverse=True)
    message = {
        "batch_id": batch_id,
        "published_at": round(time.time(), 3),
        "window_count": len(applied.accepted),
        "skipped_windows": applied.skipped,
        "windows": [
            {k: v for k, v in w.as_hash(batch_id).items() if k != "batch_id"}
            for w in newest_first[:MAX_WINDOWS_IN_MESSAGE]
        ],
        "totals": applied.totals,
    }
    transaction.publish(channel, json.dumps(message, separators=(",", ":")))
    return dataclasses.replace(applied, message=message)


def _total_fields(currency: str) -> list[str]:
    return [f"{currency}:order_count", f"{currency}:item_count", f"{currency}:revenue"]


def _bookkeeping_fields(currency: str) -> list[str]:
    """``<CUR>:floor``: windows at or before it (epoch seconds) without a contribution record
    are in the totals already; ``<CUR>:newest``: the newest window the totals hold;
    ``<CUR>:records``: how many contribution records the last write left."""
    return [f"{currency}:floor", f"{currency}:newest", f"{currency}:records"]


def _score(member: str) -> float:
    return datetime.fromisoformat(member).timestamp()


def _epoch_text(seconds: float) -> str:
    return repr(float(seconds))


def _parse_total(values: Sequence[Any]) -> tuple[int, int, Decimal]:
    order_count, item_count, revenue = (_text(v) if v is not None else None for v in values)
    return int(order_count or 0), int(item_count or 0), Decimal(revenue or 0)


def _parse_contribution(value: Any) -> tuple[int, int, Decimal]:
    order_count, item_count, revenue = json.loads(_text(value))
    return int(order_count), int(item_count), Decimal(revenue)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
