"""Pure helpers of the soak: durations on the command line, percentiles, latency summaries."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from streamops.supervision.spec import duration_seconds

PERCENTILES = (50, 95, 99)


def parse_duration(text: str) -> float:
    """``"30m"``, ``"90s"``, ``"1h"``, ``"500ms"``, ``"2 minutes"`` or a bare number of seconds →
    seconds; ValueError saying how to write one otherwise. Zero and negative durations are
    refused: a soak of no time measures nothing."""
    stripped = text.strip()
    try:
        seconds = float(stripped)
    except ValueError:
        try:
            # The pipelines file's syntax, so `--probe-interval "5 seconds"` reads like a spec.
            seconds = duration_seconds(stripped)
        except ValueError:
            raise ValueError(
                f"{text!r} is not a duration; write e.g. 30m, 90s, 1h, 500ms or 2 minutes"
            ) from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration; write e.g. 30m or 90s")
    return seconds


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) with linear interpolation between the two nearest ranks
    (numpy's default): p50 of ``[1, 2, 3, 4]`` is 2.5. ValueError on an empty sequence."""
    if not values:
        raise ValueError("no values: a percentile of nothing is undefined")
    if not 0 <= q <= 100:
        raise ValueError(f"q is {q}; give a percentile between 0 and 100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(latencies_ms: Sequence[float], misses: int) -> dict[str, Any]:
    """count (seen), misses, p50/p95/p99/max/mean in milliseconds (None when nothing was seen).

    Misses stay out of the percentiles: they have no latency, only a lower bound (the time-out),
    and are counted on their own.
    """
    summary: dict[str, Any] = {"count": len(latencies_ms), "misses": misses}
    for q in PERCENTILES:
        summary[f"p{q}_ms"] = round(percentile(latencies_ms, q), 1) if latencies_ms else None
    summary["max_ms"] = round(max(latencies_ms), 1) if latencies_ms else None
    summary["mean_ms"] = round(sum(latencies_ms) / len(latencies_ms), 1) if latencies_ms else None
    return summary


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
