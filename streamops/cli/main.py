"""`streamops install|up|down|status|logs|reset|generate|run` and the `db` and `maintenance` groups:
install, run and inspect the local platform, and feed it data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from streamops.cli._app import (
    app,
    console,
    err_console,
    exit_on_streamops_error,
    fail,
    settings,
    spark_python,
)
from streamops.contract.topics import INPUT_TOPICS

db_app = typer.Typer(help="MariaDB schema: migrations and version.", no_args_is_help=True)
maintenance_app = typer.Typer(
    help="Maintenance by hand (the Airflow DAGs run it on schedule).", no_args_is_help=True
)


@app.command()
def install(
    skip_apt: Annotated[
        bool, typer.Option(help="Do not check or install Debian packages.")
    ] = False,
) -> None:
    """Install what is missing (Debian packages, Python venv, Kafka and Spark jars); idempotent."""
    from streamops import installer

    code = installer.main(["--skip-apt"] if skip_apt else [])
    raise typer.Exit(code)


@app.command("compose-secrets")
def compose_secrets(
    file: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="The file to write (default: deploy/compose.secrets.env)."),
    ] = None,
) -> None:
    """Generate docker compose's keys and passwords into a private, git-ignored file, once; an
    existing file is never overwritten (`make compose-up` runs this first)."""
    from streamops import compose_secrets as generator

    raise typer.Exit(generator.main(["--file", str(file)] if file else []))


@app.command()
@exit_on_streamops_error
def up(
    with_generator: Annotated[
        bool, typer.Option(help="Also feed every input topic with generated data.")
    ] = False,
    airflow: Annotated[bool, typer.Option(help="Start Airflow too.")] = True,
    pipelines: Annotated[
        bool,
        typer.Option(
            help="Enable the Airflow DAGs that run and supervise every pipeline's Spark job "
            "(needs Airflow); --no-pipelines leaves them as they are."
        ),
    ] = True,
    with_pipelines: Annotated[
        bool, typer.Option("--with-pipelines", hidden=True, help="Obsolete: the default now.")
    ] = False,
) -> None:
    """Start Kafka (KRaft), MariaDB, Redis and Airflow on loopback; create topics and schema;
    enable the supervision DAGs, so Airflow runs every pipeline's Spark job."""
    from streamops.stack import Stack

    if with_pipelines:
        err_console.print(
            "note: --with-pipelines is no longer needed: `up` runs every pipeline under "
            "Airflow's supervision by default (--no-pipelines to skip)."
        )
    if pipelines and not airflow:
        err_console.print("note: --no-airflow: the pipelines are not started (Airflow runs them).")
    cfg = settings()
    stack = Stack(cfg)
    started = time.monotonic()
    stack.up(
        with_airflow=airflow,
        with_pipelines=pipelines,
        with_generator=with_generator,
        report=console.print,
    )
    console.print(f"\n[bold green]streamops is up[/] in {time.monotonic() - started:.0f} s\n")
    table = Table(show_header=True, header_style="bold")
    table.add_column("service")
    table.add_column("address")
    table.add_row("Kafka", cfg.kafka_bootstrap_servers)
    table.add_row(
        "MariaDB",
        f"{cfg.mariadb_host}:{cfg.mariadb_port}/{cfg.mariadb_database} (user {cfg.mariadb_user})",
    )
    table.add_row("Redis", cfg.redis_url_redacted)
    table.add_row("Dashboard", cfg.dashboard_url)
    if airflow:
        table.add_row(
            "Airflow",
            f"{cfg.airflow_url}  (login {cfg.airflow_admin_user} / {cfg.airflow_admin_password})",
        )
    console.print(table)
    console.print(f"State folder: {cfg.state_dir}.  Stop with `streamops down`.")


@app.command()
@exit_on_streamops_error
def down() -> None:
    """Stop every service gracefully; all data stays in the state folder."""
    from streamops.stack import Stack

    Stack(settings()).down(report=console.print)
    console.print("all stopped")


@app.command()
@exit_on_streamops_error
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Each component: pid, ports, health and version, then the state folder's free space.
    Exits 1 when a service is not healthy or the disk is critical (90 % used or more)."""
    from streamops.disk import state_dir_status
    from streamops.stack import Stack

    cfg = settings()
    stack = Stack(cfg)
    statuses = stack.status()
    disk = state_dir_status(cfg.state_dir)
    if as_json:
        console.print_json(
            json.dumps(
                [
                    *(
                        {
                            "name": s.name,
                            "pid": s.pid,
                            "ports": s.ports,
                            "healthy": s.health.healthy,
                            "detail": s.health.detail,
                            "version": s.version,
                        }
                        for s in statuses
                    ),
                    # The same keys as a component, so a reader of the list needs no special case.
                    {
                        "name": "disk",
                        "pid": None,
                        "ports": {},
                        "healthy": disk.level != "critical",
                        "detail": disk.message,
                        "version": "",
                        **disk.as_dict(),
                    },
                ]
            )
        )
    else:
        table = Table(show_header=True, header_style="bold")
        for column in ("component", "pid", "ports", "health", "version"):
            table.add_column(column)
        for s in statuses:
            mark = "[green]healthy[/]" if s.health.healthy else "[red]down[/]"
            table.add_row(
                s.name,
                str(s.pid or "-"),
                ", ".join(str(p) for p in s.ports.values()) or "-",
                f"{mark} {s.health.detail}",
                s.version,
            )
        table.add_row("disk", "-", "-", f"{_DISK_MARKS[disk.level]} {disk.message}", "")
        console.print(table)
    core = {c.name for c in [*stack.services, *stack.airflow]}
    if not all(s.health.healthy for s in statuses if s.name in core) or disk.level == "critical":
        raise typer.Exit(1)


_DISK_MARKS = {
    "ok": "[green]ok[/]",
    "warning": "[yellow]warning[/]",
    "critical": "[red]critical[/]",
}


@app.command()
@exit_on_streamops_error
def logs(
    component: Annotated[str, typer.Argument(help="kafka, mariadb, redis, airflow-…, generator-…")],
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, help="Lines to show.")] = 50,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
) -> None:
    """Print the end of a component's log."""
    from streamops.stack import Stack
    from streamops.stack.base import tail

    target = Stack(settings()).component(component)
    if not target.log_path.exists():
        fail(f"{component} has no log yet at {target.log_path}: it has not been started.")
    if follow:
        subprocess.run(["tail", "-n", str(lines), "-F", str(target.log_path)], check=False)
    else:
        print(tail(target.log_path, lines))


@app.command()
@exit_on_streamops_error
def reset(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Stop everything and delete the state folder (all Kafka, MariaDB, Redis and Airflow data)."""
    from streamops.stack import Stack

    cfg = settings()
    if not yes and not typer.confirm(
        f"Delete {cfg.state_dir} with all Kafka, MariaDB, Redis and Airflow data?"
    ):
        fail("reset cancelled; nothing was deleted.")
    Stack(cfg).down(report=console.print)
    shutil.rmtree(cfg.state_dir, ignore_errors=True)
    console.print(f"deleted {cfg.state_dir}")


@app.command()
@exit_on_streamops_error
def generate(
    topic: Annotated[str, typer.Argument(help=f"One of: {', '.join(INPUT_TOPICS)}.")],
    rate: Annotated[
        float, typer.Option(help="Records per second; 0 = as fast as possible.")
    ] = 100.0,
    count: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="Stop after this many records."),
    ] = None,
    duration: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help="Stop after this many seconds."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed: the same seed sends the same records.")] = 1,
    malformed_ratio: Annotated[float, typer.Option(help="Share of malformed records.")] = 0.0,
    duplicate_ratio: Annotated[float, typer.Option(help="Share of re-sent records.")] = 0.0,
    late_ratio: Annotated[
        float, typer.Option(help="Share of records with a late event time.")
    ] = 0.0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Produce realistic records to an input topic, with delivery reports and a closing summary."""
    from streamops.generator.producer import (
        KafkaUnavailableError,
        run_generator,
    )
    from streamops.kafka_security import librdkafka_security

    cfg = settings()
    try:
        summary = run_generator(
            topic,
            bootstrap_servers=cfg.kafka_bootstrap_servers,
            producer_config=librdkafka_security(cfg),
            rate=rate,
            count=count,
            duration=duration,
            seed=seed,
            malformed_ratio=malformed_ratio,
            duplicate_ratio=duplicate_ratio,
            late_ratio=late_ratio,
            progress=progress,
            console=console,
        )
    except ValueError as exc:  # bad options, found before anything is sent
        fail(str(exc), code=2)
    except KafkaUnavailableError as exc:
        fail(str(exc))
    kinds = ", ".join(f"{kind} {n}" for kind, n in summary.by_kind.items() if n)
    console.print(
        f"{topic}: sent {summary.sent}, failed {summary.failed} ({kinds or 'none'}) in "
        f"{summary.elapsed_seconds:.1f} s, {summary.rate:,.0f} records/s, "
        f"{summary.megabytes_per_second:.2f} MiB/s"
        + (" (interrupted)" if summary.interrupted else ""),
        highlight=False,
    )
    for error in summary.errors:
        err_console.print(f"  delivery error: {error}", highlight=False)
    if summary.failed or summary.interrupted:
        fail(f"{summary.failed} record(s) were not delivered to {topic}; see the errors above.")


@app.command(
    "run",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
@exit_on_streamops_error
def run_pipeline(
    ctx: typer.Context,
    pipeline: Annotated[str, typer.Argument(help="Pipeline name from pipelines.yaml.")],
) -> None:
    """Run a pipeline's Spark job in the foreground (Ctrl-C stops it gracefully).

    It takes the checkpoint's lease first, so it is refused while the supervisor runs the job
    (and the supervisor waits while it runs).

    Options after the pipeline go to the job, e.g. `streamops run orders --watermark "30 seconds"`;
    `streamops run orders --help` lists them. The same module is the spark-submit entry point.
    """
    from streamops.supervision.spec import load_specs

    specs = load_specs()
    if pipeline not in specs:
        fail(f"Unknown pipeline {pipeline!r}; the pipelines are: {', '.join(specs)}.", code=2)
    cfg = settings()
    command = [str(spark_python(cfg)), "-m", f"spark_jobs.jobs.{pipeline}", *ctx.args]
    env = {**os.environ, **cfg.as_env()}
    if any(arg in ("-h", "--help") for arg in ctx.args):
        raise typer.Exit(subprocess.run(command, env=env, check=False).returncode)
    from streamops.supervision.foreground import run_in_foreground

    raise typer.Exit(run_in_foreground(cfg, specs[pipeline], command, env))


@db_app.command("migrate")
@exit_on_streamops_error
def db_migrate() -> None:
    """Apply pending MariaDB migrations (idempotent)."""
    from streamops.db import migrate

    applied = migrate(settings())
    console.print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


@db_app.command("version")
@exit_on_streamops_error
def db_version() -> None:
    """Print the schema version (number of the last applied migration)."""
    from streamops.db import schema_version

    console.print(str(schema_version(settings())))


@maintenance_app.command("archive-retention")
@exit_on_streamops_error
def maintenance_archive_retention(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Delete the Parquet archive's day partitions older than archive_retention_days."""
    from streamops.maintenance.archive import apply_archive_retention

    report = apply_archive_retention(settings(), dry_run=dry_run)
    if as_json:
        console.print_json(json.dumps(report))
        return
    if not report["supported"]:
        console.print(f"nothing done: {report['reason']}", highlight=False)
        return
    verb = "would delete" if dry_run else "deleted"
    for entry in report["deleted"]:
        console.print(
            f"{verb} {entry['pipeline']}/{entry['partition']}: "
            f"{entry['files']} file(s), {entry['bytes']:,} bytes",
            highlight=False,
        )
    console.print(
        f"{verb} {report['deleted_partitions']} partition(s), {report['deleted_bytes']:,} bytes "
        f"(days before {report['delete_before']}, retention {report['retention_days']} days) "
        f"under {report['root']}; kept {report['kept_partitions']}",
        highlight=False,
    )
    for name in report["unrecognised"]:
        console.print(f"left alone (not a date= partition): {name}", highlight=False)


@maintenance_app.command("rotate-logs")
@exit_on_streamops_error
def maintenance_rotate_logs(
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="List what would be rotated or deleted; change nothing."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Rotate every log under the state folder over log_max_mb (keeping log_keep copies), delete
    Airflow task logs older than task_log_retention_days and launch logs beyond job_logs_keep."""
    from streamops.maintenance.logs import rotate_logs

    def progress(line: str) -> None:
        if not as_json:
            console.print(line, highlight=False)

    report = rotate_logs(settings(), dry_run=dry_run, report=progress)
    if as_json:
        console.print_json(json.dumps(report))
        return
    rotate, delete = ("would rotate", "would delete") if dry_run else ("rotated", "deleted")
    console.print(
        f"{rotate} {len(report['rotated'])} log(s) over {report['max_bytes'] // 1048576} MiB, "
        f"{delete} {len(report['deleted'])} old file(s) ({report['freed_bytes']:,} bytes), "
        f"skipped {len(report['skipped'])} under {report['state_dir']}",
        highlight=False,
    )
