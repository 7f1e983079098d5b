"""The enabled alert rules, read from MariaDB ``alert_rules`` and kept fresh without a restart.

Choice: the rules are reloaded on the driver, inside ``foreachBatch``, whenever the copy in
hand is older than ``refresh_seconds`` (default 30 s, so a change applies within a minute even
with a slow batch in between). Not a broadcast variable: matching runs on the driver over the
few hundred windows a batch touches, so there is nothing to ship to executors, and a broadcast
would need the same staleness check anyway. Not a stream-static join: the window lengths must be
known to the driver to decide which windows to compute. A failed reload keeps the last rules
(and logs), so a MariaDB hiccup never stops alerting on the rules already known.

A query that gets no data runs no batch and so reads no rules; with no lines there is nothing to
alert on, and the first batch after a pause reloads if the copy is stale.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from spark_jobs.common.refresh import RefreshingCopy
from streamops.alert_rules import load_enabled_rules
from streamops.config import Settings
from streamops.contract.alerts import AlertRule

log = logging.getLogger(__name__)

DEFAULT_REFRESH_SECONDS = 30.0


class RuleCache(RefreshingCopy[list[AlertRule]]):
    """The enabled rules, reloaded when older than ``refresh_seconds``; see the module."""

    def __init__(
        self,
        settings: Settings,
        refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
        *,
        loader: Callable[[Settings], list[AlertRule]] = load_enabled_rules,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            settings,
            refresh_seconds,
            loader,
            what="alert rules",
            describe=lambda rules: ", ".join(rule.rule_id for rule in rules) or "none",
            clock=clock,
        )

    def current(self) -> list[AlertRule]:
        """The rules, reloaded first if stale. Raises only if no load ever succeeded."""
        return list(self.value())


def first_line_rules(rules: list[AlertRule]) -> list[AlertRule]:
    """The enabled rules a single line crosses (threshold 1): the only ones the real-time
    first-line paths serve (spark_jobs/sinks/alerts_realtime.py, the JVM path of the alerts job)."""
    return [rule for rule in rules if rule.enabled and rule.threshold_count == 1]
