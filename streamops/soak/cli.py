"""`streamops soak`: mounted by ``streamops.cli`` with ``app.command("soak")(soak)``; the CLI's
helpers (console, settings, fail) are imported lazily because that module imports this one."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

# A one-line summary above the progress bar this often, so a long soak leaves a trail.
SUMMARY_EVERY_SECONDS = 60.0


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
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from streamops.cli import console, err_console, fail, settings
    from streamops.soak.probes import SoakError
    from streamops.soak.run import LiveStatus, SoakOptions, run_soak
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
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]soak"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("of"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[detail]}"),
        console=console,
    )
    last_summary = [time.monotonic()]

    def on_status(status: LiveStatus) -> None:
        progress.update(
            task, completed=min(status.elapsed_seconds, status.duration_seconds), detail=status.line
        )
        if time.monotonic() - last_summary[0] >= SUMMARY_EVERY_SECONDS:
            last_summary[0] = time.monotonic()
            progress.console.print(f"{status.elapsed_seconds / 60:5.1f} min  {status.line}")

    console.print(
        f"soak: {duration} of probes every {probe_interval} against the platform of "
        f"{cfg.state_dir} (Kafka {cfg.kafka_bootstrap_servers})"
    )
    with progress:
        task = progress.add_task("soak", total=options.duration_seconds, detail="starting")
        try:
            result = run_soak(
                cfg,
                options,
                on_status=on_status,
                on_note=lambda text: progress.console.print(text, highlight=False),
            )
        except SoakError as error:
            progress.stop()
            fail(str(error))
    _print_summary(console, result.report)
    for warning in result.warnings:
        err_console.print(f"warning: {warning}", highlight=False)
    if result.json_path is not None:
        console.print(f"report: {result.json_path}")
    for chart in result.plots:
        console.print(f"chart: {chart}")
    if result.report["interrupted"]:
        fail("the soak was interrupted; the report covers the time until then.", code=130)


def _print_summary(console: Any, report: dict[str, Any]) -> None:
    from rich.table import Table

    from streamops.soak.report import summary_tables

    for title, columns, rows in summary_tables(report):
        table = Table(title=title, show_header=True, header_style="bold", title_justify="left")
        for index, column in enumerate(columns):
            table.add_column(column, justify="left" if index == 0 else "right")
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
    headline = report["headline"]
    console.print(
        f"targets: {headline['targets_passed']} passed, {headline['targets_failed']} failed; "
        f"{headline['probes_sent']} probes in {report['duration_seconds']:.0f} s",
        highlight=False,
    )
