"""The whole-platform soak (``streamops soak``) as a benchmark of ``streamops bench``.

    python -m benchmarks.runner soak

Runs against the platform ``make up`` started (every pipeline supervised by Airflow, the
generators, the dashboard): a few probe records every ``BENCH_SOAK_PROBE_INTERVAL`` seconds for
``BENCH_SOAK_SECONDS`` (default 1800), each output's latency from the probe's acknowledgement to
visible, CPU and RSS per component, health verdicts, restarts, Kafka lag and load, and the
targets (pass/fail). The results are the soak's report (streamops/soak/report.py); the charts
(``soak-<run>-latency.png``, ``-cpu.png``, ``-rss.png``) go next to the JSON.

There is no baseline in the same run: a soak's figures are read against the targets. Under
``make bench`` (``streamops up --no-airflow``) no pipeline runs, so it skips this one (``--skip
soak``); ``make soak`` runs it on the whole platform.
``--quick``: 90 s of probes and a 60-s time-out: about two minutes, three when outputs time out.
"""

from __future__ import annotations

import json
import os
from typing import Any

from benchmarks import BenchmarkError, int_env, output_dir
from streamops.config import Settings

SECONDS_ENV = "BENCH_SOAK_SECONDS"
INTERVAL_ENV = "BENCH_SOAK_PROBE_INTERVAL"
TIMEOUT_ENV = "BENCH_SOAK_TIMEOUT_SECONDS"
QUICK_ENV = {SECONDS_ENV: "90", TIMEOUT_ENV: "60"}


def run(settings: Settings) -> dict[str, Any]:
    from streamops.soak.probes import SoakError
    from streamops.soak.run import SoakOptions, run_soak
    from streamops.soak.stats import parse_duration

    try:
        interval = parse_duration(os.environ.get(INTERVAL_ENV, "5"))
        options = SoakOptions(
            duration_seconds=int_env(SECONDS_ENV, 1800),
            probe_interval_seconds=interval,
            timeout_seconds=int_env(TIMEOUT_ENV, 120),
            output_dir=output_dir(),
            # The runner writes the report as soak-<time>.json itself.
            write_json=False,
        )
    except ValueError as error:
        raise BenchmarkError(f"The soak's {INTERVAL_ENV} or sizes: {error}") from error
    try:
        result = run_soak(settings, options)
    except SoakError as error:
        raise BenchmarkError(str(error)) from error
    report = dict(result.report)
    report["charts"] = [path.name for path in result.plots]
    report["notes"] = [*report["notes"], *result.warnings]
    # The runner writes the results with plain json.dumps: make sure every value is JSON.
    return dict(json.loads(json.dumps(report, default=str)))
