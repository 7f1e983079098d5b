"""A pinned `helm` for the chart tests, built once from source with `go install` and cached.

Helm's release binaries are not on any registry this project may use, but its source is a Go
module, so `go install helm.sh/helm/v3/cmd/helm@<version>` builds it (about three minutes on two
cores, once). The binary's file name carries the version, so a version bump builds a new one.

Run ``python -m tests.deploy.helm_binary`` to build it ahead of the tests (it prints the path).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HELM_VERSION = "v3.22.0"
# The Kubernetes version helm assumes without --kube-version, and the one `helm lint` checks
# deprecated APIs against. Helm's own Makefile derives it from the client-go module it builds
# with (v0.37 -> 1.37) and passes it with -ldflags, which `go install` alone would not do.
HELM_KUBE_MAJOR = "1"
HELM_KUBE_MINOR = "37"
HELM_MODULE = "helm.sh/helm/v3/cmd/helm"
BUILD_TIMEOUT_SECONDS = 30 * 60


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamops" / "bin"


def helm_path() -> Path:
    return cache_dir() / f"helm-{HELM_VERSION}"


def go_executable() -> str | None:
    found = shutil.which("go")
    if found:
        return found
    fallback = Path("/usr/local/go/bin/go")
    return str(fallback) if fallback.is_file() else None


def _ldflags() -> str:
    flags = ["-s", "-w", f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"]
    for package in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
        flags.append(f"-X {package}.k8sVersionMajor={HELM_KUBE_MAJOR}")
        flags.append(f"-X {package}.k8sVersionMinor={HELM_KUBE_MINOR}")
    return " ".join(flags)


def installed_version(binary: Path) -> str | None:
    if not binary.is_file():
        return None
    result = subprocess.run(
        [str(binary), "version", "--template", "{{.Version}}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def ensure_helm(report: Callable[[str], None] = print) -> Path:
    """The path of a working helm of HELM_VERSION, building it first when it is not cached."""
    binary = helm_path()
    if installed_version(binary) == HELM_VERSION:
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    # Two test sessions on one machine must not build (and rename over) the same file at once.
    with (binary.parent / ".helm-build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed_version(binary) == HELM_VERSION:
            return binary
        go = go_executable()
        if go is None:
            raise RuntimeError(
                "Building helm for the chart tests needs Go (`go` on PATH or /usr/local/go/bin/go)."
                f" Install Go, or put a helm {HELM_VERSION} binary at {binary}."
            )
        report(
            f"building helm {HELM_VERSION} with `go install` into {binary} (once; takes a few "
            "minutes on a small machine)"
        )
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=binary.parent, prefix=".helm-build-") as gobin:
            env = {**os.environ, "GOBIN": gobin, "CGO_ENABLED": "0"}
            process = subprocess.Popen(
                [
                    go,
                    "install",
                    "-trimpath",
                    "-ldflags",
                    _ldflags(),
                    f"{HELM_MODULE}@{HELM_VERSION}",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )
            assert process.stdout is not None
            downloads = 0
            output: list[str] = []
            for line in process.stdout:
                output.append(line)
                if line.startswith("go: downloading"):
                    downloads += 1
                    if downloads % 25 == 0:
                        report(f"  ... {downloads} Go modules downloaded")
            try:
                returncode = process.wait(timeout=BUILD_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                raise RuntimeError(
                    f"Building helm took more than {BUILD_TIMEOUT_SECONDS} s; gave up."
                ) from None
            if returncode != 0:
                raise RuntimeError(
                    f"`go install {HELM_MODULE}@{HELM_VERSION}` failed (exit {returncode}):\n"
                    + "".join(output[-40:])
                )
            # Rename last, so an interrupted build never leaves a binary that looks complete.
            os.replace(Path(gobin) / "helm", binary)
        report(f"helm {HELM_VERSION} built in {time.monotonic() - started:.0f} s")
    version = installed_version(binary)
    if version != HELM_VERSION:
        raise RuntimeError(f"{binary} reports version {version!r}, expected {HELM_VERSION}.")
    return binary


if __name__ == "__main__":
    print(ensure_helm(lambda message: print(message, file=sys.stderr, flush=True)))
