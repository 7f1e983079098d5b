"""The local broker's cluster id: Kafka's format, never one its storage tool reads as an option."""

from __future__ import annotations

import base64
import uuid

import pytest

from streamops.stack import kafka


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xfb… encodes to "-…" in URL-safe base64: the first draw is refused, the second kept.
    draws = iter([uuid.UUID(bytes=b"\xfb" + bytes(15)), uuid.UUID(bytes=b"\x10" + bytes(15))])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: next(draws))
    cluster_id = kafka._kafka_cluster_id()
    assert cluster_id == base64.urlsafe_b64encode(b"\x10" + bytes(15)).decode().rstrip("=")
    assert len(cluster_id) == 22


def test_many_cluster_ids_are_all_valid() -> None:
    ids = {kafka._kafka_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert not any(i.startswith("-") for i in ids)
