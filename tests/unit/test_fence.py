"""The job's fence from its environment (pure; the check: tests/integration/test_fencing.py)."""

from __future__ import annotations

import pytest

from streamops.supervision.fence import Fence
from streamops.supervision.job_processes import JOB_LEASE_ENV, JOB_TOKEN_ENV, job_environment
from streamops.supervision.lease import Lease


def test_no_variables_no_fence() -> None:
    assert Fence.from_env({}) is None


def test_the_launchers_variables_make_the_fence() -> None:
    lease = Lease("/state/checkpoints/orders", "airflow:x", 12)
    env = job_environment("orders", lease)
    assert Fence.from_env(env) == Fence(lease.key, 12)
    assert job_environment("orders", None) == {
        "STREAMOPS_JOB_PIPELINE": "orders",
        "STREAMOPS_JOB_HOST": __import__("socket").gethostname(),
    }


@pytest.mark.parametrize(
    "env",
    [
        {JOB_LEASE_ENV: "short", JOB_TOKEN_ENV: "12"},
        {JOB_LEASE_ENV: "a" * 64, JOB_TOKEN_ENV: "twelve"},
        {JOB_TOKEN_ENV: "12"},
    ],
)
def test_a_malformed_fence_is_an_error_not_an_unfenced_job(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="fencing token"):
        Fence.from_env(env)


def test_a_job_without_a_lease_gets_a_plain_redis_client(monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    from streamops.config import Settings
    from streamops.supervision.fence import FencedRedis, redis_client

    monkeypatch.delenv(JOB_LEASE_ENV, raising=False)
    monkeypatch.delenv(JOB_TOKEN_ENV, raising=False)
    client = redis_client(Settings())
    assert type(client) is redis.Redis
    monkeypatch.setenv(JOB_LEASE_ENV, "a" * 64)
    monkeypatch.setenv(JOB_TOKEN_ENV, "7")
    fenced = redis_client(Settings(), socket_timeout=3)
    assert isinstance(fenced, FencedRedis) and fenced.fence.token == 7
    # Always a transaction: a WATCH means nothing without MULTI/EXEC.
    assert fenced.pipeline(transaction=False).transaction is True
