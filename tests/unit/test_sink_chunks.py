"""How the MariaDB sinks cut rows into transactions (by rows and by bytes) and display-only text
to its column."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from spark_jobs.sinks import mariadb as sink
from spark_jobs.sinks.mariadb import (
    TEXT_MAX_BYTES,
    VALUE_OVERHEAD_BYTES,
    chunk_rows,
    row_bytes,
    truncate_utf8,
)
from spark_jobs.transforms.alerts import SAMPLE_MESSAGE_MAX_CHARS

OVERHEAD = VALUE_OVERHEAD_BYTES


def sizes(chunks: Iterator[list[Any]]) -> list[int]:
    return [len(chunk) for chunk in chunks]


def blob_row(payload_bytes: int) -> tuple[Any, ...]:
    """A row of one value whose row_bytes is exactly ``payload_bytes + OVERHEAD``."""
    return (b"x" * payload_bytes,)


def test_row_bytes_counts_text_as_utf8_and_other_values_as_overhead() -> None:
    row = ("abc", b"\x00\xff", bytearray(4), "é€😀", None, 7, Decimal("1.25"), datetime(2031, 1, 1))
    assert row_bytes(row) == 3 + 2 + 4 + (2 + 3 + 4) + 8 * OVERHEAD
    assert row_bytes(()) == 0


def test_rows_alone_bound_small_rows() -> None:
    rows = [("a",)] * 7
    chunks = list(chunk_rows(rows, 3, 1_000_000))
    assert chunks == [[("a",)] * 3, [("a",)] * 3, [("a",)]]


def test_a_chunk_ends_before_the_row_that_would_pass_the_budget() -> None:
    budget = 3 * (100 + OVERHEAD)
    rows = [blob_row(100)] * 7
    assert sizes(chunk_rows(rows, 5_000, budget)) == [3, 3, 1]
    # One byte less and only two rows fit.
    assert sizes(chunk_rows(rows, 5_000, budget - 1)) == [2, 2, 2, 1]


def test_whichever_limit_comes_first_ends_the_chunk() -> None:
    rows = [blob_row(10)] * 4 + [blob_row(1_000)] + [blob_row(10)] * 4
    assert sizes(chunk_rows(rows, 3, 1_050)) == [3, 2, 3, 1]


def test_a_row_larger_than_the_budget_goes_alone() -> None:
    small, huge = blob_row(10), blob_row(5_000)
    rows = [small, small, huge, small, huge, huge, small]
    chunks = list(chunk_rows(rows, 100, 1_000))
    assert chunks == [[small, small], [huge], [small], [huge], [huge], [small]]


def test_order_and_content_are_kept() -> None:
    rows = [(f"k{i}", b"v" * (i * 37 % 500)) for i in range(200)]
    chunks = list(chunk_rows(rows, 9, 2_000))
    assert [row for chunk in chunks for row in chunk] == rows
    for chunk in chunks:
        assert len(chunk) <= 9
        assert len(chunk) == 1 or sum(row_bytes(row) for row in chunk) <= 2_000


def test_nothing_in_nothing_out() -> None:
    assert list(chunk_rows([], 10, 10)) == []


def test_rows_are_read_one_chunk_at_a_time() -> None:
    read: list[int] = []

    def rows() -> Iterator[tuple[int]]:
        for index in range(10):
            read.append(index)
            yield (index,)

    chunks = chunk_rows(rows(), 3, 1_000_000)
    assert next(chunks) == [(0,), (1,), (2,)]
    # The fourth row was read to learn that the chunk was full; no more.
    assert read == [0, 1, 2, 3]


@pytest.mark.parametrize(("chunk_size", "chunk_bytes"), [(0, 10), (10, 0), (-1, 10)])
def test_limits_below_one_are_refused(chunk_size: int, chunk_bytes: int) -> None:
    with pytest.raises(ValueError, match="give 1 or more"):
        next(chunk_rows([("a",)], chunk_size, chunk_bytes))


def test_default_budget_is_well_below_the_servers_default_packet_limit() -> None:
    # MariaDB 10.11's default max_allowed_packet is 16 MiB; the largest Kafka record (~1 MB key
    # and ~1 MB value) must fit in a chunk of its own.
    assert 2 * 1024 * 1024 < sink.DEFAULT_CHUNK_BYTES <= 16 * 1024 * 1024 // 4


def test_chunk_bytes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sink.CHUNK_BYTES_ENV, raising=False)
    assert sink._chunk_bytes_from_env() == 4 * 1024 * 1024
    monkeypatch.setenv(sink.CHUNK_BYTES_ENV, "")
    assert sink._chunk_bytes_from_env() == 4 * 1024 * 1024
    monkeypatch.setenv(sink.CHUNK_BYTES_ENV, "65536")
    assert sink._chunk_bytes_from_env() == 65_536


@pytest.mark.parametrize("value", ["0", "-5", "4MiB", "1.5", " 10"])
def test_chunk_bytes_that_are_not_a_positive_whole_number_are_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(sink.CHUNK_BYTES_ENV, value)
    with pytest.raises(ValueError, match=f"{sink.CHUNK_BYTES_ENV}=.*whole number of bytes"):
        sink._chunk_bytes_from_env()


@pytest.mark.parametrize(
    ("text", "max_bytes", "expected"),
    [
        ("short", 65_535, "short"),
        ("x" * 10, 4, "xxxx"),
        ("a€b", 5, "a€b"),
        ("a€b", 4, "a€"),
        ("a€b", 3, "a"),  # the euro sign (3 bytes) does not fit whole, so none of it is kept
        ("😀😀😀", 9, "😀😀"),
        ("é" * 5, 0, ""),
    ],
)
def test_truncate_utf8_cuts_on_a_character_boundary(
    text: str, max_bytes: int, expected: str
) -> None:
    assert truncate_utf8(text, max_bytes) == expected


def test_a_megabyte_message_is_cut_to_what_a_text_column_holds() -> None:
    message = "Ünïcödé stack trace line\n" * 40_000  # ~1.1 MB of UTF-8
    cut = truncate_utf8(message, TEXT_MAX_BYTES)
    assert len(cut.encode()) <= TEXT_MAX_BYTES
    assert len(cut.encode()) > TEXT_MAX_BYTES - 4
    assert message.startswith(cut)


def test_the_transforms_sample_already_fits_a_text_column() -> None:
    # So the sinks' cut (spark_jobs/sinks/alerts.py) changes no sample the transform keeps today.
    assert SAMPLE_MESSAGE_MAX_CHARS * 4 <= TEXT_MAX_BYTES
