"""``SparkJobHealthTrigger``: watches a running job from the triggerer, so no worker slot waits.

It polls the job's process (or, for a job launched on another host, the driver's job heartbeat)
and its queries' heartbeats in Redis every ``poll_interval_seconds``, renews the checkpoint's
lease while the job is healthy (or busy, or slowed by an overloaded machine: then it publishes
one platform alert and waits instead of restarting into the overload), and fires once — with the
job's handle — when the job failed, stalled, stopped, or the lease was lost. The operator then
decides (restart policy). Everything it needs travels in :meth:`serialize`, plain JSON values
only, so any triggerer can resume it after a restart.

The hook's calls block (psutil, Redis, MariaDB), so they run in a thread: the triggerer's event
loop serves many triggers and must never wait on one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from airflow.triggers.base import BaseTrigger, TriggerEvent

from streamops.supervision.job_health import HealthStatus, JobHealth
from streamops.supervision.lease import LeaseLostError

LEASE_LOST = "lease_lost"
# After Redis was unreachable, how long a "stalled" verdict is held: the driver reports its status
# every ~5 s and the listener an idle event every ~10 s, so fresh fields land well inside this.
STALE_AFTER_OUTAGE_SECONDS = 30.0
# A step of the system clock larger than this between two polls (a time synchronisation, a
# resumed virtual machine) holds "stalled" verdicts as an outage does: the heartbeats written
# before the step read as that much older, though the job never paused.
CLOCK_STEP_SECONDS = 2.0
# A poll's verdict is logged when the status changes, and otherwise once in this many seconds:
# one line every poll grew each supervision task's trigger log by megabytes a day, and Airflow
# writes that file without O_APPEND, so it cannot be rotated while the trigger runs.
HEALTH_LOG_EVERY_SECONDS = 300.0
DEPENDENCIES_UP = "dependencies_up"
MIN_POLL_SECONDS = 0.5


def clock_offset() -> float:
    """The wall clock minus the monotonic clock: constant until the wall clock is stepped."""
    return time.time() - time.monotonic()


async def sleep_until_exit(pids: list[int], timeout_seconds: float) -> None:
    """Sleep ``timeout_seconds``, or less: until one of ``pids`` exits. A killed JVM or driver
    is then looked at within moments instead of at the next poll (up to a poll interval later,
    all of it added to the recovery). Linux pidfds, read by the event loop: no thread, no
    polling. A pid already gone (or reused meanwhile: then its exit is merely seen late, at the
    next poll) ends the sleep at once."""
    if not pids or not hasattr(os, "pidfd_open"):
        await asyncio.sleep(timeout_seconds)
        return
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not exited.done():
            exited.set_result(None)

    fds: list[int] = []
    try:
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except OSError:  # gone already
                return
            fds.append(fd)
            loop.add_reader(fd, wake)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(exited, timeout_seconds)
    finally:
        for fd in fds:
            loop.remove_reader(fd)
            os.close(fd)


# The triggerer gives on_kill ~30 s ([triggerer] on_kill_timeout): SIGKILL comes before that.
ON_KILL_STOP_TIMEOUT_SECONDS = 20.0


class _FieldsTrigger(BaseTrigger):
    """A trigger serialized as the attributes named in ``FIELDS``: the triggerer builds it again
    from them, so each must be a constructor argument of the same name."""

    FIELDS: ClassVar[tuple[str, ...]] = ()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {name: getattr(self, name) for name in self.FIELDS},
        )


class SparkJobHealthTrigger(_FieldsTrigger):
    FIELDS = ("pipeline", "handle", "poll_interval_seconds", "specs_path")

    def __init__(
        self,
        *,
        pipeline: str,
        handle: dict[str, Any],
        poll_interval_seconds: float = 15.0,
        specs_path: str | None = None,
    ) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.handle = handle
        self.poll_interval_seconds = poll_interval_seconds
        self.specs_path = specs_path

    def _hook(self) -> Any:
        return _hook(self.pipeline, self.specs_path)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from streamops_airflow.hooks import JobHandle

        hook = await asyncio.to_thread(self._hook)
        handle = JobHandle.from_dict(self.handle)
        overloaded = False
        unreadable = False
        trust_stalls_after = 0.0
        offset = clock_offset()
        logged: tuple[HealthStatus | None, float] = (None, 0.0)
        # Seen healthy since this trigger began: a failure after that is no crash loop (the
        # operator restarts it without the backoff). Not serialized: a triggerer restart forgets
        # it, and the failure then backs off as before.
        ran_healthy = False
        watched: list[int] = []
        while True:
            began = time.monotonic()
            previous, offset = offset, clock_offset()
            step = offset - previous
            if abs(step) > CLOCK_STEP_SECONDS:
                self.log.warning(
                    "%s: the system clock stepped %+.1f s since the last check; stall verdicts "
                    "are held for %.0f s while the job's reports are refreshed",
                    self.pipeline,
                    step,
                    STALE_AFTER_OUTAGE_SECONDS,
                )
                trust_stalls_after = time.monotonic() + STALE_AFTER_OUTAGE_SECONDS
            try:
                health = await asyncio.to_thread(hook.read_health, handle)
            except Exception as exc:  # Redis away for a poll is not a job failure
                self.log.warning("%s: health check failed, trying again: %s", self.pipeline, exc)
                unreadable = True
            else:
                if unreadable:
                    # Redis answers again, but it holds what the job could not refresh while it
                    # was away: a live job reads as stalled until its next reports land.
                    unreadable = False
                    trust_stalls_after = time.monotonic() + STALE_AFTER_OUTAGE_SECONDS
                # A job on another host that went silent (its heartbeat stale) is held the same
                # way: an outage of Redis or a step of the clock makes it look so too.
                doubtful = health.status is HealthStatus.STALLED or health.silent
                if doubtful and time.monotonic() < trust_stalls_after:
                    self.log.info(
                        "%s: stalled verdict held (Redis was unreachable or the clock stepped "
                        "just now; the job's reports are being refreshed): %s",
                        self.pipeline,
                        health.detail,
                    )
                    health = JobHealth(HealthStatus.STARTING, f"held: {health.detail}")
                if should_log_health(health.status, logged, time.monotonic()):
                    self.log.info("%s: %s (%s)", self.pipeline, health.status, health.detail)
                    logged = (health.status, time.monotonic())
                is_overloaded = health.status is HealthStatus.OVERLOADED
                if is_overloaded and not overloaded:
                    # Once per episode: the job is left running, an operator hears of it.
                    await asyncio.to_thread(hook.publish_overload_alert, health)
                overloaded = is_overloaded
                ran_healthy = ran_healthy or health.status is HealthStatus.HEALTHY
                if health.status.needs_action:
                    yield TriggerEvent(
                        {
                            "status": str(health.status),
                            "detail": health.detail,
                            "handle": self.handle,
                            "ran_healthy": ran_healthy,
                        }
                    )
                    return
                try:
                    await asyncio.to_thread(hook.renew, handle)
                except LeaseLostError as lost:
                    yield TriggerEvent(
                        {"status": LEASE_LOST, "detail": str(lost), "handle": self.handle}
                    )
                    return
                except Exception as exc:  # MariaDB away: the lease's TTL covers a few polls
                    self.log.warning("%s: could not renew the lease: %s", self.pipeline, exc)
                watched = await asyncio.to_thread(hook.exit_watch_pids, handle)
            await sleep_until_exit(watched, self.poll_interval_seconds)
            # A process that exits leaves the others of the job a moment to follow: at most a
            # look every MIN_POLL_SECONDS, however often one of them ends.
            least = min(MIN_POLL_SECONDS, self.poll_interval_seconds)
            await asyncio.sleep(max(0.0, least - (time.monotonic() - began)))

    async def on_kill(self) -> None:
        """The user stopped the run or marked the task failed: stop the job, free the lease.

        Stop and release run as one call in one thread. The triggerer re-sends the cancellation
        at every sync (about once a second) until the trigger is gone, which cancels this
        coroutine again long before ``on_kill_timeout``; a thread is not cancelled with it, so
        the lease is released after the stop even then.
        """
        await asyncio.to_thread(self._stop_and_release)

    def _stop_and_release(self) -> None:
        from streamops_airflow.hooks import JobHandle

        hook = self._hook()
        handle = JobHandle.from_dict(self.handle)
        try:
            hook.stop(handle, min(hook.spec.stop_timeout_seconds, ON_KILL_STOP_TIMEOUT_SECONDS))
        finally:
            hook.release(handle)
            self.log.info("%s: stopped on request, lease released", self.pipeline)


# A wait this long publishes one platform alert (WARN): someone should look at the dependency.
OUTAGE_ALERT_SECONDS = 600.0


class DependencyWaitTrigger(_FieldsTrigger):
    """Waits, without a worker slot, until Kafka, MariaDB, Redis and the disk all answer again.

    Probes every dependency (relaunching into any outage is pointless): after
    ``initial_delay_seconds`` (the backoff of a failure only its text put down to an outage),
    then every ``initial_poll_seconds``, doubling up to ``max_poll_seconds``. Renews the lease
    of ``handle`` meanwhile when MariaDB answers, so the checkpoint stays this supervisor's; a
    wait past :data:`OUTAGE_ALERT_SECONDS` publishes one platform alert. Fires once, with how long
    it waited and what it waited for; stopped (the run failed or marked), it releases the lease.
    """

    FIELDS = (
        "pipeline",
        "handle",
        "specs_path",
        "dependencies",
        "reason",
        "initial_delay_seconds",
        "initial_poll_seconds",
        "max_poll_seconds",
    )

    def __init__(
        self,
        *,
        pipeline: str,
        handle: dict[str, Any] | None,
        specs_path: str | None = None,
        dependencies: list[str] | None = None,
        reason: str = "",
        initial_delay_seconds: float = 0.0,
        initial_poll_seconds: float = 5.0,
        max_poll_seconds: float = 60.0,
    ) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.handle = handle
        self.specs_path = specs_path
        self.dependencies = list(dependencies or [])
        self.reason = reason
        self.initial_delay_seconds = initial_delay_seconds
        self.initial_poll_seconds = initial_poll_seconds
        self.max_poll_seconds = max_poll_seconds

    def _hook(self) -> Any:
        return _hook(self.pipeline, self.specs_path)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from streamops.supervision.dependencies import probe
        from streamops_airflow.hooks import JobHandle

        hook = await asyncio.to_thread(self._hook)
        handle = JobHandle.from_dict(self.handle) if self.handle else None
        began = time.monotonic()
        alerted = False
        delay = self.initial_poll_seconds
        await asyncio.sleep(self.initial_delay_seconds)
        while True:
            outages = await asyncio.to_thread(probe, hook.probe_settings)
            waited = time.monotonic() - began
            if not outages:
                yield TriggerEvent(
                    {
                        "status": DEPENDENCIES_UP,
                        "waited_seconds": waited,
                        "dependencies": self.dependencies,
                        "reason": self.reason,
                    }
                )
                return
            down = "; ".join(map(str, outages))
            self.log.info("%s: waiting for %s; next look in %.0f s", self.pipeline, down, delay)
            if waited >= OUTAGE_ALERT_SECONDS and not alerted:
                alerted = True
                await asyncio.to_thread(hook.publish_outage_alert, down, waited)
            if handle is not None and not any(o.dependency == "mariadb" for o in outages):
                try:
                    await asyncio.to_thread(hook.renew, handle)
                except Exception as exc:  # the relaunch takes the lease again if it must
                    self.log.warning("%s: could not renew the lease: %s", self.pipeline, exc)
            await asyncio.sleep(delay)
            delay = min(self.max_poll_seconds, delay * 2)

    async def on_kill(self) -> None:
        """The run was stopped while it waited: no job runs; free the lease (best effort)."""
        if self.handle:
            await asyncio.to_thread(self._release)

    def _release(self) -> None:
        from streamops_airflow.hooks import JobHandle

        if not self.handle:
            return
        try:
            self._hook().release(JobHandle.from_dict(self.handle))
            self.log.info("%s: stopped while waiting; lease released", self.pipeline)
        except Exception as exc:  # MariaDB may be the dependency that is down
            self.log.warning("%s: could not release the lease: %s", self.pipeline, exc)


def _hook(pipeline: str, specs_path: str | None) -> Any:
    from pathlib import Path

    from streamops.supervision.spec import load_spec
    from streamops_airflow.hooks import SparkJobHook

    return SparkJobHook(load_spec(pipeline, Path(specs_path) if specs_path else None))


def should_log_health(
    status: HealthStatus, logged: tuple[HealthStatus | None, float], now: float
) -> bool:
    """Whether a poll's verdict is worth a line: its status differs from the last one logged
    (``logged``: that status and when, on the monotonic clock), or that line is old."""
    last_status, last_at = logged
    return status is not last_status or now - last_at >= HEALTH_LOG_EVERY_SECONDS
