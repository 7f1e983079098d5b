"""The driver starts a job's first query alone, then every other query together."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from spark_jobs.common import runner
from spark_jobs.common.restarts import Restart


class FakeQuery:
    def __init__(self, name: str) -> None:
        self.name = name
        self.isActive = True
        self.progress: object | None = None
        self._jsq = self

    def lastProgress(self) -> object | None:
        return self.progress


class FakeWriter:
    def __init__(self, name: str, started: list[str]) -> None:
        self.name = name
        self.started = started
        self.query: FakeQuery | None = None

    def start(self) -> FakeQuery:
        self.started.append(self.name)
        self.query = FakeQuery(self.name)
        return self.query


class FakeStatus:
    def track(self, query: Any) -> None:
        pass


def slots(names: list[str], started: list[str]) -> list[runner._Slot]:
    return [runner._Slot(FakeWriter(name, started)) for name in names]  # type: ignore[arg-type]


def test_the_first_query_starts_alone_and_the_others_together_once_it_settled() -> None:
    started: list[str] = []
    job = slots(["signal", "records", "summary"], started)
    runner._start_due("p", job, FakeStatus())  # type: ignore[arg-type]
    assert started == ["signal"]
    runner._start_due("p", job, FakeStatus())  # type: ignore[arg-type]
    assert started == ["signal"], "the others wait for the first query's first batch"
    first: Any = job[0].query
    first.progress = object()  # its first batch completed
    runner._start_due("p", job, FakeStatus())  # type: ignore[arg-type]
    assert started == ["signal", "records", "summary"]


def test_the_others_start_after_the_stagger_even_if_the_first_batch_is_slow(
    monkeypatch: Any,
) -> None:
    started: list[str] = []
    job = slots(["a", "b"], started)
    runner._start_due("p", job, FakeStatus())  # type: ignore[arg-type]
    assert job[0].started_at is not None
    job[0].started_at -= runner.STAGGER_SECONDS
    runner._start_due("p", job, FakeStatus())  # type: ignore[arg-type]
    assert started == ["a", "b"]


def test_a_first_query_waiting_for_its_own_restart_holds_nobody_back() -> None:
    started: list[str] = []
    job = slots(["a", "b", "c"], started)
    job[0].restart = Restart("a", attempt=1, of=5, reason="transient", at=float("inf"))
    runner._start_due("p", job, FakeStatus())  # type: ignore[arg-type]
    assert started == ["b", "c"]


def test_the_job_s_own_info_messages_reach_the_job_log() -> None:
    # In a process of its own: the handler it adds stays for the life of the process.
    script = (
        "import logging; from spark_jobs.common.runner import _log_to_job_log; "
        "_log_to_job_log(); _log_to_job_log(); "
        "logging.getLogger('spark_jobs.common.runner').info('orders: started query %s', 'a'); "
        "logging.getLogger('other').info('not ours')"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines  # once, however often it is set up, and only the jobs' own
    assert lines[0].endswith("INFO spark_jobs.common.runner: orders: started query a")
