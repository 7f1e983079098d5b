"""Tables of a chaos report (the JSON that :func:`streamops.chaos.run.run_chaos` writes): pure
functions. :func:`summary_tables` is what ``streamops chaos`` prints; :func:`markdown` is the
same as GitHub tables, to paste into docs/operations.md and docs/performance.md."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from streamops.soak.report import Table

# The supervisor's states in the order a reader expects them: from healthy to broken.
STATES = (
    "starting",
    "running",
    "overloaded",
    "backing_off",
    "waiting",
    "stalled",
    "failed",
    "stopped",
    "breaker_open",
    "unknown",
)
DEFAULT_TARGET_P99_SECONDS = 60.0
NOT_RECOVERED = "not recovered"
NOT_INJECTED = "not injected"
# Columns of words, not figures: the terminal aligns them left.
TEXT_COLUMNS = frozenset({"kind", "target", "detail"})


def seconds_into_run(report: Mapping[str, Any], epoch: float) -> float:
    """Seconds from the run's start to ``epoch`` (faults carry epoch times, samples elapsed
    seconds; ``started_at`` is ISO to the second, so this is good to about a second)."""
    return epoch - _parse_iso(str(report["started_at"])).timestamp()


def was_injected(fault: Mapping[str, Any]) -> bool:
    """False for a fault the run could not inject: its ``error`` starts "not injected" (the
    run also puts why a fault did not recover in ``error``)."""
    return not str(fault.get("error") or "").startswith(NOT_INJECTED)


def recovery_cell(fault: Mapping[str, Any]) -> str:
    """A fault's recovery in seconds, or why there is none."""
    if not was_injected(fault):
        return NOT_INJECTED
    seconds = fault.get("recovery_seconds")
    return NOT_RECOVERED if seconds is None else f"{seconds:.1f}"


def fault_detail(fault: Mapping[str, Any]) -> str:
    """What was done and, when it went wrong, why (a not-injected fault's detail only repeats
    "not injected", which its error says with the reason)."""
    parts = [fault.get("detail"), fault.get("error")]
    return "; ".join(str(p) for p in parts if p and p != NOT_INJECTED)


def summary_tables(report: Mapping[str, Any]) -> list[Table]:
    """(title, columns, rows) of each table: faults, recovery by kind, the supervisor's verdicts,
    the end-of-run checks and the writers (sessions, two writers at once, orphans)."""
    return [
        _faults_table(report),
        _recovery_table(report),
        _verdicts_table(report),
        _checks_table(report),
        _writers_table(report),
    ]


def markdown(report: Mapping[str, Any]) -> str:
    """A header line (date, commit, duration, seed, load max, verdict), every table of
    :func:`summary_tables` as a GitHub table, then the failures."""
    options = report.get("options", {})
    loads = [float(load) for _, load in report.get("load", [])]
    machine = report.get("machine", {})
    parts = [
        f"Chaos run of {_date(report['started_at'])}",
        f"commit `{report.get('commit') or 'unknown'}`",
        f"{_duration(float(report['duration_seconds']))}",
        f"seed {options.get('seed', '–')}",
        f"load max {max(loads):.1f}" if loads else "load max –",
    ]
    if machine.get("logical_cpus"):
        parts.append(
            f"{machine['logical_cpus']} CPUs, {(machine.get('memory_bytes') or 0) / 2**30:.0f} GiB"
        )
    parts.append(f"verdict **{'PASS' if report['passed'] else 'FAIL'}**")
    lines = [" · ".join(parts)]
    for title, columns, rows in summary_tables(report):
        lines += ["", f"**{title}**", ""]
        lines.append("| " + " | ".join(_cell(column) for column in columns) + " |")
        lines.append("|" + "|".join("---" for _ in columns) + "|")
        lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    failures = report.get("failures") or []
    if failures:
        lines += ["", "Failures:", ""] + [f"- {_cell(failure)}" for failure in failures]
    return "\n".join(lines) + "\n"


def _faults_table(report: Mapping[str, Any]) -> Table:
    rows = [
        [
            str(fault["id"]),
            fault["kind"],
            fault["target"],
            f"{seconds_into_run(report, float(fault['injected_at'])):.0f}",
            recovery_cell(fault),
            fault_detail(fault),
        ]
        for fault in report["faults"]
    ]
    return (
        "Faults",
        ["id", "kind", "target", "injected at (s)", "recovery (s)", "detail"],
        rows,
    )


def _recovery_table(report: Mapping[str, Any]) -> Table:
    recovery = report["recovery"]
    rows = [
        [kind, *_recovery_figures(figures), ""]
        for kind, figures in recovery.get("by_kind", {}).items()
    ]
    rows.append(["all faults", *_recovery_figures(recovery), _result(recovery["passed"])])
    target = recovery.get("target_p99_seconds", DEFAULT_TARGET_P99_SECONDS)
    rows.append(["target", "", "", "", f"< {target:g}", "", ""])
    return (
        "Recovery by kind (s, from the fault's end to caught up)",
        ["kind", "count", "recovered", "p50", "p99", "max", "result"],
        rows,
    )


def _recovery_figures(figures: Mapping[str, Any]) -> list[str]:
    return [
        str(figures["count"]),
        str(figures["recovered"]),
        _seconds(figures.get("p50_seconds")),
        _seconds(figures.get("p99_seconds")),
        _seconds(figures.get("max_seconds")),
    ]


def _verdicts_table(report: Mapping[str, Any]) -> Table:
    verdicts = report["verdicts"]
    by_state: Mapping[str, Mapping[str, int]] = verdicts.get("by_state", {})
    wrong = Counter(entry["pipeline"] for entry in verdicts.get("wrong", []))
    pipelines = list(by_state) + sorted(set(wrong) - set(by_state))
    seen = {state for counts in by_state.values() for state in counts}
    states = [s for s in STATES if s in seen] + sorted(seen - set(STATES))
    rows = [
        [
            pipeline,
            *(str(by_state.get(pipeline, {}).get(state, 0)) for state in states),
            str(wrong[pipeline]),
        ]
        for pipeline in pipelines
    ]
    interval = float(verdicts.get("interval_seconds", 1.0))
    return (
        f"Verdicts per pipeline (samples, one every {interval:g} s)",
        ["pipeline", *states, "wrong"],
        rows,
    )


def _checks_table(report: Mapping[str, Any]) -> Table:
    rows = [
        [check["name"], _result(check["passed"]), check.get("detail") or ""]
        for check in report["checks"]
    ]
    return ("Checks", ["check", "result", "detail"], rows)


def _writers_table(report: Mapping[str, Any]) -> Table:
    writers = report["writers"]
    max_sessions: Mapping[str, int] = writers.get("max_sessions", {})
    two_writers = Counter(event["pipeline"] for event in writers.get("two_writers", []))
    orphans = _count_by_prefix(writers.get("orphans_at_end", []))
    log_errors = _count_by_prefix(writers.get("concurrent_log_errors", []))
    pipelines = list(max_sessions) + sorted(
        (set(two_writers) | set(orphans) | set(log_errors)) - set(max_sessions)
    )
    rows = [
        [
            pipeline,
            str(max_sessions.get(pipeline, "–")),
            str(two_writers[pipeline]),
            str(orphans[pipeline]),
            str(log_errors[pipeline]),
        ]
        for pipeline in pipelines
    ]
    return (
        "Writers",
        [
            "pipeline",
            "max concurrent sessions",
            "samples with two writers",
            "orphans at end",
            "concurrent log errors",
        ],
        rows,
    )


def _count_by_prefix(entries: Sequence[str]) -> Counter[str]:
    """Entries read ``"<pipeline>: ..."``; one without that prefix counts under ``?``."""
    return Counter(entry.split(":", 1)[0].strip() if ":" in entry else "?" for entry in entries)


def _result(passed: bool) -> str:
    # The exact words the CLI colours (see streamops.soak.cli.print_tables).
    return "pass" if passed else "FAIL"


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def _parse_iso(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    # The run writes UTC; a time without its zone must not be read as the machine's local time.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _date(iso: str) -> str:
    return _parse_iso(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _cell(value: str) -> str:
    # A newline or a pipe would end the markdown row or cell early.
    return str(value).replace("|", "\\|").replace("\n", " ")
