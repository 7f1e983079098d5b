"""``streamops run``: a pipeline's job in the foreground, under its checkpoint's lease.

The supervisor and a foreground run never write to one checkpoint together: the run takes the
lease first (refused, naming the holder, while a supervised job has it), records its process,
renews the lease while the job runs and releases it at the end. Its processes carry the
pipeline's mark (:func:`streamops.supervision.job_processes.job_environment`), so a
supervisor that finds them after the lease ran out stops them before it launches.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Mapping, Sequence

import psutil

from streamops.config import Settings
from streamops.db import connect
from streamops.errors import StreamopsError
from streamops.processes import process_stamp
from streamops.supervision import job_processes
from streamops.supervision import lease as leases
from streamops.supervision.spec import PipelineSpec


def lease_holder_job(settings: Settings, spec: PipelineSpec) -> job_processes.JobHandle | None:
    """The job of the checkpoint's lease holder, alive or not; pid 0 while its launch is not
    yet recorded (its processes are then known by the lease's fencing token)."""
    location = spec.checkpoint_location(settings.checkpoint_root)
    with contextlib.closing(connect(settings)) as connection:
        lease = leases.current(connection, location)
    if lease is None or lease.owner is None:
        return None
    return job_processes.handle_from_lease(spec, settings, lease)


def refuse_stray_jobs(settings: Settings, spec: PipelineSpec, advice: str) -> None:
    """A clear error naming each process of the pipeline that runs outside the lease holder's
    job (an orphan)."""
    strays = job_processes.stray_jobs(settings, spec.name, lease_holder_job(settings, spec))
    if strays:
        listed = "; ".join(stray.describe() for stray in strays)
        raise StreamopsError(
            f"{spec.name}: a job of this pipeline runs without the checkpoint's lease (an "
            f"orphan): {listed}. Starting another would put two writers on one checkpoint. "
            f"{advice}"
        )


def run_in_foreground(
    settings: Settings,
    spec: PipelineSpec,
    command: Sequence[str],
    env: Mapping[str, str],
) -> int:
    """Run ``command`` (the job) under the lease of ``spec``'s checkpoint; its exit code."""
    refuse_stray_jobs(
        settings,
        spec,
        "Stop it first: `kill -TERM <the python pid>` stops it gracefully, or "
        f"`streamops pipeline start {spec.name} --stop-orphans` hands it to the supervisor.",
    )
    location = spec.checkpoint_location(settings.checkpoint_root)
    owner = f"cli:{socket.gethostname()}:{os.getpid()}"
    ttl = spec.lease_ttl_seconds
    connection = connect(settings)
    try:
        lease = leases.acquire(connection, location, owner, ttl, pipeline=spec.name)
    except leases.LeaseHeldError as held:
        connection.close()
        raise StreamopsError(
            f"{held} Stop the supervised job first (`streamops pipeline stop {spec.name}`)."
        ) from None
    except BaseException:
        connection.close()
        raise
    try:
        job_processes.mirror_fence(settings, lease)
        process = subprocess.Popen(
            list(command), env={**env, **job_processes.job_environment(spec.name, lease)}
        )
        lost = threading.Event()
        done = threading.Event()
        try:
            leases.record_process(
                connection,
                lease,
                host=socket.gethostname(),
                pid=process.pid,
                start_epoch=psutil.Process(process.pid).create_time(),
                stamp=process_stamp(process.pid),
            )
            keeper = threading.Thread(
                target=_keep_lease,
                args=(settings, lease, ttl, process, lost, done),
                name="lease-keeper",
                daemon=True,
            )
            keeper.start()
            code = _wait(process)
        finally:
            done.set()
            if process.poll() is None:
                process.terminate()
                process.wait()
        if lost.is_set():
            raise StreamopsError(
                f"{spec.name}: the checkpoint's lease was taken over while the job ran; the job "
                "was stopped so that it never writes next to the new holder."
            )
        return code
    finally:
        with contextlib.suppress(Exception):  # else it is released by expiry
            leases.release(connection, lease)
        connection.close()


def _wait(process: subprocess.Popen[bytes]) -> int:
    """Wait for the job; Ctrl-C reaches it too (same process group) and it stops gracefully."""
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            continue


def _keep_lease(
    settings: Settings,
    lease: leases.Lease,
    ttl: float,
    process: subprocess.Popen[bytes],
    lost: threading.Event,
    done: threading.Event,
) -> None:
    """Renew every third of the TTL; on loss, SIGTERM the job (it stops after its batch)."""
    connection = connect(settings)
    try:
        while not done.wait(ttl / 3):
            try:
                leases.renew(connection, lease, ttl)
            except leases.LeaseLostError:
                lost.set()
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                return
            except Exception:  # MariaDB away: try again next time; the lease outlives a blip
                continue
    finally:
        connection.close()
