"""Run the benchmarks and keep their results as JSON.

    python -m benchmarks.runner [NAME ...] [--output FOLDER] [--list]

A benchmark is a module ``benchmarks/bench_<name>.py`` with ``run(settings) -> dict``. Each run
writes ``<output>/<name>-<UTC timestamp>.json`` holding the machine, the time and the results, so
numbers from different commits and machines can be put side by side.

``streamops bench`` (``python -m benchmarks.report``) runs them all into one folder per run and
adds a markdown summary: :func:`summary_markdown` lists every ``ratio_*`` a benchmark returns (a
ratio against a baseline measured in the same run) and its headline numbers. ``--quick`` sets the
sizes of :func:`quick_environment` so a whole run takes minutes, for a smoke check, not numbers.

A benchmark that records its state size over time returns it as a *time series*: a list of
mappings, each with ``elapsed_seconds`` and either ``state_rows`` (one series) or
``queries: {<query>: {"state_rows": …}}`` (one series per query). :func:`state_series` finds
them for the state chart; :func:`headline_numbers` leaves them out of the summary's table.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import pkgutil
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import benchmarks
from benchmarks import BenchmarkError, default_output
from streamops.config import load_settings

PREFIX = "bench_"
# Where a benchmark that draws its own charts puts them (read by the benchmarks themselves).
OUTPUT_ENV = "BENCH_OUTPUT_DIR"
# A benchmark module may define ``QUICK_ENV = {"BENCH_…": "…"}``: the sizes of a quick run. These
# are the quick sizes of the benchmarks that do not (yet) say their own; the module's wins.
QUICK_ENVIRONMENT: dict[str, dict[str, str]] = {
    "generate_orders": {"BENCH_RECORDS": "20000", "BENCH_REPEATS": "1"},
    "mariadb_upsert": {
        "BENCH_UPSERT_ROWS": "2000",
        "BENCH_REPEATS": "1",
        "BENCH_UPSERT_CHUNK_SIZES": "500,2000",
    },
    "orders_pipeline": {
        "BENCH_ORDERS": "5000",
        "BENCH_REPEATS": "1",
        "BENCH_RATES": "200",
        "BENCH_LATENCY_SECONDS": "5",
        "BENCH_FLOOR_SECONDS": "4",
        "BENCH_IDLE_SECONDS": "12",
        "BENCH_WARM_UP": "0",
    },
    "alerts": {"BENCH_ALERTS_PROBES": "3", "BENCH_ALERTS_LINES": "2000"},
    "vitals": {
        "BENCH_VITALS_READINGS": "3000",
        "BENCH_VITALS_RATE": "200",
        "BENCH_VITALS_SECONDS": "15",
    },
}
QUICK_NOTE = "quick (small sizes: a smoke check, not numbers to quote)"
# What each known ratio compares; any other ``ratio_*`` is listed with its key alone.
RATIO_BASELINES = {
    "ratio_records_per_second": "records/s of `streamops generate` / Kafka ProducerPerformance",
    "ratio_megabytes_per_second": "MB/s of `streamops generate` / Kafka ProducerPerformance",
    "ratio_sinks_to_no_op": "orders/s with the real sinks / with no-op sinks (same job, same run)",
    "ratio_no_op_to_consumer_perf": (
        "orders/s of the orders job with no-op sinks / records/s Kafka's ConsumerPerformance "
        "reads of the same topic (its group join left out; best rounds, same run)"
    ),
    "ratio_sink_to_load_data": (
        "rows/s of the MariaDB sink's upsert (default strategy and chunk size) / LOAD DATA LOCAL "
        "INFILE of the same rows into the same scratch table, per case (REPLACE for update)"
    ),
    "ratio_help_to_interpreter": "`streamops --help` wall time / `python -c pass` (same run)",
    "ratio_join_to_parse": "records/s through orders ⋈ payments / through parsing both topics only",
    "ratio_sustained_pairs_to_send_rate": (
        "join pairs/s written while sending / orders/s sent per topic (≈ 0.98 at most: malformed "
        "and duplicate records make no pair)"
    ),
    "ratio_pipeline_to_parse": (
        "readings/s drained by the three vitals queries with every sink / by the Kafka source and "
        "parser into the noop sink (same topic, same run)"
    ),
    "ratio_realtime_to_microbatch_p50": (
        "median latency, crossing line acknowledged → alert visible, with the real-time query / "
        "in micro-batch mode, per place (below 1 = real-time is faster)"
    ),
    "ratio_realtime_jvm_to_microbatch_p50": (
        "median latency, crossing line acknowledged → alert visible, with the real-time query in "
        "the JVM (Kafka sink, then the feed to Redis and MariaDB) / in micro-batch mode, per place"
    ),
    "ratio_start_with_archive_to_without": (
        "seconds (CPU seconds for `cpu`) of a cold Spark driver with the class-data archive of "
        "`streamops install` / without it, same probe, alternating, same run (below 1 = faster)"
    ),
    "ratio_precision": (
        "precision of the MLlib vitals anomaly model / the z-score baseline (same labelled "
        "readings, same run)"
    ),
    "ratio_recall": (
        "recall of the MLlib vitals anomaly model / the z-score baseline (same labelled readings, "
        "same run)"
    ),
    "ratio_f1": (
        "F1 of the MLlib vitals anomaly model / the z-score baseline (same labelled readings, "
        "same run)"
    ),
    "ratio_f1_selected": (
        "test F1 of the MLlib variant with the best F1 on held-out validation readings / the "
        "z-score baseline's (same test readings, same run)"
    ),
    "ratio_train_seconds": (
        "seconds to train the MLlib vitals model / the z-score baselines (same history, same run)"
    ),
    "ratio_score_seconds": (
        "seconds to score the test readings with the MLlib vitals model / the z-score model "
        "(same run)"
    ),
    "ratio_to_produce_rate": (
        "lines/s counted end to end by the micro-batch job / lines/s the producer sent"
    ),
}


def discover() -> dict[str, str]:
    """Benchmark name → module name, for every ``bench_*.py`` beside this file."""
    return {
        info.name.removeprefix(PREFIX): f"{benchmarks.__name__}.{info.name}"
        for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda i: i.name)
        if info.name.startswith(PREFIX)
    }


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "git_commit": _git_commit(),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def quick_environment(name: str, module: ModuleType) -> dict[str, str]:
    """The variables that make benchmark ``name`` small (empty when it has no quick sizes)."""
    own = getattr(module, "QUICK_ENV", None)
    if isinstance(own, Mapping):
        return {str(k): str(v) for k, v in own.items()}
    return dict(QUICK_ENVIRONMENT.get(name, {}))


@contextlib.contextmanager
def environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Set ``variables`` for the duration, except those the caller set already (theirs win)."""
    added = {k: v for k, v in variables.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def run_benchmark(name: str, module_name: str, output: Path, *, quick: bool = False) -> Path:
    """Run one benchmark and write its JSON report into ``output``; returns the file."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise BenchmarkError(f"cannot import {module_name}: {error}") from error
    settings = load_settings()
    started = datetime.now(UTC)
    clock = time.monotonic()
    variables = {OUTPUT_ENV: str(output), **(quick_environment(name, module) if quick else {})}
    output.mkdir(parents=True, exist_ok=True)
    with environment(variables):
        results = module.run(settings)
    report = {
        "benchmark": name,
        "started_at": started.isoformat(timespec="seconds"),
        "duration_seconds": round(time.monotonic() - clock, 3),
        "quick": quick,
        "environment": {k: os.environ.get(k, v) for k, v in variables.items() if k != OUTPUT_ENV},
        "machine": machine_info(),
        "results": results,
    }
    output.mkdir(parents=True, exist_ok=True)
    path = output / f"{name}-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    return path


# --- the summary of a run -----------------------------------------------------------------------


def ratios(results: Any, path: str = "") -> dict[str, float]:
    """Every numeric ``ratio_*`` value anywhere in ``results``, by its dotted path. A ``ratio_*``
    holding a mapping of numbers (one ratio per place, say) gives one entry per number."""
    found: dict[str, float] = {}
    if isinstance(results, Mapping):
        for key, value in results.items():
            where = f"{path}.{key}" if path else str(key)
            if str(key).startswith("ratio_") and _is_number(value):
                found[where] = float(value)
            elif str(key).startswith("ratio_") and isinstance(value, Mapping):
                found.update(
                    {f"{where}.{part}": float(v) for part, v in value.items() if _is_number(v)}
                )
            else:
                found.update(ratios(value, where))
    return found


def ratio_label(path: str) -> str:
    """A ratio's dotted path without the mappings above its ``ratio_*`` key: ``ratio_x`` or,
    for one of a mapping of ratios, ``ratio_x.part``."""
    parts = path.split(".")
    named = [index for index, part in enumerate(parts) if part.startswith("ratio_")]
    return ".".join(parts[named[-1] :]) if named else parts[-1]


def ratio_baseline(path: str) -> str:
    """What the ratio at ``path`` compares (:data:`RATIO_BASELINES`), or where to look."""
    name = ratio_label(path).split(".", 1)[0]
    return RATIO_BASELINES.get(name, "see the benchmark's README")


def is_time_series(value: Any) -> bool:
    """A non-empty list of mappings that each have a numeric ``elapsed_seconds``: samples over
    time, which belong in a chart rather than in a table of numbers."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(item, Mapping) and _is_number(item.get("elapsed_seconds")) for item in value
        )
    )


# Not headline numbers: per-repeat lists (their medians and bests are), and the run's context
# (the load averages too: the JSON keeps them, the results come first in the table).
SKIPPED_KEYS = frozenset({"runs", "machine", "environment", "versions", "job_config"})
SKIPPED_PREFIXES = ("ratio_", "load_average")


def headline_numbers(results: Any, path: str = "", limit: int = 40) -> dict[str, float]:
    """Numeric leaves of ``results`` by dotted path, without the per-repeat ``runs`` lists (the
    medians and bests above them already summarise those) and without time series (they are
    charted: :func:`state_series`), at most ``limit`` of them."""
    found: dict[str, float] = {}

    def walk(value: Any, where: str) -> None:
        if len(found) >= limit:
            return
        if isinstance(value, Mapping):
            for key, item in value.items():
                # Ratios have their own table (ratios), with what each compares.
                if key not in SKIPPED_KEYS and not str(key).startswith(SKIPPED_PREFIXES):
                    walk(item, f"{where}.{key}" if where else str(key))
        elif isinstance(value, list):
            if is_time_series(value):
                return
            for index, item in enumerate(value):
                label = item.get("target_rate", index) if isinstance(item, Mapping) else index
                walk(item, f"{where}[{label}]")
        elif _is_number(value):
            found[where] = float(value)

    walk(results, path)
    return found


def state_series(results: Any, path: str = "") -> dict[str, list[tuple[float, float]]]:
    """State size over time: (seconds, state rows) of every time series in ``results`` whose
    samples hold ``state_rows`` (named by the series' dotted path) or, per query, under
    ``queries`` (named ``<path>.<query>``). Points sorted by time; samples without a number for
    a series are skipped."""
    found: dict[str, list[tuple[float, float]]] = {}
    if isinstance(results, Mapping):
        for key, value in results.items():
            found.update(state_series(value, f"{path}.{key}" if path else str(key)))
    elif is_time_series(results):
        series: dict[str, list[tuple[float, float]]] = {}
        for sample in results:
            seconds = float(sample["elapsed_seconds"])
            if _is_number(sample.get("state_rows")):
                series.setdefault(path, []).append((seconds, float(sample["state_rows"])))
            queries = sample.get("queries")
            if isinstance(queries, Mapping):
                for query, figures in queries.items():
                    if isinstance(figures, Mapping) and _is_number(figures.get("state_rows")):
                        rows = float(figures["state_rows"])
                        series.setdefault(f"{path}.{query}", []).append((seconds, rows))
        found.update({name: sorted(points) for name, points in series.items()})
    elif isinstance(results, list):
        for index, value in enumerate(results):
            label = value.get("target_rate", index) if isinstance(value, Mapping) else index
            found.update(state_series(value, f"{path}[{label}]"))
    return found


def latency_percentiles(results: Any, path: str = "") -> dict[str, dict[str, float]]:
    """Every mapping holding ``p50_ms`` (and ``p95_ms``/``p99_ms``), by its dotted path."""
    found: dict[str, dict[str, float]] = {}
    if isinstance(results, Mapping):
        if _is_number(results.get("p50_ms")):
            found[path or "latency"] = {
                p: float(results[f"{p}_ms"])
                for p in ("p50", "p95", "p99")
                if _is_number(results.get(f"{p}_ms"))
            }
        for key, value in results.items():
            if key != "runs":
                found.update(latency_percentiles(value, f"{path}.{key}" if path else str(key)))
    elif isinstance(results, list):
        for index, value in enumerate(results):
            label = value.get("target_rate", index) if isinstance(value, Mapping) else index
            found.update(latency_percentiles(value, f"{path}[{label}]"))
    return found


def offered_rates(results: Any, path: str = "") -> dict[str, list[tuple[float, float]]]:
    """Lists of entries with ``target_rate`` and ``achieved_rate``: (offered, achieved) each."""
    found: dict[str, list[tuple[float, float]]] = {}
    if isinstance(results, Mapping):
        for key, value in results.items():
            found.update(offered_rates(value, f"{path}.{key}" if path else str(key)))
    elif isinstance(results, list):
        points = [
            (float(entry["target_rate"]), float(entry["achieved_rate"]))
            for entry in results
            if isinstance(entry, Mapping)
            and _is_number(entry.get("target_rate"))
            and _is_number(entry.get("achieved_rate"))
        ]
        if points:
            found[path] = sorted(points)
    return found


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def summary_markdown(
    run: str,
    reports: Mapping[str, Mapping[str, Any]],
    failures: Mapping[str, str],
    plots: Mapping[str, list[Path]],
    folder: Path,
    *,
    quick: bool,
) -> str:
    """The run's ``summary.md``: per benchmark its ratios (1.0 = its same-run baseline), headline
    numbers and charts; failures with their reason."""
    machine = next(iter(reports.values()))["machine"] if reports else machine_info()
    lines = [
        f"# Benchmark run {run}",
        "",
        f"- mode: {QUICK_NOTE if quick else 'full'}",
        f"- machine: {machine.get('cpu_model')}, {machine.get('logical_cpus')} CPUs, "
        f"{(machine.get('memory_bytes') or 0) / 2**30:.1f} GiB, Python {machine.get('python')}",
        f"- commit: `{machine.get('git_commit')}`",
        "",
        "| benchmark | result | seconds | ratios against the same-run baseline |",
        "|---|---|---|---|",
    ]
    for name, report in reports.items():
        found = ratios(report["results"])
        text = ", ".join(f"{ratio_label(key)} = {value:.3f}" for key, value in found.items())
        lines.append(f"| {name} | ok | {report['duration_seconds']:.0f} | {text or '–'} |")
    for name, reason in failures.items():
        lines.append(f"| {name} | **failed** | – | {_cell(reason)} |")
    for name, report in reports.items():
        lines += ["", f"## {name}", ""]
        found = ratios(report["results"])
        if found:
            lines += ["| ratio | value | compares (1.0 = the baseline) |", "|---|---|---|"]
            for key, value in found.items():
                lines.append(f"| `{key}` | {value:.3f} | {ratio_baseline(key)} |")
            lines.append("")
        numbers = headline_numbers(report["results"])
        if numbers:
            lines += ["| figure | value |", "|---|---|"]
            lines += [f"| `{key}` | {_number(value)} |" for key, value in numbers.items()]
            lines.append("")
        for png in plots.get(name, []):
            lines += [f"![{png.stem}]({png.relative_to(folder).as_posix()})", ""]
    shared = plots.get("", [])
    if shared:
        lines += ["", "## Across benchmarks", ""]
        for png in shared:
            lines += [f"![{png.stem}]({png.relative_to(folder).as_posix()})", ""]
    for name, reason in failures.items():
        lines += ["", f"## {name}: failed", "", "```", reason.strip(), "```"]
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.4g}"


def _cell(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first.replace("|", "\\|")[:160]


def main(argv: list[str] | None = None) -> int:
    available = discover()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.runner", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument(
        "--output",
        type=Path,
        default=default_output(),
        help="results folder (default: benchmarks/results/ of a source checkout, else "
        "./benchmark-results/)",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args(argv)

    if args.list:
        print("\n".join(available))
        return 0
    names = [name.removeprefix(PREFIX) for name in args.names] or list(available)
    unknown = [name for name in names if name not in available]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(available)}")

    failures = 0
    for name in names:
        print(f"running {name} ...", file=sys.stderr)
        try:
            path = run_benchmark(name, available[name], args.output, quick=args.quick)
        except BenchmarkError as error:
            failures += 1
            print(f"{name}: {error}", file=sys.stderr)
            continue
        print(f"{name}: wrote {path}", file=sys.stderr)
        print(path.read_text())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
