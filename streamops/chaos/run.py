"""One chaos run against the running platform.

1. Preflight: Kafka, MariaDB, Redis and every enabled pipeline's job run, and the operations page
   says every pipeline is running (the soak's preflight, then the page).
2. The input topics' end offsets are noted: the run's records start there.
3. Faults, one at a time for ``duration_seconds``: a kind from a seeded shuffle of the chosen
   kinds (each kind once before any repeats), a random target, injected (:mod:`faults`); then the
   run waits until every affected pipeline has recovered: its lease holder alive, the page saying
   ``running``, a heartbeat since the fault ended and every query caught up to the topics' end
   offsets as of then. Recovery time is from the end of the fault (the kill; the service
   answering again) to that moment. A pause of 5–20 s, then the next fault.
4. The end offsets are noted again, every pipeline must catch up to them, and the outputs are
   checked against those records (:mod:`truth`).
5. Throughout, :class:`~streamops.chaos.verdicts.VerdictSampler` compares the supervisor's word
   with the process table and the heartbeats every second.

The report (JSON, charts) says what happened, and ``passed`` whether it met the bar: every check
passed, no wrong verdict, never two writers, no orphan left, no concurrent-update error in the
job logs, every fault recovered, recovery p99 under 60 s.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamops.chaos import faults as fault_kinds
from streamops.chaos.faults import ALL_FAULTS, FaultError, Injection
from streamops.chaos.verdicts import (
    VerdictSampler,
    caught_up,
    max_sessions,
    state_counts,
    timeline,
    two_writers,
    wrong_verdicts,
)
from streamops.config import Settings
from streamops.soak.run import LiveStatus, SoakResult

RECOVERY_TARGET_P99_SECONDS = 60.0
GAP_SECONDS = (5.0, 20.0)
READY_TIMEOUT_SECONDS = 300.0
# Spark's error when two jobs write one checkpoint.
CONCURRENT_WRITERS = ("CONCURRENT_STREAM_LOG_UPDATE", "Multiple streaming jobs detected")
LOAD_EVERY_SECONDS = 5.0
# After every query reported the run's last offsets: a moment for the Redis side of a batch.
CHECK_SETTLE_SECONDS = 10.0


class ChaosError(Exception):
    """The run cannot start (or go on): the message says what to do."""


@dataclass(frozen=True)
class ChaosOptions:
    duration_seconds: float
    seed: int = 0
    faults: tuple[str, ...] = ALL_FAULTS
    outage_seconds: float = 60.0
    recovery_timeout_seconds: float = 300.0
    # None: <state_dir>/chaos
    output_dir: Path | None = None
    write_json: bool = True
    # Stop after this many faults even before the duration is up (the bounded form in CI).
    max_faults: int | None = None

    def __post_init__(self) -> None:
        if self.max_faults is not None and self.max_faults < 1:
            raise ValueError(f"max_faults is {self.max_faults}; give 1 or more, or leave it out")
        if not self.duration_seconds > 0:
            raise ValueError(f"duration is {self.duration_seconds} s; give a positive duration")
        if not self.faults:
            raise ValueError("no fault kind chosen; give at least one of " + ", ".join(ALL_FAULTS))
        unknown = [kind for kind in self.faults if kind not in ALL_FAULTS]
        if unknown:
            raise ValueError(
                f"unknown fault kind(s) {', '.join(unknown)}; the kinds are "
                + ", ".join(ALL_FAULTS)
            )
        if self.outage_seconds < 0:
            raise ValueError(f"outage is {self.outage_seconds} s; give 0 s or more")
        if not self.recovery_timeout_seconds > 0:
            raise ValueError(
                f"recovery timeout is {self.recovery_timeout_seconds} s; give a positive duration"
            )

    def folder(self, settings: Settings) -> Path:
        return self.output_dir or settings.state_dir / "chaos"


# What the progress display shows once a second, and what a run returns: the soak's shapes.
ChaosResult = SoakResult


@dataclass
class FaultRecord:
    id: int
    injection: Injection
    recovered_at: float | None = None
    error: str | None = None

    @property
    def recovery_seconds(self) -> float | None:
        if self.recovered_at is None:
            return None
        return max(0.0, self.recovered_at - self.injection.ended_at)

    def to_dict(self) -> dict[str, Any]:
        injection = self.injection
        return {
            "id": self.id,
            "kind": injection.kind,
            "target": injection.target,
            "pipelines": injection.pipelines,
            "injected_at": injection.injected_at,
            "ended_at": injection.ended_at,
            "recovered_at": self.recovered_at,
            "recovery_seconds": self.recovery_seconds,
            "detail": injection.detail,
            "pids": injection.pids,
            "error": self.error,
        }


# --- pure parts ----------------------------------------------------------------------------------


def schedule(kinds: Iterable[str], rng: random.Random) -> Iterator[str]:
    """Fault kinds forever: each kind once in a shuffled order, then again reshuffled."""
    kinds = list(kinds)
    while True:
        batch = kinds[:]
        rng.shuffle(batch)
        yield from batch


def percentile(values: list[float], q: float) -> float | None:
    from streamops.soak.stats import percentile as soak_percentile

    return soak_percentile(values, q) if values else None


def recovery_summary(faults: list[dict[str, Any]]) -> dict[str, Any]:
    """Recovery p50/p99/max overall and per kind; faults that could not be injected are left
    out, faults that never recovered count against ``passed``."""
    injected = [f for f in faults if not str(f.get("error") or "").startswith("not injected")]

    def summary(group: list[dict[str, Any]]) -> dict[str, Any]:
        times = [float(f["recovery_seconds"]) for f in group if f["recovery_seconds"] is not None]
        return {
            "count": len(group),
            "recovered": len(times),
            "p50_seconds": percentile(times, 50),
            "p99_seconds": percentile(times, 99),
            "max_seconds": max(times, default=None),
        }

    overall = summary(injected)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for fault in injected:
        by_kind.setdefault(fault["kind"], []).append(fault)
    p99 = overall["p99_seconds"]
    return {
        **overall,
        "target_p99_seconds": RECOVERY_TARGET_P99_SECONDS,
        "passed": overall["recovered"] == overall["count"]
        and (p99 is None or p99 < RECOVERY_TARGET_P99_SECONDS),
        "by_kind": {kind: summary(group) for kind, group in sorted(by_kind.items())},
    }


def failures_of(report: dict[str, Any]) -> list[str]:
    """What the run proved wrong, each in one line: a failed check, a fault never recovered, a
    wrong verdict, two writers, an orphan. The recovery p99 target is reported apart
    (``recovery.passed``): it is a measure of speed, and a run can be correct without meeting it.
    """
    failures = [
        f"check failed: {c['name']}: {c['detail']}" for c in report["checks"] if not c["passed"]
    ]
    recovery = report["recovery"]
    if recovery["recovered"] < recovery["count"]:
        failures.append(
            f"{recovery['count'] - recovery['recovered']} of {recovery['count']} faults not "
            "recovered within the recovery timeout"
        )
    wrong = report["verdicts"]["wrong"]
    if wrong:
        first = wrong[0]
        failures.append(
            f"{len(wrong)} wrong verdicts (first: {first['pipeline']} said {first['said']} at "
            f"{first['elapsed_seconds']} s, truth {first['truth']}: {first['detail']})"
        )
    writers = report["writers"]
    if writers["two_writers"]:
        first = writers["two_writers"][0]
        failures.append(
            f"two live jobs of one pipeline in {len(writers['two_writers'])} samples (first: "
            f"{first['pipeline']} sessions {first['sessions']} at {first['elapsed_seconds']} s)"
        )
    for orphan in writers["orphans_at_end"]:
        failures.append(f"orphan left at the end: {orphan}")
    for error in writers["concurrent_log_errors"]:
        failures.append(f"two writers on one checkpoint: {error}")
    return failures


# --- the run --------------------------------------------------------------------------------------


class _Platform:
    """The reads the run and the sampler need, each with short time-outs."""

    def __init__(self, settings: Settings, specs: dict[str, Any]) -> None:
        self.settings = settings
        self.specs = specs
        self._plugin = self._login()
        self._token_at = time.monotonic()

    def _login(self) -> Any:
        from streamops.airflow_rest import fetch_token
        from streamops.cli.pipeline import PluginClient

        settings = self.settings
        token = fetch_token(
            settings.airflow_url, settings.airflow_admin_user, settings.airflow_admin_password
        )
        return PluginClient(settings.airflow_url, token, timeout=10.0)

    def close(self) -> None:
        self._plugin.close()

    def page(self) -> list[dict[str, Any]]:
        if time.monotonic() - self._token_at > 600:  # renew well within the token's life
            self._plugin.close()
            self._plugin = self._login()
            self._token_at = time.monotonic()
        return list(self._plugin.request("GET", "/pipelines")["pipelines"])

    def leases(self) -> dict[str, tuple[int | None, float | None]]:
        """Per pipeline: the lease holder's session (its wrapper pid) and when the lease was
        last renewed (its expiry less its TTL), epoch seconds."""
        from streamops.db import connect
        from streamops.supervision import lease as leases

        found: dict[str, tuple[int | None, float | None]] = {}
        with closing(connect(self.settings)) as connection:
            for name, spec in self.specs.items():
                lease = leases.current(
                    connection, spec.checkpoint_location(self.settings.checkpoint_root)
                )
                if lease is None or lease.owner is None:
                    found[name] = (None, None)
                    continue
                renewed = None
                if lease.expires_at is not None:
                    expires = lease.expires_at.replace(tzinfo=UTC).timestamp()
                    renewed = expires - spec.lease_ttl_seconds
                found[name] = (int(lease.pid) if lease.pid else None, renewed)
        return found

    def hashes(self) -> dict[str, dict[str, dict[str, str]]]:
        from streamops_airflow.ui.pipeline_sources import read_query_hashes

        return read_query_hashes(self.specs.values(), self.settings)


def _topics(sampler: VerdictSampler) -> list[str]:
    """Every topic the queries have reported consuming, over all samples so far."""
    topics: set[str] = set()
    for sample in list(sampler.samples):
        for queries in sample.consumed.values():
            for offsets in queries.values():
                topics.update(offsets)
    return sorted(topics)


def _every_query_reported(sampler: VerdictSampler, specs: dict[str, Any]) -> bool:
    sample = sampler.latest()
    return sample is not None and all(
        sample.consumed.get(name, {}).get(query)
        for name, spec in specs.items()
        for query in spec.queries
    )


def _end_offsets(settings: Settings, topics: list[str], attempts: int = 5) -> Any:
    """The topics' end offsets, retried: just after a broker restart the first reads may fail."""
    from streamops.chaos import truth

    for attempt in range(1, attempts + 1):
        try:
            return truth.end_offsets(settings, topics)
        except Exception:
            if attempt == attempts:
                raise
            time.sleep(5)
    raise AssertionError("unreachable")


def _recovered(sampler: VerdictSampler, pipelines: list[str], since: float, targets: Any) -> bool:
    sample = sampler.latest()
    if sample is None or sample.at < since:
        return False
    for pipeline in pipelines:
        holder = sample.holders.get(pipeline)
        beat = sample.heartbeats.get(pipeline)
        renewed = sample.renewed.get(pipeline)
        if (
            holder is None
            or holder not in sample.sessions.get(pipeline, [])
            or sample.states.get(pipeline) != "running"
            or beat is None
            or beat < since
            # The supervisor watches again: it renewed the lease since the fault (a killed
            # triggerer or scheduler leaves the job running but nobody watching it).
            or renewed is None
            or renewed < since
            or not caught_up(sample.consumed.get(pipeline, {}), targets)
        ):
            return False
    return True


def _pause_generators(settings: Settings, note: Callable[[str], None]) -> list[Any]:
    """Stop the stack's running generators; returns them to start again."""
    from streamops.stack import Stack

    paused = []
    for generator in Stack(settings).generators:
        if generator.running_pid() is not None:
            generator.stop()
            paused.append(generator)
    if paused:
        note(f"generators paused for the checks: {', '.join(g.name for g in paused)}")
    return paused


def _resume_generators(paused: list[Any], note: Callable[[str], None]) -> None:
    seed = int(time.time())
    for generator in paused:
        generator.seed = seed
        try:
            generator.start()
        except Exception as error:  # the report still gets written; the user is told
            note(f"warning: {generator.name} did not start again: {error}")


def _status_line(sampler: VerdictSampler) -> str:
    sample = sampler.latest()
    if sample is None:
        return "sampling"
    return ", ".join(f"{name} {state}" for name, state in sorted(sample.states.items()))


def _concurrent_log_errors(settings: Settings, since: float) -> list[str]:
    """Spark's concurrent-update error in any job log written since ``since``."""
    found = []
    for log in sorted((settings.state_dir / "pipelines").glob("*/*.log")):
        if log.stat().st_mtime < since:
            continue
        with log.open(errors="replace") as lines:
            for line in lines:
                if any(marker in line for marker in CONCURRENT_WRITERS):
                    found.append(f"{log.parent.name}: {log.name}: {line.strip()[:300]}")
                    break
    return found


def _orphans(settings: Settings, specs: dict[str, Any]) -> list[str]:
    from streamops.chaos.faults import job_handle
    from streamops.supervision.job_processes import stray_jobs

    found = []
    for name, spec in specs.items():
        try:
            holder = job_handle(settings, spec)
        except Exception as error:  # MariaDB away at the very end: say so, judge nothing
            found.append(f"{name}: the lease could not be read ({error})")
            continue
        found.extend(f"{name}: {stray.describe()}" for stray in stray_jobs(settings, name, holder))
    return found


def _commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wait_until_running(platform: _Platform, timeout: float, note: Callable[[str], None]) -> None:
    deadline = time.monotonic() + timeout
    last: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            last = {row["name"]: row["state"] for row in platform.page()}
        except Exception as error:
            last = {"page": f"unreadable ({error})"}
        if last and all(last.get(name) == "running" for name in platform.specs):
            return
        time.sleep(5)
    raise ChaosError(
        f"Not every pipeline is running after {timeout:.0f} s: {last}. A chaos run starts from a "
        "healthy platform: check `streamops pipeline list`, reset an open breaker with "
        "`streamops pipeline reset-breaker <name>`, and try again."
    )


def run_chaos(
    settings: Settings,
    options: ChaosOptions,
    *,
    on_status: Callable[[LiveStatus], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> ChaosResult:
    """One chaos run (see the module); KeyboardInterrupt ends the faults early, and the report
    then says ``interrupted``."""
    from streamops.chaos import truth
    from streamops.soak.probes import SoakError
    from streamops.soak.run import preflight

    note = on_note or (lambda _: None)
    status = on_status or (lambda _: None)
    try:
        platform_info, warnings = preflight(settings)
    except SoakError as error:
        raise ChaosError(str(error).replace("The soak", "The chaos run")) from None
    specs = platform_info.specs
    try:
        platform = _Platform(settings, specs)
    except Exception as error:
        raise ChaosError(
            f"Airflow's api-server does not answer at {settings.airflow_url} ({error}); the chaos "
            "run reads the supervisor's word from it. Start the platform with `make up`."
        ) from None
    rng = random.Random(options.seed)
    sampler = VerdictSampler(
        state_dir=str(settings.state_dir),
        pipelines=sorted(specs),
        read_page=platform.page,
        read_leases=platform.leases,
        read_hashes=platform.hashes,
    )
    records: list[FaultRecord] = []
    interrupted = False
    try:
        note("waiting for every pipeline to be running")
        wait_until_running(platform, READY_TIMEOUT_SECONDS, note)
        for name in fault_kinds.disarm_all(settings):
            note(f"warning: kill point {name} was left armed (an aborted run?); disarmed")
        sampler.start()
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline and not _every_query_reported(sampler, specs):
            time.sleep(1)
        topics = _topics(sampler)
        if not topics:
            raise ChaosError(
                "No query has reported the topics it reads yet; try again in a minute."
            )
        start_offsets = _end_offsets(settings, topics)
        started_at = time.time()
        note(f"faults for {options.duration_seconds:.0f} s (seed {options.seed}); topics {topics}")
        kinds = schedule(options.faults, rng)
        try:
            while time.time() - started_at < options.duration_seconds and (
                options.max_faults is None or len(records) < options.max_faults
            ):
                kind = next(kinds)
                record = _one_fault(
                    len(records) + 1,
                    kind,
                    settings,
                    specs,
                    options,
                    rng,
                    sampler,
                    topics,
                    lambda phase, line: status(
                        LiveStatus(time.time() - started_at, options.duration_seconds, phase, line)
                    ),
                )
                records.append(record)
                note(_describe(record, started_at))
                gap_end = time.time() + rng.uniform(*GAP_SECONDS)
                while time.time() < gap_end:
                    status(
                        LiveStatus(
                            time.time() - started_at,
                            options.duration_seconds,
                            "faults",
                            _status_line(sampler),
                        )
                    )
                    time.sleep(1)
        except KeyboardInterrupt:
            interrupted = True
            note("interrupted: no more faults; checking what happened so far")
        # The generators pause for the checks: the records of the run end here, and no window
        # moves while it is compared (they start again, on a new seed, afterwards).
        paused = _pause_generators(settings, note)
        try:
            end_offsets = _end_offsets(settings, topics)
            faults_ended_at = time.time()
            deadline = time.monotonic() + options.recovery_timeout_seconds
            status(
                LiveStatus(
                    faults_ended_at - started_at, options.duration_seconds, "catching up", ""
                )
            )
            caught_up_all = False
            while time.monotonic() < deadline and not caught_up_all:
                caught_up_all = _recovered(sampler, sorted(specs), faults_ended_at, end_offsets)
                time.sleep(1)
            caught_up_in = time.time() - faults_ended_at
            # The last batches' sinks: a query reports its offsets as it finishes the batch.
            time.sleep(CHECK_SETTLE_SECONDS)
            status(LiveStatus(time.time() - started_at, options.duration_seconds, "checking", ""))
            checks = [
                check.to_dict()
                for check in truth.check_outputs(settings, start_offsets, end_offsets)
            ]
        finally:
            _resume_generators(paused, note)
        orphans = _orphans(settings, specs)
        log_errors = _concurrent_log_errors(settings, started_at)
    finally:
        sampler.stop()
        platform.close()
    ended_at = time.time()
    samples = sampler.samples
    faults = [
        record.to_dict() | {"elapsed_seconds": round(record.injection.injected_at - started_at, 1)}
        for record in records
    ]
    report: dict[str, Any] = {
        "kind": "chaos",
        "version": 1,
        "started_at": _iso(started_at),
        "ended_at": _iso(ended_at),
        "duration_seconds": round(ended_at - started_at, 1),
        "interrupted": interrupted,
        "options": {
            "duration_seconds": options.duration_seconds,
            "seed": options.seed,
            "faults": list(options.faults),
            "outage_seconds": options.outage_seconds,
            "recovery_timeout_seconds": options.recovery_timeout_seconds,
            "gap_seconds": list(GAP_SECONDS),
        },
        "commit": _commit(),
        "host": socket.gethostname(),
        "machine": {"logical_cpus": os.cpu_count(), "memory_bytes": _memory_bytes()},
        "load": _load_series(samples, started_at),
        "caught_up_after_faults_seconds": round(caught_up_in, 1),
        "caught_up_after_faults": caught_up_all,
        "faults": faults,
        "recovery": recovery_summary(faults),
        "verdicts": {
            "samples": len(samples),
            "interval_seconds": sampler.interval,
            "source_errors": dict(sampler.errors),
            "by_state": state_counts(samples),
            "timeline": timeline(samples, started_at),
            "wrong": [w.to_dict(started_at) for w in wrong_verdicts(samples)],
        },
        "writers": {
            "max_sessions": max_sessions(samples),
            "two_writers": [t.to_dict(started_at) for t in two_writers(samples)],
            "orphans_at_end": orphans,
            "concurrent_log_errors": log_errors,
        },
        "checks": checks,
    }
    report["failures"] = failures_of(report)
    if not caught_up_all:
        report["failures"].insert(
            0,
            f"not every pipeline caught up to the run's last records within "
            f"{options.recovery_timeout_seconds:.0f} s of the last fault: the checks below may "
            "count records not yet processed as lost",
        )
    report["passed"] = not report["failures"] and report["recovery"]["passed"] and not interrupted
    return _write(settings, options, report, warnings)


def _one_fault(
    number: int,
    kind: str,
    settings: Settings,
    specs: dict[str, Any],
    options: ChaosOptions,
    rng: random.Random,
    sampler: VerdictSampler,
    topics: list[str],
    status: Callable[[str, str], None],
) -> FaultRecord:

    target = fault_kinds.pick_target(kind, list(specs), rng)
    status("faults", f"fault {number}: {kind} {target}")
    try:
        injection = fault_kinds.inject(
            kind,
            target,
            settings=settings,
            specs=specs,
            outage_seconds=options.outage_seconds,
            rng=rng,
        )
    except KeyboardInterrupt:
        raise
    except Exception as error:  # FaultError, or a service that would not come back
        now = time.time()
        pipelines = fault_kinds.affected(kind, target, list(specs))
        return FaultRecord(
            number,
            Injection(kind, target, pipelines, now, now, "not injected"),
            # Nothing to break (no such process now): left out of the recovery figures. Anything
            # else went wrong mid-fault: counted as a fault never recovered.
            error=f"not injected: {error}"
            if isinstance(error, FaultError | ProcessLookupError)
            else f"failed while injecting: {type(error).__name__}: {error}",
        )
    targets = _end_offsets(settings, topics)
    deadline = time.monotonic() + options.recovery_timeout_seconds
    while time.monotonic() < deadline:
        if _recovered(sampler, injection.pipelines, injection.ended_at, targets):
            return FaultRecord(number, injection, recovered_at=time.time())
        waited = time.time() - injection.ended_at
        status(
            "recovering",
            f"fault {number} {kind} {target}: {waited:.0f} s | {_status_line(sampler)}",
        )
        time.sleep(1)
    return FaultRecord(
        number,
        injection,
        error=(
            f"not recovered within {options.recovery_timeout_seconds:.0f} s: "
            f"{_status_line(sampler)}"
        ),
    )


def _describe(record: FaultRecord, started_at: float) -> str:
    injection = record.injection
    at = injection.injected_at - started_at
    if record.recovery_seconds is not None:
        outcome = f"recovered in {record.recovery_seconds:.0f} s"
    else:
        outcome = record.error or "not recovered"
    return (
        f"{at:6.0f} s  fault {record.id}: {injection.kind} {injection.target}: "
        f"{injection.detail}; {outcome}"
    )


def _load_series(samples: list[Any], started_at: float) -> list[list[float]]:
    series: list[list[float]] = []
    for sample in samples:
        elapsed = sample.at - started_at
        if not series or elapsed - series[-1][0] >= LOAD_EVERY_SECONDS:
            series.append([round(elapsed, 1), round(sample.load1, 2)])
    return series


def _memory_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def _write(
    settings: Settings, options: ChaosOptions, report: dict[str, Any], warnings: list[str]
) -> ChaosResult:
    from streamops.chaos import plots

    folder = options.folder(settings)
    folder.mkdir(parents=True, exist_ok=True)
    stem = "chaos-" + report["started_at"].replace(":", "").replace("-", "")
    json_path = None
    if options.write_json:
        json_path = folder / f"{stem}.json"
        json_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    charts: list[Path] = []
    if plots.available():
        charts = plots.draw_all(report, folder, stem)
    else:
        warnings = [*warnings, "matplotlib is not installed: no charts"]
    return ChaosResult(report, json_path, charts, warnings)
