"""The job heartbeat: how a supervisor on another host sees a job live, end, and stop.

A supervisor that launched a job on its own host looks at the job's processes
(``streamops.supervision.job_processes``). One on another host cannot: in compose the scheduler
launches and the triggerer watches, each in a container of its own. So the job's driver keeps a
heartbeat of its own in Redis (``streamops:job:<pipeline>:<lease key>``, a hash), written every
:data:`BEAT_SECONDS` by a thread of its own that no batch holds up
(``spark_jobs.common.query_status.JobHeartbeat``): its fencing token, host, pid and session, when it
started and last beat, its machine's load, why it is stopping, and on its way out its exit code.
The rule that judges it is pure (``streamops.supervision.job_health.judge_job_beat``).

A watcher stops such a job by a request (``streamops:job:<pipeline>:<lease key>:stop``) naming
the job's fencing token and launch; the driver reads it with each beat and stops as on SIGTERM
(its queries between two batches, exit 0). Each beat also reads the Redis mirror of the lease's
token: a newer token there means the checkpoint's lease moved on (the watcher fenced the job, or a
new launch got the lease), and the job stops as well. Both keys, like fencing tokens, are per
checkpoint: a job of the same pipeline on another checkpoint never reads or fences this one.

Every beat is one script, so a job never overwrites the heartbeat of a job under a newer token,
and a new launch (a newer token, or the same token started anew) starts from an empty hash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamops.contract.redis_keys import job_key, job_stop_key
from streamops.supervision.job_health import JOB_STARTED_AT, JOB_TOKEN, int_field, stop_request
from streamops.supervision.redis_fence import fence_key

# How often the driver beats: a stop request is seen within about this long.
BEAT_SECONDS = 1.0
# The hash outlives the job long enough to say how it ended; every beat refreshes it.
JOB_KEY_TTL_SECONDS = 7 * 24 * 3600
# A stop request nobody withdrew (its watcher died) goes by itself; it names one launch anyway.
STOP_REQUEST_TTL_SECONDS = 3600

# KEYS: the job hash, the stop request, the fence mirror. ARGV: token, started_at, TTL, then the
# other fields as name/value pairs. Writes only when neither the hash nor the mirror holds a newer
# token; a hash of another token or another start (an earlier launch) is replaced, not merged.
# Returns {written, the hash's token before, the mirror, the stop request} ('' for none).
BEAT_SCRIPT = f"""
local token = tonumber(ARGV[1])
local reporting = redis.call('HGET', KEYS[1], '{JOB_TOKEN}')
local started = redis.call('HGET', KEYS[1], '{JOB_STARTED_AT}')
local mirror = redis.call('GET', KEYS[3])
local request = redis.call('GET', KEYS[2])
local r = tonumber(reporting or '')
local m = tonumber(mirror or '')
local written = 0
if (r == nil or r <= token) and (m == nil or m <= token) then
  if r ~= token or started ~= ARGV[2] then
    redis.call('DEL', KEYS[1])
  end
  redis.call('HSET', KEYS[1], '{JOB_TOKEN}', ARGV[1], '{JOB_STARTED_AT}', ARGV[2], unpack(ARGV, 4))
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
  written = 1
end
return {{written, reporting or '', mirror or '', request or ''}}
"""


@dataclass(frozen=True)
class BeatReply:
    """What one beat found: whether it was written, the heartbeat's token before it, the fence
    mirror's token, and the stop request (None where there was none)."""

    written: bool
    reporting_token: int | None
    mirror_token: int | None
    request: str | None


def write_beat(
    client: Any,
    pipeline: str,
    *,
    token: int,
    lease_key: str,
    started_at: str,
    fields: Mapping[str, str],
) -> BeatReply:
    """One beat of the job under ``token`` (``started_at``: its start, the same string every
    beat); ``client`` is a plain Redis client (the script is its own fence)."""
    pairs = [item for name, value in fields.items() for item in (name, value)]
    reply = client.eval(
        BEAT_SCRIPT,
        3,
        job_key(pipeline, lease_key),
        job_stop_key(pipeline, lease_key),
        fence_key(lease_key),
        str(token),
        started_at,
        str(JOB_KEY_TTL_SECONDS),
        *pairs,
    )
    written, reporting, mirror, request = (_text(value) for value in reply)
    return BeatReply(
        written=written == "1",
        reporting_token=int_field(reporting),
        mirror_token=int_field(mirror),
        request=request or None,
    )


def read_job_beat(client: Any, pipeline: str, lease_key: str) -> dict[str, str]:
    """The job heartbeat hash of ``pipeline`` on the checkpoint of ``lease_key`` (empty when no
    job ever beat)."""
    beat = client.hgetall(job_key(pipeline, lease_key))
    return {_text(name): _text(value) for name, value in beat.items()}


def request_stop(client: Any, pipeline: str, lease_key: str, token: int, launch_pid: int) -> str:
    """Ask the job launched as ``launch_pid`` under ``token`` to stop; returns the request."""
    request = stop_request(token, launch_pid)
    client.set(job_stop_key(pipeline, lease_key), request, ex=STOP_REQUEST_TTL_SECONDS)
    return request


def withdraw_stop(client: Any, pipeline: str, lease_key: str, request: str) -> None:
    """Take the stop request back once its job is gone, unless another one replaced it."""
    key = job_stop_key(pipeline, lease_key)
    if _text(client.get(key)) == request:
        client.delete(key)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
