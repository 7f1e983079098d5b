"""The health rule of a supervised streaming job, in one place.

The supervision hook (Airflow), ``streamops status`` and the operations page all judge a job the
same way, so the rule is a pure function here and everyone calls it. A busy query is not a stalled
one: the job's driver reports each query's own status (trigger active, when the running batch
started, how many rows it planned) every few seconds, beside the listener's progress heartbeat
(see ``spark_jobs.common.runner``), and the rule reads both:

- the process is gone → *stopped* with exit code 0 (the job's own SIGTERM path), else *failed*
  (exit ``EXIT_REFUSED``: the job refused to start, which the supervisor never retries);
- a query reports an exception → *failed*; but a query the driver restarts after a transient
  start failure (``spark_jobs.common.restarts``) is *starting* until its restart is due, and
  *stalled* once the restart is overdue by ``heartbeat_max_age_seconds``;
- the driver's status report is older than ``heartbeat_max_age_seconds`` → *stalled* (the driver
  itself hangs);
- a batch is running: *busy* (healthy) until it runs longer than ``max_batch_seconds`` plus time
  for the rows it planned (``replay_rows_per_second``) plus, for a run's first batch, the start-up
  grace: a replay after a restart is never mistaken for a stall; past that → *stalled*;
- no batch is running and none started (no progress or idle event) within
  ``heartbeat_max_age_seconds`` → *stalled*;
- nothing from this run yet: *starting* during the start-up grace, *stalled* after it;
- a *stalled* verdict while the machine is overloaded (load average per core at or above
  ``overload_load_per_core``) becomes *overloaded*: the supervisor does not restart into the
  overload, it reports it and waits. Every bound is stretched by ``overload_stretch`` then, and a
  query past even that is *stalled*, so a real hang is still caught.

A job without the driver's status fields (an older job) is judged by the progress heartbeat alone.

**A job on another host** (the launcher ran it elsewhere: in compose the scheduler launches and the
triggerer watches, each in its container) cannot be looked at as a process. Its driver writes a
job heartbeat of its own instead, every second from a thread that no batch holds up
(``streamops.supervision.job_beat``), and :func:`judge_job_beat` says from it whether the job
lives: a heartbeat under the handle's fencing token no older than
``job_heartbeat_max_age_seconds`` (``health.job_heartbeat_timeout_seconds``, at least three
polls) is a live job; the exit code the driver recorded on its way out (or the ``sh`` wrapper's
exit file, where the state folder is shared) is a job that ended; a heartbeat older than the bound,
or none at all once the start-up grace is over, is a job that "stopped without a word". The queries
are then judged by the rule above, as for a local job.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from streamops.errors import EXIT_DISK_FULL, EXIT_REFUSED, REFUSAL_MARK


class HealthStatus(StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    OVERLOADED = "overloaded"
    STALLED = "stalled"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def needs_action(self) -> bool:
        """The supervisor must act: restart (stalled, failed) or wind down (stopped).

        *overloaded* needs none: restarting a slow job on an overloaded machine only adds load.
        """
        return self in (HealthStatus.STALLED, HealthStatus.FAILED, HealthStatus.STOPPED)


@dataclass(frozen=True)
class JobHealth:
    status: HealthStatus
    detail: str
    # The verdict rests on silence (a job on another host whose heartbeat went stale), which a
    # Redis outage or a step of the clock causes as well: the trigger holds it as a stall then.
    silent: bool = False


@dataclass(frozen=True)
class StallBounds:
    """How long a query may go without progress before it counts as stalled (from the spec)."""

    heartbeat_max_age_seconds: float
    startup_grace_seconds: float
    # A running batch may take this long, plus its planned rows at replay_rows_per_second.
    max_batch_seconds: float = 240.0
    replay_rows_per_second: float = 500.0
    # 1-minute load average per core at which the machine counts as overloaded.
    overload_load_per_core: float = 2.0
    # While overloaded every bound is this many times longer before a query counts as stalled.
    overload_stretch: float = 4.0
    # A job on another host lives while its job heartbeat is no older than this.
    job_heartbeat_max_age_seconds: float = 30.0

    def batch_allowance(self, planned_rows: float | None, *, first_batch: bool) -> float:
        """Seconds one batch may run: the floor, its rows at the replay rate, the start-up grace
        for a run's first batch (a replay of the backlog after a restart)."""
        rows = max(0.0, planned_rows or 0.0)
        grace = self.startup_grace_seconds if first_batch else 0.0
        return self.max_batch_seconds + rows / self.replay_rows_per_second + grace


# Field names of a query's Redis hash that the rule reads. The listener writes heartbeat_at,
# state and last_exception; the job's driver writes the status_* and batch_* fields.
HEARTBEAT_AT = "heartbeat_at"
STATUS_AT = "status_at"
TRIGGER_ACTIVE = "trigger_active"
BATCH_STARTED_AT = "batch_started_at"
BATCH_PLANNED_ROWS = "batch_planned_rows"
FIRST_BATCH = "first_batch"
LAST_TRIGGER_AT = "last_trigger_at"
STATUS_MESSAGE = "status_message"
# Written by the listener when the driver restarts a query after a transient start failure
# (spark_jobs.common.restarts): state "restarting", when, which attempt, why.
RESTARTING = "restarting"
RESTART_AT = "restart_at"
RESTART_ATTEMPT = "restart_attempt"
RESTART_REASON = "restart_reason"


@dataclass(frozen=True)
class _Verdict:
    kind: str  # "ok", "busy", "waiting", "restarting", "failed", "stalled"
    detail: str
    # For "stalled": how far past its bound, as a ratio (age / allowed), to apply the stretch.
    ratio: float = 0.0


def classify_health(
    *,
    alive: bool,
    exit_code: int | None,
    query_states: Mapping[str, Mapping[str, str]],
    now: float,
    process_start_epoch: float,
    bounds: StallBounds,
    load_per_core: float | None = None,
) -> JobHealth:
    """The health rule as a pure function (``query_states``: query → its Redis hash;
    ``load_per_core``: the machine's 1-minute load average per core, None when unknown)."""
    if not alive:
        if exit_code == 0:
            return JobHealth(HealthStatus.STOPPED, "the job stopped on request (exit 0)")
        if exit_code == EXIT_REFUSED:
            return JobHealth(
                HealthStatus.FAILED,
                f"the job refused to start (exit {exit_code}); its log says why and what to do",
            )
        if exit_code == EXIT_DISK_FULL:
            return JobHealth(
                HealthStatus.FAILED,
                f"the job stopped on a full disk (exit {exit_code}); its log names the "
                "filesystem and its free space",
            )
        how = "was killed" if exit_code is None else f"exited with {exit_code}"
        return JobHealth(HealthStatus.FAILED, f"the job process {how}")
    verdicts = {
        query: _judge_query(query, fields, now, process_start_epoch, bounds)
        for query, fields in query_states.items()
    }
    for verdict in verdicts.values():
        if verdict.kind == "failed":
            return JobHealth(HealthStatus.FAILED, verdict.detail)
    # A waiting verdict's detail is its query's name (and what of its hash was not trusted).
    waiting = [v.detail for v in verdicts.values() if v.kind == "waiting"]
    stalled = [v for v in verdicts.values() if v.kind == "stalled"]
    restarting = [v.detail for v in verdicts.values() if v.kind == "restarting"]
    if waiting:
        running_for = now - process_start_epoch
        ratio = running_for / bounds.startup_grace_seconds if bounds.startup_grace_seconds else 1e9
        if running_for <= bounds.startup_grace_seconds:
            if not stalled:
                return JobHealth(
                    HealthStatus.STARTING,
                    "; ".join([f"waiting for {', '.join(waiting)}", *restarting]),
                )
        else:
            stalled.append(
                _Verdict(
                    "stalled",
                    f"{', '.join(waiting)}: no heartbeat {running_for:.0f} s after the start "
                    f"(allowed {bounds.startup_grace_seconds:g} s)",
                    ratio,
                )
            )
    if stalled:
        worst = max(stalled, key=lambda v: v.ratio)
        overloaded = load_per_core is not None and load_per_core >= bounds.overload_load_per_core
        if overloaded and worst.ratio <= bounds.overload_stretch:
            return JobHealth(
                HealthStatus.OVERLOADED,
                f"machine overloaded (load {load_per_core:.1f} per core, limit "
                f"{bounds.overload_load_per_core:g}): {worst.detail}; not restarting into the "
                f"overload (stalled past {bounds.overload_stretch:g}× the bound)",
            )
        return JobHealth(HealthStatus.STALLED, worst.detail)
    if restarting:
        return JobHealth(HealthStatus.STARTING, "; ".join(restarting))
    details = [v.detail for v in verdicts.values()]
    busy = any(v.kind == "busy" for v in verdicts.values())
    return JobHealth(
        HealthStatus.HEALTHY, ("busy: " if busy else "heartbeat ") + ", ".join(details)
    )


# A time in a query's hash this far ahead of the supervisor's clock is not a time the driver
# wrote (clocks of one host, or of pods, do not drift minutes apart): trusting it would keep a
# dead query "fresh" for as long.
FUTURE_SLACK_SECONDS = 300.0
_TIME_FIELDS = (HEARTBEAT_AT, STATUS_AT, BATCH_STARTED_AT, LAST_TRIGGER_AT, RESTART_AT)
_FLAG_FIELDS = (TRIGGER_ACTIVE, FIRST_BATCH)


def corrupted_fields(fields: Mapping[str, str], now: float) -> dict[str, str]:
    """The fields of a query's hash that the driver cannot have written: not a number, not a
    finite time, a time far in the future, a negative row count, a flag other than 0/1."""
    bad: dict[str, str] = {}
    for name in (*_TIME_FIELDS, BATCH_PLANNED_ROWS):
        value = fields.get(name)
        if value is None or value == "":
            continue
        number = float_field(value)
        future = name != BATCH_PLANNED_ROWS and number is not None
        if (
            number is None
            or not math.isfinite(number)
            or number < 0
            or (future and number > now + FUTURE_SLACK_SECONDS)
        ):
            bad[name] = value
    for name in _FLAG_FIELDS:
        value = fields.get(name)
        if value not in (None, "", "0", "1"):
            bad[name] = value
    return bad


def query_verdict(
    query: str,
    fields: Mapping[str, str],
    now: float,
    bounds: StallBounds,
    *,
    started_at: float = 0.0,
) -> tuple[str, str]:
    """One query's verdict by the rule the supervisor applies, as ``(kind, detail)``; ``kind`` is
    ``ok``, ``busy``, ``waiting``, ``restarting``, ``failed`` or ``stalled``. For readers that see
    the query's Redis hash but not its process (the dashboard): ``started_at`` 0 counts every
    report as this run's, and no overload stretch applies (the supervisor's verdict may still be
    ``busy`` on a loaded machine where this says ``stalled``)."""
    verdict = _judge_query(query, fields, now, started_at, bounds)
    return verdict.kind, verdict.detail


def _judge_query(
    query: str, fields: Mapping[str, str], now: float, start: float, bounds: StallBounds
) -> _Verdict:
    """One query's verdict; corrupted fields are left out and named in the detail."""
    bad = corrupted_fields(fields, now)
    if not bad:
        return _judge_fields(query, fields, now, start, bounds)
    trusted = {name: value for name, value in fields.items() if name not in bad}
    verdict = _judge_fields(query, trusted, now, start, bounds)
    named = ", ".join(f"{name}={value[:40]!r}" for name, value in sorted(bad.items()))
    return replace(verdict, detail=f"{verdict.detail} (corrupted heartbeat, not trusted: {named})")


def _judge_fields(
    query: str, fields: Mapping[str, str], now: float, start: float, bounds: StallBounds
) -> _Verdict:
    heartbeat = float_field(fields.get(HEARTBEAT_AT))
    status_at = float_field(fields.get(STATUS_AT))
    heartbeat_this_run = heartbeat is not None and heartbeat >= start
    status_this_run = status_at is not None and status_at >= start
    if not heartbeat_this_run and not status_this_run:
        # Nothing from this run yet (the hash may hold the previous run's last words).
        return _Verdict("waiting", query)
    if heartbeat_this_run and fields.get("state") == RESTARTING:
        return _restarting(query, fields, now, bounds)
    if heartbeat_this_run and (fields.get("state") == "failed" or fields.get("last_exception")):
        exception = (fields.get("last_exception") or "").strip().splitlines()
        first_line = exception[0] if exception else "no message"
        return _Verdict("failed", f"{query} failed: {first_line}")
    max_age = bounds.heartbeat_max_age_seconds
    if not status_this_run:
        # No status from the driver (an older job): the progress heartbeat alone.
        assert heartbeat is not None
        return _age_verdict(query, now - heartbeat, max_age, "no progress")
    assert status_at is not None
    status_age = now - status_at
    if status_age > max_age:
        return _stalled(query, "the driver has not reported its status", status_age, max_age)
    if fields.get(TRIGGER_ACTIVE) == "1":
        began = float_field(fields.get(BATCH_STARTED_AT)) or status_at
        running = max(0.0, now - began)
        rows = float_field(fields.get(BATCH_PLANNED_ROWS))
        allowed = bounds.batch_allowance(rows, first_batch=fields.get(FIRST_BATCH) == "1")
        if running > allowed:
            return _stalled(query, "one batch running", running, allowed)
        planned = f", {rows:.0f} rows" if rows else ""
        return _Verdict("busy", f"{query} batch running {running:.0f} s{planned}")
    last_trigger = float_field(fields.get(LAST_TRIGGER_AT))
    if not heartbeat_this_run and last_trigger is None and fields.get(FIRST_BATCH) == "1":
        # Started but not triggered yet ("Initializing sources"): the start-up grace applies.
        return _Verdict("waiting", query)
    last_activity = max(
        heartbeat if heartbeat_this_run and heartbeat is not None else start,
        last_trigger or start,
    )
    return _age_verdict(query, now - last_activity, max_age, "no batch started")


def _restarting(query: str, fields: Mapping[str, str], now: float, bounds: StallBounds) -> _Verdict:
    """The driver restarts the query after a transient start failure, at ``restart_at``; a
    restart that is overdue by more than the heartbeat bound means the driver hangs."""
    due = float_field(fields.get(RESTART_AT)) or now
    overdue = now - due
    if overdue > bounds.heartbeat_max_age_seconds:
        return _stalled(query, "restart overdue", overdue, bounds.heartbeat_max_age_seconds)
    attempt = fields.get(RESTART_ATTEMPT) or "?"
    reason = fields.get(RESTART_REASON) or "a transient start failure"
    when = f"in {due - now:.0f} s" if due > now else "now"
    return _Verdict("restarting", f"{query} restarting {when} (attempt {attempt}): {reason}")


def _age_verdict(query: str, age: float, allowed: float, what: str) -> _Verdict:
    if age > allowed:
        return _stalled(query, what, age, allowed)
    # A clock stepped back puts the last report seconds "in the future": that is now, not -2 s.
    return _Verdict("ok", f"{query} {max(0.0, age):.0f} s ago")


def _stalled(query: str, what: str, age: float, allowed: float) -> _Verdict:
    return _Verdict(
        "stalled", f"{query}: {what} for {age:.0f} s (allowed {allowed:g} s)", age / allowed
    )


def float_field(value: str | None) -> float | None:
    """A number field of a query's Redis hash; None when empty or not a number."""
    try:
        return None if value is None or value == "" else float(value)
    except ValueError:
        return None


def refusal_in_log(text: str) -> str | None:
    """The reason a job gave for refusing to start (its last ``REFUSAL_MARK`` line of ``text``,
    the job's log), None when it gave none."""
    at = text.rfind(REFUSAL_MARK)
    if at < 0:
        return None
    line = text[at + len(REFUSAL_MARK) :].split("\n", 1)[0].strip()
    return line or None


# --- a job on another host: its driver's job heartbeat ----------------------------------------

# Fields of the job heartbeat hash (``streamops.contract.redis_keys.job_key``), all written by the
# driver (``streamops.supervision.job_beat``).
JOB_TOKEN = "token"  # the fencing token the job runs under
JOB_HOST = "host"  # where the driver runs, and its pid and session
JOB_PID = "pid"
JOB_SESSION = "session"
JOB_STARTED_AT = "started_at"  # epoch seconds: when the driver started (one launch from another)
JOB_BEAT_AT = "beat_at"  # epoch seconds of the last beat
JOB_LOAD_PER_CORE = "load_per_core"  # the driver's machine: the overload signal
JOB_STOPPING = "stopping"  # why the job is stopping ("stop requested", "fenced: …"); else empty
JOB_EXIT_CODE = "exit_code"  # the code the driver exits with, written on its way out
JOB_EXITED_AT = "exited_at"
# A driver's start may precede the launch's recorded start by the time the wrapper took to be
# looked at; client mode runs both on one host, one clock.
LAUNCH_SLACK_SECONDS = 2.0


@dataclass(frozen=True)
class JobReport:
    """Whether a job on another host lives, from its job heartbeat: ``exit_code`` when it ended
    and said how (None: it went without a word, or it lives); ``load_per_core`` of its machine."""

    alive: bool
    exit_code: int | None
    detail: str
    load_per_core: float | None = None


def judge_job_beat(
    fields: Mapping[str, str],
    *,
    token: int,
    now: float,
    launched_at: float,
    max_age: float,
    startup_grace: float,
    wrapper_exit_code: int | None = None,
) -> JobReport:
    """The pure judgement of a job that runs elsewhere (``fields``: its job heartbeat hash).

    ``token`` and ``launched_at`` are the handle's (the lease's fencing token, the launch's start
    on the launcher's clock); ``wrapper_exit_code`` what the ``sh`` wrapper recorded, when its
    exit file can be read from here (a shared state folder): it is spark-submit's own code."""
    if wrapper_exit_code is not None:
        return JobReport(False, wrapper_exit_code, f"exited with {wrapper_exit_code}")
    reporting = int_field(fields.get(JOB_TOKEN))
    if reporting is not None and reporting > token:
        return JobReport(
            False,
            None,
            f"was fenced: a job under the newer fencing token {reporting} reports now (this "
            f"one ran under {token})",
        )
    started = float_field(fields.get(JOB_STARTED_AT))
    this_launch = (
        reporting == token and started is not None and started >= launched_at - LAUNCH_SLACK_SECONDS
    )
    if this_launch:
        where = f"{fields.get(JOB_HOST) or '?'} (pid {fields.get(JOB_PID) or '?'})"
        code = int_field(fields.get(JOB_EXIT_CODE))
        if code is not None:
            return JobReport(False, code, f"on {where} exited with {code}")
        beat = float_field(fields.get(JOB_BEAT_AT))
        if beat is not None and math.isfinite(beat) and beat <= now + FUTURE_SLACK_SECONDS:
            age = now - beat
            if age > max_age:
                return JobReport(
                    False,
                    None,
                    f"stopped without a word (killed?): its heartbeat from {where} is "
                    f"{age:.0f} s old (allowed {max_age:g} s)",
                )
            stopping = fields.get(JOB_STOPPING)
            state = f", stopping ({stopping})" if stopping else ""
            return JobReport(
                True,
                None,
                f"on {where}, job heartbeat {max(0.0, age):.0f} s ago{state}",
                float_field(fields.get(JOB_LOAD_PER_CORE)),
            )
    waited = now - launched_at
    if waited <= startup_grace:
        return JobReport(True, None, f"no job heartbeat yet, {max(0.0, waited):.0f} s after launch")
    return JobReport(
        False,
        None,
        f"stopped without a word (killed?): no job heartbeat {waited:.0f} s after its launch "
        f"(allowed {startup_grace:g} s)",
    )


def classify_remote_health(
    report: JobReport,
    *,
    query_states: Mapping[str, Mapping[str, str]],
    now: float,
    process_start_epoch: float,
    bounds: StallBounds,
) -> JobHealth:
    """:func:`classify_health` of a job on another host, judged alive or not by its heartbeat
    (:func:`judge_job_beat`); the overload signal is its own machine's, as the driver reported."""
    if not report.alive and report.exit_code is None:
        return JobHealth(HealthStatus.FAILED, f"the job {report.detail}", silent=True)
    health = classify_health(
        alive=report.alive,
        exit_code=report.exit_code,
        query_states=query_states if report.alive else {},
        now=now,
        process_start_epoch=process_start_epoch,
        bounds=bounds,
        load_per_core=report.load_per_core,
    )
    return replace(health, detail=f"{health.detail} ({report.detail})") if report.alive else health


def stop_request(token: int, launch_pid: int) -> str:
    """The value of a stop request for the job launched as ``launch_pid`` (the ``sh`` wrapper,
    or the process ``streamops run`` started; 0: whichever launch) under ``token``."""
    return f"{token} {max(0, launch_pid)}"


def driver_must_stop(
    token: int,
    lineage: Collection[int],
    *,
    reporting_token: int | None,
    mirror_token: int | None,
    request: str | None,
) -> str | None:
    """Why a driver must stop, seen from its own beat; None while it may run on.

    ``lineage``: the driver's pid and its ancestors' (the wrapper and spark-submit among them);
    ``reporting_token``: who wrote the job heartbeat before this beat; ``mirror_token``: the Redis
    mirror of the lease's token; ``request``: the stop request (:func:`stop_request`), if any.
    A newer token in either place means the checkpoint's lease moved on: the job is fenced. A stop
    request counts for this job's token and launch only, so a request left over from an earlier
    launch under the same lease never stops the next one."""
    newer = max((t for t in (reporting_token, mirror_token) if t is not None), default=None)
    if newer is not None and newer > token:
        return f"fenced: the checkpoint's lease moved on to fencing token {newer}"
    if not request:
        return None
    parts = request.split()
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        return None
    wanted_token, launch_pid = (int(part) for part in parts)
    if wanted_token == token and (launch_pid == 0 or launch_pid in lineage):
        return "stop requested"
    return None


def int_field(value: str | None) -> int | None:
    """A whole-number field of a Redis hash; None when empty or not one."""
    number = float_field(value)
    return int(number) if number is not None and number.is_integer() else None
