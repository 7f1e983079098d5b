"""Which lease rows are trusted: every shape the supervisor writes, and nothing else (no DB)."""

from __future__ import annotations

from datetime import datetime

import pytest

from streamops.supervision import lease as leases

NOW = datetime(2026, 12, 2, 12, 0, 0)


def _row(**changes: object) -> tuple[object, ...]:
    row = {
        "location": "/c/orders",
        "owner": "airflow:streamops_supervise_orders.supervise",
        "token": 3,
        "acquired": NOW,
        "expires": NOW,
        "host": "worker-1",
        "pid": 4242,
        "start_epoch": 1_764_000_000.5,
        "pipeline": "orders",
        "stamp": "97b06ebd-22df-4013-bf6e-8e0b042055d6/4121774",
    }
    row.update(changes)
    return tuple(row.values())


@pytest.mark.parametrize(
    "changes",
    [
        {},  # a local job
        {"host": "k8s:streamops/orders-driver", "pid": 0, "stamp": None},  # a driver pod
        # A driver pod without its creation time yet.
        {"pid": 0, "start_epoch": 0.0, "host": "k8s:streamops/orders-driver", "stamp": None},
        # A fresh row (INSERT IGNORE): no owner, token 0.
        {"owner": None, "token": 0, "expires": None, "host": None, "pid": None},
        # Released.
        {"owner": None, "host": None, "pid": None, "start_epoch": None, "stamp": None},
        {"stamp": None},  # recorded before the stamp was (matched by the epoch)
        {"owner": "cli:laptop:991", "host": "laptop"},  # `streamops run`
    ],
)
def test_rows_the_supervisor_writes_are_trusted(changes: dict[str, object]) -> None:
    assert leases._lease(_row(**changes)).checkpoint_location == "/c/orders"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"pid": -7}, "pid -7 is not a process id"),
        ({"start_epoch": float("nan")}, "process_start_epoch nan is not a time"),
        ({"start_epoch": -1.0}, "process_start_epoch -1.0 is not a time"),
        ({"token": 0}, "fencing_token 0 cannot be held"),
        ({"token": -1, "owner": None}, "fencing_token -1 cannot be a token"),
        ({"expires": None}, "holds it without an expiry"),
        ({"stamp": "4121774"}, "process_stamp '4121774' is not"),
        ({"stamp": "boot/-5"}, "process_stamp 'boot/-5' is not"),
    ],
)
def test_other_rows_are_reported_as_corrupted(changes: dict[str, object], problem: str) -> None:
    with pytest.raises(leases.CorruptRowError, match="corrupted") as raised:
        leases._lease(_row(**changes))
    assert problem in str(raised.value)
