"""`streamops soak`: mounted by ``streamops.cli`` with ``app.command("soak")(soak)``. The soak's
own modules and the CLI's helpers are imported inside the command, so ``streamops --help`` loads
none of them."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

# A one-line summary above the progress bar this often, so a long soak leaves a trail.
SUMMARY_EVERY_SECONDS = 60.0

_R = TypeVar("_R")


def soak(
    duration: Annotated[
        str, typer.Option(help="How long to send probes: 30m, 90s, 1h (then up to the time-out).")
    ] = "30m",
    probe_interval: Annotated[
        str, typer.Option(help="Time between probes (five small records each): 5s, 10s.")
    ] = "5s",
    output: Annotated[
        Optional[Path],  # noqa: UP045 - typer needs Optional here
        typer.Option(help="Folder for soak-<time>.json and its charts (default <state>/soak)."),
    ] = None,
    timeout_seconds: Annotated[
        float,
        typer.Option(min=1, help="An output not visible this long after its probe is a miss."),
    ] = 120.0,
) -> None:
    """Soak the running platform: probe every output's latency, sample each component's CPU and
    memory and each pipeline's health, and report targets (pass/fail; the exit code is 0 when
    the soak ran, whatever the targets say)."""
    from streamops.cli._app import console, err_console, fail, settings
    from streamops.soak.probes import SoakError
    from streamops.soak.run import SoakOptions, run_soak
    from streamops.soak.stats import parse_duration

    try:
        options = SoakOptions(
            duration_seconds=parse_duration(duration),
            probe_interval_seconds=parse_duration(probe_interval),
            timeout_seconds=timeout_seconds,
            output_dir=output,
        )
    except ValueError as error:
        fail(str(error), code=2)
    cfg = settings()
    console.print(
        f"soak: {duration} of probes every {probe_interval} against the platform of "
        f"{cfg.state_dir} (Kafka {cfg.kafka_bootstrap_servers})"
    )
    try:
        result = run_with_progress(
            console,
            "soak",
            options.duration_seconds,
            lambda on_status, on_note: run_soak(cfg, options, on_status=on_status, on_note=on_note),
        )
    except SoakError as error:
        fail(str(error))
    _print_summary(console, result.report)
    print_files(console, err_console, result)
    if result.report["interrupted"]:
        fail("the soak was interrupted; the report covers the time until then.", code=130)


def run_with_progress(
    console: Any,
    label: str,
    total_seconds: float,
    run: Callable[[Callable[[Any], None], Callable[[str], None]], _R],
    *,
    describe: Callable[[Any], str] = lambda status: status.line,
    markup: bool = True,
) -> _R:
    """``run(on_status, on_note)`` under a progress bar of ``total_seconds`` (``streamops chaos``
    runs so too). A status (``elapsed_seconds``, ``duration_seconds``, ...) moves the bar and shows
    ``describe(status)``, also printed above the bar every :data:`SUMMARY_EVERY_SECONDS`; a note
    is printed above the bar (``markup=False``: brackets and all). An exception from ``run``
    passes through once the bar has stopped."""
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        SpinnerColumn(),
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("of"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[detail]}"),
        console=console,
    )
    last_summary = [time.monotonic()]

    def on_status(status: Any) -> None:
        line = describe(status)
        progress.update(
            task, completed=min(status.elapsed_seconds, status.duration_seconds), detail=line
        )
        if time.monotonic() - last_summary[0] >= SUMMARY_EVERY_SECONDS:
            last_summary[0] = time.monotonic()
            progress.console.print(f"{status.elapsed_seconds / 60:5.1f} min  {line}")

    with progress:
        task = progress.add_task(label, total=total_seconds, detail="starting")
        return run(
            on_status, lambda text: progress.console.print(text, highlight=False, markup=markup)
        )


def print_files(console: Any, err_console: Any, result: Any) -> None:
    """A run's ``warnings`` (to stderr), then the paths of its report (``json_path``) and of its
    charts (``plots``)."""
    for warning in result.warnings:
        err_console.print(f"warning: {warning}", highlight=False)
    if result.json_path is not None:
        console.print(f"report: {result.json_path}")
    for chart in result.plots:
        console.print(f"chart: {chart}")


def _print_summary(console: Any, report: dict[str, Any]) -> None:
    from streamops.soak.report import summary_tables

    print_tables(console, summary_tables(report))
    headline = report["headline"]
    console.print(
        f"targets: {headline['targets_passed']} passed, {headline['targets_failed']} failed; "
        f"{headline['probes_sent']} probes in {report['duration_seconds']:.0f} s",
        highlight=False,
    )


def print_tables(
    console: Any,
    tables: Iterable[tuple[str, Sequence[str], Sequence[Sequence[str]]]],
    *,
    text_columns: Collection[str] = (),
) -> None:
    """Each (title, columns, rows) as a rich table: the first column and ``text_columns`` left,
    figures right, and the cells "pass" and "FAIL" in green and red (``streamops chaos`` prints
    its own so too)."""
    from rich.table import Table

    for title, columns, rows in tables:
        table = Table(title=title, show_header=True, header_style="bold", title_justify="left")
        for index, column in enumerate(columns):
            left = index == 0 or column in text_columns
            table.add_column(column, justify="left" if left else "right")
        for row in rows:
            styled = [
                f"[red]{cell}[/]"
                if cell == "FAIL"
                else f"[green]{cell}[/]"
                if cell == "pass"
                else cell
                for cell in row
            ]
            table.add_row(*styled)
        console.print(table)
