"""A settled job lowers every thread of its session to the spec's niceness; a starting one does
not (spark_jobs.common.priority, the runner's _Yield). Real processes and threads; no Spark."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any

import pytest

from spark_jobs.common import priority, runner
from streamops.supervision.spec import PipelineSpec
from streamops.supervision.submit import SETTLED_NICE_ENV, build_submit_environment

# A session of its own: a process with three threads besides its main one (one already at
# niceness 15), and a child process, whose pid it prints once all run.
CHILD = r"""
import os, subprocess, sys, threading, time
ready = threading.Barrier(4)
def work(nicer):
    if nicer:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 15)
    ready.wait()
    time.sleep(60)
for nicer in (False, False, True):
    threading.Thread(target=work, args=(nicer,), daemon=True).start()
ready.wait()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


def _niceness(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def _threads(pid: int) -> list[int]:
    return [int(task) for task in os.listdir(f"/proc/{pid}/task")]


def test_every_thread_of_the_session_is_lowered_and_a_nicer_one_kept() -> None:
    leader = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert leader.stdout is not None
        child = int(leader.stdout.readline())
        mine = _niceness(0)
        before = {tid: _niceness(tid) for tid in _threads(leader.pid) + _threads(child)}
        # The leader's main thread and its three, and the child's one.
        assert sorted(before.values()) == [mine, mine, mine, mine, 15]

        lowered = priority.lower_session_priority(mine + 7, session_id=leader.pid)

        after = {tid: _niceness(tid) for tid in _threads(leader.pid) + _threads(child)}
        assert lowered == 4
        assert sorted(after.values()) == [mine + 7] * 4 + [15]
        assert _niceness(0) == mine  # this test's process is in another session
        # The session's autogroup (where the kernel has them) is lowered too; not this one's.
        if priority.autogroup_nice(leader.pid) is not None:
            assert priority.autogroup_nice(leader.pid) == mine + 7
            assert priority.autogroup_nice(child) == mine + 7
            assert priority.autogroup_nice(os.getpid()) != mine + 7
    finally:
        os.killpg(leader.pid, 9)
        leader.wait()


def test_niceness_zero_lowers_nothing() -> None:
    assert priority.lower_session_priority(0, session_id=os.getsid(0)) == 0


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("10", 10), (" 19 ", 19)])
def test_the_settled_niceness_is_read_from_the_environment(text: str, value: int) -> None:
    assert priority.settled_nice({SETTLED_NICE_ENV: text}) == value


def test_no_settled_niceness_set_means_none() -> None:
    assert priority.settled_nice({}) == 0


@pytest.mark.parametrize("text", ["-1", "20", "ten", "1.5"])
def test_a_bad_settled_niceness_is_refused_with_its_name(text: str) -> None:
    with pytest.raises(ValueError, match=SETTLED_NICE_ENV):
        priority.settled_nice({SETTLED_NICE_ENV: text})


def test_the_spec_s_niceness_reaches_the_job_s_environment(settings: Any) -> None:
    spec = PipelineSpec(name="orders", job_module="spark_jobs.jobs.orders", queries=("a",))
    assert build_submit_environment(spec, settings, "local[*]")[SETTLED_NICE_ENV] == "10"
    quiet = spec.model_copy(update={"settled_nice": 0})
    assert build_submit_environment(quiet, settings, "local[*]")[SETTLED_NICE_ENV] == "0"


@pytest.mark.parametrize("bad", [-1, 20])
def test_a_spec_niceness_out_of_range_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="settled_nice"):
        PipelineSpec(
            name="orders", job_module="spark_jobs.jobs.orders", queries=("a",), settled_nice=bad
        )


class _Source:
    def __init__(self, end: str, latest: str | None) -> None:
        self.end, self.latest = end, latest

    def endOffset(self) -> str:
        return self.end

    def latestOffset(self) -> str | None:
        return self.latest


class _Query:
    """A query whose Java side reports ``progress``: None, or its sources."""

    def __init__(self) -> None:
        self.progress: list[_Source] | None = None
        self.rows = 1  # input rows of the last batch
        self._jsq = SimpleNamespace(
            lastProgress=lambda: (
                None
                if self.progress is None
                else SimpleNamespace(sources=lambda: self.progress, numInputRows=lambda: self.rows)
            )
        )


def _slot(query: _Query | None) -> Any:
    return SimpleNamespace(query=query, fed=False)


BEHIND = _Source('{"orders":{"0":100,"1":90}}', '{"orders":{"1":400,"0":380}}')
CAUGHT_UP = _Source('{"orders":{"0":380,"1":400}}', '{"orders":{"1":400,"0":380}}')


def test_a_job_yields_once_every_query_caught_up(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(runner, "lower_session_priority", lambda nice: calls.append(nice) or 3)
    first, second = _Query(), _Query()
    slots = [_slot(first), _slot(None)]
    yielding = runner._Yield("orders", 10)

    yielding.once_settled(slots)  # the second query not started yet
    first.progress = [CAUGHT_UP]
    yielding.once_settled(slots)
    slots[1] = _slot(second)
    yielding.once_settled(slots)  # started, no batch finished yet
    second.progress = [BEHIND]
    yielding.once_settled(slots)  # a batch finished, still behind its topic's end
    assert calls == []

    second.progress = [CAUGHT_UP, _Source('{"x":{"0":1}}', None)]  # a replayed batch
    yielding.once_settled(slots)
    assert calls == []

    second.progress = [CAUGHT_UP]
    yielding.once_settled(slots)
    yielding.once_settled(slots)
    assert calls == [10]


def test_a_query_idle_since_its_start_is_not_caught_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its first batch of data is still to come (for transformWithState: a Python worker)."""
    calls: list[int] = []
    monkeypatch.setattr(runner, "lower_session_priority", lambda nice: calls.append(nice) or 3)
    query = _Query()
    query.progress, query.rows = [CAUGHT_UP], 0
    slots = [_slot(query)]
    yielding = runner._Yield("vitals", 10)
    yielding.once_settled(slots)
    assert calls == []
    query.rows = 25  # the first batch with data
    yielding.once_settled(slots)
    assert calls == [10]


def test_a_job_that_never_settles_yields_after_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(runner, "lower_session_priority", lambda nice: calls.append(nice) or 3)
    yielding = runner._Yield("orders", 10)
    yielding.started = time.monotonic() - runner.SETTLE_LIMIT_SECONDS - 1
    yielding.once_settled([_slot(_Query())])
    assert calls == [10]


def test_a_job_with_niceness_zero_never_yields(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(runner, "lower_session_priority", lambda nice: calls.append(nice) or 3)
    query = _Query()
    query.progress = [CAUGHT_UP]
    runner._Yield("orders", 0).once_settled([_slot(query)])
    assert calls == []
