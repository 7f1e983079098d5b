"""How long a cold Spark driver takes to start, with and without the class-data archive that
`streamops install` records (streamops.installer.install_class_archive): a relaunched job pays
this start after every crash, so it is most of a recovery (docs/performance.md).

Each round submits ``driver_start_probe.py`` twice, without and with the archive, in alternating
order, through the same spark-submit, JVM options and master as a pipeline's job. Reported per
mode: the medians of seconds to the session, to the first and to the third batch, of wall time
for the whole submit (the JVM's exit included), and of CPU seconds of the whole process tree.
Run it once on a quiet machine and once with the whole platform running (``make up``): the
difference is what a relaunch on a busy machine gains.

    BENCH_DRIVER_START_ROUNDS=5 .venv/bin/python -m benchmarks.runner driver_start
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyspark

from benchmarks import BenchmarkError, int_env
from streamops.config import Settings
from streamops.installer import DRIVER_GC_OPTION, pyspark_submit
from streamops.supervision.submit import with_class_archive

PROBE = Path(__file__).resolve().parent / "driver_start_probe.py"
MODES = ("without_archive", "with_archive")
MEASURES = ("session", "first_batch", "third_batch", "wall", "cpu")


def _submit(java_options: str, settings: Settings) -> dict[str, float]:
    spark_submit, env = pyspark_submit(settings)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = subprocess.run(
        [
            str(spark_submit),
            "--master",
            settings.spark_master,
            # The pipelines' driver heap (pipelines.yaml).
            "--driver-memory",
            "768m",
            "--driver-java-options",
            java_options,
            "--conf",
            "spark.ui.enabled=false",
            "--conf",
            "spark.sql.shuffle.partitions=2",
            str(PROBE),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = "\n".join(result.stderr.splitlines()[-10:])
        raise BenchmarkError(f"the probe driver failed (exit {result.returncode}):\n{tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**json.loads(lines[-1]), "wall": wall, "cpu": cpu}


def run(settings: Settings) -> dict[str, Any]:
    rounds = int_env("BENCH_DRIVER_START_ROUNDS", 3)
    archive = settings.spark_class_archive(pyspark.__version__)
    if not archive.is_file():
        raise BenchmarkError(
            f"no class-data archive at {archive}: run `streamops install`, which records it."
        )
    options = {
        "without_archive": DRIVER_GC_OPTION,
        "with_archive": with_class_archive(DRIVER_GC_OPTION, archive),
    }
    samples: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for round_number in range(rounds):
        order = MODES if round_number % 2 == 0 else tuple(reversed(MODES))
        for mode in order:
            samples[mode].append(_submit(options[mode], settings))
    medians = {
        mode: {
            f"{measure}_seconds": statistics.median(s[measure] for s in runs)
            for measure in MEASURES
        }
        for mode, runs in samples.items()
    }
    load = os.getloadavg()
    return {
        "rounds": rounds,
        "archive": str(archive),
        "archive_mib": round(archive.stat().st_size / 2**20, 1),
        "load_average_1m_at_end": round(load[0], 2),
        "median": medians,
        "ratio_start_with_archive_to_without": {
            measure: medians["with_archive"][f"{measure}_seconds"]
            / medians["without_archive"][f"{measure}_seconds"]
            for measure in MEASURES
        },
        "runs": samples,
    }


def plot(results: dict[str, Path], chart: Path) -> Path:
    """One panel per labelled result file (say, alone and with the platform): each measure's
    median without and with the archive."""
    from benchmarks import plots

    panels = {}
    for label, path in results.items():
        medians = json.loads(path.read_text())["results"]["median"]
        panels[label] = {
            mode.replace("_", " "): [medians[mode][f"{m}_seconds"] for m in MEASURES]
            for mode in MODES
        }
    return plots.grouped_bars(
        chart,
        title="A cold Spark driver's start, medians (seconds; cpu: CPU seconds)",
        panels=panels,
        groups=[measure.replace("_", " ") for measure in MEASURES],
        ylabel="seconds",
        label=lambda value: f"{value:.1f}",
    )


if __name__ == "__main__":
    # python -m benchmarks.bench_driver_start CHART LABEL=RESULT.json [LABEL=RESULT.json ...]
    labelled = dict(argument.split("=", 1) for argument in sys.argv[2:])
    print(plot({label: Path(path) for label, path in labelled.items()}, Path(sys.argv[1])))
