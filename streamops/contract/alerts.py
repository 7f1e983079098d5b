"""The alerts pipeline's rules, windows and alert ids, as the job, the checks and the CLI see them.

An alert is one rule and one window. Its id is a hash of exactly that (:func:`alert_id`), so the
same rule and window always give the same id, in any process, after any replay; the job computes
the same id in Spark (``spark_jobs.transforms.alerts.alert_id_column``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from streamops.contract.times import as_utc_naive, iso_utc

_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class AlertRule:
    """One row of ``alert_rules``; ``service`` None matches every service."""

    rule_id: str
    level: str
    service: str | None
    window_seconds: int
    threshold_count: int
    enabled: bool = True


def window_start(moment: datetime, window_seconds: int) -> datetime:
    """Start of the tumbling window of ``window_seconds`` holding ``moment`` (naive UTC), aligned
    to the epoch like Spark's ``window()``; valid before 1970 and after 2038 alike."""
    if window_seconds < 1:
        raise ValueError(f"window_seconds is {window_seconds}; give 1 or more.")
    moment = as_utc_naive(moment)
    return moment - (moment - _EPOCH) % timedelta(seconds=window_seconds)


def alert_id(rule_id: str, window_start: datetime, window_seconds: int) -> str:
    """sha256 hex of ``<rule_id>|<window start, ISO UTC ms>|<window_seconds>``."""
    key = f"{rule_id}|{iso_utc(window_start)}|{int(window_seconds)}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
