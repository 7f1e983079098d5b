"""`streamops bench`: every benchmark on the local stack, into one report folder.

The run itself is ``python -m benchmarks.report`` (benchmarks/report.py), started here as a child
process on this interpreter: the benchmarks import the Spark jobs, and the core never imports
them (docs/adr/0006-layers-and-environments.md). The child writes to this terminal (its progress
bar, its lines, its errors), a Ctrl-C reaches it too, and its exit code is this command's.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Annotated, Optional

import typer

from streamops.cli._app import console, settings, spark_python

REPORT_MODULE = "benchmarks.report"


def bench(
    only: Annotated[
        Optional[list[str]],  # noqa: UP045 - typer needs Optional here
        typer.Option("--only", help="Run only this benchmark (repeatable); default: all."),
    ] = None,
    quick: Annotated[
        bool, typer.Option(help="Small sizes: a smoke run of minutes, not numbers to quote.")
    ] = False,
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            help="Results folder; the run gets a sub-folder (default: benchmarks/results/ in a "
            "source checkout, else ./benchmark-results/ in the current directory)."
        ),
    ] = None,
    list_only: Annotated[
        bool, typer.Option("--list", help="List the benchmarks and exit.")
    ] = False,
    skip: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option("--skip", help="Leave this benchmark out (repeatable)."),
    ] = None,
) -> None:
    """Run the benchmarks on the local stack; write JSON, PNG charts and a markdown summary."""
    cfg = settings()  # a bad setting fails here, before a child starts
    # The benchmarks run Spark in process: the Spark environment's interpreter runs them.
    python = spark_python(cfg)
    argv = [str(python), "-m", REPORT_MODULE, *report_options(only, skip, quick, output)]
    if list_only:
        argv.append("--list")
    env = {**os.environ, **cfg.as_env()}
    raise typer.Exit(_wait_for(subprocess.Popen(argv, env=env)))


def report_options(
    only: list[str] | None, skip: list[str] | None, quick: bool, output: Path | None
) -> list[str]:
    """The options of ``python -m benchmarks.report`` for this command's."""
    options = [f"--only={name}" for name in only or []]
    options += [f"--skip={name}" for name in skip or []]
    if quick:
        options.append("--quick")
    if output is not None:
        # The child runs in this directory too; absolute all the same, for its messages.
        options.append(f"--output={output.resolve()}")
    return options


def _wait_for(child: subprocess.Popen[bytes]) -> int:
    """The child's exit code (128 + the signal's number when a signal ended it). A Ctrl-C reached
    the child as well (one process group): wait while it stops and removes its scratch data."""
    while True:
        try:
            code = child.wait()
            break
        except KeyboardInterrupt:
            console.print("stopping: the benchmark removes its scratch topics and rows first")
    return 128 - code if code < 0 else code
