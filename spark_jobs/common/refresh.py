"""A copy of reference data (rules, products, thresholds) re-read while a query runs.

Streaming queries must pick up changes an operator makes in MariaDB without a restart, but must
not query MariaDB at every batch nor stop when it hiccups. :class:`RefreshingCopy` keeps what
its loader returned, reloads it when older than ``refresh_seconds``, and on a failed reload
keeps the copy it has (and waits a whole interval before the next try); with no copy at all the
failure is raised, since running on nothing would be silently wrong.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from streamops.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


class RefreshingCopy(Generic[T]):
    """``loader(settings)``'s answer, reloaded when older than ``refresh_seconds``; see the
    module. ``what`` names the data in logs; ``describe`` says what a new copy holds."""

    def __init__(
        self,
        settings: Settings,
        refresh_seconds: float,
        loader: Callable[[Settings], T],
        *,
        what: str,
        describe: Callable[[T], str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if refresh_seconds <= 0:
            raise ValueError(f"refresh_seconds is {refresh_seconds}; give a positive number.")
        self.settings = settings
        self.refresh_seconds = refresh_seconds
        self.what = what
        self._loader = loader
        self._describe = describe
        self._clock = clock
        self._value: T | None = None
        self._loaded_at = 0.0
        # Counts the loads that returned something new: lets a subclass rebuild what it
        # derives from the copy (a DataFrame) only when the copy changed.
        self.version = 0

    def value(self) -> T:
        """The copy, reloaded first if stale. Raises only if no load ever succeeded."""
        now = self._clock()
        if self._value is None or now - self._loaded_at >= self.refresh_seconds:
            try:
                loaded = self._loader(self.settings)
            except Exception:
                if self._value is None:
                    raise
                log.exception("could not reload %s; keeping the copy in hand", self.what)
                self._loaded_at = now  # try again after the interval, not at every batch
            else:
                if self._value is None or loaded != self._value:
                    log.info("%s now: %s", self.what, self._describe(loaded))
                    self.version += 1
                self._value, self._loaded_at = loaded, now
        assert self._value is not None
        return self._value
