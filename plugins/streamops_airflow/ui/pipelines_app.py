"""The FastAPI app of the pipelines page, mounted by the plugin under ``/streamops``.

Airflow does not authenticate a plugin's app (a mount inherits none of the core API's
dependencies), so every route here depends on Airflow's own ``get_user``: the UI's session
cookie or a bearer token from ``POST /auth/token``, checked by the configured auth manager.
Without one a request gets 401 (403 for an invalid token).

Routes (relative to the mount):

- ``GET /``: the page (HTML; ``pipelines_page``).
- ``GET /api/pipelines``, ``GET /api/pipelines/{name}``: status rows (``pipeline_status``).
- ``POST /api/pipelines/{name}/start|stop|restart``: through Airflow's REST API with the
  caller's own token (``streamops.airflow_rest``), so Airflow checks their permission on the DAG.
- ``POST /api/pipelines/{name}/reset-breaker``: the restart policy's ``OperatorReset`` on the
  ``pipeline_restart_state`` row, for a caller allowed to change the DAG's runs.

Route handlers are plain ``def``: FastAPI runs them in its thread pool, so their blocking reads
(Redis, MariaDB, Kafka, the REST calls back to this very server) never hold the event loop.
"""

from __future__ import annotations

import time
from contextlib import closing
from typing import Any
from urllib.parse import urlsplit

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse

from streamops.errors import StreamopsError
from streamops.supervision.spec import PipelineSpec, PipelineSpecError, load_specs
from streamops_airflow.ui.login import login_hint
from streamops_airflow.ui.pipelines_page import PAGE

ACTIONS = ("start", "stop", "restart", "reset-breaker")
# How long a restart waits for the stopping job beyond its spec's graceful stop timeout.
RESTART_MARGIN_SECONDS = 30.0

app = FastAPI(
    title="streamops pipelines",
    description="Status and control of the supervised streaming pipelines.",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)
# A browser opening the page without a session gets the 401 with a link to the login.
app.add_exception_handler(HTTPException, login_hint)


# Airflow's own authentication: the UI's session cookie or a bearer token.
User = GetUserDep


@app.exception_handler(StreamopsError)
def _streamops_error(request: Request, exc: StreamopsError) -> JSONResponse:
    from streamops.airflow_rest import AirflowRequestError, AirflowUnavailableError

    code = 502 if isinstance(exc, AirflowUnavailableError) else 409
    if isinstance(exc, AirflowRequestError) and exc.status_code in (401, 403, 404):
        code = exc.status_code
    return JSONResponse({"detail": str(exc)}, status_code=code)


@app.get("/", response_class=HTMLResponse, include_in_schema=False)
def page(user: User) -> HTMLResponse:
    return HTMLResponse(PAGE, headers={"Cache-Control": "no-store"})


@app.get("/api/pipelines")
def list_pipelines(request: Request, user: User) -> dict[str, Any]:
    specs = _specs()
    rows, warnings = _statuses(request, list(specs.values()))
    return {"generated_at": time.time(), "pipelines": rows, "warnings": warnings}


@app.get("/api/pipelines/{name}")
def get_pipeline(name: str, request: Request, user: User) -> dict[str, Any]:
    spec = _spec(name)
    rows, _ = _statuses(request, [spec])
    if not rows:
        raise HTTPException(403, f"Not allowed to read the DAG {spec.dag_id}.")
    return rows[0]


@app.post("/api/pipelines/{name}/{action}")
def act(name: str, action: str, request: Request, user: User) -> dict[str, Any]:
    from streamops import airflow_rest

    if action not in ACTIONS:
        raise HTTPException(404, f"Unknown action {action!r}; one of {', '.join(ACTIONS)}.")
    spec = _spec(name)
    if action == "reset-breaker":
        return _reset_breaker(spec, user)
    by = f"{_user_name(user)} (streamops pipelines page)"
    with _rest(request) as api:
        if action == "stop":
            return airflow_rest.stop_pipeline(api, spec.name, spec.dag_id).to_dict()
        _refuse_while_breaker_open(spec)
        if action == "start":
            return airflow_rest.start_pipeline(api, spec.name, spec.dag_id, by=by).to_dict()
        return airflow_rest.restart_pipeline(
            api,
            spec.name,
            spec.dag_id,
            by=by,
            job_gone=lambda: _job_gone(spec),
            timeout_seconds=spec.stop_timeout_seconds + RESTART_MARGIN_SECONDS,
        ).to_dict()


# --- helpers ------------------------------------------------------------------------------------


def _specs() -> dict[str, PipelineSpec]:
    try:
        return load_specs()
    except PipelineSpecError as exc:
        raise HTTPException(500, str(exc)) from None


def _spec(name: str) -> PipelineSpec:
    specs = _specs()
    if name not in specs:
        raise HTTPException(404, f"No pipeline {name!r} in pipelines.yaml; known: {sorted(specs)}.")
    return specs[name]


def _statuses(
    request: Request, specs: list[PipelineSpec]
) -> tuple[list[dict[str, Any]], list[str]]:
    from streamops.airflow_rest import AirflowRequestError, DagInfo
    from streamops.config import load_settings
    from streamops.supervision.job_processes import load_per_core
    from streamops_airflow.ui.pipeline_sources import merge_warnings, read_pipelines
    from streamops_airflow.ui.pipeline_status import build_status

    now = time.time()
    data, topic_ends, warnings = read_pipelines(specs, load_settings())
    rows = []
    with _rest(request) as api:
        try:  # all the DAGs in three requests
            infos = api.dags_info([spec.dag_id for spec in specs])
        except AirflowRequestError:
            infos = {}  # each on its own below, which tells a refusal from an error
        for spec in specs:
            airflow_warnings: list[str] = []
            try:
                dag = infos.get(spec.dag_id) or api.dag_info(spec.dag_id)
            except AirflowRequestError as exc:
                if exc.status_code in (401, 403):
                    # Not this user's DAG: they see neither its state nor its controls.
                    continue
                dag = DagInfo(dag_id=spec.dag_id, is_paused=None)
                airflow_warnings.append(str(exc))
            row = build_status(
                spec=spec,
                dag=dag,
                restart=data[spec.name].restart,
                process=data[spec.name].process,
                query_hashes=data[spec.name].query_hashes,
                topic_ends=topic_ends,
                now=now,
                warnings=merge_warnings(data[spec.name].warnings, airflow_warnings),
                load_per_core=load_per_core(),
            )
            rows.append(row.to_dict())
    return rows, warnings


def _rest(request: Request) -> Any:
    """A REST client of this very api-server, carrying the caller's own token."""
    from streamops.airflow_rest import AirflowRest

    return AirflowRest(_self_url(), _caller_token(request))


def _caller_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    token = request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    if not token:
        # get_user accepted the request, so this only happens with a token refreshed just now.
        raise HTTPException(401, "Not authenticated")
    return token


def _self_url() -> str:
    """Loopback URL of this api-server: calls back to it never leave the host or its proxy."""
    from airflow.configuration import conf

    host = conf.get("api", "host", fallback="127.0.0.1")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    scheme = "https" if conf.get("api", "ssl_cert", fallback="") else "http"
    root = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    return f"{scheme}://{host}:{conf.getint('api', 'port', fallback=8080)}{root}"


def _user_name(user: Any) -> str:
    try:
        return str(user.get_name())
    except Exception:
        return "an operator"


def _authorize_run_change(spec: PipelineSpec, user: Any) -> None:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
    )

    allowed = get_auth_manager().is_authorized_dag(
        method="PUT",
        access_entity=DagAccessEntity.RUN,
        details=DagDetails(id=spec.dag_id),
        user=user,
    )
    if not allowed:
        raise HTTPException(403, f"Not allowed to change the runs of {spec.dag_id}.")


def _reset_breaker(spec: PipelineSpec, user: Any) -> dict[str, Any]:
    from streamops.supervision.lease import CorruptRowError
    from streamops.supervision.restart import Phase
    from streamops_airflow.hooks import SparkJobHook

    _authorize_run_change(spec, user)
    hook = SparkJobHook(spec)
    try:
        before = hook.load_restart_state()
    except CorruptRowError:
        before = None
    after = hook.reset_breaker()
    if before is None:
        was = "the corrupted restart state was replaced"
    else:
        was = "was open" if before.phase is Phase.BREAKER_OPEN else "was closed"
        was += f"; {before.consecutive_failures} failures forgotten"
    return {
        "pipeline": spec.name,
        "action": "reset-breaker",
        "message": (
            f"{spec.name}: breaker reset ({was}, {after.restarts_total} restarts so far). "
            "Start it when ready."
        ),
        "run_id": None,
    }


def _refuse_while_breaker_open(spec: PipelineSpec) -> None:
    from streamops.config import load_settings
    from streamops.db import connect
    from streamops.supervision import lease as leases
    from streamops.supervision.restart import Phase

    with closing(connect(load_settings())) as connection:
        state = leases.load_restart_state(connection, spec.name)
    if state.phase is Phase.BREAKER_OPEN:
        raise HTTPException(
            409,
            f"{spec.name}: the circuit breaker is open (last failure: "
            f"{state.last_failure_reason or 'see the log'}). Fix the cause, reset the breaker, "
            "then start it.",
        )


def _job_gone(spec: PipelineSpec) -> bool:
    from streamops.config import load_settings
    from streamops_airflow.ui.pipeline_sources import read_supervision_state

    _, processes = read_supervision_state([spec], load_settings())
    process = processes[spec.name]
    return process is None or process.alive is False
