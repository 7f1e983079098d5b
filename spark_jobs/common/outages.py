"""Riding out a short MariaDB or Redis outage inside the batch, instead of dying of it.

A job whose sink write fails because MariaDB or Redis is down used to fail its query and exit;
the supervisor then waited for the dependency and relaunched the job (``streamops.supervision.
dependencies``). That is right for a long outage, but a restart costs a JVM start, and after an
outage every pipeline needs one: on a 2-core machine they queue behind the launch lock, and a
60-second database restart cost minutes of every pipeline's output.

So each query's ``foreachBatch`` writer is wrapped by :func:`riding_out`: when the write fails and
the failure names a MariaDB or Redis outage (:func:`streamops.supervision.dependencies.causes_in`,
the same patterns the supervisor reads), the driver waits, with backoff, and runs the batch's
write again, for up to ``STREAMOPS_OUTAGE_RIDE_OUT_SECONDS`` (the spec's
``outage_ride_out_seconds``). Running it again is safe for the reason a replay after a crash is:
every writer is idempotent per batch (primary keys, per-batch markers for the Redis deltas).
Meanwhile the batch stays active, which the health rule reads as *busy*, never *stalled*
(the spec keeps the budget below ``health.max_batch_seconds``). An outage longer than the budget
fails the query as before, and the supervisor's wait takes over.

A fenced write (:class:`streamops.supervision.fence.FencedError`) is never retried: a newer job owns
the checkpoint. Nor is any failure whose text names no outage.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

from pyspark.sql import DataFrame

from streamops.supervision.dependencies import causes_in
from streamops.supervision.submit import OUTAGE_RIDE_OUT_ENV as RIDE_OUT_ENV

log = logging.getLogger(__name__)

DEFAULT_RIDE_OUT_SECONDS = 120.0
# Only these are ridden out in the batch: Kafka's client retries on its own, and a full disk
# does not go away by waiting a minute.
RIDDEN_OUT = ("mariadb", "redis")
FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 8.0

BatchWriter = Callable[[DataFrame, int], None]

# query name -> (dependencies, monotonic time the wait began): read by the status reporter.
_waiting: dict[str, tuple[tuple[str, ...], float]] = {}
_lock = threading.Lock()


def ride_out_seconds(env: dict[str, str] | None = None) -> float:
    """The budget from the environment; a malformed value is an error, not a silent default."""
    raw = (os.environ if env is None else env).get(RIDE_OUT_ENV, "")
    if raw == "":
        return DEFAULT_RIDE_OUT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ValueError(
            f"{RIDE_OUT_ENV}={raw!r}: expected seconds, 0 or more (0: a write that fails on an "
            "outage fails the query at once)"
        )
    return value


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def outage_causes(error: BaseException) -> tuple[str, ...]:
    """The dependencies (of :data:`RIDDEN_OUT`) whose outage ``error`` names; () when none, or
    when the write was fenced. Reads the whole chain of causes: a Python worker's failure reaches
    the driver as a Java exception whose text holds the worker's traceback."""
    from streamops.supervision.fence import FencedError

    errors = list(_chain(error))
    if any(isinstance(e, FencedError) for e in errors):
        return ()
    # Each error by its module-qualified class: redis-py's "Connection closed by server." (Redis
    # going down under an in-flight write) names its dependency only through its class,
    # redis.exceptions.ConnectionError, and the supervisor's patterns read the class that way.
    text = "\n".join(f"{_qualified_name(type(e))}: {e}" for e in errors)
    if "fenced: this job holds fencing token" in text:
        return ()  # a FencedError raised in a Python worker, seen from the driver
    return tuple(c for c in causes_in(text) if c in RIDDEN_OUT)


def _qualified_name(kind: type) -> str:
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def waiting_for(query: str, now: float | None = None) -> str:
    """'' or what the query's batch waits for, e.g. 'mariadb for 12 s' (the status reporter)."""
    with _lock:
        entry = _waiting.get(query)
    if entry is None:
        return ""
    dependencies, since = entry
    now = time.monotonic() if now is None else now
    return f"{', '.join(dependencies)} for {max(0.0, now - since):.0f} s"


def riding_out(
    query: str,
    writer: BatchWriter,
    *,
    budget_seconds: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> BatchWriter:
    """``writer``, run again while its failure is a MariaDB or Redis outage, within the budget
    (default: :func:`ride_out_seconds`, read once here, when the job builds its queries)."""
    budget = ride_out_seconds() if budget_seconds is None else budget_seconds

    def write(frame: DataFrame, batch_id: int) -> None:
        began: float | None = None
        delay = FIRST_DELAY_SECONDS
        attempt = 0
        try:
            while True:
                attempt += 1
                try:
                    writer(frame, batch_id)
                except Exception as error:
                    causes = outage_causes(error)
                    now = clock()
                    began = now if began is None else began
                    waited = now - began
                    if not causes or waited + delay > budget:
                        if causes:
                            log.error(
                                "%s batch %d: %s still down after %.0f s (budget %.0f s): the "
                                "query fails, the supervisor waits for the outage",
                                query,
                                batch_id,
                                ", ".join(causes),
                                waited,
                                budget,
                            )
                        raise
                    with _lock:
                        _waiting[query] = (causes, began)
                    log.warning(
                        "%s batch %d: %s down (%s); writing the batch again in %.0f s "
                        "(attempt %d, waited %.0f s of %.0f s)",
                        query,
                        batch_id,
                        ", ".join(causes),
                        _first_line(error),
                        delay,
                        attempt,
                        waited,
                        budget,
                    )
                    sleep(delay)
                    delay = min(MAX_DELAY_SECONDS, delay * 2)
                    continue
                if began is not None:
                    log.warning(
                        "%s batch %d: written after an outage of %.0f s (%d attempts)",
                        query,
                        batch_id,
                        clock() - began,
                        attempt,
                    )
                return
        finally:
            with _lock:
                _waiting.pop(query, None)

    return write


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:200]
