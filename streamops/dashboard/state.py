"""What the dashboard shows, computed from Redis values alone: pure functions, no I/O.

Every function takes the decoded strings Redis returns (``decode_responses=True``) and gives the
JSON-ready dict the page renders, so the snapshot on page load and the pushed updates have one
shape. Key names and fields are the ones in docs/redis-keys.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streamops.supervision.job_health import StallBounds, query_verdict
from streamops.supervision.spec import HealthThresholds

# The bounds of a query whose pipeline has no spec (a job run by hand under another name): the
# specs' defaults.
DEFAULT_STALL_BOUNDS = HealthThresholds().stall_bounds()

# Windows on the chart: two minutes of 5-second windows.
CHART_WINDOWS = 24
LATEST_ALERTS = 20
# Tiles on the page: the patients with the newest readings.
MAX_PATIENTS = 48


@dataclass(frozen=True)
class VitalDisplay:
    label: str
    unit: str


# How the page names each vital sign of the contract; the ranges are the pipeline's own.
VITAL_DISPLAY: dict[str, VitalDisplay] = {
    "heart_rate": VitalDisplay("Heart rate", "bpm"),
    "spo2": VitalDisplay("SpO₂", "%"),
    "systolic_bp": VitalDisplay("Systolic", "mmHg"),
    "diastolic_bp": VitalDisplay("Diastolic", "mmHg"),
    "temperature_c": VitalDisplay("Temperature", "°C"),
    "respiratory_rate": VitalDisplay("Resp. rate", "/min"),
}


def sse_message(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One server-sent event. JSON never holds a raw newline, so ``data`` stays one line."""
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), default=str))
    return ("\n".join(lines) + "\n\n").encode()


# --- orders ------------------------------------------------------------------------------------


def revenue_window(fields: Mapping[str, str]) -> dict[str, Any] | None:
    """A window hash (or a window of the channel's message) as the chart's point."""
    try:
        return {
            "currency": fields["currency"],
            "window_start": fields["window_start"],
            "window_end": fields.get("window_end", ""),
            "order_count": int(fields["order_count"]),
            "item_count": int(fields.get("item_count") or 0),
            # Money stays a decimal string end to end; the page parses it only to draw.
            "revenue": str(fields["revenue"]),
        }
    except (KeyError, ValueError, TypeError):
        return None


def currencies_of_totals(totals: Mapping[str, str]) -> list[str]:
    """The currencies the totals hash holds (fields ``<CUR>:revenue``)."""
    return sorted({field.split(":", 1)[0] for field in totals if field.endswith(":revenue")})


def orders_totals(totals: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The totals hash as ``{CUR: {order_count, item_count, revenue}}``, as in the channel."""
    return {
        currency: {
            name: str(totals.get(f"{currency}:{name}", "0"))
            for name in ("order_count", "item_count", "revenue")
        }
        for currency in currencies_of_totals(totals)
    }


def orders_update(message: Mapping[str, Any]) -> dict[str, Any]:
    """A ``streamops:orders:updates`` message as the page's ``orders`` event."""
    windows = [revenue_window(w) for w in message.get("windows", [])]
    return {
        "batch_id": message.get("batch_id"),
        "published_at": message.get("published_at"),
        "windows": [w for w in windows if w is not None],
        "totals": message.get("totals", {}),
    }


# --- alerts ------------------------------------------------------------------------------------


def alert_entry(payload: str | Mapping[str, Any], stream_id: str | None = None) -> dict[str, Any]:
    """An alert JSON (stream field ``alert`` or the channel's message) for the alerts list."""
    alert = dict(json.loads(payload)) if isinstance(payload, str) else dict(payload)
    if stream_id is not None:
        alert["stream_id"] = stream_id
    return alert


def latest_alerts(
    entries: Iterable[tuple[str, Mapping[str, str]]], limit: int = LATEST_ALERTS
) -> list[dict[str, Any]]:
    """``XREVRANGE`` entries, newest first, one per alert id (a changed alert is re-sent)."""
    seen: set[str] = set()
    alerts = []
    for stream_id, fields in entries:
        try:
            alert = alert_entry(fields["alert"], stream_id)
        except (KeyError, ValueError):
            continue
        alert_id = str(alert.get("alert_id", stream_id))
        if alert_id in seen:
            continue
        seen.add(alert_id)
        alerts.append(alert)
        if len(alerts) == limit:
            break
    return alerts


# --- pipeline health ---------------------------------------------------------------------------


def kafka_lag(latest_offsets: str | None, end_offsets: str | None) -> int | None:
    """Records Kafka holds beyond what the last batch read, summed over partitions.

    Both arguments are the listener's JSON ``{source: {topic: {partition: offset}}}``; None when
    either is missing or a source is not Kafka.
    """
    if not latest_offsets or not end_offsets:
        return None
    try:
        latest, end = json.loads(latest_offsets), json.loads(end_offsets)
    except ValueError:
        return None
    if not isinstance(latest, dict) or not isinstance(end, dict):
        return None
    lag = 0
    for source, topics in latest.items():
        read = end.get(source)
        if not isinstance(topics, dict) or not isinstance(read, dict):
            return None
        for topic, partitions in topics.items():
            if not isinstance(partitions, dict):
                return None
            for partition, offset in partitions.items():
                done = (read.get(topic) or {}).get(partition)
                if isinstance(offset, int) and isinstance(done, int):
                    lag += max(0, offset - done)
    return lag


def _number(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def pipeline_health(
    fields: Mapping[str, str], now: float, bounds: StallBounds | None = None
) -> dict[str, Any]:
    """One ``streamops:query:<pipeline>:<query>`` hash as the health row of its query.

    A live query (running, restarting, failed) gets the supervisor's verdict on its fields
    (``streamops.supervision.job_health.query_verdict``) with its pipeline's ``bounds``, so the
    page and the supervisor use one rule: ``ok`` (healthy, a batch within its allowance
    included: a steadily fed query is inside a batch most of the time), ``waiting``,
    ``restarting``, ``failed`` or ``stalled``; ``detail`` says why (``… batch running 3 s``).
    Any other state is shown as it is (``stopped``, ``unknown``), without a detail."""
    heartbeat = _number(fields.get("heartbeat_at"))
    age = None if heartbeat is None else max(0.0, now - heartbeat)
    state = fields.get("state") or "unknown"
    detail = None
    if state in ("running", "restarting", "failed"):
        kind, detail = query_verdict(
            fields.get("query_name", ""), fields, now, bounds or DEFAULT_STALL_BOUNDS
        )
        status = "ok" if kind == "busy" else kind
    else:
        status = state
    batch = _number(fields.get("batch_id"))
    duration = _number(fields.get("batch_duration_ms"))
    return {
        "pipeline": fields.get("pipeline", ""),
        "query_name": fields.get("query_name", ""),
        "state": state,
        "status": status,
        "detail": detail,
        "heartbeat_age_seconds": None if age is None else round(age, 1),
        "batch_id": None if batch is None else int(batch),
        "progress_at": fields.get("progress_at") or None,
        "num_input_rows": _int_or_none(fields.get("num_input_rows")),
        "input_rows_per_second": _rounded(fields.get("input_rows_per_second")),
        "processed_rows_per_second": _rounded(fields.get("processed_rows_per_second")),
        "batch_duration_ms": None if duration is None else int(duration),
        "lag": kafka_lag(fields.get("latest_offsets"), fields.get("end_offsets")),
        "error_class": fields.get("error_class") or None,
    }


def _int_or_none(value: str | None) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _rounded(value: str | None) -> float | None:
    number = _number(value)
    return None if number is None else round(number, 1)


# --- patient vitals ----------------------------------------------------------------------------


def _flag(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        flag = json.loads(text)
    except ValueError:
        return None
    return flag if isinstance(flag, dict) else None


def vitals_tile(
    patient_id: str,
    latest: Mapping[str, str],
    flags: Mapping[str, str],
    default_ranges: Mapping[str, tuple[float | None, float | None]],
) -> dict[str, Any]:
    """A patient's tile from the vitals job's ``…:latest`` and ``…:flags`` hashes.

    A value is out of range when it lies outside the patient's range: the one the pipeline last
    flagged that vital against (it carries the patient's own thresholds), else the pipeline's
    default. The pipeline's flags (``out_of_range``/``anomaly`` windows, ``no_signal``) are passed
    along so the page can show them.
    """
    vitals = []
    for name, display in VITAL_DISPLAY.items():
        value = _number(latest.get(name))
        if value is None:
            continue
        flag = _flag(flags.get(name))
        low, high = default_ranges.get(name, (None, None))
        if flag is not None and flag.get("reason") == "out_of_range":
            # The range this patient's reading was flagged against: their own thresholds.
            low = _bound(flag.get("threshold_low"), low)
            high = _bound(flag.get("threshold_high"), high)
        vitals.append(
            {
                "name": name,
                "label": display.label,
                "unit": display.unit,
                "value": value,
                "low": low,
                "high": high,
                "out_of_range": (low is not None and value < low)
                or (high is not None and value > high),
                "flag": None
                if flag is None
                else {
                    "reason": flag.get("reason"),
                    "window_start": flag.get("window_start"),
                    "window_end": flag.get("window_end"),
                    "observed_value": flag.get("observed_value"),
                },
            }
        )
    signal = _flag(flags.get("signal"))
    return {
        "patient_id": patient_id,
        "device_id": latest.get("device_id") or None,
        "event_time": latest.get("event_time") or None,
        "batch_id": _int_or_none(latest.get("batch_id")),
        "vitals": vitals,
        "out_of_range": sum(1 for v in vitals if v["out_of_range"]),
        "no_signal_since": None if signal is None else signal.get("silent_since"),
    }


def _bound(value: Any, default: float | None) -> float | None:
    number = None if value is None else _number(str(value))
    return default if number is None else number
