"""Cluster mode: the supervisor finds, judges and stops a pipeline's driver pod.

Two kinds of test, neither with a cluster:

- the pure parts (label selector, pod JSON → ``DriverPod``, what a pod's state says about the
  job, the error messages) on pod documents in the Kubernetes API's shape;
- the real ``kubernetes`` Python client against ``tests/unit/fake_kubernetes_api.py``, a small
  HTTP server started here that answers list/get/delete of pods. It is NOT a Kubernetes API
  server: it shows what the client sends (selector, grace period, propagation policy,
  credentials) and that the answers, errors included, are read right. Nothing here shows how a
  real cluster schedules, signals or garbage-collects pods, nor that RBAC grants what the chart
  asks for.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streamops.errors import EXIT_REFUSED, StreamopsError
from streamops.supervision import kubernetes as k8s
from streamops.supervision.job_health import HEARTBEAT_AT, HealthStatus
from streamops.supervision.spec import PipelineSpec, parse_specs
from tests.unit.fake_kubernetes_api import FakeKubernetesApi, serve

NAMESPACE = "data"
CREATED = "2026-11-25T12:00:00Z"
CREATED_EPOCH = datetime(2026, 11, 25, 12, tzinfo=UTC).timestamp()


def _spec(api_server: str = "https://10.0.0.1:443", name: str = "orders") -> PipelineSpec:
    body = {
        "job_module": f"spark_jobs.jobs.{name}",
        "queries": [f"{name}_records"],
        "kubernetes": {"api_server": api_server, "namespace": NAMESPACE, "image": "streamops:1"},
    }
    return parse_specs({"pipelines": {name: body}})[name]


def _pod(
    name: str,
    phase: str,
    created: str = CREATED,
    *,
    state: dict[str, Any] | None = None,
    pipeline: str = "orders",
    role: str = "driver",
    **status: Any,
) -> dict[str, Any]:
    """A pod in the API's JSON; ``state``: the driver container's ``state`` object."""
    body: dict[str, Any] = {"phase": phase, **status}
    if state is not None:
        body["containerStatuses"] = [
            {"name": "istio-proxy", "state": {"running": {"startedAt": created}}},
            {"name": k8s.DRIVER_CONTAINER, "state": state},
        ]
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"uid-{name}",
            "creationTimestamp": created,
            "labels": {k8s.PIPELINE_LABEL: pipeline, k8s.SPARK_ROLE_LABEL: role},
        },
        "status": body,
    }


# --- pure: selector, parsing, verdicts -----------------------------------------------------------


def test_the_selectors_name_the_pipeline_and_the_spark_role() -> None:
    assert k8s.driver_selector(_spec()) == "streamops/pipeline=orders,spark-role=driver"
    assert k8s.executor_selector(_spec()) == "streamops/pipeline=orders,spark-role=executor"


def test_a_pod_is_read_from_its_phase_and_its_driver_containers_state() -> None:
    pulling = k8s.parse_driver_pod(
        _pod(
            "a",
            "Pending",
            state={"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}},
        )
    )
    assert (pulling.phase, pulling.container_state, pulling.reason) == (
        "Pending",
        "waiting",
        "ImagePullBackOff",
    )
    assert pulling.alive and pulling.stuck
    assert pulling.created_epoch == CREATED_EPOCH and pulling.uid == "uid-a"

    running = k8s.parse_driver_pod(_pod("b", "Running", state={"running": {"startedAt": CREATED}}))
    assert running.alive and not running.stuck and running.container_state == "running"
    assert running.exit_code is None

    # The driver container's code, not the sidecar's.
    oom = k8s.parse_driver_pod(
        _pod("c", "Failed", state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}})
    )
    assert (oom.alive, oom.exit_code, oom.reason) == (False, 137, "OOMKilled")
    assert "OOMKilled" in oom.describe() and "exit 137" in oom.describe()

    # No container status: the pod's own reason (eviction), or why it is not scheduled.
    evicted = k8s.parse_driver_pod(
        _pod("d", "Failed", reason="Evicted", message="The node was low on resource: memory.")
    )
    assert (evicted.reason, evicted.exit_code) == ("Evicted", None)
    unschedulable = k8s.parse_driver_pod(
        _pod(
            "e",
            "Pending",
            conditions=[
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient memory.",
                }
            ],
        )
    )
    assert unschedulable.reason == "Unschedulable"
    assert "Insufficient memory" in unschedulable.describe()
    terminating = _pod("f", "Running", state={"running": {}})
    terminating["metadata"]["deletionTimestamp"] = CREATED
    assert k8s.parse_driver_pod(terminating).deleting


def test_pods_come_newest_first_and_the_live_one_is_found() -> None:
    listing = {
        "kind": "PodList",
        "items": [
            _pod("old", "Failed", "2026-11-25T10:00:00Z", state={"terminated": {"exitCode": 1}}),
            _pod("new", "Running", "2026-11-25T12:00:00Z", state={"running": {}}),
            _pod(
                "done", "Succeeded", "2026-11-25T11:00:00Z", state={"terminated": {"exitCode": 0}}
            ),
        ],
    }
    pods = k8s.parse_driver_pods(listing)
    assert [p.name for p in pods] == ["new", "done", "old"]
    assert k8s.live_driver(pods) == pods[0]
    assert k8s.live_driver(pods[1:]) is None
    (single,) = k8s.parse_driver_pods(_pod("one", "Pending"))
    assert single.alive and single.container_state == ""


def _problem(pod: dict[str, Any] | None, now: float = CREATED_EPOCH + 10) -> Any:
    parsed = None if pod is None else k8s.parse_driver_pod(pod)
    return k8s.pod_problem(parsed, "orders-driver", now=now, pending_timeout_seconds=300)


def test_what_only_the_pod_tells_becomes_a_clear_health() -> None:
    gone = _problem(None)
    assert gone.status is HealthStatus.FAILED and "no longer exists" in gone.detail
    crash = _problem(
        _pod("p", "Running", state={"waiting": {"reason": "CrashLoopBackOff", "message": "m"}})
    )
    assert crash.status is HealthStatus.FAILED
    assert crash.detail.startswith("cannot start:") and "CrashLoopBackOff" in crash.detail
    no_secret = _problem(
        _pod(
            "p",
            "Pending",
            state={
                "waiting": {
                    "reason": "CreateContainerConfigError",
                    "message": 'secret "rel-streamops-mariadb" not found',
                }
            },
        )
    )
    assert no_secret.status is HealthStatus.FAILED and "rel-streamops-mariadb" in no_secret.detail
    oom = _problem(
        _pod("p", "Failed", state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}})
    )
    assert oom.status is HealthStatus.FAILED and "OOMKilled" in oom.detail
    evicted = _problem(_pod("p", "Failed", reason="Evicted", message="low on memory"))
    assert evicted.status is HealthStatus.FAILED and "Evicted" in evicted.detail


def test_a_pending_pod_is_reported_once_past_its_timeout() -> None:
    pending = _pod("p", "Pending", state={"waiting": {"reason": "ContainerCreating"}})
    assert _problem(pending, now=CREATED_EPOCH + 299) is None
    late = _problem(pending, now=CREATED_EPOCH + 301)
    assert late.status is HealthStatus.STALLED
    assert "Pending for 301 s (allowed 300 s)" in late.detail and "ContainerCreating" in late.detail


def test_a_running_pod_and_the_jobs_own_exit_codes_are_left_to_the_health_rule() -> None:
    assert _problem(_pod("p", "Running", state={"running": {}})) is None
    for code in (0, EXIT_REFUSED):
        ended = _pod(
            "p", "Failed" if code else "Succeeded", state={"terminated": {"exitCode": code}}
        )
        assert _problem(ended) is None


def _health(pod: dict[str, Any], states: dict[str, dict[str, str]], now: float) -> Any:
    spec = _spec()
    read: list[bool] = []

    def query_states() -> dict[str, dict[str, str]]:
        read.append(True)
        return states

    health = k8s.driver_health(
        k8s.parse_driver_pod(pod),
        "orders-driver",
        query_states=query_states,
        now=now,
        process_start_epoch=CREATED_EPOCH,
        bounds=spec.stall_bounds,
        pending_timeout_seconds=spec.health.startup_grace_seconds,
    )
    return health, bool(read)


def test_alive_means_the_pod_lives_and_its_heartbeats_are_fresh() -> None:
    running = _pod("p", "Running", state={"running": {}})
    now = CREATED_EPOCH + 600
    fresh = {"orders_records": {HEARTBEAT_AT: str(now - 2)}}
    health, read = _health(running, fresh, now)
    assert health.status is HealthStatus.HEALTHY and read
    stale_at = now - _spec().heartbeat_max_age_seconds - 30
    health, _ = _health(running, {"orders_records": {HEARTBEAT_AT: str(stale_at)}}, now)
    assert health.status is HealthStatus.STALLED
    # An ended pod is judged by its code; the heartbeats are not even read.
    done = _pod("p", "Succeeded", state={"terminated": {"exitCode": 0}})
    health, read = _health(done, fresh, now)
    assert health.status is HealthStatus.STOPPED and not read


def test_config_source_prefers_the_pod_then_the_kubeconfig_then_the_spec() -> None:
    assert k8s.config_source({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, "/k") == "in-cluster"
    assert k8s.config_source({}, "/home/me/.kube/config") == "kubeconfig"
    assert k8s.config_source({}, None) == "api_server"


def test_api_errors_say_what_was_refused() -> None:
    body = '{"kind":"Status","message":"pods is forbidden: User \\"x\\" cannot list","code":403}'
    message = k8s.api_error_message(403, body, verb="list", namespace="data", server="https://k")
    assert "refused to list pods in namespace 'data'" in message
    assert "verb 'list' on the resource 'pods'" in message and "get, list, delete" in message
    assert 'User "x" cannot list' in message
    assert "credentials" in k8s.api_error_message(401, "", verb="get", namespace="d", server="s")
    assert "HTTP 500" in k8s.api_error_message(500, "boom", verb="get", namespace="d", server="s")


# --- the client against a fake API server (not a cluster) ----------------------------------------


@pytest.fixture
def api() -> FakeKubernetesApi:
    return FakeKubernetesApi()


@pytest.fixture
def url(api: FakeKubernetesApi) -> Iterator[str]:
    yield from serve(api)


class _Clock:
    """Injected sleep and clock: the deletion wait runs without real sleeping."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def _pods(url: str, tmp_path: Path, clock: _Clock | None = None) -> k8s.DriverPods:
    """A client configured as outside a pod without a kubeconfig: the spec's api_server."""
    spec = _spec(api_server=url)
    assert spec.kubernetes is not None
    configuration = k8s.client_configuration(spec.kubernetes, {"HOME": str(tmp_path)})
    assert configuration.host == url
    clock = clock or _Clock()
    return k8s.DriverPods(
        spec.kubernetes, configuration=configuration, sleep=clock.sleep, clock=clock
    )


def test_find_sends_the_label_selector_and_reads_the_states(
    api: FakeKubernetesApi, url: str, tmp_path: Path
) -> None:
    api.add(
        NAMESPACE, _pod("orders-1-driver", "Running", "2026-11-25T12:00:00Z", state={"running": {}})
    )
    api.add(
        NAMESPACE,
        _pod(
            "orders-0-driver",
            "Failed",
            "2026-11-25T11:00:00Z",
            state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
        ),
    )
    api.add(NAMESPACE, _pod("orders-1-exec-1", "Running", role="executor"))
    api.add(NAMESPACE, _pod("payments-driver", "Running", pipeline="payments"))
    api.add("elsewhere", _pod("orders-x-driver", "Running"))

    pods = _pods(url, tmp_path).find(k8s.driver_selector(_spec()))

    (request,) = api.of("GET")
    assert request.path == f"/api/v1/namespaces/{NAMESPACE}/pods"
    assert request.query["labelSelector"] == ["streamops/pipeline=orders,spark-role=driver"]
    assert [(p.name, p.phase, p.exit_code, p.reason) for p in pods] == [
        ("orders-1-driver", "Running", None, ""),
        ("orders-0-driver", "Failed", 137, "OOMKilled"),
    ]


def test_get_reads_one_pod_and_none_once_it_is_gone(
    api: FakeKubernetesApi, url: str, tmp_path: Path
) -> None:
    api.add(
        NAMESPACE, _pod("orders-driver", "Pending", state={"waiting": {"reason": "ErrImagePull"}})
    )
    pods = _pods(url, tmp_path)
    pod = pods.get("orders-driver")
    assert pod is not None and pod.stuck and pod.reason == "ErrImagePull"
    assert pods.get("no-such-driver") is None
    assert [r.path for r in api.of("GET")][
        -1
    ] == f"/api/v1/namespaces/{NAMESPACE}/pods/no-such-driver"


def test_stop_deletes_with_the_grace_period_and_waits_until_the_pod_is_gone(
    api: FakeKubernetesApi, url: str, tmp_path: Path
) -> None:
    api.add(NAMESPACE, _pod("orders-driver", "Running", state={"running": {}}))
    clock = _Clock()
    before = _pods(url, tmp_path, clock).stop("orders-driver", 59.6)
    assert before is not None and before.name == "orders-driver" and before.alive
    (delete,) = api.of("DELETE")
    assert delete.path == f"/api/v1/namespaces/{NAMESPACE}/pods/orders-driver"
    assert delete.body is not None
    assert delete.body["gracePeriodSeconds"] == 60
    # Foreground: the driver pod goes only after its executors (owner references).
    assert delete.body["propagationPolicy"] == "Foreground"
    assert (NAMESPACE, "orders-driver") not in api.pods
    # Read while terminating (twice), then the 404 that ends the wait.
    assert len(clock.sleeps) == 2
    # A pod that is gone already is no error.
    assert _pods(url, tmp_path).stop("orders-driver", 30) is None


def test_a_pod_that_does_not_go_is_an_error_after_its_grace(
    api: FakeKubernetesApi, url: str, tmp_path: Path
) -> None:
    api.polls_until_gone = None
    api.add(NAMESPACE, _pod("orders-driver", "Running", state={"running": {}}))
    clock = _Clock()
    with pytest.raises(StreamopsError, match=r"still there 70 s after its deletion \(grace 10 s\)"):
        _pods(url, tmp_path, clock).stop("orders-driver", 10)
    assert clock.now >= 10 + k8s.DELETE_SLACK_SECONDS


@pytest.mark.parametrize("verb", ["list", "get", "delete"])
def test_a_403_names_the_missing_verb(
    api: FakeKubernetesApi, url: str, tmp_path: Path, verb: str
) -> None:
    api.add(NAMESPACE, _pod("orders-driver", "Running", state={"running": {}}))
    api.forbidden = {verb}
    pods = _pods(url, tmp_path)
    calls = {
        "list": lambda: pods.find(k8s.driver_selector(_spec())),
        "get": lambda: pods.get("orders-driver"),
        "delete": lambda: pods.stop("orders-driver", 5),
    }
    with pytest.raises(StreamopsError) as error:
        calls[verb]()
    message = str(error.value)
    assert f"refused to {verb}" in message and f"verb {verb!r} on the resource 'pods'" in message
    assert f'cannot {verb} resource "pods"' in message  # the API's own words
    assert f"namespace '{NAMESPACE}'" in message


def test_a_401_and_an_unreachable_server_are_clear(
    api: FakeKubernetesApi, url: str, tmp_path: Path
) -> None:
    api.unauthorized = True
    with pytest.raises(StreamopsError, match="did not accept the supervisor's credentials"):
        _pods(url, tmp_path).get("orders-driver")
    spec = _spec(api_server="http://127.0.0.1:9")  # discard port: nothing listens
    assert spec.kubernetes is not None
    configuration = k8s.client_configuration(spec.kubernetes, {"HOME": str(tmp_path)})
    configuration.retries = 0
    with pytest.raises(
        StreamopsError, match=r"Cannot reach the Kubernetes API at http://127\.0\.0\.1:9"
    ):
        k8s.DriverPods(spec.kubernetes, configuration=configuration).get("orders-driver")


def test_the_kubeconfig_supplies_server_and_credentials(
    api: FakeKubernetesApi, url: str, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        f"""
apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{url}"}}}}]
users: [{{name: u, user: {{token: s3cret-token}}}}]
contexts: [{{name: ctx, context: {{cluster: c, user: u, namespace: ignored}}}}]
current-context: ctx
""",
        encoding="utf-8",
    )
    spec = _spec(api_server="https://not-used.example:443")
    assert spec.kubernetes is not None
    environ = {"KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}
    configuration = k8s.client_configuration(spec.kubernetes, environ)
    assert configuration.host == url
    assert k8s.DriverPods(spec.kubernetes, configuration=configuration).find("a=b") == []
    (request,) = api.requests
    assert request.headers["authorization"] == "Bearer s3cret-token"


def test_in_a_pod_the_service_account_is_used(tmp_path: Path) -> None:
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("sa-token", encoding="utf-8")
    ca.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    spec = _spec()
    assert spec.kubernetes is not None
    environ = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    configuration = k8s.client_configuration(spec.kubernetes, environ, token_file=token, ca_file=ca)
    assert configuration.host == "https://10.96.0.1:443"
    assert configuration.ssl_ca_cert == str(ca)
    assert configuration.api_key["BearerToken"] == "bearer sa-token"
    # A pod without its token is a clear error.
    with pytest.raises(StreamopsError, match="in-cluster"):
        k8s.client_configuration(
            spec.kubernetes, environ, token_file=tmp_path / "missing", ca_file=ca
        )


def test_the_hook_judges_and_stops_the_driver_pod_through_the_client(
    api: FakeKubernetesApi, url: str, tmp_path: Path
) -> None:
    """SparkJobHook's cluster-mode paths on the fake API (no Redis: the pods here are stuck or
    ended, whose health the pod alone tells)."""
    from streamops_airflow.hooks import SparkJobHook

    from streamops.config import load_settings
    from streamops.supervision.job_processes import JobHandle

    spec = _spec(api_server=url)
    hook = SparkJobHook(spec, load_settings(state_dir=tmp_path / "state"))
    hook.__dict__["driver_pods"] = _pods(url, tmp_path)
    handle = JobHandle(
        pipeline="orders",
        queries=spec.queries,
        checkpoint_location="/ck/orders",
        owner="run-1",
        fencing_token=7,
        host=f"k8s:{NAMESPACE}",
        pid=0,
        process_start_epoch=CREATED_EPOCH,
        exit_file="",
        log_file=str(tmp_path / "token-7.log"),
        driver_pod="orders-driver",
    )
    api.add(
        NAMESPACE,
        _pod("orders-driver", "Pending", state={"waiting": {"reason": "ImagePullBackOff"}}),
    )
    health = hook.read_health(handle, now=CREATED_EPOCH + 5)
    assert health.status is HealthStatus.FAILED and "ImagePullBackOff" in health.detail
    # Stuck: it will not exit by itself, so nobody waits for it to.
    assert not hook.is_alive(handle)
    assert hook.stop(handle, 5) is None
    assert api.of("DELETE")[0].body == {"gracePeriodSeconds": 5, "propagationPolicy": "Foreground"}
    assert hook.read_health(handle).detail.startswith("driver pod orders-driver no longer exists")

    api.add(NAMESPACE, _pod("orders-driver", "Succeeded", state={"terminated": {"exitCode": 0}}))
    assert hook.read_health(handle).status is HealthStatus.STOPPED
    # The code of a driver that had ended survives its pod's deletion.
    assert hook.stop(handle, 5) == 0
