"""Restarting one query in its own driver after a transient start failure (pure, no Spark).

A query whose planning fails for a reason outside its data and its code is started again by the
job's driver from its checkpoint, a few times with a growing pause, instead of failing the whole
job. The one such reason seen here: Spark gives a Python worker it launches on the driver a
fixed 10 s to connect back (``PythonWorkerFactory.createSimpleWorker``; not configurable). On a
loaded 2-core machine, ``transformWithState``'s pre-init worker (the first batch of each run of
``vitals_signal``) can take longer, and Spark fails the query. Its checkpoint is untouched (the
batch had not started), so a restart from it loses and repeats nothing.

Any other failure still ends the job: the supervisor judges it
(``streamops.supervision.job_health``).
The listener and the driver's loop ask the same :class:`RestartPolicy`, so the query's Redis hash
says ``restarting`` (with the reason and when) exactly when the driver will restart it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# Texts of a query's exception that mark a transient start failure.
TRANSIENT_START_FAILURES = (
    "Python worker failed to connect back",
    "Timed out while waiting for the Python worker to connect back",
)
MAX_RESTARTS = 5
FIRST_PAUSE_SECONDS = 5.0
MAX_PAUSE_SECONDS = 60.0


def transient_reason(exception: str | None) -> str | None:
    """The marker a query's exception text carries when it failed transiently, else None."""
    if not exception:
        return None
    return next((marker for marker in TRANSIENT_START_FAILURES if marker in exception), None)


@dataclass(frozen=True)
class Restart:
    query_name: str
    attempt: int  # 1 for the first restart
    of: int
    reason: str
    # When the driver starts the query again (epoch seconds).
    at: float


class RestartPolicy:
    """Decides once per query run (``run_id``) whether the driver restarts the query.

    ``decide`` is safe from any thread and gives the same answer for the same run however often
    it is asked, so the listener (Spark's listener bus) and the driver's loop agree.
    """

    def __init__(
        self,
        *,
        max_restarts: int = MAX_RESTARTS,
        first_pause_seconds: float = FIRST_PAUSE_SECONDS,
        max_pause_seconds: float = MAX_PAUSE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_restarts < 0 or first_pause_seconds < 0 or max_pause_seconds < first_pause_seconds:
            raise ValueError(
                f"max_restarts ({max_restarts}) and first_pause_seconds ({first_pause_seconds}) "
                f"must not be negative, max_pause_seconds ({max_pause_seconds}) not below the "
                "first pause."
            )
        self.max_restarts = max_restarts
        self.first_pause_seconds = first_pause_seconds
        self.max_pause_seconds = max_pause_seconds
        self.clock = clock
        self._decisions: dict[str, Restart | None] = {}
        self._restarts: dict[str, int] = {}
        self._lock = threading.Lock()

    def decide(self, query_name: str, run_id: str, exception: str | None) -> Restart | None:
        """The restart of this failed run, or None when the failure ends the job."""
        with self._lock:
            if run_id in self._decisions:
                return self._decisions[run_id]
            reason = transient_reason(exception)
            done = self._restarts.get(query_name, 0)
            decision = None
            if reason is not None and done < self.max_restarts:
                pause = min(self.max_pause_seconds, self.first_pause_seconds * 2**done)
                decision = Restart(
                    query_name, done + 1, self.max_restarts, reason, self.clock() + pause
                )
                self._restarts[query_name] = done + 1
            self._decisions[run_id] = decision
            return decision

    def restarts(self, query_name: str) -> int:
        with self._lock:
            return self._restarts.get(query_name, 0)
