"""Process grouping into components and CPU accounting between two scans
(streamops/soak/sampler.py), on hand-made process tables."""

from __future__ import annotations

import os

import pytest

from streamops.soak.sampler import (
    OTHER,
    ProcessSample,
    Snapshot,
    assign_groups,
    cost_sample,
    cpu_by_group,
    pss_by_group,
    scan_pss,
)


def proc(pid: int, ppid: int, sid: int, cpu: float = 0.0, rss: int = 0, born: float = 0.0):
    return ProcessSample(pid, ppid, sid, create_time=born, cpu_seconds=cpu, rss_bytes=rss)


def table(*processes: ProcessSample) -> dict[int, ProcessSample]:
    return {p.pid: p for p in processes}


# A machine like the local platform: init, an Airflow scheduler with a task process that moved to
# a process group of its own, a pipeline job's session (sh → JVM → driver, pyspark daemon) whose
# leader was launched by an Airflow task and reparented to init, Kafka, and a stray process.
MACHINE = table(
    proc(1, 0, 1),
    proc(100, 1, 100),  # airflow-scheduler, leads its session
    proc(101, 100, 100),  # LocalExecutor worker
    proc(102, 101, 100),  # a task process
    proc(200, 1, 200),  # the orders job's sh wrapper, leads the job's session
    proc(201, 200, 200),  # spark-submit JVM
    proc(202, 201, 200),  # the Python driver
    proc(203, 201, 200),  # pyspark daemon
    proc(204, 203, 200),  # a pyspark worker
    proc(300, 1, 300),  # kafka
    proc(301, 1, 300),  # a kafka helper reparented to init, still in kafka's session
    proc(400, 1, 400),  # sshd or anything else
)
ROOTS = {100: "airflow-scheduler", 200: "pipeline-orders", 300: "kafka"}


def test_every_process_joins_the_group_of_its_nearest_root_or_session() -> None:
    groups = assign_groups(MACHINE, ROOTS)
    assert {pid for pid, g in groups.items() if g == "airflow-scheduler"} == {100, 101, 102}
    assert {pid for pid, g in groups.items() if g == "pipeline-orders"} == {200, 201, 202, 203, 204}
    assert {pid for pid, g in groups.items() if g == "kafka"} == {300, 301}
    assert 400 not in groups and 1 not in groups


def test_a_job_launched_by_airflow_belongs_to_its_pipeline_not_to_airflow() -> None:
    # The task process 102 is still alive and is the job's parent: the job's own root is nearer.
    machine = dict(MACHINE)
    machine[200] = proc(200, 102, 200)
    groups = assign_groups(machine, ROOTS)
    assert groups[200] == groups[204] == "pipeline-orders"
    assert groups[102] == "airflow-scheduler"


def test_a_parent_cycle_from_a_racy_scan_does_not_hang() -> None:
    machine = table(proc(10, 11, 10), proc(11, 10, 10))
    assert assign_groups(machine, {}) == {}
    assert assign_groups(machine, {10: "x"}) == {10: "x", 11: "x"}


def snapshot(at: float, processes: dict[int, ProcessSample], busy: float = 0.0) -> Snapshot:
    return Snapshot(at, processes, assign_groups(processes, ROOTS), busy)


def test_cpu_is_the_difference_per_process_and_new_processes_count_whole() -> None:
    before = snapshot(100.0, table(proc(200, 1, 200, cpu=10.0), proc(201, 200, 200, cpu=50.0)))
    after = snapshot(
        105.0,
        table(
            proc(200, 1, 200, cpu=10.5),
            proc(201, 200, 200, cpu=54.0),
            proc(205, 201, 200, cpu=0.7, born=102.0),  # born in between: all of it is new
        ),
    )
    assert cpu_by_group(before, after) == {"pipeline-orders": pytest.approx(0.5 + 4.0 + 0.7)}


def test_a_process_first_seen_but_older_than_the_last_scan_adds_nothing() -> None:
    # A restarted job's relaunched leader is new; an old process that only now joins a group
    # (its root appeared) must not bring its whole past into this interval.
    before = snapshot(100.0, table(proc(300, 1, 300, cpu=1.0)))
    after = snapshot(105.0, table(proc(300, 1, 300, cpu=2.0), proc(301, 1, 300, cpu=900.0)))
    assert cpu_by_group(before, after) == {"kafka": pytest.approx(1.0)}


def test_a_reaped_child_is_not_counted_twice() -> None:
    # The worker (cpu 3.0 when last seen) exits at 3.5 and is reaped by the daemon, whose
    # children's times grow by 3.5: the interval holds the daemon's own 0.2 plus the 0.5 more.
    before = snapshot(
        100.0, table(proc(203, 201, 200, cpu=1.0), proc(204, 203, 200, cpu=3.0), proc(201, 1, 200))
    )
    after = snapshot(105.0, table(proc(203, 201, 200, cpu=1.0 + 0.2 + 3.5), proc(201, 1, 200)))
    assert cpu_by_group(before, after) == {"pipeline-orders": pytest.approx(0.7)}


def test_a_subtree_that_exits_together_is_settled_at_its_root() -> None:
    # The JVM (20 s) and its driver (5 s) both exit; the sh wrapper reaped the JVM, which had
    # reaped the driver: sh's children's times grow by 20 + 5 + 1 (the last second of each).
    before = snapshot(
        100.0,
        table(
            proc(200, 1, 200, cpu=0.1), proc(201, 200, 200, cpu=20.0), proc(202, 201, 200, cpu=5.0)
        ),
    )
    after = snapshot(105.0, table(proc(200, 1, 200, cpu=0.1 + 26.0)))
    assert cpu_by_group(before, after) == {"pipeline-orders": pytest.approx(1.0)}


def test_a_group_never_gets_negative_cpu() -> None:
    # The parent did not reap the child (or the child's times were lost): no negative seconds.
    before = snapshot(100.0, table(proc(203, 1, 200, cpu=1.0), proc(204, 203, 200, cpu=3.0)))
    after = snapshot(105.0, table(proc(203, 1, 200, cpu=1.1)))
    after = Snapshot(105.0, after.processes, {203: "pipeline-orders"}, 0.0)
    assert cpu_by_group(before, after) == {"pipeline-orders": 0.0}


def test_pid_reuse_is_a_new_process() -> None:
    before = snapshot(100.0, table(proc(300, 1, 300, cpu=50.0, born=10.0)))
    after = snapshot(105.0, table(proc(300, 1, 300, cpu=0.3, born=103.0)))
    assert cpu_by_group(before, after) == {"kafka": pytest.approx(0.3)}


def test_cost_sample_puts_the_rest_of_the_machine_in_other() -> None:
    before = snapshot(
        100.0, table(proc(300, 1, 300, cpu=1.0, rss=100), proc(400, 1, 400)), busy=50.0
    )
    after = snapshot(
        110.0,
        table(proc(300, 1, 300, cpu=6.0, rss=300), proc(400, 1, 400, cpu=3.0, rss=1000)),
        busy=58.0,
    )
    sample = cost_sample(before, after, started_at=90.0)
    assert sample["elapsed_seconds"] == 20.0
    assert sample["interval_seconds"] == 10.0
    assert sample["cores"] == {"kafka": 0.5, OTHER: 0.3}
    assert sample["machine_cores"] == 0.8
    # RSS of the groups only: the rest of the machine's memory is not a component's.
    assert sample["rss_bytes"] == {"kafka": 300}


def test_pss_is_summed_per_group_and_read_from_proc() -> None:
    assert pss_by_group({1: "a", 2: "a", 3: "b"}, {1: 10, 2: 5, 4: 99}) == {"a": 15, "b": 0}
    mine = scan_pss([os.getpid(), 0])
    assert mine[os.getpid()] > 0 and 0 not in mine
