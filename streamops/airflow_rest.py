"""Airflow's REST API (``/api/v2``, Airflow 3.3): the one client streamops talks to Airflow with.

Every caller goes through :class:`AirflowRest`: the plugin's page (with the caller's own token),
``streamops pipeline`` and ``streamops up`` (with the stack's login), and the integration tests.
It imports httpx only, never ``airflow``, so the stack and the CLI use it without loading Airflow.

The supervision DAG ``streamops_supervise_<name>`` is the only thing that launches a job, so an
operator's action is an action on that DAG, taken with the operator's own Airflow token (Airflow
checks the permissions, and its audit log names the user):

- **start**: unpause the DAG and trigger a run, unless one is already queued or running.
- **stop**: pause the DAG first (no scheduled tick may start a new run behind the operator's
  back), then set every active run to ``failed``; Airflow kills the deferred task, and its
  ``on_kill`` stops the job gracefully and releases the checkpoint's lease.
- **restart**: stop, wait until the job is gone (the lease released), start. Starting at once
  would let the new run reattach to the job that is still stopping.

Transient failures (5xx answers, connection errors) are retried with exponential backoff when the
caller asks for it (:class:`Retry`; ``login``, which ``streamops up`` uses, does): the api-server
can answer 500 for a moment while its metadata database is busy. Only requests that are safe to
send twice are resent after a 5xx or a lost answer (a POST only when it never left). The final
error names the api-server, the HTTP status and the api-server's log with its last error line.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from streamops.config import Settings
from streamops.errors import StreamopsError

DEFAULT_TIMEOUT_SECONDS = 15.0
# DAG run states in which a supervisor is (about to be) at work.
ACTIVE_RUN_STATES = frozenset({"queued", "running"})
FINISHED_RUN_STATES = frozenset({"success", "failed"})
# Airflow's default `maximum_page_limit`: a larger `limit` is silently cut to it.
_PAGE_LIMIT = 100
# How long `login` clients keep retrying a transient failure before giving up.
DEFAULT_RETRY_SECONDS = 60.0
# Answers that say "try again": the api-server's "Database error" 500, a proxy's 502/503/504.
TRANSIENT_STATUS_CODES = frozenset({500, 502, 503, 504})
# Methods whose requests may be sent twice: ours PATCH absolute states ({"is_paused": false}).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})
API_SERVER = "airflow-api-server"


class AirflowUnavailableError(StreamopsError):
    """Airflow's API server does not answer."""


class AirflowRequestError(StreamopsError):
    """Airflow answered with an error (not authenticated, forbidden, unknown DAG, ...)."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class Retry:
    """Exponential backoff for transient failures, bounded by ``total_seconds`` of wall time."""

    total_seconds: float = 0.0
    first_delay_seconds: float = 0.5
    max_delay_seconds: float = 8.0
    # Replaced in tests, which must not wait.
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def delays(self) -> Iterator[float]:
        """0.5, 1, 2, 4, 8, 8, ... seconds: the pause before each further attempt."""
        delay = self.first_delay_seconds
        while True:
            yield delay
            delay = min(delay * 2, self.max_delay_seconds)


NO_RETRY = Retry()
LOGIN_RETRY = Retry(DEFAULT_RETRY_SECONDS)


@dataclass(frozen=True)
class DagInfo:
    """The supervision DAG as Airflow's REST API reports it."""

    dag_id: str
    exists: bool = True
    is_paused: bool | None = None
    active_run_id: str | None = None
    active_run_state: str | None = None
    last_run_id: str | None = None
    last_run_state: str | None = None
    last_run_end: str | None = None


@dataclass(frozen=True)
class ActionResult:
    pipeline: str
    action: str
    message: str
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "action": self.action,
            "message": self.message,
            "run_id": self.run_id,
        }


def fetch_token(
    base_url: str,
    username: str,
    password: str,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    *,
    retry: Retry = NO_RETRY,
    log_path: Path | None = None,
    transport: httpx.BaseTransport | None = None,
) -> str:
    """A JWT from the auth manager's ``POST /auth/token`` (SimpleAuthManager's login)."""
    url = f"{base_url.rstrip('/')}/auth/token"
    try:
        with httpx.Client(timeout=timeout, transport=transport) as client:
            response = send_with_retry(
                client,
                "POST",
                url,
                base_url=base_url,
                retry=retry,
                log_path=log_path,
                # Asking for a token twice changes nothing: safe to resend after a 5xx.
                idempotent=True,
                json={"username": username, "password": password},
            )
    except httpx.HTTPError as exc:
        raise AirflowUnavailableError(f"{_unreachable(base_url, exc)}.") from None
    if response.status_code in (401, 403):
        raise AirflowRequestError(
            f"Airflow refused the login of {username!r} ({response.status_code}). The local "
            "stack's login is printed by `streamops up` (STREAMOPS_AIRFLOW_ADMIN_PASSWORD).",
            response.status_code,
        )
    if response.status_code not in (200, 201):
        raise AirflowRequestError(
            f"POST {url} answered {response.status_code}: {response.text[:300]}",
            response.status_code,
        )
    return str(response.json()["access_token"])


def send_with_retry(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    base_url: str,
    retry: Retry,
    log_path: Path | None = None,
    idempotent: bool | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request, retrying transient failures within ``retry.total_seconds``.

    Returns any answer that is not a transient failure (the caller judges 4xx). Raises
    :class:`AirflowRequestError` when the api-server still answers 5xx at the end, and
    :class:`AirflowUnavailableError` when it still does not answer; both name the api-server's log.
    """
    method = method.upper()
    resendable = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
    clock = retry.clock
    started = clock()
    deadline = started + retry.total_seconds
    delays = retry.delays()
    attempts = 0
    while True:
        attempts += 1
        response: httpx.Response | None = None
        failure: Exception | None = None
        try:
            response = client.request(method, url, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            failure = exc  # the request never left: resending is always safe
            retryable = True
        except httpx.TransportError as exc:
            failure = exc  # it may have been received and acted on
            retryable = resendable
        else:
            if response.status_code not in TRANSIENT_STATUS_CODES:
                return response
            retryable = resendable
        delay = next(delays)
        if not retryable or clock() + delay > deadline:
            break
        retry.sleep(delay)
    tried = f" (tried {attempts} times over {clock() - started:.0f} s)" if attempts > 1 else ""
    where = _log_hint(log_path)
    if response is None:
        assert failure is not None
        raise AirflowUnavailableError(f"{_unreachable(base_url, failure)}{tried}.{where}")
    path = response.request.url.path
    raise AirflowRequestError(
        f"Airflow's api-server answered {method} {path} with {response.status_code} "
        f"{response.reason_phrase}{tried}: {_detail(response)}.{where}",
        response.status_code,
    )


class AirflowRest:
    """A small client of ``/api/v2`` with one bearer token."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retry: Retry = NO_RETRY,
        log_path: Path | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``retry`` is off by default: the plugin's page must answer its caller, not wait.

        ``log_path`` is the api-server's log, named in errors when known.
        """
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.log_path = log_path
        self._client = httpx.Client(
            base_url=f"{self.base_url}/api/v2",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    @classmethod
    def login(
        cls,
        settings: Settings,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retry: Retry = LOGIN_RETRY,
    ) -> AirflowRest:
        """A client logged in as the stack's Airflow user (``STREAMOPS_AIRFLOW_ADMIN_*``).

        It retries transient failures (``retry``) and names the local api-server's log in errors.
        """
        from streamops.stack.airflow import AirflowApiServer  # the stack imports this module

        log_path = AirflowApiServer(settings).log_path
        token = fetch_token(
            settings.airflow_url,
            settings.airflow_admin_user,
            settings.airflow_admin_password,
            timeout,
            retry=retry,
            log_path=log_path,
        )
        return cls(settings.airflow_url, token, timeout=timeout, retry=retry, log_path=log_path)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> AirflowRest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = send_with_retry(
                self._client,
                method,
                path,
                base_url=self.base_url,
                retry=self.retry,
                log_path=self.log_path,
                **kwargs,
            )
        except httpx.HTTPError as exc:
            raise AirflowUnavailableError(f"{_unreachable(self.base_url, exc)}.") from None
        if response.status_code >= 400:
            raise AirflowRequestError(
                f"Airflow: {method} /api/v2{path} answered {response.status_code}: "
                f"{_detail(response)}",
                response.status_code,
            )
        return response

    # --- reading ------------------------------------------------------------------------------
    def dag(self, dag_id: str) -> dict[str, Any] | None:
        """The DAG as Airflow knows it, or None while the dag-processor has not parsed it."""
        try:
            return dict(self.request("GET", f"/dags/{dag_id}").json())
        except AirflowRequestError as exc:
            if exc.status_code == 404:
                return None
            raise

    def dag_info(self, dag_id: str) -> DagInfo:
        """The DAG, its active (queued or running) and its latest run; exists=False if unknown."""
        dag = self.dag(dag_id)
        if dag is None:
            return DagInfo(dag_id=dag_id, exists=False)
        active = self.active_runs(dag_id)
        latest = self.request(
            "GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-id", "limit": 1}
        ).json()["dag_runs"]
        return _dag_info(dag, active[0] if active else {}, latest[0] if latest else {})

    def dags_info(self, dag_ids: Sequence[str]) -> dict[str, DagInfo]:
        """:meth:`dag_info` of several DAGs in three requests in all, not three each.

        The DAGs (their common id prefix), the active runs and the latest runs of all of them
        come from Airflow's list endpoints, which leave out what the caller may not read. A DAG
        missing from those answers, or whose latest run the newest hundred runs of them all did
        not include, is read on its own by :meth:`dag_info`, which raises a 403 or says
        exists=False as before. The operations page asks for this every few seconds: twelve
        requests for four pipelines cost the api-server ~0.6 s of CPU each time (issue 16)."""
        wanted = list(dict.fromkeys(dag_ids))
        if not wanted:
            return {}
        # A prefix of characters, not of path components: what Airflow's prefix search wants.
        prefix = os.path.commonprefix(wanted)  # noqa: RUF071
        listed = self._dags_by_prefix(prefix, set(wanted))
        present = [dag_id for dag_id in wanted if dag_id in listed]
        active, active_all = self._newest_runs(present, sorted(ACTIVE_RUN_STATES))
        latest, latest_all = self._newest_runs(present, None)
        infos: dict[str, DagInfo] = {}
        for dag_id in wanted:
            unsure = (dag_id not in active and not active_all) or (
                dag_id not in latest and not latest_all
            )
            if dag_id not in listed or unsure:
                infos[dag_id] = self.dag_info(dag_id)
                continue
            infos[dag_id] = _dag_info(
                listed[dag_id], active.get(dag_id, {}), latest.get(dag_id, {})
            )
        return infos

    def _dags_by_prefix(self, prefix: str, wanted: set[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            params: dict[str, Any] = {"limit": _PAGE_LIMIT, "offset": offset}
            if prefix:
                params["dag_id_prefix_pattern"] = prefix
            page = self.request("GET", "/dags", params=params).json()
            dags = page.get("dags", [])
            found.update({d["dag_id"]: dict(d) for d in dags if d.get("dag_id") in wanted})
            offset += len(dags)
            if not dags or offset >= int(page.get("total_entries", 0)) or wanted <= set(found):
                return found

    def _newest_runs(
        self, dag_ids: list[str], states: list[str] | None
    ) -> tuple[dict[str, dict[str, Any]], bool]:
        """The newest run of each DAG among the newest ``_PAGE_LIMIT`` runs of them all (only
        runs in ``states``, when given), and whether those were all their runs: if not, a DAG
        without a run here may still have an older one."""
        if not dag_ids:
            return {}, True
        body: dict[str, Any] = {"dag_ids": dag_ids, "order_by": "-id", "page_limit": _PAGE_LIMIT}
        if states is not None:
            body["states"] = states
        runs = self.request("POST", "/dags/~/dagRuns/list", json=body).json()["dag_runs"]
        newest: dict[str, dict[str, Any]] = {}
        for run in runs:
            newest.setdefault(run["dag_id"], dict(run))
        return newest, len(runs) < _PAGE_LIMIT

    def active_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Queued and running runs of ``dag_id``, newest first."""
        response = self.request(
            "GET",
            f"/dags/{dag_id}/dagRuns",
            params=[("state", state) for state in sorted(ACTIVE_RUN_STATES)]
            + [("order_by", "-id"), ("limit", "20")],
        )
        return list(response.json()["dag_runs"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json())

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        """State of each task of a run (a mapped task: ``failed`` if any of its instances is)."""
        instances = self.request(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
            params={"limit": _PAGE_LIMIT},
        ).json()["task_instances"]
        states: dict[str, str] = {}
        for instance in instances:
            task_id, state = instance["task_id"], instance["state"]
            if states.get(task_id) != "failed":
                states[task_id] = state
        return states

    def import_errors(self) -> list[dict[str, Any]]:
        """The dag-processor's import errors (file and stack trace), empty when all parsed."""
        response = self.request("GET", "/importErrors", params={"limit": _PAGE_LIMIT})
        return list(response.json()["import_errors"])

    # --- changing -----------------------------------------------------------------------------
    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})

    def trigger(self, dag_id: str, note: str | None = None) -> str:
        """Start a run now (no logical date: any number may be triggered); its run id."""
        body: dict[str, Any] = {"logical_date": None}
        if note:
            body["note"] = note
        response = self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)
        return str(response.json()["dag_run_id"])

    def trigger_unless_active(self, dag_id: str, note: str) -> tuple[str, bool]:
        """The active run's id, or a new run's: (run id, whether this call triggered it).

        A supervision DAG must have one supervisor at a time; a second would only reattach to
        the same job, so starting twice is a no-op rather than an error.
        """
        active = self.active_runs(dag_id)
        if active:
            return str(active[0]["dag_run_id"]), False
        return self.trigger(dag_id, note), True

    def fail_run(self, dag_id: str, run_id: str) -> None:
        """Mark a run ``failed``: Airflow stops its running tasks (their ``on_kill``)."""
        self.request("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}", json={"state": "failed"})

    # --- waiting ------------------------------------------------------------------------------
    def wait_for_run(
        self, dag_id: str, run_id: str, timeout_seconds: float, poll_seconds: float = 2.0
    ) -> str:
        """Wait (bounded) until the run finishes; its final state (``success`` or ``failed``)."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            state = self.dag_run(dag_id, run_id)["state"]
            if state in FINISHED_RUN_STATES:
                return str(state)
            if time.monotonic() >= deadline:
                raise StreamopsError(
                    f"{dag_id} run {run_id} still {state!r} after {timeout_seconds:.0f} s"
                )
            time.sleep(poll_seconds)

    def trigger_and_wait(
        self,
        dag_id: str,
        timeout_seconds: float,
        *,
        note: str | None = None,
        poll_seconds: float = 2.0,
    ) -> tuple[str, str]:
        """Trigger a run now and wait (bounded) until it finishes: (run id, final state)."""
        run_id = self.trigger(dag_id, note)
        return run_id, self.wait_for_run(dag_id, run_id, timeout_seconds, poll_seconds)


# --- the actions --------------------------------------------------------------------------------


def start_pipeline(api: AirflowRest, pipeline: str, dag_id: str, *, by: str) -> ActionResult:
    """Unpause the supervision DAG and trigger a run, unless one is active already."""
    _require_dag(api, pipeline, dag_id)
    api.set_paused(dag_id, False)
    run_id, triggered = api.trigger_unless_active(dag_id, note=f"started by {by}")
    if not triggered:
        return ActionResult(
            pipeline, "start", f"{pipeline} is already supervised by run {run_id}", run_id
        )
    return ActionResult(
        pipeline, "start", f"{pipeline}: triggered supervision run {run_id}", run_id
    )


def stop_pipeline(api: AirflowRest, pipeline: str, dag_id: str) -> ActionResult:
    """Pause the supervision DAG, then fail its active runs (their on_kill stops the job)."""
    _require_dag(api, pipeline, dag_id)
    api.set_paused(dag_id, True)
    stopped = []
    for run in api.active_runs(dag_id):
        api.fail_run(dag_id, str(run["dag_run_id"]))
        stopped.append(str(run["dag_run_id"]))
    if not stopped:
        return ActionResult(pipeline, "stop", f"{pipeline}: no active run; the DAG is paused")
    return ActionResult(
        pipeline,
        "stop",
        f"{pipeline}: run {', '.join(stopped)} set to failed (the job stops gracefully); "
        "the DAG is paused",
        stopped[0],
    )


def restart_pipeline(
    api: AirflowRest,
    pipeline: str,
    dag_id: str,
    *,
    by: str,
    job_gone: Callable[[], bool],
    timeout_seconds: float,
    poll_seconds: float = 2.0,
) -> ActionResult:
    """Stop, wait (bounded) until ``job_gone()``, start; the job resumes from its checkpoint."""
    stop_pipeline(api, pipeline, dag_id)
    deadline = time.monotonic() + timeout_seconds
    while not job_gone():
        if time.monotonic() >= deadline:
            raise StreamopsError(
                f"{pipeline}: the job did not stop within {timeout_seconds:g} s, so it was not "
                "started again (a new run would reattach to it). The DAG is paused; look at the "
                "supervision task's log, then `streamops pipeline start "
                f"{pipeline}` once `status` shows it stopped."
            )
        time.sleep(poll_seconds)
    started = start_pipeline(api, pipeline, dag_id, by=by)
    return ActionResult(
        pipeline, "restart", f"{pipeline}: stopped, then {started.message}", started.run_id
    )


def _require_dag(api: AirflowRest, pipeline: str, dag_id: str) -> None:
    if api.dag(dag_id) is None:
        raise AirflowRequestError(
            f"{pipeline}: Airflow has no DAG {dag_id}. The dag-processor builds it from "
            "pipelines.yaml (dags/supervise_pipelines.py); see `/api/v2/importErrors` "
            "or wait for the next parse.",
            404,
        )


def _unreachable(base_url: str, exc: Exception) -> str:
    return (
        f"Airflow does not answer at {base_url} ({type(exc).__name__}: {exc}): its api-server "
        f"(`{API_SERVER}`) is down or not ready. Is the stack up? `streamops status` shows it; "
        "`streamops up` starts it"
    )


def _dag_info(dag: dict[str, Any], active: dict[str, Any], last: dict[str, Any]) -> DagInfo:
    """A known DAG's info from its REST record, its active run and its latest run ({}: none)."""
    return DagInfo(
        dag_id=str(dag["dag_id"]),
        exists=True,
        is_paused=bool(dag.get("is_paused")),
        active_run_id=active.get("dag_run_id"),
        active_run_state=active.get("state"),
        last_run_id=last.get("dag_run_id"),
        last_run_state=last.get("state"),
        last_run_end=last.get("end_date"),
    )


# Words that mark the line of a log worth quoting when a request failed.
_ERROR_MARKERS = ("ERROR", "CRITICAL", "Traceback", "Error:", "Exception")


def last_error_line(log_path: Path, max_bytes: int = 256_000) -> str | None:
    """The last line of the log's end that looks like an error, or None (no log, no error)."""
    try:
        with log_path.open("rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - max_bytes))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(text.splitlines()):
        if any(marker in line for marker in _ERROR_MARKERS):
            return line.strip()[:300]
    return None


def _log_hint(log_path: Path | None) -> str:
    if log_path is None:
        return ""
    hint = f" Its log: {log_path} (`streamops logs {API_SERVER}`)"
    line = last_error_line(log_path)
    return f"{hint}; last error there: {line}" if line else f"{hint}."


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return str(detail)[:300]
