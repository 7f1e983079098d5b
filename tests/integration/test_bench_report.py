"""`streamops bench --quick` on one cheap benchmark against the real stack: the report folder
holds the benchmark's JSON, PNG charts and a markdown summary, with measured numbers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from streamops.config import PROJECT_ROOT, Settings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_quick_report_of_one_benchmark(settings: Settings, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamops",
            "bench",
            "--only",
            "generate_orders",
            "--quick",
            "--output",
            str(tmp_path),
        ],
        cwd=tmp_path,  # not the project root: the command finds benchmarks/ by itself
        env={**os.environ, **settings.as_env(), "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = [folder for folder in tmp_path.iterdir() if folder.is_dir()]
    assert run.name.endswith("-quick")

    (result_file,) = run.glob("generate_orders-*.json")
    report = json.loads(result_file.read_text())
    assert report["benchmark"] == "generate_orders"
    assert report["quick"] is True
    assert report["environment"] == {"BENCH_RECORDS": "20000", "BENCH_REPEATS": "1"}
    results = report["results"]
    assert results["records"] == 20000
    ours = results["streamops_generate"]["median"]["records_per_second"]
    theirs = results["kafka_producer_performance"]["median"]["records_per_second"]
    assert ours > 0 and theirs > 0
    assert results["ratio_records_per_second"] == round(ours / theirs, 4)

    summary = (run / "summary.md").read_text()
    assert f"# Benchmark run {run.name}" in summary
    ratio_row = re.search(r"\| `ratio_records_per_second` \| ([0-9.]+) \|", summary)
    assert ratio_row is not None, summary
    assert float(ratio_row.group(1)) == round(results["ratio_records_per_second"], 3)
    assert "Kafka ProducerPerformance" in summary

    charts = {png.name: png for png in run.glob("*.png")}
    for name in (
        "report-generate_orders-ratios.png",
        "report-generate_orders-latency.png",
        "report-generate_orders-throughput.png",
        "report-ratios.png",
    ):
        assert name in charts, sorted(charts)
        data = charts[name].read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
        # Every chart is linked from the summary, relative to it.
        assert f"]({name})" in summary
    assert "summary:" in done.stdout


def test_unknown_benchmark_is_refused(settings: Settings, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamops", "bench", "--only", "no_such_thing"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **settings.as_env()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Unknown benchmark no_such_thing" in done.stderr
    assert "generate_orders" in done.stderr
