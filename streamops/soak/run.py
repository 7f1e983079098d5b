"""One soak: check the platform runs, send probes for the duration while sampling cost and
health, wait for the last probes, then write the report (JSON and PNG charts)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamops.config import Settings
from streamops.soak import plots
from streamops.soak.probes import (
    ALERT_OUTPUTS,
    OUTPUTS,
    PROBE_RULE_ID,
    Prober,
    ProbeRule,
    ProbeWindows,
    SoakError,
    ensure_probe_rule,
)
from streamops.soak.report import (
    build_report,
    cost_report,
    health_report,
    outputs_report,
    status_line,
)
from streamops.soak.sampler import SAMPLE_INTERVAL_SECONDS, Platform, PlatformSampler

STATUS_INTERVAL_SECONDS = 1.0
# Modules with a slow first import (Airflow's, for the Kafka lag): imported before timing starts.
SLOW_IMPORTS = ("streamops_airflow.ui.pipeline_sources",)


@dataclass(frozen=True)
class SoakOptions:
    duration_seconds: float
    probe_interval_seconds: float = 5.0
    timeout_seconds: float = 120.0
    # None: <state_dir>/soak
    output_dir: Path | None = None
    # The benchmark runner writes the JSON itself; the CLI has the soak write it.
    write_json: bool = True
    sample_interval_seconds: float = SAMPLE_INTERVAL_SECONDS

    def __post_init__(self) -> None:
        for name in ("duration_seconds", "probe_interval_seconds", "timeout_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} is {getattr(self, name)}; give a positive number")
        if self.probe_interval_seconds < 1:
            raise ValueError(
                f"probe_interval_seconds is {self.probe_interval_seconds}; the probes must stay "
                "light: give 1 s or more"
            )

    def folder(self, settings: Settings) -> Path:
        return self.output_dir or settings.state_dir / "soak"


@dataclass
class LiveStatus:
    """What the progress display shows, once a second."""

    elapsed_seconds: float
    duration_seconds: float
    phase: str
    line: str


@dataclass
class SoakResult:
    report: dict[str, Any]
    json_path: Path | None
    plots: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def preflight(settings: Settings) -> tuple[Platform, list[str]]:
    """The platform, if Kafka, MariaDB, Redis and every enabled pipeline's job run; else a
    SoakError naming what is missing. Other components not running are returned as warnings
    (their cost is then not measured)."""
    from streamops.platform_health import check_mariadb, check_redis
    from streamops.topics import admin_client

    where = f"state folder {settings.state_dir}"
    down = []
    try:
        admin_client(settings).list_topics(timeout=10)
    except Exception as error:  # KafkaException: no broker answered
        down.append(f"Kafka at {settings.kafka_bootstrap_servers} ({error})")
    for name, check in (("MariaDB", check_mariadb), ("Redis", check_redis)):
        try:
            check(settings)
        except Exception as error:
            down.append(f"{name} ({error})")
    if down:
        raise SoakError(
            "The soak runs against the running platform, and these services do not answer: "
            + "; ".join(down)
            + f". Start the platform with `make up` ({where}), or point STREAMOPS_STATE_DIR and "
            "the STREAMOPS_* ports at the one that runs."
        )
    platform = Platform.load(settings)
    if not platform.specs:
        raise SoakError("No pipeline is enabled in the pipelines file: nothing to soak.")
    handles = platform.job_handles()
    missing = [name for name in platform.specs if name not in handles]
    if missing:
        dags = ", ".join(platform.specs[name].dag_id for name in missing)
        raise SoakError(
            f"The job of pipeline(s) {', '.join(missing)} is not running ({where}); the soak "
            f"measures every pipeline under Airflow's supervision. Start the platform with "
            f"`make up`, or see `streamops pipeline status` (DAGs {dags})."
        )
    warnings = [
        f"{name} is not running: its cost is not measured" for name in platform.not_running()
    ]
    return platform, warnings


def job_option(arguments: Sequence[str], option: str, default: int) -> int:
    """The whole-number value of ``option`` in a job's arguments (``--x 5`` or ``--x=5``)."""
    for index, argument in enumerate(arguments):
        if argument == option and index + 1 < len(arguments):
            return int(arguments[index + 1])
        if argument.startswith(f"{option}="):
            return int(argument.split("=", 1)[1])
    return default


def probe_windows(platform: Platform, rule: ProbeRule) -> ProbeWindows:
    """The window lengths the jobs run with: their defaults unless the spec's arguments say."""
    from streamops.contract.job_defaults import ORDERS_WINDOW_SECONDS, VITALS_WINDOW_SECONDS

    def window(pipeline: str, default: int) -> int:
        spec = platform.specs.get(pipeline)
        arguments = spec.job_arguments() if spec is not None else []
        return job_option(arguments, "--window-seconds", default)

    return ProbeWindows(
        revenue_seconds=window("orders", ORDERS_WINDOW_SECONDS),
        vitals_seconds=window("vitals", VITALS_WINDOW_SECONDS),
        alert_seconds=rule.window_seconds,
    )


def run_soak(
    settings: Settings,
    options: SoakOptions,
    *,
    on_status: Callable[[LiveStatus], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> SoakResult:
    """Run one soak (see the package); ``on_status`` is called about once a second, ``stop``
    ends the probing early (the report says ``interrupted``). KeyboardInterrupt does too."""
    note = on_note or (lambda _: None)
    platform, warnings = preflight(settings)
    for warning in warnings:
        note(f"warning: {warning}")
    for module in SLOW_IMPORTS:
        try:
            __import__(module)
        except ImportError as error:  # the sampler says what it could not measure
            note(f"warning: cannot import {module}: {error}")
    rule = ensure_probe_rule(settings)
    if rule.inserted:
        note(
            f"created the alert rule {PROBE_RULE_ID}; the alerts job loads it within its refresh "
            "interval, so the first alert probes count as warm-up"
        )
    if not rule.usable:
        note(f"warning: {rule.reason}: the alert outputs are skipped")
    windows = probe_windows(platform, rule)
    started = datetime.now(UTC)
    run_id = f"{started:%Y%m%dT%H%M%SZ}"
    started_at = time.time()
    interrupted = False
    stop = stop or threading.Event()
    with (
        PlatformSampler(
            platform, started_at=started_at, interval=options.sample_interval_seconds
        ) as sampler,
        Prober(
            settings,
            run_id,
            timeout_seconds=options.timeout_seconds,
            windows=windows,
            alerts=rule.usable,
        ) as prober,
    ):

        def report_status(phase: str) -> None:
            if on_status is None:
                return
            with sampler.lock:
                verdicts = list(sampler.health.verdicts)
                load1 = sampler.health.loads[-1]["load1"] if sampler.health.loads else None
            not_healthy = sum(1 for v in verdicts for s in v["statuses"].values() if s != "healthy")
            line = status_line(
                phase=phase,
                probes_sent=prober.sent,
                expectations=prober.snapshot(),
                cost=sampler.latest_cost(),
                load1=load1,
                not_healthy=not_healthy,
            )
            on_status(LiveStatus(time.time() - started_at, options.duration_seconds, phase, line))

        try:
            interrupted = _probe(prober, options, stop, report_status)
            if not interrupted:
                _drain(prober, options, stop, report_status)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            try:
                prober.send_discharge()
            except Exception as error:  # the report matters more than the patient's flag
                warnings.append(f"the probe patient's discharge was not sent: {error}")
    ended_at = time.time()
    report = _assemble(
        settings=settings,
        platform=platform,
        prober=prober,
        sampler=sampler,
        rule=rule,
        windows=windows,
        options=options,
        run_id=run_id,
        started_at=started_at,
        ended_at=ended_at,
        warnings=warnings,
        interrupted=interrupted,
    )
    folder = options.folder(settings)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = None
    if options.write_json:
        json_path = folder / f"soak-{run_id}.json"
        json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    charts: list[Path] = []
    if plots.available():
        charts = plots.draw_all(report, folder, f"soak-{run_id}")
    else:
        warnings.append(
            "matplotlib is not installed: no charts (.venv/bin/pip install -e '.[dev]' "
            "-c constraints.txt)"
        )
    return SoakResult(report, json_path, charts, warnings)


def _probe(
    prober: Prober,
    options: SoakOptions,
    stop: threading.Event,
    report_status: Callable[[str], None],
) -> bool:
    """Send a probe every interval for the duration; True when stopped early."""
    begin = time.monotonic()
    end = begin + options.duration_seconds
    next_probe = begin
    next_status = begin
    seq = 0
    while time.monotonic() < end:
        if stop.is_set():
            return True
        now = time.monotonic()
        if now >= next_probe:
            prober.send(seq)
            seq += 1
            # A slow send (the broker under load) delays the next probe, never bunches them.
            next_probe = max(next_probe + options.probe_interval_seconds, time.monotonic())
        if now >= next_status:
            report_status("probing")
            next_status = now + STATUS_INTERVAL_SECONDS
        time.sleep(min(0.2, max(0.0, min(next_probe, end) - time.monotonic())))
    return False


def _drain(
    prober: Prober,
    options: SoakOptions,
    stop: threading.Event,
    report_status: Callable[[str], None],
) -> None:
    """Wait until the last probes are visible everywhere or timed out."""
    deadline = time.monotonic() + options.timeout_seconds + 2
    while prober.pending() and time.monotonic() < deadline and not stop.is_set():
        report_status(f"waiting for {len(prober.pending())} outputs")
        time.sleep(STATUS_INTERVAL_SECONDS)


def _assemble(
    *,
    settings: Settings,
    platform: Platform,
    prober: Prober,
    sampler: PlatformSampler,
    rule: ProbeRule,
    windows: ProbeWindows,
    options: SoakOptions,
    run_id: str,
    started_at: float,
    ended_at: float,
    warnings: list[str],
    interrupted: bool,
) -> dict[str, Any]:
    skipped = {} if rule.usable else dict.fromkeys(ALERT_OUTPUTS, rule.reason)
    outputs = outputs_report(
        prober.snapshot(), started_at, rule_inserted=rule.inserted, skipped=skipped
    )
    cost = cost_report(sampler.cost, platform.component_groups(), os.cpu_count() or 1)
    recorded = sampler.health
    health = health_report(
        recorded.verdicts,
        recorded.loads,
        recorded.lags,
        recorded.restarts_first,
        recorded.restarts_last,
        recorded.job_pids,
        list(platform.specs),
        recorded.errors,
    )
    notes = list(warnings)
    notes += prober.send_failures[:20]
    notes += [
        f"poll errors on {where}: {n} (last: {prober.last_poll_error.get(where)})"
        for where, n in prober.poll_errors.items()
    ]
    return build_report(
        run_id=run_id,
        started_at=started_at,
        ended_at=ended_at,
        options={
            "duration_seconds": options.duration_seconds,
            "probe_interval_seconds": options.probe_interval_seconds,
            "timeout_seconds": options.timeout_seconds,
            "sample_interval_seconds": options.sample_interval_seconds,
        },
        outputs=outputs,
        cost=cost,
        health=health,
        probes_sent=prober.sent,
        context=_context(settings, rule, windows, run_id),
        notes=notes,
        interrupted=interrupted,
    )


def _context(
    settings: Settings, rule: ProbeRule, windows: ProbeWindows, run_id: str
) -> Mapping[str, Any]:
    import psutil

    return {
        "host": socket.gethostname(),
        "logical_cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "state_dir": str(settings.state_dir),
        "kafka": settings.kafka_bootstrap_servers,
        "mariadb": f"{settings.mariadb_host}:{settings.mariadb_port}/{settings.mariadb_database}",
        "redis": settings.redis_url_redacted,
        "probe_tag": f"soak-{run_id}-<seq> (orders, payments); soak-{run_id} (patient)",
        "probe_rule": {
            "rule_id": PROBE_RULE_ID,
            "window_seconds": rule.window_seconds,
            "created_by_this_run": rule.inserted,
            "usable": rule.usable,
        },
        "windows_seconds": {
            "order_revenue": windows.revenue_seconds,
            "vitals_summary": windows.vitals_seconds,
            "alerts": windows.alert_seconds,
        },
        "outputs": dict(OUTPUTS),
    }
