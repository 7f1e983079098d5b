"""The chaos suite's judging: wrong verdicts, two writers, recovery, the fault schedule and the
armed kill points. Pure, apart from one subprocess that dies at an armed kill point."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest

from streamops import faults as kill_points
from streamops.chaos.faults import ALL_FAULTS, affected, pick_target
from streamops.chaos.run import ChaosOptions, failures_of, recovery_summary, schedule
from streamops.chaos.verdicts import (
    Sample,
    VerdictSampler,
    caught_up,
    max_sessions,
    pipeline_heartbeat,
    timeline,
    two_writers,
    wrong_verdicts,
)

JOB = 4242


def sample(
    at: float,
    state: str,
    *,
    sessions: list[int] | None = None,
    holder: int | None = JOB,
    page_pid: int | None = JOB,
    heartbeat: float | None = None,
) -> Sample:
    return Sample(
        at=at,
        states={"orders": state},
        page_pids={"orders": page_pid},
        sessions={"orders": [JOB] if sessions is None else sessions},
        holders={"orders": holder},
        heartbeats={"orders": heartbeat},
    )


def test_a_running_verdict_with_the_job_alive_is_right() -> None:
    samples = [sample(t, "running", heartbeat=t - 1) for t in range(10)]
    assert wrong_verdicts(samples) == []


def test_running_while_no_process_of_the_job_lives_is_wrong() -> None:
    samples = [sample(t, "running", sessions=[] if t >= 3 else None) for t in range(10)]
    wrong = wrong_verdicts(samples)
    # From 3 s the job is gone; with 2 s of tolerance the verdicts from 5 s on are wrong.
    assert [w.at for w in wrong] == [5, 6, 7, 8, 9]
    assert {w.truth for w in wrong} == {"dead"}


def test_a_verdict_a_moment_behind_the_process_table_is_tolerated() -> None:
    # The kill lands between the page read and the process scan: the page still says running
    # one second after the job died, then failed.
    samples = [
        sample(t, "running" if t <= 4 else "failed", sessions=[] if t >= 4 else None)
        for t in range(10)
    ]
    assert wrong_verdicts(samples) == []


def test_a_page_that_took_seconds_to_answer_is_judged_from_when_it_was_asked() -> None:
    # The job dies at 3 s; the page asked at 1 s answers "running" at 5 s (its look at the
    # process was before the death).
    samples = [sample(t, "running", sessions=[] if t >= 3 else None) for t in range(3)]
    slow = sample(5, "running", sessions=[])
    slow.page_started = 1.0
    samples.append(slow)
    assert wrong_verdicts(samples) == []
    # Asked at 4.5 s with the last scan before at 2 s, the job alive in it: it may have died
    # while the page looked (each sample's scan follows its page read, so on a loaded machine
    # the scans are seconds apart). Not provably wrong.
    slow.page_started = 4.5
    assert wrong_verdicts(samples) == []
    # A scan at 4 s, before the request, found it dead already: wrong.
    samples.insert(3, sample(4, "failed", sessions=[]))
    assert [w.at for w in wrong_verdicts(samples)] == [5]


def test_failed_while_the_job_runs_and_makes_progress_is_wrong() -> None:
    samples = [sample(t, "failed" if t == 5 else "running", heartbeat=t) for t in range(12)]
    wrong = wrong_verdicts(samples)
    assert [(w.at, w.said, w.truth) for w in wrong] == [(5, "failed", "running")]


def test_stalled_while_the_job_lives_but_makes_no_progress_is_right() -> None:
    samples = [sample(t, "stalled", heartbeat=-300.0) for t in range(12)]
    assert wrong_verdicts(samples) == []


def test_failed_while_the_killed_driver_s_jvm_winds_down_is_right() -> None:
    # The driver died at 5 s after a heartbeat at 4 s; its JVM lives on for a few seconds.
    samples = [
        sample(t, "running" if t < 6 else "failed", heartbeat=min(t, 4), sessions=[JOB])
        for t in range(12)
    ]
    assert wrong_verdicts(samples) == []


def test_stalled_while_blocked_then_resuming_is_right() -> None:
    # No progress from 0 to 20 s (a service away), then heartbeats again: the stall was true.
    samples = [
        sample(t, "stalled" if t < 20 else "running", heartbeat=-100.0 if t < 20 else t)
        for t in range(30)
    ]
    assert wrong_verdicts(samples) == []


def test_a_dead_verdict_is_judged_only_while_the_same_job_holds_the_lease() -> None:
    # The holder changes inside the span: a relaunch; the old verdict is about the old job.
    samples = [
        sample(
            t,
            "backing_off" if t < 5 else "running",
            holder=JOB if t < 5 else 777,
            sessions=[JOB] if t < 5 else [777],
            page_pid=JOB if t < 5 else 777,
            heartbeat=t,
        )
        for t in range(10)
    ]
    assert [w.at for w in wrong_verdicts(samples)] == [0, 1, 2]


def test_running_with_no_job_named_needs_some_job_of_the_pipeline_alive() -> None:
    # The page's unsupervised branch: no lease, heartbeats still fresh.
    alive = [sample(t, "running", page_pid=None, holder=None) for t in range(6)]
    assert wrong_verdicts(alive) == []
    dead = [sample(t, "running", page_pid=None, holder=None, sessions=[]) for t in range(6)]
    assert len(wrong_verdicts(dead)) == 6
    starting = [sample(t, "starting", page_pid=None, holder=None, sessions=[]) for t in range(6)]
    assert wrong_verdicts(starting) == []


def test_a_pipeline_progresses_only_while_every_query_runs() -> None:
    running = {"state": "running", "heartbeat_at": "100.5"}
    assert pipeline_heartbeat([running, {"state": "running", "heartbeat_at": "90"}]) == 90.0
    # A query's last write as it terminates is no progress of the pipeline.
    assert pipeline_heartbeat([running, {"state": "failed", "heartbeat_at": "101"}]) is None
    assert pipeline_heartbeat([running, {}]) is None
    assert pipeline_heartbeat([]) is None


def test_two_live_sessions_of_one_pipeline_are_two_writers() -> None:
    samples = [sample(0, "running"), sample(1, "running", sessions=[JOB, 99]), sample(2, "running")]
    found = two_writers(samples)
    assert [(t.at, t.sessions) for t in found] == [(1, (99, JOB))]
    assert max_sessions(samples) == {"orders": 2}


def test_a_sampler_never_started_stops_cleanly_and_a_started_one_samples() -> None:
    # A chaos run that gives up before its faults (the platform not ready) stops a sampler it
    # never started: that must not hide the real error under a RuntimeError of its own.
    def sampler() -> VerdictSampler:
        return VerdictSampler(
            state_dir="/nonexistent",
            pipelines=["orders"],
            read_page=lambda: [{"name": "orders", "state": "running", "pid": JOB}],
            read_leases=lambda: {"orders": (JOB, None)},
            read_hashes=lambda: {},
            interval=0.01,
        )

    never = sampler()
    never.stop()
    assert never.samples == []

    started = sampler()
    started.start()
    deadline = time.monotonic() + 10
    while not started.samples and time.monotonic() < deadline:
        time.sleep(0.01)
    started.stop()
    assert started.samples and started.samples[0].states == {"orders": "running"}


def test_the_timeline_keeps_state_changes_only() -> None:
    states = ["starting", "starting", "running", "running", "failed", "running"]
    samples = [sample(100 + t, state) for t, state in enumerate(states)]
    assert timeline(samples, 100) == {
        "orders": [[0, "starting"], [2, "running"], [4, "failed"], [5, "running"]]
    }


def test_caught_up_needs_every_query_past_every_target() -> None:
    targets = {"orders": {0: 10, 1: 20}}
    assert caught_up({"records": {"orders": {0: 10, 1: 25}}}, targets)
    assert not caught_up({"records": {"orders": {0: 9, 1: 25}}}, targets)
    assert not caught_up({"records": {"orders": {0: 10, 1: 25}}, "revenue": {}}, targets)
    assert not caught_up({}, targets)
    # A query judged only on the topics it reads.
    assert caught_up({"payments": {"payments": {0: 3}}}, targets | {"payments": {0: 3}})


def test_the_schedule_gives_every_kind_once_before_any_repeats() -> None:
    kinds = list(islice(schedule(ALL_FAULTS, random.Random(3)), 2 * len(ALL_FAULTS)))
    assert sorted(kinds[: len(ALL_FAULTS)]) == sorted(ALL_FAULTS)
    assert Counter(kinds) == dict.fromkeys(ALL_FAULTS, 2)


def test_targets_and_who_must_recover() -> None:
    rng = random.Random(1)
    pipelines = ["alerts", "joins", "orders", "vitals"]
    assert pick_target("kill_driver", pipelines, rng) in pipelines
    assert pick_target("stop_mariadb", pipelines, rng) == "mariadb"
    assert pick_target("kill_triggerer", pipelines, rng) == "airflow-triggerer"
    assert affected("kill_driver", "joins", pipelines) == ["joins"]
    assert affected("stop_redis", "redis", pipelines) == pipelines
    assert affected("kill_point_revenue", "orders", pipelines) == ["orders"]
    assert affected("kill_point_chunks", "any pipeline", pipelines) == pipelines
    with pytest.raises(ValueError, match="unknown fault kind"):
        pick_target("kill_everything", pipelines, rng)


def _fault(kind: str, seconds: float | None, error: str | None = None) -> dict[str, object]:
    return {"kind": kind, "recovery_seconds": seconds, "error": error}


def test_recovery_percentiles_leave_out_faults_that_were_not_injected() -> None:
    faults = [
        _fault("kill_driver", 10.0),
        _fault("kill_driver", 30.0),
        _fault("stop_redis", 50.0),
        _fault("kill_worker", None, "not injected: no worker process in the job's session now"),
    ]
    summary = recovery_summary(faults)
    assert (summary["count"], summary["recovered"]) == (3, 3)
    assert summary["max_seconds"] == 50.0
    assert summary["passed"]
    assert summary["by_kind"]["kill_driver"]["count"] == 2
    assert "kill_worker" not in summary["by_kind"]


def test_a_fault_never_recovered_or_a_slow_p99_fails_the_target() -> None:
    assert not recovery_summary([_fault("kill_jvm", None, "not recovered within 300 s")])["passed"]
    assert not recovery_summary([_fault("kill_jvm", 75.0)])["passed"]


def _report(**changes: object) -> dict[str, object]:
    report: dict[str, object] = {
        "checks": [{"name": "orders exactly once", "passed": True, "detail": "ok"}],
        "recovery": recovery_summary([_fault("kill_driver", 20.0)]),
        "verdicts": {"wrong": []},
        "writers": {"two_writers": [], "orphans_at_end": [], "concurrent_log_errors": []},
    }
    report.update(changes)
    return report


def test_a_clean_report_has_no_failures_and_each_kind_of_wrong_is_named() -> None:
    assert failures_of(_report()) == []
    failures = failures_of(
        _report(
            checks=[{"name": "orders exactly once", "passed": False, "detail": "3 lost"}],
            verdicts={
                "wrong": [
                    {
                        "pipeline": "orders",
                        "said": "running",
                        "elapsed_seconds": 12.0,
                        "truth": "dead",
                        "detail": "no process",
                    }
                ]
            },
            writers={
                "two_writers": [{"pipeline": "joins", "sessions": [1, 2], "elapsed_seconds": 3}],
                "orphans_at_end": ["vitals: session 9"],
                "concurrent_log_errors": ["orders: token-4.log: CONCURRENT_STREAM_LOG_UPDATE"],
            },
        )
    )
    assert len(failures) == 5
    assert failures[0].startswith("check failed: orders exactly once")
    assert any("wrong verdicts" in f for f in failures)
    assert any("orphan" in f for f in failures)


def test_a_slow_recovery_is_a_missed_target_not_a_failure() -> None:
    report = _report(recovery=recovery_summary([_fault("stop_mariadb", 90.0)]))
    assert failures_of(report) == []
    assert not report["recovery"]["passed"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"faults": ("kill_everything",)}, "unknown fault kind"),
        ({"faults": ()}, "no fault kind"),
        ({"duration_seconds": 0}, "positive duration"),
        ({"max_faults": 0}, "give 1 or more"),
        ({"outage_seconds": -1}, "0 s or more"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(
    changes: dict[str, object], message: str
) -> None:
    options: dict[str, object] = {"duration_seconds": 60.0} | changes
    with pytest.raises(ValueError, match=message):
        ChaosOptions(**options)  # type: ignore[arg-type]


DIE_AT = """
import os, sys
os.environ["STREAMOPS_STATE_DIR"] = sys.argv[1]
from streamops.faults import kill_point
kill_point("orders_revenue:between_mariadb_and_redis")
print("passed the point")
"""


def test_an_armed_kill_point_kills_one_process_once(tmp_path: Path) -> None:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", DIE_AT, str(tmp_path)], capture_output=True, text=True
        )

    assert run().stdout.strip() == "passed the point"  # not armed: nothing happens
    kill_points.arm(tmp_path, "orders_revenue:between_mariadb_and_redis")
    assert run().returncode == -signal.SIGKILL
    assert run().stdout.strip() == "passed the point"  # the arming was used up
    kill_points.arm(tmp_path, "mariadb:between_chunks")  # another point's arming
    assert run().returncode == 0
    assert kill_points.disarm(tmp_path, "mariadb:between_chunks")
    assert not kill_points.disarm(tmp_path, "mariadb:between_chunks")
