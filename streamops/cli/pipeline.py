"""`streamops pipeline`: status and start/stop/restart of the supervised pipelines, via Airflow.

Every action goes through Airflow, never to the job directly: start/stop/restart through its REST
API (``/api/v2``) on the supervision DAG ``streamops_supervise_<name>``, status and reset-breaker
through the streamops plugin's endpoints (``/streamops/api/pipelines``) in the same api-server.
The login is the stack's Airflow user (``STREAMOPS_AIRFLOW_ADMIN_USER`` / ``…_PASSWORD``).
httpx and the REST client are imported where a command calls Airflow, so that loading the CLI
(every `streamops --help`) does not pay for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.table import Table

from streamops.cli._app import console, err_console, exit_on_streamops_error, settings
from streamops.errors import StreamopsError

if TYPE_CHECKING:
    from streamops.airflow_rest import AirflowRest
    from streamops.config import Settings
    from streamops.supervision.spec import PipelineSpec

pipeline_app = typer.Typer(
    help="Supervised streaming pipelines: status, start, stop, restart (through Airflow).",
    no_args_is_help=True,
)

PLUGIN_PREFIX = "/streamops"
# A restart waits for the stopping job this much beyond its spec's graceful stop timeout.
RESTART_MARGIN_SECONDS = 30.0
_STATE_STYLES = {
    "running": "green",
    "starting": "yellow",
    "backing_off": "yellow",
    "waiting": "yellow",
    "overloaded": "yellow",
    "stalled": "red",
    "failed": "red",
    "breaker_open": "bold red",
    "stopped": "dim",
}

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
NameArgument = Annotated[str, typer.Argument(help="Pipeline name from pipelines.yaml.")]


class PluginClient:
    """The streamops plugin's JSON endpoints in Airflow's api-server, with a bearer token."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=f"{self.base_url}{PLUGIN_PREFIX}/api",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, *, timeout: float | None = None) -> Any:
        import httpx

        from streamops.airflow_rest import AirflowUnavailableError

        try:
            extra = {} if timeout is None else {"timeout": timeout}
            response = self._client.request(method, path, **extra)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise AirflowUnavailableError(
                f"Airflow does not answer at {self.base_url} ({type(exc).__name__}: {exc}). Is "
                "the stack up? `streamops status` shows it; `streamops up` starts it."
            ) from None
        if response.status_code == 404 and path == "/pipelines":
            raise StreamopsError(
                f"Airflow at {self.base_url} has no {PLUGIN_PREFIX} endpoints: the streamops "
                "plugin (plugins/streamops_ui_plugin.py) is not loaded. Check the api-server's "
                "log (`streamops logs airflow-api-server`) and `airflow plugins`."
            )
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise StreamopsError(f"{method} {PLUGIN_PREFIX}/api{path}: {detail}")
        return response.json()

    def pipelines(self) -> dict[str, Any]:
        return dict(self.request("GET", "/pipelines"))

    def pipeline(self, name: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/pipelines/{name}"))


@contextmanager
def _airflow() -> Iterator[tuple[AirflowRest, PluginClient, Settings]]:
    """A REST client of /api/v2 and the plugin client, both logged in as the stack's user."""
    from streamops.airflow_rest import AirflowRest, fetch_token

    cfg = settings()
    token = fetch_token(cfg.airflow_url, cfg.airflow_admin_user, cfg.airflow_admin_password)
    api = AirflowRest(cfg.airflow_url, token)
    plugin = PluginClient(cfg.airflow_url, token)
    try:
        yield api, plugin, cfg
    finally:
        api.close()
        plugin.close()


def _spec(name: str) -> PipelineSpec:
    from streamops.supervision.spec import load_specs

    specs = load_specs()
    if name not in specs:
        raise StreamopsError(
            f"No pipeline {name!r} in pipelines.yaml; known: {', '.join(sorted(specs))}."
        )
    return specs[name]


def _run(func: Callable[[], None]) -> None:
    exit_on_streamops_error(func)()


# --- commands -----------------------------------------------------------------------------------


@pipeline_app.command("list")
def list_pipelines(as_json: JsonOption = False) -> None:
    """Every pipeline of pipelines.yaml with its state, rates, lag, restarts and breaker."""

    def run() -> None:
        with _airflow() as (_, plugin, _cfg):
            data = plugin.pipelines()
        if as_json:
            console.print_json(json.dumps(data["pipelines"]))
            return
        _print_table(data["pipelines"])
        for warning in data["warnings"]:
            err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)

    _run(run)


@pipeline_app.command("status")
def status(
    name: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional here
        typer.Argument(help="Pipeline name; all pipelines when left out."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The status of one pipeline in detail (each query too), or of all of them."""

    def run() -> None:
        if name is None:
            with _airflow() as (_, plugin, _cfg):
                rows = plugin.pipelines()["pipelines"]
            if as_json:
                console.print_json(json.dumps(rows))
            else:
                _print_table(rows)
            return
        _spec(name)
        with _airflow() as (_, plugin, _cfg):
            row = plugin.pipeline(name)
        if as_json:
            console.print_json(json.dumps(row))
        else:
            _print_detail(row)

    _run(run)


@pipeline_app.command("start")
def start(
    name: NameArgument,
    as_json: JsonOption = False,
    stop_orphans: Annotated[
        bool,
        typer.Option(
            "--stop-orphans",
            help="Stop this pipeline's processes that run without the lease first (graceful, "
            "then killed after the spec's stop timeout).",
        ),
    ] = False,
) -> None:
    """Unpause the pipeline's supervision DAG and trigger a run (the job starts from its
    checkpoint); refused while the circuit breaker is open, or while an orphan job of the
    pipeline runs on this host (without the lease)."""

    from streamops.airflow_rest import start_pipeline

    def run() -> None:
        spec = _spec(name)
        with _airflow() as (api, plugin, cfg):
            _refuse_while_breaker_open(plugin.pipeline(name))
            if spec.kubernetes is None:
                _orphans_first(cfg, spec, stop_orphans)
            result = start_pipeline(api, name, spec.dag_id, by=_by(cfg))
        _print_result(result.to_dict(), as_json)

    _run(run)


def _orphans_first(cfg: Settings, spec: PipelineSpec, stop: bool) -> None:
    """Refuse to start beside an orphan job, or stop it first when asked to."""
    from streamops.supervision import job_processes
    from streamops.supervision.foreground import lease_holder_job, refuse_stray_jobs

    if not stop:
        refuse_stray_jobs(
            cfg,
            spec,
            f"Stop it first: `kill -TERM <the python pid>` stops it gracefully, or run "
            f"`streamops pipeline start {spec.name} --stop-orphans`.",
        )
        return
    holder = lease_holder_job(cfg, spec)
    for stray in job_processes.stray_jobs(cfg, spec.name, holder):
        console.print(f"{spec.name}: stopping the orphan job {stray.describe()}")
        job_processes.stop_stray_job(stray, spec.stop_timeout_seconds)


@pipeline_app.command("stop")
def stop(name: NameArgument, as_json: JsonOption = False) -> None:
    """Pause the supervision DAG and fail its active run: the job stops gracefully."""
    from streamops.airflow_rest import stop_pipeline

    def run() -> None:
        spec = _spec(name)
        with _airflow() as (api, _plugin, _cfg):
            result = stop_pipeline(api, name, spec.dag_id)
        _print_result(result.to_dict(), as_json)

    _run(run)


@pipeline_app.command("restart")
def restart(name: NameArgument, as_json: JsonOption = False) -> None:
    """Stop, wait until the job is gone, start again from the checkpoint."""
    from streamops.airflow_rest import restart_pipeline

    def run() -> None:
        spec = _spec(name)
        with _airflow() as (api, plugin, cfg):
            _refuse_while_breaker_open(plugin.pipeline(name))

            def job_gone() -> bool:
                row = plugin.pipeline(name)
                return row["job_pid"] is None or row["job_alive"] is False

            with console.status(f"{name}: stopping, then starting again"):
                result = restart_pipeline(
                    api,
                    name,
                    spec.dag_id,
                    by=_by(cfg),
                    job_gone=job_gone,
                    timeout_seconds=spec.stop_timeout_seconds + RESTART_MARGIN_SECONDS,
                )
        _print_result(result.to_dict(), as_json)

    _run(run)


@pipeline_app.command("reset-breaker")
def reset_breaker(name: NameArgument, as_json: JsonOption = False) -> None:
    """Close the circuit breaker after fixing the cause (forgets the failures); then `start`."""

    def run() -> None:
        _spec(name)
        with _airflow() as (_, plugin, _cfg):
            result = plugin.request("POST", f"/pipelines/{name}/reset-breaker")
        _print_result(result, as_json)

    _run(run)


@pipeline_app.command("reset-offsets")
def reset_offsets(
    name: NameArgument,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="Where to move the offsets: earliest-available (the log start of each "
            "partition whose checkpointed offset retention deleted).",
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the lost ranges; change nothing.")
    ] = False,
) -> None:
    """Recover a pipeline whose checkpointed offsets aged out of Kafka: print the lost ranges,
    then move its query checkpoints to the earliest available offsets, record the loss in
    offset_resets and raise a platform alert. Refused while a job of the pipeline runs
    (`streamops pipeline stop NAME` first). Does not start the pipeline."""
    import getpass
    import socket
    import sys

    from streamops.maintenance.offset_reset import TO_EARLIEST_AVAILABLE
    from streamops.maintenance.offset_reset import reset_offsets as run_reset

    def run() -> None:
        if to != TO_EARLIEST_AVAILABLE:
            raise StreamopsError(f"--to {to!r} is not supported; use --to {TO_EARLIEST_AVAILABLE}.")
        spec = _spec(name)
        run_reset(
            settings(),
            spec,
            dry_run=dry_run,
            yes=yes,
            interactive=sys.stdin.isatty(),
            confirm=lambda question: typer.confirm(question, default=False),
            say=lambda line: console.print(line, highlight=False),
            reset_by=f"{getpass.getuser()}@{socket.gethostname()}",
        )

    _run(run)


# --- output -------------------------------------------------------------------------------------


def _refuse_while_breaker_open(row: dict[str, Any]) -> None:
    if row["breaker"] == "open":
        raise StreamopsError(
            f"{row['name']}: the circuit breaker is open (last failure: "
            f"{row['last_failure_reason'] or 'see the log'}). Fix the cause, then "
            f"`streamops pipeline reset-breaker {row['name']}` and start it."
        )


def _by(cfg: Settings) -> str:
    return f"{cfg.airflow_admin_user} (streamops pipeline CLI)"


def _print_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(result))
    else:
        console.print(result["message"], highlight=False)


def _print_table(rows: list[dict[str, Any]]) -> None:
    table = Table(show_header=True, header_style="bold")
    for column in (
        "pipeline",
        "state",
        "uptime",
        "last batch",
        "input/s",
        "processed/s",
        "watermark",
        "Kafka lag",
        "restarts",
        "breaker",
    ):
        table.add_column(column, justify="right" if column.endswith(("/s", "lag")) else "left")
    for row in rows:
        style = _STATE_STYLES.get(row["state"], "")
        table.add_row(
            row["name"],
            f"[{style}]{row['state']}[/]" if style else row["state"],
            format_duration(row["uptime_seconds"]),
            _text(row["last_batch_at"]),
            _rate(row["input_rows_per_second"]),
            _rate(row["processed_rows_per_second"]),
            _text(row["watermark"]),
            _text(row["kafka_lag"]),
            str(row["restarts_total"]),
            row["breaker"],
        )
    console.print(table)


def _print_detail(row: dict[str, Any]) -> None:
    style = _STATE_STYLES.get(row["state"], "")
    console.print(f"[bold]{row['name']}[/]: [{style}]{row['state']}[/] — {row['detail']}")
    fields = {
        "supervision DAG": f"{row['dag_id']} ("
        + ("not in Airflow" if not row["dag_exists"] else "paused" if row["dag_paused"] else "on")
        + ")",
        "active run": _text(row["active_run_id"]),
        "last run state": _text(row["last_run_state"]),
        "uptime": format_duration(row["uptime_seconds"]),
        "job process": (
            f"pid {row['job_pid']} on {row['job_host']}" if row["job_pid"] is not None else "–"
        ),
        "last batch": _text(row["last_batch_at"]),
        "input rows/s": _rate(row["input_rows_per_second"]),
        "processed rows/s": _rate(row["processed_rows_per_second"]),
        "watermark": _text(row["watermark"]),
        "Kafka lag": _text(row["kafka_lag"]),
        "restarts": str(row["restarts_total"]),
        "failures in a row": str(row["consecutive_failures"]),
        "outages waited out": str(row.get("outages_total", 0)),
        "breaker": row["breaker"]
        + (f" since {_epoch(row['breaker_opened_at'])}" if row["breaker_opened_at"] else ""),
        "last failure": _text(row["last_failure_reason"]),
    }
    width = max(len(key) for key in fields)
    for key, value in fields.items():
        console.print(f"  {key.ljust(width)}  {value}", highlight=False)
    table = Table(show_header=True, header_style="bold", title="queries")
    for column in ("query", "state", "batch", "last batch", "input/s", "heartbeat", "lag"):
        table.add_column(column)
    for query in row["queries"]:
        table.add_row(
            query["name"],
            _text(query["state"]),
            _text(query["batch_id"]),
            _text(query["last_batch_at"]),
            _rate(query["input_rows_per_second"]),
            "–"
            if query["heartbeat_age_seconds"] is None
            else f"{format_duration(query['heartbeat_age_seconds'])} ago",
            _text(query["kafka_lag"]),
        )
    console.print(table)
    for warning in row["warnings"]:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def format_duration(seconds: float | None) -> str:
    """``3725`` → ``1h 02m``; ``None`` → ``–``."""
    if seconds is None:
        return "–"
    total = int(seconds)
    days, hours = divmod(total, 86400)
    hours, rest = divmod(hours, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _text(value: Any) -> str:
    return "–" if value is None or value == "" else str(value)


def _epoch(value: float) -> str:
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
