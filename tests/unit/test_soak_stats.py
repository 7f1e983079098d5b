"""Durations on the soak's command line, percentiles and latency summaries
(streamops/soak/stats.py)."""

from __future__ import annotations

import pytest

from streamops.soak.stats import latency_summary, parse_duration, percentile


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30m", 1800.0),
        ("90s", 90.0),
        ("1h", 3600.0),
        ("500ms", 0.5),
        ("2 minutes", 120.0),
        ("5 seconds", 5.0),
        (" 45 ", 45.0),
        ("2.5", 2.5),
    ],
)
def test_parse_duration_reads_the_usual_forms(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "5x", "m30", "0s", "0", "-5", "nan", "inf"])
def test_parse_duration_refuses_what_is_not_a_positive_duration(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_percentile_interpolates_between_ranks_like_numpy() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    # numpy.percentile(range(1, 101), 99) == 99.01
    assert percentile([float(v) for v in range(1, 101)], 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0


def test_percentile_of_nothing_or_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError, match="nothing"):
        percentile([], 50)
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)


def test_latency_summary_counts_misses_apart_from_the_percentiles() -> None:
    summary = latency_summary([100.0, 200.0, 300.0], misses=2)
    assert summary == {
        "count": 3,
        "misses": 2,
        "p50_ms": 200.0,
        "p95_ms": 290.0,
        "p99_ms": 298.0,
        "max_ms": 300.0,
        "mean_ms": 200.0,
    }


def test_latency_summary_of_no_sample_has_no_percentiles() -> None:
    summary = latency_summary([], misses=4)
    assert summary["count"] == 0 and summary["misses"] == 4
    assert summary["p50_ms"] is None and summary["p99_ms"] is None and summary["max_ms"] is None
