"""The upsert benchmark at a tiny size against the stack's MariaDB: the sink and its baseline,
LOAD DATA LOCAL INFILE, load the same rows, their ratio follows from their timings, and the
scratch table is gone afterwards. Correctness of the measurement, never its speed."""

from __future__ import annotations

import pytest

from benchmarks import bench_mariadb_upsert as upsert
from streamops.config import Settings
from streamops.db import execute

ROWS = 300


def scratch_tables(settings: Settings) -> list[tuple[str, ...]]:
    return [tuple(row) for row in execute(settings, "SHOW TABLES LIKE 'bench_upsert_orders_%'")]


def test_the_sink_and_load_data_load_the_same_rows_and_give_their_ratio(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(upsert.ROWS_ENV, str(ROWS))
    monkeypatch.setenv(upsert.REPEATS_ENV, "1")
    monkeypatch.setenv(upsert.CHUNK_SIZES_ENV, "100")
    before = scratch_tables(settings)

    # It raises BenchmarkError when the methods leave different rows in the table.
    results = upsert.run(settings)

    assert results["chunk_sizes"] == sorted({100, upsert.DEFAULT_CHUNK_SIZE})
    sink = results["results"][f"chunk_{upsert.DEFAULT_CHUNK_SIZE}"][upsert.DEFAULT_STRATEGY]
    load_data = results["load_data"]
    for case in ("insert", "update"):
        assert load_data[case]["rows_per_second"] > 0
        assert results["ratio_sink_to_load_data"][case] == pytest.approx(
            load_data[case]["median_seconds"] / sink[case]["median_seconds"], abs=5e-5
        )
    assert "REPLACE INTO" in load_data["statements"]["update"]
    assert scratch_tables(settings) == before
