"""The benchmark's own PNG charts: throughput and latency."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import plots
from benchmarks.orders.support import NAME

# Issue 20's target for produce → visible in MariaDB at 10,000 orders/s.
P99_TARGET_MS = 2000.0


def draw_charts(results: dict[str, Any], output: Path, stamp: datetime) -> dict[str, str]:
    prefix = f"{NAME}-{stamp:%Y%m%dT%H%M%SZ}"
    throughput = results["throughput"]
    modes = (("no-op sinks", "no_op"), ("real sinks", "sinks"))
    throughput_png = plots.bar_chart(
        output / f"{prefix}-throughput.png",
        title=f"Orders pipeline: draining {throughput['topic_orders']:,} orders",
        labels=[label for label, _ in modes],
        values=[throughput[key]["best"]["orders_per_second"] for _, key in modes],
        runs=[[r["orders_per_second"] for r in throughput[key]["runs"]] for _, key in modes],
        ylabel="orders/s (best round; dots: each round)",
        reference=throughput["no_op"]["best"]["orders_per_second"] / 2,
        reference_label="aim: sinks keep at least half the no-op rate",
        note=f"real/no-op = {throughput['ratio_sinks_to_no_op']:.2f}; "
        f"{_machine_note(results['load_average'])}",
    )
    latency = results["latency"]
    groups = [
        f"{entry['target_rate']:,}/s\n(sent {entry['achieved_rate']:,.0f}/s)" for entry in latency
    ]
    panels = {
        title: {f"p{p}": [entry[key][f"p{p}_ms"] for entry in latency] for p in (50, 95, 99)}
        for title, key in (
            ("visible in MariaDB (orders)", "mariadb_visible"),
            ("window update in Redis", "redis_window"),
        )
    }
    latency_png = plots.grouped_bars(
        output / f"{prefix}-latency.png",
        title="Orders pipeline: produce → visible latency",
        panels=panels,
        groups=groups,
        ylabel="milliseconds",
        reference=P99_TARGET_MS,
        reference_label="target: p99 < 2 s at 10,000/s",
        log_scale=True,
        missing="not visible "
        f"{max(e['waited_after_sending_seconds'] for e in latency):g} s after the last send",
        label=_milliseconds,
        note=_machine_note(results["load_average"]),
    )
    return {"throughput": str(throughput_png), "latency": str(latency_png)}


def _machine_note(load: dict[str, list[float]]) -> str:
    # The 1-minute load before the run is other work sharing the cores; during the run the
    # benchmark's own processes add to it.
    return (
        f"{os.cpu_count()} CPUs, load average {load['start'][0]:.1f} before the run, "
        f"{datetime.now(UTC):%Y-%m-%d}"
    )


def _milliseconds(value: float) -> str:
    return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.0f} ms"
