"""Cluster mode on Kubernetes: find a pipeline's driver pod by its labels, read its state, stop it.

``spark-submit --deploy-mode cluster`` returns once the driver pod exists
(``spark.kubernetes.submission.waitAppCompletion=false``), so the supervisor watches the pod
instead of a local process. Every driver pod carries ``streamops/pipeline=<name>`` (set by
:func:`streamops.supervision.submit.build_submit_request`) and Spark's own ``spark-role=driver``.

Two halves:

- **Pure**: the label selector, a pod of the API's JSON → :class:`DriverPod` (phase, and the
  driver container's state: waiting with its reason, running, terminated with its exit code and
  reason), and :func:`pod_problem`, what a pod's state says about the job beyond what the
  heartbeats say. Unit-tested without a cluster.
- **I/O**: :class:`DriverPods`, through the ``kubernetes`` Python client (the image has no
  ``kubectl``): list by label selector, read one pod, delete one with a grace period and wait
  until it is gone. It authenticates with the pod's ServiceAccount when it runs in a pod
  (``KUBERNETES_SERVICE_HOST`` is set, as in the Helm chart's Airflow), else with the kubeconfig
  (``$KUBECONFIG`` or ``~/.kube/config``), else talks to the spec's ``api_server`` without
  credentials (``kubectl proxy``). Every API error becomes a :class:`StreamopsError` that says
  what was refused, e.g. which RBAC verb on pods the ServiceAccount lacks.

Executors: Spark gives every executor pod an owner reference to its driver pod, so Kubernetes'
garbage collector removes them with it. :meth:`DriverPods.stop` deletes with the ``Foreground``
propagation policy: the driver pod is only gone once its executors are, so "gone" means the
whole job is.

The ``kubernetes`` client is in the ``airflow`` extra only; it is imported when a client is
made, so the Spark environment can import this module.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from streamops.errors import EXIT_DISK_FULL, EXIT_REFUSED, StreamopsError
from streamops.supervision.job_health import HealthStatus, JobHealth, StallBounds, classify_health
from streamops.supervision.spec import KubernetesSubmit, PipelineSpec

PIPELINE_LABEL = "streamops/pipeline"
# Spark labels every driver pod with this (and executors with spark-role=executor).
SPARK_ROLE_LABEL = "spark-role"
# Spark's name of the driver's container in the driver pod.
DRIVER_CONTAINER = "spark-kubernetes-driver"
# Phases in which the driver's container may still run (Pending: scheduled, pulling the image).
LIVE_PHASES = frozenset({"Pending", "Running"})
# Waiting reasons after which the container does not start by itself: a fix is needed (an image,
# a Secret, a command) or the container keeps crashing.
STUCK_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
# What the supervisor's ServiceAccount must be allowed on pods (docs/deploy.md, "Cluster mode").
REQUIRED_VERBS = ("get", "list", "delete")
# Connect and read timeouts of one API request, seconds.
REQUEST_TIMEOUT = (5.0, 30.0)
# A deleted driver pod is gone after its grace period plus this (its executors first, Foreground).
DELETE_SLACK_SECONDS = 60.0
DELETE_POLL_SECONDS = 1.0
IN_CLUSTER_TOKEN_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
IN_CLUSTER_CA_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")

ConfigSource = Literal["in-cluster", "kubeconfig", "api_server"]


# --- pure ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DriverPod:
    """A driver pod as the supervisor sees it."""

    name: str
    phase: str
    created_epoch: float
    # The driver container's exit code once it terminated, else None.
    exit_code: int | None = None
    # The driver container's state: "waiting", "running", "terminated", or "" before it exists.
    container_state: str = ""
    # Why it waits or terminated (ImagePullBackOff, OOMKilled, Error, ...), else the pod's own
    # reason (Evicted) or, while it is not scheduled, the PodScheduled condition's (Unschedulable).
    reason: str = ""
    message: str = ""
    # Deletion requested (metadata.deletionTimestamp): it is terminating.
    deleting: bool = False
    uid: str = ""

    @property
    def alive(self) -> bool:
        """The pod exists in a phase in which its driver runs or may still run."""
        return self.phase in LIVE_PHASES

    @property
    def stuck(self) -> bool:
        """Its driver container waits for something it cannot fix by itself (see STUCK_REASONS)."""
        return self.container_state == "waiting" and self.reason in STUCK_REASONS

    def describe(self) -> str:
        """One line for logs and health details: ``driver pod X: Pending, waiting: Reason: ...``."""
        text = f"driver pod {self.name}: {self.phase}"
        if self.container_state == "terminated":
            text += f", container terminated ({self.reason or 'no reason'}, exit {self.exit_code})"
        elif self.container_state:
            text += f", container {self.container_state}"
            if self.reason:
                text += f": {self.reason}"
        elif self.reason:
            text += f": {self.reason}"
        if self.message:
            text += f": {self.message}"
        return text + (" (being deleted)" if self.deleting else "")


def _section(spec: PipelineSpec) -> KubernetesSubmit:
    if spec.kubernetes is None:
        raise ValueError(f"{spec.name} runs locally: it has no 'kubernetes' section")
    return spec.kubernetes


def driver_selector(spec: PipelineSpec) -> str:
    """The label selector of the pipeline's driver pod(s)."""
    return f"{PIPELINE_LABEL}={spec.name},{SPARK_ROLE_LABEL}=driver"


def executor_selector(spec: PipelineSpec) -> str:
    """The label selector of the pipeline's executor pods (the submit command labels them too)."""
    return f"{PIPELINE_LABEL}={spec.name},{SPARK_ROLE_LABEL}=executor"


def parse_driver_pod(item: Mapping[str, Any]) -> DriverPod:
    """One pod of the API's JSON (``GET .../pods/<name>``, or an item of a list)."""
    metadata = item.get("metadata") or {}
    status = item.get("status") or {}
    created = metadata.get("creationTimestamp")
    container = _driver_container(status.get("containerStatuses") or ())
    state = (container or {}).get("state") or {}
    container_state, reason, message, exit_code = "", "", "", None
    for kind in ("terminated", "waiting", "running"):
        if state.get(kind) is not None:
            detail = state[kind] or {}
            container_state = kind
            reason = str(detail.get("reason") or "")
            message = str(detail.get("message") or "")
            if kind == "terminated":
                exit_code = int(detail.get("exitCode", 1))
            break
    if not reason:
        reason, message = str(status.get("reason") or ""), str(status.get("message") or "")
    if not reason and status.get("phase") == "Pending":
        for condition in status.get("conditions") or ():
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                reason = str(condition.get("reason") or "")
                message = str(condition.get("message") or "")
    return DriverPod(
        name=str(metadata.get("name", "")),
        phase=str(status.get("phase") or "Unknown"),
        created_epoch=_epoch(created),
        exit_code=exit_code,
        container_state=container_state,
        reason=reason,
        message=message.strip(),
        deleting=bool(metadata.get("deletionTimestamp")),
        uid=str(metadata.get("uid", "")),
    )


def parse_driver_pods(document: Mapping[str, Any]) -> list[DriverPod]:
    """Pods of a ``PodList`` (or a single pod), newest first."""
    items = document.get("items") if document.get("kind") == "PodList" else [document]
    pods = [parse_driver_pod(item) for item in items or ()]
    return sorted(pods, key=lambda pod: pod.created_epoch, reverse=True)


def live_driver(pods: Sequence[DriverPod]) -> DriverPod | None:
    """The newest driver that may still run, if any."""
    return next((pod for pod in pods if pod.alive), None)


def pod_problem(
    pod: DriverPod | None, name: str, *, now: float, pending_timeout_seconds: float
) -> JobHealth | None:
    """What the driver pod's state says about the job that the heartbeats cannot: a pod that is
    gone, stuck, ended for a reason of the cluster's (OOMKilled, Evicted), or still Pending past
    ``pending_timeout_seconds`` (unschedulable, say). None: the pod runs or may still start (the
    heartbeats judge it), or ended with a code the health rule knows (0, refused, disk full)."""
    if pod is None:
        return JobHealth(
            HealthStatus.FAILED,
            f"driver pod {name} no longer exists (deleted outside the supervisor, or removed by "
            "the cluster)",
        )
    if pod.stuck:
        return JobHealth(HealthStatus.FAILED, f"cannot start: {pod.describe()}")
    if pod.phase == "Pending":
        pending = now - pod.created_epoch
        if pending > pending_timeout_seconds:
            return JobHealth(
                HealthStatus.STALLED,
                f"{pod.describe()}; Pending for {pending:.0f} s (allowed "
                f"{pending_timeout_seconds:g} s)",
            )
        return None
    if pod.alive:
        return None
    if pod.exit_code in (0, EXIT_REFUSED, EXIT_DISK_FULL):
        return None  # the job's own code: the health rule says what it means
    return JobHealth(HealthStatus.FAILED, pod.describe())


def driver_health(
    pod: DriverPod | None,
    name: str,
    *,
    query_states: Callable[[], Mapping[str, Mapping[str, str]]],
    now: float,
    process_start_epoch: float,
    bounds: StallBounds,
    pending_timeout_seconds: float,
) -> JobHealth:
    """The job's health in cluster mode: what only the pod tells (:func:`pod_problem`), else the
    health rule on the pod's liveness and the queries' heartbeats (``query_states``, read only
    while the pod lives). Alive means the pod lives *and* its queries report in time."""
    problem = pod_problem(pod, name, now=now, pending_timeout_seconds=pending_timeout_seconds)
    if problem is not None:
        return problem
    alive = pod is not None and pod.alive
    return classify_health(
        alive=alive,
        exit_code=None if pod is None or alive else pod.exit_code,
        query_states=query_states() if alive else {},
        now=now,
        process_start_epoch=process_start_epoch,
        # The driver pod's node is not this machine: no overload signal from here.
        bounds=bounds,
    )


def config_source(environ: Mapping[str, str], kubeconfig: str | None) -> ConfigSource:
    """Where the client takes its server and credentials from: the pod's ServiceAccount inside a
    pod, else an existing kubeconfig (``kubeconfig``: its path, None when there is none), else
    the spec's ``api_server`` without credentials."""
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return "in-cluster"
    if kubeconfig:
        return "kubeconfig"
    return "api_server"


def kubeconfig_path(environ: Mapping[str, str]) -> str | None:
    """``$KUBECONFIG`` (its existing files) or ``~/.kube/config`` when it exists, else None."""
    listed = [p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    existing = [p for p in listed if Path(p).expanduser().is_file()]
    if existing:
        return os.pathsep.join(existing)
    default = Path(environ.get("HOME", "~")).expanduser() / ".kube" / "config"
    return str(default) if not listed and default.is_file() else None


def api_error_message(
    status: int, body: str, *, verb: str, namespace: str, server: str, pod: str | None = None
) -> str:
    """An API error as a sentence that says what was refused and what to do."""
    what = f"pod {pod}" if pod else "pods"
    detail = _status_message(body)
    if status == 403:
        return (
            f"Kubernetes refused to {verb} {what} in namespace {namespace!r} ({server}): the "
            f"supervisor's ServiceAccount needs a Role with the verb {verb!r} on the resource "
            f"'pods' there (in all: {', '.join(REQUIRED_VERBS)}). The API said: {detail}"
        )
    if status == 401:
        return (
            f"Kubernetes at {server} did not accept the supervisor's credentials to {verb} {what}"
            f" (the ServiceAccount token or the kubeconfig's user). The API said: {detail}"
        )
    if status == 404:
        return f"Kubernetes at {server} has no {what} in namespace {namespace!r}: {detail}"
    if status == 0:
        return f"Cannot reach the Kubernetes API at {server} to {verb} {what}: {detail}"
    return (
        f"Kubernetes at {server} failed to {verb} {what} in {namespace!r} (HTTP {status}): {detail}"
    )


def _driver_container(statuses: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """Spark's driver container; the only one when a template renamed it."""
    for container in statuses:
        if container.get("name") == DRIVER_CONTAINER:
            return container
    return statuses[0] if len(statuses) == 1 else None


def _epoch(timestamp: str | None) -> float:
    return (
        datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() if timestamp else 0.0
    )


def _status_message(body: str) -> str:
    try:
        document = json.loads(body)
    except (TypeError, ValueError):
        return body.strip() or "no details"
    if isinstance(document, Mapping) and document.get("message"):
        return str(document["message"])
    return body.strip() or "no details"


# --- I/O: the kubernetes client ------------------------------------------------------------------
def client_configuration(
    section: KubernetesSubmit,
    environ: Mapping[str, str] | None = None,
    *,
    token_file: Path = IN_CLUSTER_TOKEN_FILE,
    ca_file: Path = IN_CLUSTER_CA_FILE,
) -> Any:
    """The client's ``Configuration`` from :func:`config_source` (never the process-wide default,
    which other code in the same process may use)."""
    from kubernetes.client import Configuration
    from kubernetes.config import ConfigException, incluster_config, load_kube_config

    environ = os.environ if environ is None else environ
    kubeconfig = kubeconfig_path(environ)
    source = config_source(environ, kubeconfig)
    configuration = Configuration()
    try:
        if source == "in-cluster":
            loader = incluster_config.InClusterConfigLoader(
                token_filename=str(token_file), cert_filename=str(ca_file), environ=environ
            )
            loader.load_and_set(configuration)
        elif source == "kubeconfig":
            load_kube_config(
                config_file=kubeconfig, client_configuration=configuration, persist_config=False
            )
        else:
            configuration.host = section.api_server
    except (ConfigException, OSError, ValueError) as exc:
        raise StreamopsError(
            f"Cannot configure the Kubernetes client ({source}): {exc}. In a pod it uses the "
            "ServiceAccount's token; elsewhere $KUBECONFIG or ~/.kube/config."
        ) from exc
    return configuration


class DriverPods:
    """The driver pods of one namespace, through the ``kubernetes`` client's ``CoreV1Api``."""

    def __init__(
        self,
        section: KubernetesSubmit,
        *,
        configuration: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from kubernetes.client import ApiClient, CoreV1Api

        self.namespace = section.namespace
        configuration = configuration or client_configuration(section)
        self.server = str(configuration.host)
        self._api = CoreV1Api(ApiClient(configuration))
        self._sleep = sleep
        self._clock = clock

    @classmethod
    def of(cls, spec: PipelineSpec, **options: Any) -> DriverPods:
        return cls(_section(spec), **options)

    def find(self, selector: str) -> list[DriverPod]:
        """Every pod matching ``selector`` (running or finished), newest first."""
        document = self._call(
            "list",
            None,
            lambda: self._api.list_namespaced_pod(
                self.namespace,
                label_selector=selector,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )
        return parse_driver_pods({"kind": "PodList", "items": document.get("items") or []})

    def get(self, name: str) -> DriverPod | None:
        """The pod ``name``; None once it is gone."""
        document = self._call(
            "get",
            name,
            lambda: self._api.read_namespaced_pod(
                name, self.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            ),
            missing_ok=True,
        )
        return parse_driver_pod(document) if document else None

    def stop(self, name: str, grace_seconds: float) -> DriverPod | None:
        """Delete the pod ``name`` and wait until it is gone; the pod as it was before (None when
        it was gone already).

        Kubernetes sends its containers SIGTERM, then SIGKILL after ``grace_seconds`` (the
        driver's queries finish their batch meanwhile). ``Foreground``: the pod is removed after
        its dependents, the executors Spark made it the owner of. A pod still there
        :data:`DELETE_SLACK_SECONDS` after its grace (a node that does not answer) is an error.
        """
        from kubernetes.client import V1DeleteOptions

        before = self.get(name)
        if before is None:
            return None
        grace = max(1, round(grace_seconds))
        options = V1DeleteOptions(grace_period_seconds=grace, propagation_policy="Foreground")
        deleted = self._call(
            "delete",
            name,
            lambda: self._api.delete_namespaced_pod(
                name,
                self.namespace,
                body=options,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            ),
            missing_ok=True,
        )
        if not deleted:
            return before
        deadline = self._clock() + grace + DELETE_SLACK_SECONDS
        while True:
            current = self.get(name)
            if current is None or (before.uid and current.uid != before.uid):
                return before
            if self._clock() >= deadline:
                raise StreamopsError(
                    f"{current.describe()}: still there {grace + DELETE_SLACK_SECONDS:g} s after "
                    f"its deletion (grace {grace} s) in namespace {self.namespace!r}; its node or "
                    "an executor does not finish terminating. `kubectl delete pod "
                    f"{name} --force --grace-period=0` removes it without waiting."
                )
            self._sleep(DELETE_POLL_SECONDS)

    def _call(
        self, verb: str, pod: str | None, request: Callable[[], Any], *, missing_ok: bool = False
    ) -> dict[str, Any]:
        """``request``'s JSON answer ({} for a missing pod when ``missing_ok``)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            response = request()
            try:
                data = response.data
            finally:
                response.release_conn()
        except ApiException as exc:
            if exc.status == 404 and missing_ok:
                return {}
            body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else exc.body
            message = api_error_message(
                int(exc.status or 0),
                str(body or exc.reason or ""),
                verb=verb,
                namespace=self.namespace,
                server=self.server,
                pod=pod,
            )
            raise StreamopsError(message) from exc
        except HTTPError as exc:
            message = api_error_message(
                0, str(exc), verb=verb, namespace=self.namespace, server=self.server, pod=pod
            )
            raise StreamopsError(message) from exc
        document = json.loads(data) if data else {}
        return dict(document) if isinstance(document, Mapping) else {}
