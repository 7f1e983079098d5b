"""Cluster mode on Kubernetes: find a pipeline's driver pod by label, read its phase, stop it.

``spark-submit --deploy-mode cluster`` returns once the driver pod exists
(``spark.kubernetes.submission.waitAppCompletion=false``), so the supervisor watches the pod
instead of a local process. Every driver pod carries ``streamops/pipeline=<name>`` (set by
:func:`streamops.supervision.submit.build_submit_request`) and Spark's own ``spark-role=driver``.

The command lines and the parsing of ``kubectl get pods -o json`` are pure functions, unit-tested
without a cluster; :func:`run_kubectl` is the only I/O. ``kubectl`` uses the in-cluster service
account when it runs in a pod (the Helm chart's Airflow), or the current kubeconfig otherwise.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from streamops.errors import StreamopsError
from streamops.supervision.spec import KubernetesSubmit, PipelineSpec

PIPELINE_LABEL = "streamops/pipeline"
# Spark labels every driver pod with this (and executors with spark-role=executor).
SPARK_ROLE_LABEL = "spark-role"
KUBECTL_TIMEOUT_SECONDS = 60.0
# Phases in which the driver's container may still run (Pending: scheduled, pulling the image).
LIVE_PHASES = frozenset({"Pending", "Running"})


@dataclass(frozen=True)
class DriverPod:
    name: str
    phase: str
    created_epoch: float
    # The driver container's exit code once it terminated, else None.
    exit_code: int | None = None

    @property
    def alive(self) -> bool:
        return self.phase in LIVE_PHASES


def _section(spec: PipelineSpec) -> KubernetesSubmit:
    if spec.kubernetes is None:
        raise ValueError(f"{spec.name} runs locally: it has no 'kubernetes' section")
    return spec.kubernetes


def driver_selector(spec: PipelineSpec) -> str:
    """The label selector of the pipeline's driver pod(s)."""
    return f"{PIPELINE_LABEL}={spec.name},{SPARK_ROLE_LABEL}=driver"


def kubectl_base(spec: PipelineSpec, kubectl: str = "kubectl") -> list[str]:
    k8s = _section(spec)
    return [kubectl, "--server", k8s.api_server, "--namespace", k8s.namespace]


def find_drivers_command(spec: PipelineSpec, kubectl: str = "kubectl") -> list[str]:
    """Every driver pod of the pipeline (running or finished), as JSON."""
    selector = driver_selector(spec)
    return [*kubectl_base(spec, kubectl), "get", "pods", "--selector", selector, "--output", "json"]


def get_driver_command(spec: PipelineSpec, pod: str, kubectl: str = "kubectl") -> list[str]:
    """One driver pod by name, as JSON (a pod that is gone makes kubectl exit non-zero)."""
    return [*kubectl_base(spec, kubectl), "get", "pod", pod, "--output", "json"]


def stop_driver_command(
    spec: PipelineSpec, pod: str, grace_seconds: float, kubectl: str = "kubectl"
) -> list[str]:
    """Delete the driver pod: Kubernetes sends SIGTERM, then SIGKILL after the grace period.

    ``--wait`` returns once the pod is gone, bounded by ``--timeout`` a little over the grace.
    """
    grace = max(1, round(grace_seconds))
    return [
        *kubectl_base(spec, kubectl),
        "delete",
        "pod",
        pod,
        f"--grace-period={grace}",
        "--ignore-not-found=true",
        "--wait=true",
        f"--timeout={grace + 30}s",
    ]


def parse_driver_pods(document: Mapping[str, Any]) -> list[DriverPod]:
    """Pods of ``kubectl get … -o json`` (a list or a single pod), newest first."""
    items = document.get("items") if document.get("kind") == "PodList" else [document]
    pods = [_pod(item) for item in items or ()]
    return sorted(pods, key=lambda pod: pod.created_epoch, reverse=True)


def live_driver(pods: Sequence[DriverPod]) -> DriverPod | None:
    """The newest driver that may still run, if any."""
    return next((pod for pod in pods if pod.alive), None)


def run_kubectl(command: Sequence[str], *, check: bool = True) -> dict[str, Any]:
    """Run a kubectl command; its JSON output (``{}`` for none)."""
    try:
        result = subprocess.run(
            list(command),
            capture_output=True,
            text=True,
            timeout=KUBECTL_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StreamopsError(f"`{' '.join(command[:6])} …` did not run: {exc}") from exc
    if result.returncode != 0:
        if not check:
            return {}
        raise StreamopsError(
            f"`{' '.join(command)}` failed (exit {result.returncode}): {result.stderr.strip()}"
        )
    return dict(json.loads(result.stdout)) if result.stdout.strip() else {}


def _pod(item: Mapping[str, Any]) -> DriverPod:
    metadata = item.get("metadata", {})
    status = item.get("status", {})
    created = metadata.get("creationTimestamp")
    exit_code = None
    for container in status.get("containerStatuses") or ():
        terminated = (container.get("state") or {}).get("terminated")
        if terminated is not None:
            exit_code = int(terminated.get("exitCode", 1))
            # Spark names the driver container `spark-kubernetes-driver`; prefer it.
            if container.get("name") == "spark-kubernetes-driver":
                break
    return DriverPod(
        name=str(metadata.get("name", "")),
        phase=str(status.get("phase", "Unknown")),
        created_epoch=(
            datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp() if created else 0.0
        ),
        exit_code=exit_code,
    )
