"""Run the benchmarks and keep their results as JSON.

    python -m benchmarks.runner [NAME ...] [--output benchmarks/results/] [--list]

A benchmark is a module ``benchmarks/bench_<name>.py`` with ``run(settings) -> dict``. Each run
writes ``<output>/<name>-<UTC timestamp>.json`` holding the machine, the time and the results, so
numbers from different commits and machines can be put side by side.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import benchmarks
from benchmarks import BenchmarkError
from streamops.config import load_settings

PREFIX = "bench_"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results"


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


def run_benchmark(name: str, module_name: str, output: Path) -> Path:
    module = importlib.import_module(module_name)
    settings = load_settings()
    started = datetime.now(UTC)
    clock = time.monotonic()
    results = module.run(settings)
    report = {
        "benchmark": name,
        "started_at": started.isoformat(timespec="seconds"),
        "duration_seconds": round(time.monotonic() - clock, 3),
        "machine": machine_info(),
        "results": results,
    }
    output.mkdir(parents=True, exist_ok=True)
    path = output / f"{name}-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    available = discover()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.runner", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results folder")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
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
            path = run_benchmark(name, available[name], args.output)
        except BenchmarkError as error:
            failures += 1
            print(f"{name}: {error}", file=sys.stderr)
            continue
        print(f"{name}: wrote {path}", file=sys.stderr)
        print(path.read_text())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
