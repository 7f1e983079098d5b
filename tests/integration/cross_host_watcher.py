"""The watcher of tests/integration/test_cross_host.py: a supervisor on "another host".

Started by the test inside ``unshare --uts --pid --fork --mount-proc`` with a hostname of its own,
so it can see neither the launcher's host name nor its processes (the network is shared: the
stack's services answer on loopback). It does what the triggerer does to a job another container
launched: the hook's health polls, the health trigger itself for a few polls, the operations
page's liveness, and at the end the stop and the lease's release (the trigger's ``on_kill``).

It reports each step as one JSON line on stdout, and waits for a line on stdin before it stops the
job, so the test looks at the job's progress between polls.

    python -m tests.integration.cross_host_watcher HANDLE_JSON SPECS_FILE POLLS
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import psutil
from streamops_airflow.hooks import HealthStatus, JobHandle, SparkJobHook
from streamops_airflow.triggers import SparkJobHealthTrigger
from streamops_airflow.ui.pipeline_sources import job_process

from streamops.config import load_settings
from streamops.db import connect
from streamops.supervision import lease as leases
from streamops.supervision.spec import load_spec

# A healthy job is looked at this many times at most before the watcher gives up on it.
MAX_POLLS = 120


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def main(handle_json: str, specs_file: str, healthy_polls: int) -> int:
    handle = JobHandle.from_dict(json.loads(handle_json))
    spec = load_spec(handle.pipeline, Path(specs_file))
    settings = load_settings()
    hook = SparkJobHook(spec, settings)
    say(
        "identity",
        host=socket.gethostname(),
        launcher=handle.host,
        sees_launcher_pid=psutil.pid_exists(handle.pid),
        own_pid=psutil.Process().pid,
    )
    healthy = 0
    for _ in range(MAX_POLLS):
        health = hook.read_health(handle)
        say("poll", status=str(health.status), detail=health.detail, alive=hook.is_alive(handle))
        if health.status.needs_action:
            return 1
        healthy += health.status is HealthStatus.HEALTHY
        if healthy >= healthy_polls:
            break
        time.sleep(spec.health.poll_interval_seconds)
    else:
        return 1
    # The trigger as the triggerer runs it: it must judge the job healthy and renew the lease,
    # firing no event, for three polls.
    trigger = SparkJobHealthTrigger(
        pipeline=spec.name,
        handle=handle.to_dict(),
        poll_interval_seconds=spec.health.poll_interval_seconds,
        specs_path=specs_file,
    )
    say("trigger", fired=asyncio.run(_first_event(trigger, 3 * spec.health.poll_interval_seconds)))
    with closing(connect(settings)) as connection:
        lease = leases.current(connection, handle.checkpoint_location)
    process = job_process(spec, lease, settings)
    say("page", alive=None if process is None else process.alive)
    sys.stdin.readline()  # the test looked at the job: stop it
    started = time.monotonic()
    code = hook.stop(handle)
    released = hook.release(handle)
    say("stopped", code=code, released=released, seconds=time.monotonic() - started)
    say("after", status=str(hook.read_health(handle).status), alive=hook.is_alive(handle))
    return 0


async def _first_event(trigger: SparkJobHealthTrigger, seconds: float) -> Any:
    """The trigger's first event within ``seconds``; None when it fired none (it kept watching)."""
    events = trigger.run()
    try:
        return (await asyncio.wait_for(anext(events), seconds)).payload
    except TimeoutError:
        return None
    finally:
        await events.aclose()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
