"""How long `streamops --help` takes to start, against a bare interpreter in the same run.

Every `streamops` command pays this start before it does anything, and so does every Airflow
task that imports the core. The core imports no Spark (docs/adr/0006-layers-and-environments.md),
so the start is the interpreter's, typer's and the settings'. Baseline: `python -c pass` in the
same environment, measured alternately with the command so both see the same machine load.

Needs no running service. Sizes: BENCH_CLI_REPEATS (default 15).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import source_checkout
from streamops.config import Settings

QUICK_ENV = {"BENCH_CLI_REPEATS": "3"}
_PROBE = (
    "import sys, runpy; sys.argv = ['streamops', '--help'];\n"
    "try:\n    runpy.run_module('streamops', run_name='__main__')\n"
    "except SystemExit:\n    pass\n"
    "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'pyspark', 'spark_jobs'})\n"
    "print(len(sys.modules), ','.join(loaded), file=sys.stderr)\n"
)


def _seconds(argv: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    # From the checkout, where a user runs it (its streamops.toml); installed, from here.
    result = subprocess.run(argv, cwd=source_checkout(), capture_output=True, text=True, check=True)
    return time.perf_counter() - started, result.stderr


def run(settings: Settings) -> dict[str, Any]:
    del settings  # nothing to reach: the command only prints its help
    repeats = int(os.environ.get("BENCH_CLI_REPEATS", "15"))
    command = [str(Path(sys.executable).with_name("streamops")), "--help"]
    bare = [sys.executable, "-c", "pass"]
    # One unmeasured run of each warms the page cache, as a user's second command finds it.
    _seconds(command)
    _seconds(bare)
    help_seconds, bare_seconds = [], []
    for _ in range(repeats):
        help_seconds.append(_seconds(command)[0])
        bare_seconds.append(_seconds(bare)[0])
    _, report = _seconds([sys.executable, "-c", _PROBE])
    modules, _, spark_loaded = report.strip().rpartition("\n")[2].partition(" ")
    help_median = statistics.median(help_seconds)
    bare_median = statistics.median(bare_seconds)
    return {
        "repeats": repeats,
        "help_seconds_median": round(help_median, 4),
        "help_seconds_max": round(max(help_seconds), 4),
        "interpreter_seconds_median": round(bare_median, 4),
        "ratio_help_to_interpreter": round(help_median / bare_median, 2),
        "modules_loaded": int(modules),
        "spark_modules_loaded": spark_loaded.split(",") if spark_loaded else [],
    }
