"""Moments on the wire: naive UTC inside, ``…Z`` ISO text with milliseconds outside."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc_naive(moment: datetime) -> datetime:
    """``moment`` as a naive UTC datetime; a naive input is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def iso_utc(moment: datetime) -> str:
    """``2026-11-24T14:03:05.120Z``: the contract's wire format, milliseconds, always ``Z``."""
    moment = as_utc_naive(moment)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"
