"""The chaos report's presentation (streamops/chaos/report.py, plots.py, cli.py): the tables of a
small report, its markdown, its charts, and the command line's refusals and exit codes."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streamops.chaos import cli as chaos_cli
from streamops.chaos import plots
from streamops.chaos.report import markdown, seconds_into_run, summary_tables
from streamops.cli import app

START = datetime(2026, 12, 2, 15, 0, tzinfo=UTC).timestamp()
runner = CliRunner()


def fake_report() -> dict[str, Any]:
    return {
        "kind": "chaos",
        "version": 1,
        "started_at": "2026-12-02T15:00:00Z",
        "ended_at": "2026-12-02T15:10:00Z",
        "duration_seconds": 600.0,
        "options": {
            "duration_seconds": 480.0,
            "seed": 7,
            "faults": ["kill_driver", "stop_redis", "kill_scheduler"],
            "outage_seconds": 60.0,
            "recovery_timeout_seconds": 300.0,
            "gap_seconds": [5, 20],
        },
        "commit": "d39ed65",
        "machine": {"logical_cpus": 2, "memory_bytes": 24 * 2**30},
        "load": [[0.0, 1.5], [5.0, 2.25], [300.0, 3.75], [595.0, 1.0]],
        "faults": [
            {
                "id": 1,
                "kind": "kill_driver",
                "target": "orders",
                "pipelines": ["orders"],
                "injected_at": START + 30.0,
                "ended_at": START + 30.0,
                "recovered_at": START + 61.0,
                "recovery_seconds": 31.0,
                "detail": "SIGKILL to pid 1234 (python driver of orders)",
                "error": None,
            },
            {
                "id": 2,
                "kind": "stop_redis",
                "target": "redis",
                "pipelines": ["orders", "alerts"],
                "injected_at": START + 120.0,
                "ended_at": START + 180.0,
                "recovered_at": None,
                "recovery_seconds": None,
                "detail": "redis stopped for 60 s",
                "error": "not recovered within 300 s: orders backing_off",
            },
            {
                "id": 3,
                "kind": "kill_scheduler",
                "target": "airflow-scheduler",
                "pipelines": [],
                "injected_at": START + 400.0,
                "ended_at": START + 405.0,
                "recovered_at": None,
                "recovery_seconds": None,
                "detail": "not injected",
                "error": "not injected: no scheduler process | to kill",
            },
        ],
        "recovery": {
            "count": 2,
            "recovered": 1,
            "p50_seconds": 31.0,
            "p99_seconds": 31.0,
            "max_seconds": 31.0,
            "target_p99_seconds": 60.0,
            "passed": False,
            "by_kind": {
                "kill_driver": {
                    "count": 1,
                    "recovered": 1,
                    "p50_seconds": 31.0,
                    "p99_seconds": 31.0,
                    "max_seconds": 31.0,
                },
                "stop_redis": {
                    "count": 1,
                    "recovered": 0,
                    "p50_seconds": None,
                    "p99_seconds": None,
                    "max_seconds": None,
                },
            },
        },
        "verdicts": {
            "samples": 600,
            "interval_seconds": 1.0,
            "by_state": {
                "orders": {"running": 560, "backing_off": 30, "starting": 10},
                "alerts": {"running": 590, "failed": 10},
            },
            "timeline": {
                "orders": [
                    [0.0, "starting"],
                    [10.0, "running"],
                    [31.0, "backing_off"],
                    [61.0, "running"],
                ],
                "alerts": [[0.0, "running"], [130.0, "failed"], [140.0, "running"]],
            },
            "wrong": [
                {
                    "at": START + 123.0,
                    "elapsed_seconds": 123.0,
                    "pipeline": "alerts",
                    "said": "running",
                    "truth": "dead",
                    "detail": "no process of the job alive from 120.1 to 125.3 s",
                }
            ],
        },
        "writers": {
            "max_sessions": {"orders": 2, "alerts": 1},
            "two_writers": [
                {"at": START + 62.0, "elapsed_seconds": 62.0, "pipeline": "orders", "sessions": [1]}
            ],
            "orphans_at_end": ["orders: session 123 on host (pids 1, 2)"],
            "concurrent_log_errors": [],
        },
        "checks": [
            {
                "name": "orders exactly once",
                "passed": True,
                "detail": "12345 valid orders, 0 lost, 0 duplicated",
                "counts": {"expected": 12345, "lost": 0, "duplicated": 0, "wrong_amount": 0},
            },
            {"name": "supervisor truthful", "passed": False, "detail": "1 wrong verdict"},
        ],
        "passed": False,
        "failures": ["fault 2 stop_redis: not recovered in 300 s", "1 wrong verdict"],
    }


def tables() -> dict[str, tuple[list[str], list[list[str]]]]:
    return {
        title.split(" (")[0]: (cols, rows) for title, cols, rows in summary_tables(fake_report())
    }


def test_faults_table_gives_elapsed_times_and_says_what_did_not_recover() -> None:
    columns, rows = tables()["Faults"]
    assert columns[:5] == ["id", "kind", "target", "injected at (s)", "recovery (s)"]
    assert rows[0] == ["1", "kill_driver", "orders", "30", "31.0", rows[0][5]]
    assert rows[1][3:] == [
        "120",
        "not recovered",
        "redis stopped for 60 s; not recovered within 300 s: orders backing_off",
    ]
    assert rows[2][4:] == ["not injected", "not injected: no scheduler process | to kill"]


def test_recovery_table_has_a_row_per_kind_the_overall_figures_and_the_target() -> None:
    columns, rows = tables()["Recovery by kind"]
    assert [row[0] for row in rows] == ["kill_driver", "stop_redis", "all faults", "target"]
    p99 = columns.index("p99")
    assert rows[1][p99] == "–"  # nothing recovered: no percentile
    assert rows[2] == ["all faults", "2", "1", "31.0", "31.0", "31.0", "FAIL"]
    assert rows[3][p99] == "< 60"


def test_verdicts_table_counts_states_in_order_and_wrong_verdicts() -> None:
    columns, rows = tables()["Verdicts per pipeline"]
    assert columns == ["pipeline", "starting", "running", "backing_off", "failed", "wrong"]
    assert rows == [["orders", "10", "560", "30", "0", "0"], ["alerts", "0", "590", "0", "10", "1"]]


def test_checks_and_writers_tables() -> None:
    everything = tables()
    _, checks = everything["Checks"]
    assert [row[1] for row in checks] == ["pass", "FAIL"]
    _, writers = everything["Writers"]
    assert writers == [["orders", "2", "1", "1", "0"], ["alerts", "1", "0", "0", "0"]]


def test_markdown_has_the_header_line_every_table_and_the_failures() -> None:
    text = markdown(fake_report())
    header = text.splitlines()[0]
    for part in ("2026-12-02 15:00 UTC", "d39ed65", "10 min", "seed 7", "load max 3.8", "FAIL"):
        assert part in header
    for title, columns, _ in summary_tables(fake_report()):
        assert f"**{title}**" in text
        assert "| " + " | ".join(columns) + " |" in text
    assert "| all faults | 2 | 1 | 31.0 | 31.0 | 31.0 | FAIL |" in text
    assert "no scheduler process \\| to kill" in text  # a pipe in a cell is escaped
    assert "- 1 wrong verdict" in text


def test_seconds_into_run_reads_a_time_without_zone_as_utc() -> None:
    report = {"started_at": "2026-12-02T15:00:00"}
    assert seconds_into_run(report, START + 12.5) == pytest.approx(12.5)


def test_draw_all_writes_both_charts(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    paths = plots.draw_all(fake_report(), tmp_path / "charts", "chaos-test")
    assert [p.name for p in paths] == ["chaos-test-timeline.png", "chaos-test-recovery.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_draw_all_copes_with_a_run_without_faults_or_samples(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = fake_report()
    report["faults"] = []
    report["load"] = []
    report["verdicts"]["timeline"] = {}
    assert all(p.stat().st_size > 0 for p in plots.draw_all(report, tmp_path, "empty"))


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--duration", "soon"], "--duration"),
        (["--outage", "a minute or so"], "--outage"),
        (["--recovery-timeout", "-5m"], "--recovery-timeout"),
        (["--faults", " , "], "--faults"),
    ],
)
def test_bad_options_exit_2_before_anything_runs(
    arguments: list[str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chaos_cli, "parse_options", _no_run_past(chaos_cli.parse_options))
    result = runner.invoke(app, ["chaos", *arguments])
    assert result.exit_code == 2, result.output
    assert expected in result.output


def _no_run_past(parse: Any) -> Any:
    # These refusals come before ChaosOptions is needed: stop there, whatever run.py holds.
    def checked(**kwargs: Any) -> Any:
        parse(**kwargs)
        raise AssertionError("the options were accepted")

    return checked


def test_an_unknown_fault_kind_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    run = pytest.importorskip("streamops.chaos.run")
    monkeypatch.setattr(run, "run_chaos", _must_not_run)
    result = runner.invoke(app, ["chaos", "--faults", "kill_driver,unplug_the_machine"])
    assert result.exit_code == 2, result.output
    assert "unplug_the_machine" in result.output


def _must_not_run(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("run_chaos was called")


@pytest.mark.parametrize(
    ("passed", "interrupted", "code", "verdict"),
    [(True, False, 0, "PASS"), (False, False, 1, "FAIL"), (False, True, 130, "FAIL")],
)
def test_exit_code_follows_the_report(
    passed: bool,
    interrupted: bool,
    code: int,
    verdict: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    run = pytest.importorskip("streamops.chaos.run")
    report = copy.deepcopy(fake_report())
    report["passed"] = passed
    report["interrupted"] = interrupted

    def fake_run(settings: Any, options: Any, *, on_status: Any, on_note: Any) -> Any:
        assert options.faults == ("kill_driver", "stop_redis") and options.seed == 7
        assert options.outage_seconds == 90.0 and options.duration_seconds == 120.0
        on_note("topics ['orders'] [CONCURRENT_STREAM_LOG_UPDATE]")
        on_status(run.LiveStatus(30.0, 120.0, "recovering", "fault 1 kill_driver orders: 3 s"))
        return run.ChaosResult(report=report, json_path=tmp_path / "chaos.json")

    monkeypatch.setattr(run, "run_chaos", fake_run)
    arguments = ["--duration", "2m", "--seed", "7", "--faults", "kill_driver, stop_redis"]
    result = runner.invoke(
        app, ["--state-dir", str(tmp_path), "chaos", *arguments, "--outage", "90s"]
    )
    assert result.exit_code == code, result.output
    assert f"verdict: {verdict}" in result.output
    assert "[CONCURRENT_STREAM_LOG_UPDATE]" in result.output  # a note is printed as it is
    assert f"report: {tmp_path / 'chaos.json'}" in result.output.replace("\n", "")
    if not passed:
        assert "fault 2 stop_redis: not recovered in 300 s" in result.output


def test_the_help_names_every_fault_kind() -> None:
    faults = pytest.importorskip("streamops.chaos.faults")
    for kind in faults.ALL_FAULTS:
        assert kind in chaos_cli.FAULT_KINDS_HELP


def test_a_platform_that_is_not_running_exits_1_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run = pytest.importorskip("streamops.chaos.run")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise run.ChaosError("Kafka is not running; start the platform with `make up`.")

    monkeypatch.setattr(run, "run_chaos", refuse)
    result = runner.invoke(app, ["--state-dir", str(tmp_path), "chaos", "--duration", "1m"])
    assert result.exit_code == 1, result.output
    assert "make up" in result.output and "verdict" not in result.output
