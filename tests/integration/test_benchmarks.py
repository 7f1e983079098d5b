"""The benchmark runner works end to end on the real broker (tiny sizes: correctness, not speed)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from streamops.config import PROJECT_ROOT, load_settings


def test_generate_orders_benchmark_writes_a_ratio_against_kafkas_own_tool(tmp_path: Path) -> None:
    python = str(load_settings().spark_python)
    result = subprocess.run(
        # In the Spark environment, as `streamops bench` runs the benchmarks.
        [python, "-m", "benchmarks.runner", "generate_orders", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_ROOT,
        env={**os.environ, "BENCH_RECORDS": "3000", "BENCH_REPEATS": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (output,) = tmp_path.glob("generate_orders-*.json")
    report = json.loads(output.read_text())
    results = report["results"]
    ours = results["streamops_generate"]["median"]
    theirs = results["kafka_producer_performance"]["median"]
    assert ours["sent"] == 3000
    assert theirs["records"] == 3000
    assert ours["records_per_second"] > 0 and theirs["records_per_second"] > 0
    expected = ours["records_per_second"] / theirs["records_per_second"]
    assert abs(results["ratio_records_per_second"] - expected) < 0.01 * expected
    assert report["machine"]["logical_cpus"] >= 1
