"""The soak's report, assembled from what the probes and the sampler recorded: pure functions.

The JSON keeps everything (every latency sample, every cost and health sample); the targets
say pass or fail each, as figures to read, never as an assertion. :func:`summary_tables` is what
the CLI prints and :func:`status_line` what its progress line shows.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from streamops.soak.probes import ALERT_OUTPUTS, OUTPUTS, Expectation
from streamops.soak.sampler import OTHER, SOAK
from streamops.soak.stats import latency_summary, mean, percentile

GIB = 2**30
# The aims of issue 15 for the platform on one small machine.
OUTPUT_P99_LIMIT_MS = 10_000.0
FAST_OUTPUT_P99_LIMIT_MS = 5_000.0
FAST_OUTPUTS = ("orders_row", "revenue_window")
RSS_LIMIT_BYTES = 6 * GIB
# The platform may use at most this share of the machine's CPUs on average (1.0 core of 2).
CPU_SHARE_LIMIT = 0.5
HEALTHY = "healthy"
STALLED = "stalled"
EXAMPLES_PER_STATUS = 3

METHOD_NOTES = (
    "Latency: from the broker's acknowledgement of a probe record to the first poll that sees "
    "the output (MariaDB and Redis by key every ~0.3 s, so each figure is late by up to one poll; "
    "Kafka alerts by arrival time at a consumer at the topic's end).",
    "A miss is an output not visible within the time-out; misses stay out of the percentiles and "
    "count as the time-out in the p99 targets.",
    "vitals_summary is written in update mode (every batch that changes a window rewrites its "
    "row), so it is timed from the produce like the others, not from the window's end.",
    "The probe rule soak-probe is re-read by the alerts job within its refresh interval (30 s): "
    "when this run created it, alert probes sent before the first probe alert was seen are "
    "warm-up, reported apart and left out of the percentiles.",
    "CPU per component: per-process cpu_times differences (user + system + reaped children) of "
    "every process of the group; a process that starts and ends between two samples and is "
    "reaped outside the group is missed. 'other' is the machine's busy CPU outside every group.",
    "RSS per component is the sum of its processes' resident sets: shared pages are counted once "
    "per process, so it is an upper bound. PSS (shared pages split between their users, read "
    "once a minute) is what they really hold.",
)


# --- latency ---------------------------------------------------------------------------------


def warm_up_cutoff(expectations: Iterable[Expectation], rule_inserted: bool) -> float | None:
    """When the alert probes' timing starts: the first time any alert output showed a probe,
    if this run created the rule (before that the job may not know it); else None."""
    if not rule_inserted:
        return None
    seen = [
        e.visible_at for e in expectations if e.output in ALERT_OUTPUTS and e.visible_at is not None
    ]
    return min(seen) if seen else None


def output_report(
    name: str,
    expectations: Sequence[Expectation],
    started_at: float,
    *,
    warm_up_before: float | None = None,
) -> dict[str, Any]:
    """One output: its summary (count, misses, percentiles in ms), the warm-up apart, and every
    sample (seconds since the start, latency in ms or None for a miss or one still pending)."""
    samples = []
    timed: list[float] = []
    misses = pending = 0
    warm_up: list[dict[str, Any]] = []
    for expectation in sorted(expectations, key=lambda e: (e.produced_at, e.seq)):
        latency = expectation.latency_seconds
        sample = {
            "elapsed_seconds": round(expectation.produced_at - started_at, 3),
            "seq": expectation.seq,
            "latency_ms": None if latency is None else round(latency * 1000, 1),
            "missed": expectation.missed,
        }
        in_warm_up = warm_up_before is not None and expectation.produced_at < warm_up_before
        if in_warm_up:
            warm_up.append(sample)
            continue
        samples.append(sample)
        if expectation.missed:
            misses += 1
        elif latency is None:
            pending += 1
        else:
            timed.append(latency * 1000)
    return {
        "description": OUTPUTS.get(name, name),
        **latency_summary(timed, misses),
        "unresolved": pending,
        "warm_up": {
            "count": len(warm_up),
            "misses": sum(1 for s in warm_up if s["missed"]),
            "latencies_ms": [s["latency_ms"] for s in warm_up],
        },
        "samples": samples,
    }


def outputs_report(
    expectations: Sequence[Expectation],
    started_at: float,
    *,
    rule_inserted: bool,
    skipped: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every output of :data:`OUTPUTS`, in that order; a skipped one says why."""
    cutoff = warm_up_cutoff(expectations, rule_inserted)
    by_output: dict[str, list[Expectation]] = defaultdict(list)
    for expectation in expectations:
        by_output[expectation.output].append(expectation)
    report = {}
    for name in OUTPUTS:
        report[name] = output_report(
            name,
            by_output.get(name, []),
            started_at,
            warm_up_before=cutoff if name in ALERT_OUTPUTS else None,
        )
        if skipped and name in skipped:
            report[name]["skipped"] = skipped[name]
    return report


# --- cost ------------------------------------------------------------------------------------


def cost_report(
    samples: Sequence[Mapping[str, Any]], groups: Sequence[str], logical_cpus: int
) -> dict[str, Any]:
    """Per component: mean and max cores, CPU seconds, mean and max RSS; the platform (every
    component but ``soak`` and ``other``) and the machine; the samples themselves."""
    wall = sum(float(s["interval_seconds"]) for s in samples)
    known = list(groups) + sorted(
        {g for s in samples for g in (*s["cores"], *s["rss_bytes"])} - set(groups)
    )
    components: dict[str, dict[str, Any]] = {}
    for group in known:
        cores = [float(s["cores"].get(group, 0.0)) for s in samples]
        seconds = sum(c * float(s["interval_seconds"]) for c, s in zip(cores, samples, strict=True))
        rss = [int(s["rss_bytes"].get(group, 0)) for s in samples]
        pss = [int(s["pss_bytes"].get(group, 0)) for s in samples if "pss_bytes" in s]
        components[group] = {
            "mean_cores": round(seconds / wall, 4) if wall else None,
            "max_cores": round(max(cores), 4) if cores else None,
            "cpu_seconds": round(seconds, 2),
            "mean_rss_bytes": int(mean(rss) or 0) if group != OTHER else None,
            "max_rss_bytes": max(rss, default=0) if group != OTHER else None,
            "max_pss_bytes": max(pss) if pss and group != OTHER else None,
        }
    platform = [g for g in known if g not in (SOAK, OTHER)]
    platform_cores = [sum(float(s["cores"].get(g, 0.0)) for g in platform) for s in samples]
    platform_rss = [sum(int(s["rss_bytes"].get(g, 0)) for g in platform) for s in samples]
    platform_pss = [
        sum(int(s["pss_bytes"].get(g, 0)) for g in platform) for s in samples if "pss_bytes" in s
    ]
    platform_seconds = sum(
        c * float(s["interval_seconds"]) for c, s in zip(platform_cores, samples, strict=True)
    )
    machine_seconds = sum(float(s["machine_cores"]) * float(s["interval_seconds"]) for s in samples)
    return {
        "platform": {
            "mean_cores": round(platform_seconds / wall, 4) if wall else None,
            "max_cores": round(max(platform_cores), 4) if platform_cores else None,
            "mean_rss_bytes": int(mean(platform_rss) or 0),
            "max_rss_bytes": max(platform_rss, default=0),
            "max_pss_bytes": max(platform_pss) if platform_pss else None,
            "components": platform,
        },
        "machine": {
            "logical_cpus": logical_cpus,
            "mean_busy_cores": round(machine_seconds / wall, 4) if wall else None,
            "max_memory_used_bytes": max((int(s["memory_used_bytes"]) for s in samples), default=0),
        },
        "components": components,
        "sampled_seconds": round(wall, 1),
        "samples": list(samples),
    }


# --- health ----------------------------------------------------------------------------------


def health_report(
    verdicts: Sequence[Mapping[str, Any]],
    loads: Sequence[Mapping[str, Any]],
    lags: Sequence[Mapping[str, Any]],
    restarts_first: Mapping[str, int],
    restarts_last: Mapping[str, int],
    job_pids: Mapping[str, Sequence[int]],
    pipelines: Sequence[str],
    errors: Sequence[str] = (),
) -> dict[str, Any]:
    """Restarts (``restarts_total`` deltas, and new job pids), every verdict counted by status,
    the non-healthy ones with their first details, Kafka lag and the load average."""
    counts: dict[str, Counter[str]] = {name: Counter() for name in pipelines}
    examples: list[dict[str, Any]] = []
    for sample in verdicts:
        for name, status in sample["statuses"].items():
            counts.setdefault(name, Counter())[status] += 1
            # The first few of each pipeline and status: a long run of one kind hides no other.
            if status != HEALTHY and counts[name][status] <= EXAMPLES_PER_STATUS:
                examples.append(
                    {
                        "elapsed_seconds": sample["elapsed_seconds"],
                        "pipeline": name,
                        "status": status,
                        "detail": sample.get("details", {}).get(name, ""),
                    }
                )
    not_healthy: Counter[str] = Counter()
    for per_pipeline in counts.values():
        for status, n in per_pipeline.items():
            if status != HEALTHY:
                not_healthy[status] += n
    restarts = {
        name: max(0, restarts_last.get(name, 0) - restarts_first.get(name, 0)) for name in pipelines
    }
    lag: dict[str, dict[str, Any]] = {}
    for name in pipelines:
        values = [s["lag"][name] for s in lags if s["lag"].get(name) is not None]
        lag[name] = {
            "max": max(values) if values else None,
            "mean": round(mean(values) or 0.0, 1) if values else None,
            "last": values[-1] if values else None,
        }
    load1 = [float(s["load1"]) for s in loads]
    return {
        "restarts_total": sum(restarts.values()),
        "restarts": restarts,
        "job_relaunches": {name: max(0, len(job_pids.get(name, [])) - 1) for name in pipelines},
        "stall_verdicts": not_healthy.get(STALLED, 0),
        "not_healthy_verdicts": dict(sorted(not_healthy.items())),
        "verdicts": {name: dict(sorted(c.items())) for name, c in counts.items()},
        "not_healthy_examples": examples,
        "kafka_lag": lag,
        "load_average": {
            "mean_load1": round(mean(load1) or 0.0, 2) if load1 else None,
            "max_load1": max(load1) if load1 else None,
            "samples": list(loads),
        },
        "verdict_samples": list(verdicts),
        "lag_samples": list(lags),
        "sampler_errors": list(errors),
    }


# --- targets ---------------------------------------------------------------------------------


def p99_counting_misses(output: Mapping[str, Any], timeout_ms: float) -> float | None:
    """The output's p99 with each miss counted as the time-out (its lower bound); None when
    nothing was measured."""
    latencies = [s["latency_ms"] for s in output["samples"] if s["latency_ms"] is not None]
    values = latencies + [timeout_ms] * int(output["misses"])
    return round(percentile(values, 99), 1) if values else None


def evaluate_targets(
    outputs: Mapping[str, Mapping[str, Any]],
    cost: Mapping[str, Any],
    health: Mapping[str, Any],
    *,
    timeout_seconds: float,
) -> dict[str, dict[str, Any]]:
    """Each target: its value, limit, comparison and whether it passed (no value: failed)."""
    targets: dict[str, dict[str, Any]] = {}

    def target(name: str, value: float | None, limit: float, at_most: bool, text: str) -> None:
        passed = value is not None and (value <= limit if at_most else value < limit)
        targets[name] = {
            "value": value,
            "limit": limit,
            "comparison": "<=" if at_most else "<",
            "passed": passed,
            "description": text,
        }

    target("restarts", health.get("restarts_total"), 0, True, "pipeline restarts during the soak")
    target("stall_verdicts", health.get("stall_verdicts"), 0, True, "'stalled' health verdicts")
    for name, output in outputs.items():
        limit = FAST_OUTPUT_P99_LIMIT_MS if name in FAST_OUTPUTS else OUTPUT_P99_LIMIT_MS
        target(
            f"{name}_p99_ms",
            p99_counting_misses(output, timeout_seconds * 1000),
            limit,
            False,
            f"p99 latency of {name} in ms, misses counted as the time-out",
        )
    cpus = int(cost["machine"]["logical_cpus"] or 1)
    target(
        "platform_mean_cores",
        cost["platform"]["mean_cores"],
        round(cpus * CPU_SHARE_LIMIT, 2),
        False,
        f"mean CPU of the whole platform in cores (limit: half of {cpus} CPUs)",
    )
    target(
        "platform_max_rss_gib",
        round(cost["platform"]["max_rss_bytes"] / GIB, 3),
        RSS_LIMIT_BYTES / GIB,
        False,
        "largest total RSS of the platform's processes in GiB (summed: an upper bound; "
        "cost.platform.max_pss_bytes is the proportional share)",
    )
    return targets


# --- the whole report ------------------------------------------------------------------------


def headline(
    outputs: Mapping[str, Mapping[str, Any]],
    cost: Mapping[str, Any],
    health: Mapping[str, Any],
    targets: Mapping[str, Mapping[str, Any]],
    probes_sent: int,
) -> dict[str, Any]:
    """The few numbers to read first (the benchmark summary's table starts with them)."""
    return {
        "targets_passed": sum(1 for t in targets.values() if t["passed"]),
        "targets_failed": sum(1 for t in targets.values() if not t["passed"]),
        "probes_sent": probes_sent,
        "misses": sum(int(o["misses"]) for o in outputs.values()),
        "worst_p99_ms": max((o["p99_ms"] for o in outputs.values() if o["p99_ms"]), default=None),
        "platform_mean_cores": cost["platform"]["mean_cores"],
        "platform_max_rss_gib": round(cost["platform"]["max_rss_bytes"] / GIB, 3),
        "restarts": health["restarts_total"],
        "stall_verdicts": health["stall_verdicts"],
        "max_load1": health["load_average"]["max_load1"],
    }


def build_report(
    *,
    run_id: str,
    started_at: float,
    ended_at: float,
    options: Mapping[str, Any],
    outputs: Mapping[str, Mapping[str, Any]],
    cost: Mapping[str, Any],
    health: Mapping[str, Any],
    probes_sent: int,
    context: Mapping[str, Any],
    notes: Sequence[str] = (),
    interrupted: bool = False,
) -> dict[str, Any]:
    """The JSON document: headline and targets first, then the details (times in UTC ISO)."""
    targets = evaluate_targets(
        outputs, cost, health, timeout_seconds=float(options["timeout_seconds"])
    )
    return {
        "kind": "streamops-soak",
        "run_id": run_id,
        "started_at": _iso(started_at),
        "ended_at": _iso(ended_at),
        "interrupted": interrupted,
        "headline": headline(outputs, cost, health, targets, probes_sent),
        "targets": targets,
        "duration_seconds": round(ended_at - started_at, 1),
        "outputs": dict(outputs),
        "cost": dict(cost),
        "health": dict(health),
        "options": dict(options),
        "context": dict(context),
        "notes": list(notes),
        "method": list(METHOD_NOTES),
    }


# --- text for the terminal -------------------------------------------------------------------


Table = tuple[str, list[str], list[list[str]]]


def summary_tables(report: Mapping[str, Any]) -> list[Table]:
    """(title, columns, rows) of each table the CLI prints: latency per output, cost per
    component, health per pipeline, targets."""
    latency_rows = []
    for name, output in report["outputs"].items():
        warm = output["warm_up"]["count"]
        latency_rows.append(
            [
                name,
                str(output["count"]),
                _ms(output["p50_ms"]),
                _ms(output["p95_ms"]),
                _ms(output["p99_ms"]),
                _ms(output["max_ms"]),
                str(output["misses"]),
                output.get("skipped") or (f"{warm} warm-up" if warm else ""),
            ]
        )
    cost = report["cost"]
    cost_rows = [
        [
            group,
            _number(figures["mean_cores"], "{:.2f}"),
            _number(figures["max_cores"], "{:.2f}"),
            _bytes(figures["mean_rss_bytes"]),
            _bytes(figures["max_rss_bytes"]),
            _bytes(figures.get("max_pss_bytes")),
        ]
        for group, figures in cost["components"].items()
    ]
    platform = cost["platform"]
    cost_rows.append(
        [
            "platform (all above but soak, other)",
            _number(platform["mean_cores"], "{:.2f}"),
            _number(platform["max_cores"], "{:.2f}"),
            _bytes(platform["mean_rss_bytes"]),
            _bytes(platform["max_rss_bytes"]),
            _bytes(platform.get("max_pss_bytes")),
        ]
    )
    health = report["health"]
    health_rows = []
    for name, verdicts in health["verdicts"].items():
        bad = ", ".join(f"{s} {n}" for s, n in verdicts.items() if s != HEALTHY) or "–"
        lag = health["kafka_lag"].get(name, {})
        health_rows.append(
            [
                name,
                str(health["restarts"].get(name, 0)),
                str(health["job_relaunches"].get(name, 0)),
                f"{verdicts.get(HEALTHY, 0)}/{sum(verdicts.values())}",
                bad,
                _number(lag.get("max"), "{:,.0f}"),
            ]
        )
    target_rows = [
        [
            name,
            _figure(t["value"]),
            f"{t['comparison']} {t['limit']:g}",
            "pass" if t["passed"] else "FAIL",
        ]
        for name, t in report["targets"].items()
    ]
    return [
        (
            "Latency, acknowledged → visible (ms)",
            ["output", "n", "p50", "p95", "p99", "max", "misses", "note"],
            latency_rows,
        ),
        (
            "Cost per component",
            ["component", "mean cores", "max cores", "mean RSS", "max RSS", "max PSS"],
            cost_rows,
        ),
        (
            "Health per pipeline",
            ["pipeline", "restarts", "relaunches", "healthy verdicts", "not healthy", "max lag"],
            health_rows,
        ),
        ("Targets", ["target", "value", "limit", "result"], target_rows),
    ]


def status_line(
    *,
    phase: str,
    probes_sent: int,
    expectations: Sequence[Expectation],
    cost: Mapping[str, Any] | None,
    load1: float | None,
    not_healthy: int,
) -> str:
    """One line for the progress display: probes, outputs shown, misses, the worst output's
    p99 so far, the platform's CPU in the last interval, load and non-healthy verdicts."""
    shown = [e for e in expectations if e.visible_at is not None]
    misses = sum(1 for e in expectations if e.missed)
    parts = [phase, f"probes {probes_sent}", f"shown {len(shown)}/{len(expectations)}"]
    parts.append(f"misses {misses}")
    by_output: dict[str, list[float]] = defaultdict(list)
    for expectation in shown:
        latency = expectation.latency_seconds
        if latency is not None:
            by_output[expectation.output].append(latency)
    if by_output:
        worst = max(by_output, key=lambda name: percentile(by_output[name], 99))
        parts.append(f"worst p99 {worst} {percentile(by_output[worst], 99):.1f} s")
    if cost is not None:
        platform = sum(
            value for group, value in cost["cores"].items() if group not in (SOAK, OTHER)
        )
        parts.append(f"platform {platform:.2f} cores")
    if load1 is not None:
        parts.append(f"load {load1:.1f}")
    parts.append(f"not healthy {not_healthy}")
    return " · ".join(parts)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _figure(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _number(value: float | None, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)


def _bytes(value: int | None) -> str:
    if value is None:
        return "–"
    if value >= GIB:
        return f"{value / GIB:.2f} GiB"
    return f"{value / 2**20:,.0f} MiB"
