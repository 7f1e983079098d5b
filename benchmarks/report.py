"""The run behind `streamops bench`: every benchmark (or the chosen ones) into one report folder.

    python -m benchmarks.report [--only NAME ...] [--skip NAME ...] [--quick] [--output FOLDER]
    python -m benchmarks.report --list

    <output>/<run>/<name>-<time>.json   each benchmark's results (benchmarks/runner.py)
    <output>/<run>/*.png                charts: the benchmarks' own, plus per benchmark its ratios,
                                        latency percentiles, throughput against offered rate and
                                        state size over time
    <output>/<run>/summary.md           ratios against their same-run baselines, numbers

``<output>`` is ``benchmarks/results/`` of a source checkout, else ``./benchmark-results/``
(:func:`benchmarks.default_output`). `streamops bench` starts this module as a child process and
passes its exit code on: the CLI never imports the benchmarks, which load Spark.

Benchmarks are found by the runner's discovery (``bench_*.py``), so a new one is in the next run
without an edit here. While they run, a sampler reads the queries' progress hashes in Redis
(``streamops:query:*``, written by every job's listener, benchmarks' scratch jobs included) once
a second: it feeds the progress line, and the state-size chart of a benchmark whose JSON holds
no state time series of its own (see ``runner.state_series``).

Exit codes: 0 every benchmark ran, 1 one failed or the stack is down, 2 a wrong name or option.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console

from benchmarks import BenchmarkError, default_output, plots, runner
from streamops.clients import redis_client
from streamops.config import Settings, load_settings
from streamops.contract.redis_keys import QUERY_KEY_PATTERN, QUERY_KEY_PREFIX

console = Console()
err_console = Console(stderr=True, soft_wrap=True)
EXIT_FAILED = 1
EXIT_USAGE = 2

SAMPLE_INTERVAL_SECONDS = 1.0
MAX_RATE_BARS = 8


@dataclass
class QuerySample:
    at: float  # seconds since the run started
    query: str  # <pipeline>:<query_name>
    state_rows: int | None
    rows_per_second: float | None
    batch_id: int | None


@dataclass
class QuerySampler:
    """Polls Redis for the progress of every query that reports during the run (a thread)."""

    settings: Settings
    started: float = field(default_factory=time.time)
    samples: list[QuerySample] = field(default_factory=list)
    latest: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> QuerySampler:
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        import redis

        client = redis_client(self.settings, timeout_seconds=2, decode_responses=True)
        seen: dict[str, str] = {}
        try:
            while not self._stop.wait(SAMPLE_INTERVAL_SECONDS):
                try:
                    self._sample(client, seen)
                except redis.RedisError as error:
                    self.latest = f"(Redis: {error})"
        finally:
            client.close()

    def _sample(self, client: Any, seen: dict[str, str]) -> None:
        import redis

        now = time.time()
        for key in client.scan_iter(match=QUERY_KEY_PATTERN, count=200):
            if key.count(":") < 3:
                continue
            try:
                fields = client.hgetall(key)
            except redis.ResponseError:  # a key of another type: not a query hash
                continue
            # A query hash counts as this run's when its heartbeat is newer than the run's start.
            heartbeat = _float(fields.get("heartbeat_at"))
            if heartbeat is None or heartbeat < self.started:
                continue
            batch = fields.get("batch_id", "")
            query = key.removeprefix(f"{QUERY_KEY_PREFIX}:")
            if seen.get(query) == batch:
                continue  # no new batch since the last sample
            seen[query] = batch
            sample = QuerySample(
                at=round(now - self.started, 1),
                query=query,
                state_rows=_int(fields.get("state_rows")),
                rows_per_second=_float(fields.get("processed_rows_per_second")),
                batch_id=_int(batch),
            )
            self.samples.append(sample)
            rate = f", {sample.rows_per_second:,.0f} rows/s" if sample.rows_per_second else ""
            state = f", state {sample.state_rows:,} rows" if sample.state_rows else ""
            self.latest = f"{query} batch {batch}{rate}{state}"


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _int(text: str | None) -> int | None:
    number = _float(text)
    return None if number is None else int(number)


def _run_all(
    available: Mapping[str, str],
    names: list[str],
    folder: Path,
    quick: bool,
    cfg: Settings,
) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, tuple[float, float]], QuerySampler]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    reports: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    spans: dict[str, tuple[float, float]] = {}
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
        console=console,
    )
    with QuerySampler(cfg) as sampler, progress:
        overall = progress.add_task("benchmarks", total=len(names), detail="")
        for name in names:
            progress.update(overall, description=name, detail="starting")
            start = time.time() - sampler.started
            done = threading.Event()

            def follow(task: TaskID = overall, finished: threading.Event = done) -> None:
                # The progress line follows the newest batch of any query while the run lasts.
                while not finished.wait(SAMPLE_INTERVAL_SECONDS):
                    progress.update(task, detail=sampler.latest)

            watcher = threading.Thread(target=follow, daemon=True)
            watcher.start()
            try:
                path = runner.run_benchmark(name, available[name], folder, quick=quick)
                reports[name] = json.loads(path.read_text())
            except BenchmarkError as error:
                failures[name] = str(error)
            except Exception as error:  # one broken benchmark must not end the run
                failures[name] = f"{type(error).__name__}: {error}"
            finally:
                done.set()
                watcher.join(timeout=5)
            spans[name] = (start, time.time() - sampler.started)
            status = "failed" if name in failures else "done"
            progress.console.print(f"{name}: {status} in {spans[name][1] - start:.0f} s")
            progress.update(overall, advance=1, detail="")
    return reports, failures, spans, sampler


def _draw(
    reports: Mapping[str, Mapping[str, Any]],
    spans: Mapping[str, tuple[float, float]],
    sampler: QuerySampler,
    folder: Path,
) -> dict[str, list[Path]]:
    """The charts of the run, by benchmark ("" = across benchmarks)."""
    charts: dict[str, list[Path]] = {}
    for name, report in reports.items():
        results = report["results"]
        own = sorted(p for p in folder.glob(f"{name}-*.png"))
        drawn: list[Path] = []
        found = runner.ratios(results)
        if found:
            drawn.append(
                plots.bar_chart(
                    folder / f"report-{name}-ratios.png",
                    title=f"{name}: ratios against the same-run baseline",
                    labels=[runner.ratio_label(key).removeprefix("ratio_") for key in found],
                    values=list(found.values()),
                    ylabel="ratio (1.0 = baseline)",
                    reference=1.0,
                    reference_label="baseline",
                    value_format="{:.2f}",
                )
            )
        latency = runner.latency_percentiles(results)
        if latency:
            groups = list(latency)
            drawn.append(
                plots.grouped_bars(
                    folder / f"report-{name}-latency.png",
                    title=f"{name}: latency percentiles",
                    panels={
                        name: {
                            p: [latency[g].get(p) for g in groups] for p in ("p50", "p95", "p99")
                        }
                    },
                    groups=[_short(g) for g in groups],
                    ylabel="milliseconds",
                    label=lambda value: f"{value:,.0f}",
                )
            )
        offered = runner.offered_rates(results)
        if offered:
            drawn.append(
                plots.line_chart(
                    folder / f"report-{name}-throughput-vs-offered.png",
                    title=f"{name}: throughput against offered rate",
                    series={_short(k): v for k, v in offered.items()},
                    xlabel="offered records/s",
                    ylabel="achieved records/s",
                    diagonal=True,
                )
            )
        rates = {
            key: value
            for key, value in runner.headline_numbers(results).items()
            # One unit per chart: record rates, not bytes.
            if key.endswith("_per_second") and not key.endswith("bytes_per_second")
        }
        if rates:
            chosen = dict(list(rates.items())[:MAX_RATE_BARS])
            drawn.append(
                plots.bar_chart(
                    folder / f"report-{name}-throughput.png",
                    title=f"{name}: throughput",
                    labels=[_short(key) for key in chosen],
                    values=list(chosen.values()),
                    ylabel="per second",
                )
            )
        state, xlabel = _state_over_time(results, sampler, spans[name])
        if state:
            drawn.append(
                plots.line_chart(
                    folder / f"report-{name}-state.png",
                    title=f"{name}: state size over time",
                    series=state,
                    xlabel=xlabel,
                    ylabel="state rows (all stateful operators)",
                )
            )
        charts[name] = own + drawn
    every = {
        f"{name}: {runner.ratio_label(key).removeprefix('ratio_')}": value
        for name, report in reports.items()
        for key, value in runner.ratios(report["results"]).items()
    }
    if every:
        charts[""] = [
            plots.bar_chart(
                folder / "report-ratios.png",
                title="Every ratio of the run (1.0 = its same-run baseline)",
                labels=list(every),
                values=list(every.values()),
                ylabel="ratio",
                reference=1.0,
                reference_label="baseline",
                value_format="{:.2f}",
            )
        ]
    return charts


def _state_over_time(
    results: Any, sampler: QuerySampler, span: tuple[float, float]
) -> tuple[dict[str, list[tuple[float, float]]], str]:
    """The state-size series of one benchmark and their x-axis label: the time series its JSON
    holds (in-process queries publish no Redis hash the sampler could read), else what the
    sampler saw of the queries that reported to Redis while it ran. A series that never held a
    row (a stateless query) is left out; no series at all when none did."""
    recorded = {
        key: points
        for key, points in runner.state_series(results).items()
        if any(rows for _, rows in points)
    }
    if recorded:
        parts = [key.rsplit(".", 1)[-1] for key in recorded]
        # The query's name alone, unless two series would share it.
        unique = len(set(parts)) == len(parts)
        labels = parts if unique else [_short(key) for key in recorded]
        return dict(zip(labels, recorded.values(), strict=True)), "seconds since the phase started"
    start, end = span
    sampled: dict[str, list[tuple[float, float]]] = {}
    for sample in sampler.samples:
        if start <= sample.at <= end and sample.state_rows is not None:
            sampled.setdefault(sample.query, []).append((sample.at - start, sample.state_rows))
    if not any(rows for points in sampled.values() for _, rows in points):
        return {}, ""
    return sampled, "seconds since the benchmark started"


def _short(path: str) -> str:
    """A dotted path as a chart label: generic parts dropped, the rest one per line."""
    parts = [part for part in path.split(".") if part not in ("median", "best", "results")]
    kept = parts if len(parts) <= 3 else [parts[0], *parts[-2:]]
    return "\n".join(kept)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise SystemExit(code)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--only", action="append", default=[], metavar="NAME")
    parser.add_argument("--skip", action="append", default=[], metavar="NAME")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--list", action="store_true", dest="list_only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    available = runner.discover()
    if args.list_only:
        for name in available:
            console.print(name)
        return 0
    names = [name.removeprefix(runner.PREFIX) for name in args.only] or list(available)
    skipped = {name.removeprefix(runner.PREFIX) for name in args.skip}
    unknown = [name for name in [*names, *skipped] if name not in available]
    names = [name for name in names if name not in skipped]
    if unknown:
        fail(
            f"Unknown benchmark {', '.join(unknown)}; the benchmarks are: {', '.join(available)}.",
            code=EXIT_USAGE,
        )
    cfg = load_settings()
    _require_stack(cfg)
    run = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}" + ("-quick" if args.quick else "")
    folder = (args.output or default_output()) / run
    folder.mkdir(parents=True, exist_ok=True)

    reports, failures, spans, sampler = _run_all(available, names, folder, args.quick, cfg)
    charts = _draw(reports, spans, sampler, folder)
    summary = folder / "summary.md"
    summary.write_text(
        runner.summary_markdown(run, reports, failures, charts, folder, quick=args.quick)
    )
    for name, report in reports.items():
        found = runner.ratios(report["results"])
        ratios = ", ".join(f"{runner.ratio_label(k)} {v:.3f}" for k, v in found.items())
        console.print(f"[green]{name}[/]: {report['duration_seconds']:.0f} s  {ratios}")
    for name, reason in failures.items():
        console.print(f"[red]{name} failed[/]: {reason}", highlight=False)
    console.print(f"summary: {summary}")
    return EXIT_FAILED if failures else 0


def _require_stack(cfg: Settings) -> None:
    from streamops.stack.kafka import Kafka
    from streamops.stack.mariadb import MariaDB
    from streamops.stack.redis import Redis

    down = [c.name for c in (Kafka(cfg), MariaDB(cfg), Redis(cfg)) if not c.health().healthy]
    if down:
        fail(
            f"The benchmarks need the local stack, and {', '.join(down)} is not running "
            f"(state folder {cfg.state_dir}). Start it with `streamops up --no-airflow` "
            "(or `make up`), then run `streamops bench` again."
        )


if __name__ == "__main__":
    sys.exit(main())
