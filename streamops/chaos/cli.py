"""`streamops chaos`: mounted by ``streamops.cli`` with ``app.command("chaos")(chaos)``. The run
itself and the CLI's helpers are imported inside the command: ``streamops --help`` should not
load psutil, Kafka and Airflow clients."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

if TYPE_CHECKING:
    from streamops.chaos.run import ChaosOptions

# Written out rather than read from streamops.chaos.faults, whose imports would slow every
# `streamops --help`; tests/unit/test_chaos_report.py keeps the two in step.
FAULT_KINDS_HELP = (
    "kill_shell, kill_jvm, kill_driver, kill_worker (a pipeline's processes); "
    "kill_scheduler, kill_triggerer, kill_dag_processor (an Airflow component, started again "
    "5 s later); restart_kafka, stop_mariadb, stop_redis (an outage of --outage); "
    "kill_point_revenue, kill_point_chunks (a driver killed inside a sink write)"
)
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def chaos(
    duration: Annotated[
        str,
        typer.Option(
            help="How long to inject faults: 30m, 90s, 1h (then recovery, catch-up and checks)."
        ),
    ] = "30m",
    seed: Annotated[
        int, typer.Option(help="Seed of the random schedule: the same seed, the same faults.")
    ] = 0,
    faults: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional here
        typer.Option(
            help=f"Comma-separated fault kinds to draw from (default: all): {FAULT_KINDS_HELP}."
        ),
    ] = None,
    outage: Annotated[
        str, typer.Option(help="How long Kafka, MariaDB or Redis stays stopped: 60s, 2m.")
    ] = "60s",
    recovery_timeout: Annotated[
        str,
        typer.Option(help="A pipeline not caught up this long after a fault's end: not recovered."),
    ] = "5m",
    output: Annotated[
        Optional[Path],  # noqa: UP045 - typer needs Optional here
        typer.Option(help="Folder for chaos-<time>.json and its charts (default <state>/chaos)."),
    ] = None,
    max_faults: Annotated[
        Optional[int],  # noqa: UP045 - typer needs Optional here
        typer.Option(help="Stop after this many faults, even before --duration is up."),
    ] = None,
) -> None:
    """Break the running platform at random times (killed processes, Airflow components and
    services down) and prove it recovers within 60 s, loses and duplicates nothing, and that the
    supervisor's word matched the truth. Exit code: 0 passed, 1 a check failed (or the run could
    not start), 2 bad options, 130 interrupted."""
    from streamops.cli._app import console, err_console, fail, settings

    try:
        options = parse_options(
            duration=duration,
            seed=seed,
            faults=faults,
            outage=outage,
            recovery_timeout=recovery_timeout,
            output=output,
            max_faults=max_faults,
        )
    except ValueError as error:
        fail(str(error), code=EXIT_USAGE)

    from streamops.chaos.run import ChaosError, LiveStatus, run_chaos
    from streamops.soak.cli import print_files, run_with_progress

    cfg = settings()
    console.print(
        f"chaos: {duration} of faults ({faults or 'all kinds'}), seed {options.seed}, "
        f"against the platform of {cfg.state_dir}",
        highlight=False,
    )

    def describe(status: LiveStatus) -> str:
        return f"{status.phase}: {status.line}" if status.line else status.phase

    try:
        result = run_with_progress(
            console,
            "chaos",
            options.duration_seconds,
            lambda on_status, on_note: run_chaos(
                cfg, options, on_status=on_status, on_note=on_note
            ),
            describe=describe,
            # Notes quote log lines and lists: "[CONCURRENT_STREAM_LOG_UPDATE]" is no markup.
            markup=False,
        )
    except ChaosError as error:
        fail(str(error), code=EXIT_FAILED)
    report = result.report
    _print_summary(console, report)
    print_files(console, err_console, result)
    _print_verdict(console, report)
    if report.get("interrupted"):
        fail(
            "the chaos run was interrupted; the report covers the time until then.",
            code=EXIT_INTERRUPTED,
        )
    if not report["passed"]:
        raise typer.Exit(EXIT_FAILED)


def parse_options(
    *,
    duration: str,
    seed: int,
    faults: str | None,
    outage: str,
    recovery_timeout: str,
    output: Path | None,
    max_faults: int | None = None,
) -> ChaosOptions:
    """The command line's words as :class:`ChaosOptions`; ValueError naming the option (durations
    here, the rest by ``ChaosOptions`` itself: an unknown fault kind, a negative seed...)."""
    from streamops.soak.stats import parse_duration

    seconds = {}
    for option, text in (
        ("--duration", duration),
        ("--outage", outage),
        ("--recovery-timeout", recovery_timeout),
    ):
        try:
            seconds[option] = parse_duration(text)
        except ValueError as error:
            raise ValueError(f"{option}: {error}") from None
    chosen: dict[str, Any] = {}
    if faults is not None:
        kinds = tuple(kind.strip() for kind in faults.split(",") if kind.strip())
        if not kinds:
            raise ValueError(
                "--faults: no fault kind given; name one or more, comma-separated, e.g. "
                "kill_driver,stop_redis (or leave the option out for all)"
            )
        chosen["faults"] = kinds

    from streamops.chaos.run import ChaosOptions

    return ChaosOptions(
        duration_seconds=seconds["--duration"],
        seed=seed,
        outage_seconds=seconds["--outage"],
        recovery_timeout_seconds=seconds["--recovery-timeout"],
        output_dir=output,
        max_faults=max_faults,
        **chosen,
    )


def _print_summary(console: Any, report: dict[str, Any]) -> None:
    from streamops.chaos.report import TEXT_COLUMNS, summary_tables
    from streamops.soak.cli import print_tables

    print_tables(console, summary_tables(report), text_columns=TEXT_COLUMNS)
    recovery = report["recovery"]
    console.print(
        f"{len(report['faults'])} faults in {report['duration_seconds']:.0f} s: "
        f"{recovery['recovered']} of the {recovery['count']} injected recovered",
        highlight=False,
    )


def _print_verdict(console: Any, report: dict[str, Any]) -> None:
    if report["passed"]:
        console.print("verdict: [bold green]PASS[/]", highlight=False)
        return
    console.print("verdict: [bold red]FAIL[/]", highlight=False)
    for failure in report.get("failures", []):
        console.print(f"  - {failure}", highlight=False, markup=False)
