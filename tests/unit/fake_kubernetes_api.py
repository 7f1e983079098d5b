"""A small HTTP server that speaks just enough of the Kubernetes API for the driver-pod client.

NOT a cluster, and not a Kubernetes API server: no scheduler, no kubelet, no garbage collector,
no RBAC evaluation. It answers the three requests ``streamops.supervision.kubernetes`` makes —
list pods by label selector, get a pod, delete a pod — from an in-memory dict of pod JSON, in the
API's own shapes (``PodList``, ``Pod``, ``Status`` errors), and records every request so a test
can assert what the real ``kubernetes`` Python client sent over HTTP. What a real cluster does
with a deletion (SIGTERM, grace period, removing the executors first under ``Foreground``) is
simulated only as "the pod disappears after ``polls_until_gone`` more reads".
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict[str, Any] | None


@dataclass
class FakeKubernetesApi:
    """Pods by namespace and name; ``forbidden``: verbs answered 403 (``unauthorized``: 401)."""

    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    forbidden: set[str] = field(default_factory=set)
    unauthorized: bool = False
    # After a DELETE the pod is still read this many times (terminating) before it is gone;
    # None: it never goes (a node that does not answer).
    polls_until_gone: int | None = 2
    requests: list[Recorded] = field(default_factory=list)
    _terminating: dict[tuple[str, str], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, namespace: str, pod: dict[str, Any]) -> None:
        self.pods[(namespace, pod["metadata"]["name"])] = pod

    # --- the API ---------------------------------------------------------------------------------
    def handle(
        self, method: str, url: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        parts = urlsplit(url)
        document = json.loads(body) if body else None
        with self._lock:
            self.requests.append(
                Recorded(method, parts.path, parse_qs(parts.query), headers, document)
            )
            segments = parts.path.strip("/").split("/")
            # /api/v1/namespaces/<ns>/pods[/<name>]
            if segments[:3] != ["api", "v1", "namespaces"] or len(segments) < 5:
                return 404, _status(404, "NotFound", f"no route {parts.path}")
            namespace, resource = segments[3], segments[4]
            name = segments[5] if len(segments) > 5 else None
            if resource != "pods":
                return 404, _status(404, "NotFound", f"no resource {resource}")
            verb = {"GET": "get" if name else "list", "DELETE": "delete"}.get(method, "?")
            if self.unauthorized:
                return 401, _status(401, "Unauthorized", "Unauthorized")
            if verb in self.forbidden:
                return 403, _status(
                    403,
                    "Forbidden",
                    f"pods{'' if name is None else f' {name!r}'} is forbidden: User "
                    '"system:serviceaccount:data:airflow" cannot '
                    f'{verb} resource "pods" in API group "" in the namespace "{namespace}"',
                )
            if verb == "list":
                selector = parse_qs(parts.query).get("labelSelector", [""])[0]
                items = [
                    pod
                    for (ns, _), pod in sorted(self.pods.items())
                    if ns == namespace and _matches(pod, selector)
                ]
                return 200, {"kind": "PodList", "apiVersion": "v1", "items": items}
            assert name is not None
            key = (namespace, name)
            if key not in self.pods:
                return 404, _status(404, "NotFound", f'pods "{name}" not found')
            pod = self.pods[key]
            if verb == "delete":
                pod["metadata"]["deletionTimestamp"] = "2026-11-25T12:30:00Z"
                self._terminating[key] = 0
                return 200, pod
            if key in self._terminating and self.polls_until_gone is not None:
                if self._terminating[key] >= self.polls_until_gone:
                    del self.pods[key], self._terminating[key]
                    return 404, _status(404, "NotFound", f'pods "{name}" not found')
                self._terminating[key] += 1
            return 200, pod

    def of(self, method: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method]


def _matches(pod: dict[str, Any], selector: str) -> bool:
    labels = pod["metadata"].get("labels", {})
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def serve(api: FakeKubernetesApi) -> Iterator[str]:
    """Serve ``api`` on 127.0.0.1 (a free port) while the generator is suspended; yields the URL."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {key.lower(): value for key, value in self.headers.items()}
            status, document = api.handle(self.command, self.path, headers, body)
            payload = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _answer
        do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
