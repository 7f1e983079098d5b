"""Redis sink: the latest revenue windows per currency and running totals, for dashboards.

Keys (documented with types and TTLs in docs/redis-keys.md), ``<prefix>`` = ``streamops:orders``:

- ``<prefix>:window:<CUR>:<window_start>`` hash: one window's absolute values; TTL.
- ``<prefix>:windows:<CUR>`` sorted set: window starts (ISO) scored by epoch seconds, the latest
  ``max_windows`` kept.
- ``<prefix>:contributions:<CUR>`` hash: window start → the values that window added to the
  totals, for the windows still in the sorted set.
- ``<prefix>:totals`` hash: ``<CUR>:order_count``, ``<CUR>:item_count``, ``<CUR>:revenue`` and the
  last ``batch_id``.

The maintenance's reconciliation of late windows (``spark_jobs.common.reconcile``) writes the
windows it corrected here too, the same way, with no batch id (``"reconciled"`` in the window's
hash, the totals' ``batch_id`` left alone): the totals stay equal to ``order_revenue_5s``.

Idempotent under replay: each batch carries the *absolute* values of the windows it changed, and
the totals move by the difference between a window's new values and its recorded contribution,
so writing the same batch twice moves them by zero. A window trimmed from the sorted set keeps
its share of the totals but loses its contribution record; a later batch holding a window older
than everything kept (only a replay from long ago, far behind any watermark) is skipped, since
adding it again would count it twice. MariaDB's ``order_revenue_5s`` stays the system of record.

All writes of a batch and the ``PUBLISH`` that announces them go in one ``MULTI``/``EXEC``,
guarded by ``WATCH`` on the keys the totals are computed from.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import redis
from pyspark.sql import DataFrame
from redis.typing import EncodableT, FieldT

from spark_jobs.common.fence import redis_client
from spark_jobs.sinks import iso_utc, with_utc_wall_clock_timestamps
from spark_jobs.transforms.orders import REVENUE_COLUMNS
from streamops.config import Settings

log = logging.getLogger(__name__)

BatchWriter = Callable[[DataFrame, int], None]

ORDERS_KEY_PREFIX = "streamops:orders"
ORDERS_UPDATES_CHANNEL = "streamops:orders:updates"
# 720 windows of 5 s: the last hour per currency.
DEFAULT_MAX_WINDOWS = 720
# A safety net: a trimmed window's hash is deleted at once; the TTL clears them if the job stops.
DEFAULT_WINDOW_TTL_SECONDS = 6 * 3600
# The message lists at most this many windows (the latest); window_count says how many changed.
MAX_WINDOWS_IN_MESSAGE = 50
WATCH_ATTEMPTS = 5
WINDOW_COLUMNS = REVENUE_COLUMNS
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


def revenue_redis_writer(
    settings: Settings,
    *,
    channel: str = ORDERS_UPDATES_CHANNEL,
    ttl_seconds: int = DEFAULT_WINDOW_TTL_SECONDS,
    max_windows: int = DEFAULT_MAX_WINDOWS,
    key_prefix: str = ORDERS_KEY_PREFIX,
) -> BatchWriter:
    """A ``foreachBatch`` writer of revenue windows (window_start, window_end, currency,
    order_count, item_count, revenue) into Redis; see the module for the keys."""
    if ttl_seconds < 1 or max_windows < 1:
        raise ValueError(f"ttl_seconds ({ttl_seconds}) and max_windows ({max_windows}) must be ≥ 1")
    keys = OrdersRedisKeys(key_prefix)
    client: redis.Redis | None = None

    def write(batch: DataFrame, batch_id: int) -> None:
        nonlocal client
        # One row per window and currency that changed in this trigger: small, so the driver
        # handles it (Redis needs one transaction per batch anyway).
        rows = with_utc_wall_clock_timestamps(batch.select(*WINDOW_COLUMNS)).collect()
        windows = [
            Window(
                currency=row.currency,
                window_start=row.window_start,
                window_end=row.window_end,
                order_count=int(row.order_count),
                item_count=int(row.item_count),
                revenue=Decimal(row.revenue).quantize(CENT),
            )
            for row in rows
        ]
        if not windows:
            return
        if client is None:
            client = redis_client(settings, socket_timeout=10, socket_connect_timeout=5)
        write_windows(client, keys, windows, batch_id, channel, ttl_seconds, max_windows)

    return write


def write_windows(
    client: redis.Redis,
    keys: OrdersRedisKeys,
    windows: Sequence[Window],
    batch_id: int | None,
    channel: str,
    ttl_seconds: int,
    max_windows: int,
) -> dict[str, Any]:
    """Apply one batch of windows in one transaction; return the message published.
    ``batch_id`` None: a reconciliation's corrected windows, not a batch of the stream."""
    # The last copy of a window in the batch wins, as in MariaDB.
    latest = {(w.currency, w.member): w for w in windows}
    by_currency: dict[str, list[Window]] = {}
    for window in latest.values():
        by_currency.setdefault(window.currency, []).append(window)
    currencies = sorted(by_currency)
    watched = [keys.totals]
    for currency in currencies:
        watched += [keys.windows(currency), keys.contributions(currency)]

    for attempt in range(1, WATCH_ATTEMPTS + 1):
        with client.pipeline(transaction=True) as transaction:
            try:
                transaction.watch(*watched)
                message = _apply(
                    client,
                    transaction,
                    keys,
                    by_currency,
                    batch_id,
                    channel,
                    ttl_seconds,
                    max_windows,
                )
                transaction.execute()
                return message
            except redis.WatchError:
                # Another writer changed the keys between our read and EXEC: read again.
                log.warning(
                    "redis keys of %s changed during batch %s (attempt %s)",
                    keys.prefix,
                    batch_id,
                    attempt,
                )
    raise RuntimeError(
        f"Redis keys under {keys.prefix} kept changing during batch {batch_id}; is a second "
        f"writer running with the same keys? Gave up after {WATCH_ATTEMPTS} attempts."
    )


def _apply(
    client: redis.Redis,
    transaction: redis.client.Pipeline,
    keys: OrdersRedisKeys,
    by_currency: Mapping[str, list[Window]],
    batch_id: int | None,
    channel: str,
    ttl_seconds: int,
    max_windows: int,
) -> dict[str, Any]:
    currencies = sorted(by_currency)
    # Reads on a second connection, in one round trip: WATCH is already armed, so anything they
    # miss that changes before EXEC aborts the transaction.
    reads = client.pipeline(transaction=False)
    for currency in currencies:
        reads.zrange(keys.windows(currency), 0, -1, withscores=True)
        reads.hmget(keys.contributions(currency), [w.member for w in by_currency[currency]])
        reads.hmget(keys.totals, _total_fields(currency))
    replies = reads.execute()

    transaction.multi()
    accepted: list[Window] = []
    skipped = 0
    totals: dict[str, dict[str, str]] = {}
    for index, currency in enumerate(currencies):
        kept, contributions, total = replies[3 * index : 3 * index + 3]
        kept_scores = {_text(member): score for member, score in kept}
        order_count, item_count, revenue = _parse_total(total)
        oldest_kept = min(kept_scores.values(), default=None)
        merged = dict(kept_scores)
        added: dict[str, float] = {}
        for window, recorded in zip(by_currency[currency], contributions, strict=True):
            is_new = window.member not in kept_scores
            if (
                is_new
                and len(kept_scores) >= max_windows
                and oldest_kept is not None
                and window.score < oldest_kept
            ):
                # Older than every window kept: its share is already in the totals, or it came
                # so late that Redis no longer tracks that time. MariaDB has it either way.
                skipped += 1
                continue
            old = (0, 0, Decimal(0)) if recorded is None else _parse_contribution(recorded)
            order_count += window.order_count - old[0]
            item_count += window.item_count - old[1]
            revenue += window.revenue - old[2]
            merged[window.member] = window.score
            if is_new:
                added[window.member] = window.score
            accepted.append(window)
            transaction.hset(keys.window(currency, window.member), mapping=window.as_hash(batch_id))
            transaction.expire(keys.window(currency, window.member), ttl_seconds)
            transaction.hset(keys.contributions(currency), window.member, window.contribution())
        if added:
            transaction.zadd(keys.windows(currency), added)
        # Trim to the newest max_windows: the trimmed windows' shares stay in the totals.
        trimmed = sorted(merged, key=lambda member: (merged[member], member))[:-max_windows]
        if trimmed:
            transaction.zrem(keys.windows(currency), *trimmed)
            transaction.hdel(keys.contributions(currency), *trimmed)
            transaction.delete(*(keys.window(currency, member) for member in trimmed))
        totals[currency] = {
            "order_count": str(order_count),
            "item_count": str(item_count),
            "revenue": str(revenue.quantize(CENT)),
        }
        transaction.hset(
            keys.totals,
            mapping={
                field: totals[currency][name]
                for field, name in zip(
                    _total_fields(currency), ("order_count", "item_count", "revenue"), strict=True
                )
            },
        )
    if batch_id is not None:
        transaction.hset(keys.totals, "batch_id", str(batch_id))
    newest_first = sorted(accepted, key=lambda w: (w.score, w.currency), reverse=True)
    message = {
        "batch_id": batch_id,
        "published_at": round(time.time(), 3),
        "window_count": len(accepted),
        "skipped_windows": skipped,
        "windows": [
            {k: v for k, v in w.as_hash(batch_id).items() if k != "batch_id"}
            for w in newest_first[:MAX_WINDOWS_IN_MESSAGE]
        ],
        "totals": totals,
    }
    transaction.publish(channel, json.dumps(message, separators=(",", ":")))
    if skipped:
        log.warning(
            "batch %s: %s windows older than the last %s kept in Redis were skipped",
            batch_id,
            skipped,
            max_windows,
        )
    return message


def _total_fields(currency: str) -> list[str]:
    return [f"{currency}:order_count", f"{currency}:item_count", f"{currency}:revenue"]


def _parse_total(values: Sequence[Any]) -> tuple[int, int, Decimal]:
    order_count, item_count, revenue = (_text(v) if v is not None else None for v in values)
    return int(order_count or 0), int(item_count or 0), Decimal(revenue or 0)


def _parse_contribution(value: Any) -> tuple[int, int, Decimal]:
    order_count, item_count, revenue = json.loads(_text(value))
    return int(order_count), int(item_count), Decimal(revenue)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
