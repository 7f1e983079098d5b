"""The dashboard's pure pieces: Redis values in, the page's JSON out."""

from __future__ import annotations

import json

import pytest

from streamops.contract.redis_keys import vitals_patient_key
from streamops.dashboard import state


def test_sse_message_is_one_event_with_json_data() -> None:
    raw = state.sse_message("orders", {"text": "a\nb", "n": 1}, event_id="7").decode()
    assert raw.endswith("\n\n")
    lines = raw.strip("\n").split("\n")
    assert lines == ["event: orders", "id: 7", 'data: {"text":"a\\nb","n":1}']
    assert json.loads(lines[2].removeprefix("data: ")) == {"text": "a\nb", "n": 1}


def test_revenue_window_keeps_money_a_decimal_string() -> None:
    fields = {
        "currency": "EUR",
        "window_start": "2026-11-24T14:03:05.000Z",
        "window_end": "2026-11-24T14:03:10.000Z",
        "order_count": "3",
        "item_count": "7",
        "revenue": "1234.50",
        "batch_id": "4",
    }
    assert state.revenue_window(fields) == {
        "currency": "EUR",
        "window_start": "2026-11-24T14:03:05.000Z",
        "window_end": "2026-11-24T14:03:10.000Z",
        "order_count": 3,
        "item_count": 7,
        "revenue": "1234.50",
    }
    assert state.revenue_window({"currency": "EUR"}) is None
    assert state.revenue_window({**fields, "order_count": "x"}) is None


def test_orders_totals_by_currency() -> None:
    totals = {
        "EUR:order_count": "2",
        "EUR:item_count": "5",
        "EUR:revenue": "10.00",
        "USD:revenue": "3.10",
        "batch_id": "9",
    }
    assert state.orders_totals(totals) == {
        "EUR": {"order_count": "2", "item_count": "5", "revenue": "10.00"},
        "USD": {"order_count": "0", "item_count": "0", "revenue": "3.10"},
    }


def test_orders_update_drops_malformed_windows() -> None:
    message = {
        "batch_id": 3,
        "published_at": 1.5,
        "windows": [
            {"currency": "EUR", "window_start": "s", "order_count": 1, "revenue": "2.00"},
            {"currency": "EUR"},
        ],
        "totals": {"EUR": {"order_count": "1", "item_count": "1", "revenue": "2.00"}},
    }
    update = state.orders_update(message)
    assert update["batch_id"] == 3
    assert [w["revenue"] for w in update["windows"]] == ["2.00"]
    assert update["totals"]["EUR"]["revenue"] == "2.00"


def test_latest_alerts_keeps_the_newest_state_of_each_alert() -> None:
    entries = [
        ("3-0", {"alert_id": "a", "alert": json.dumps({"alert_id": "a", "event_count": 9})}),
        ("2-0", {"alert_id": "b", "alert": json.dumps({"alert_id": "b", "event_count": 1})}),
        ("1-0", {"alert_id": "a", "alert": json.dumps({"alert_id": "a", "event_count": 5})}),
        ("0-5", {"alert_id": "c", "alert": "not json"}),
    ]
    alerts = state.latest_alerts(entries)
    assert [(a["alert_id"], a["event_count"], a["stream_id"]) for a in alerts] == [
        ("a", 9, "3-0"),
        ("b", 1, "2-0"),
    ]
    assert len(state.latest_alerts(entries, limit=1)) == 1


def _offsets(topic_offsets: dict[str, int]) -> str:
    return json.dumps({"KafkaV2[Subscribe[orders]]": {"orders": topic_offsets}})


def test_kafka_lag_sums_partitions() -> None:
    assert state.kafka_lag(_offsets({"0": 120, "1": 80}), _offsets({"0": 100, "1": 80})) == 20
    # A partition read past what was last seen as latest counts as zero, not negative.
    assert state.kafka_lag(_offsets({"0": 10}), _offsets({"0": 12})) == 0
    assert state.kafka_lag(None, _offsets({"0": 1})) is None
    assert state.kafka_lag("not json", _offsets({"0": 1})) is None
    assert state.kafka_lag(json.dumps({"rate": "3"}), json.dumps({"rate": "3"})) is None


def test_pipeline_health_from_a_query_hash() -> None:
    fields = {
        "pipeline": "orders",
        "query_name": "orders_revenue",
        "state": "running",
        "heartbeat_at": "1000.000",
        "batch_id": "42",
        "num_input_rows": "250",
        "input_rows_per_second": "120.44",
        "processed_rows_per_second": "nan",
        "batch_duration_ms": "850",
        "latest_offsets": _offsets({"0": 300}),
        "end_offsets": _offsets({"0": 250}),
        "error_class": "",
    }
    health = state.pipeline_health(fields, now=1010.0)
    assert health["status"] == "ok"
    assert health["heartbeat_age_seconds"] == 10.0
    assert health["batch_id"] == 42
    assert health["input_rows_per_second"] == 120.4
    assert health["processed_rows_per_second"] is None
    assert health["batch_duration_ms"] == 850
    assert health["lag"] == 50
    assert health["error_class"] is None
    assert state.pipeline_health(fields, now=1000.0 + 61)["status"] == "stalled"
    assert state.pipeline_health({**fields, "state": "failed"}, now=1001.0)["status"] == "failed"
    assert state.pipeline_health({}, now=1.0)["status"] == "unknown"


def test_the_page_judges_a_query_by_the_supervisors_rule_and_its_pipelines_bounds() -> None:
    """A long batch is healthy, not stalled, on the page as for the supervisor; the bounds are
    the pipeline's (a slow trigger's spec allows more), and a stopped query shows as stopped."""
    from streamops.supervision.job_health import StallBounds

    busy = {
        "pipeline": "vitals",
        "query_name": "vitals_summary",
        "state": "running",
        "heartbeat_at": "1000",  # no progress event for 200 s: the batch is still running
        "status_at": "1198",
        "trigger_active": "1",
        "batch_started_at": "1000",
        "first_batch": "0",
    }
    health = state.pipeline_health(busy, now=1200.0)
    assert health["status"] == "ok"
    assert health["detail"] == "vitals_summary batch running 200 s"
    assert state.pipeline_health({**busy, "batch_started_at": "700"}, now=1200.0)["status"] == (
        "stalled"  # 500 s into one batch: past the default 240 s allowance
    )
    idle = {**busy, "trigger_active": "0", "last_trigger_at": "1100", "heartbeat_at": "1100"}
    assert state.pipeline_health(idle, now=1200.0)["status"] == "stalled"  # 100 s > 60 s
    slow_trigger = StallBounds(heartbeat_max_age_seconds=180.0, startup_grace_seconds=180.0)
    assert state.pipeline_health(idle, now=1200.0, bounds=slow_trigger)["status"] == "ok"
    assert state.pipeline_health({**idle, "state": "stopped"}, now=1200.0)["status"] == "stopped"


# The vitals pipeline's defaults, in the shape of streamops.contract.vitals.DEFAULT_THRESHOLDS.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "heart_rate": (40.0, 130.0),
    "spo2": (90.0, None),
    "temperature_c": (35.5, 38.3),
}


@pytest.mark.parametrize(
    ("vital", "value", "out"),
    [
        ("heart_rate", "72", False),
        ("heart_rate", "131", True),
        ("heart_rate", "40", False),  # bounds are inclusive
        ("spo2", "88", True),
        ("spo2", "100", False),  # no upper bound
        ("temperature_c", "38.6", True),
    ],
)
def test_vitals_tile_flags_values_outside_the_default_range(
    vital: str, value: str, out: bool
) -> None:
    latest = {vital: value, "event_time": "2026-11-24T14:00:00.000Z", "batch_id": "3"}
    tile = state.vitals_tile("p-1", latest, {}, RANGES)
    assert tile["patient_id"] == "p-1"
    assert [(v["name"], v["out_of_range"]) for v in tile["vitals"]] == [(vital, out)]
    assert tile["out_of_range"] == int(out)
    assert tile["event_time"] == "2026-11-24T14:00:00.000Z"
    assert tile["batch_id"] == 3


def test_vitals_tile_uses_the_patients_own_range_from_the_pipelines_flag() -> None:
    # This patient's heart rate range is 40–100 (patient_thresholds): 110 is out for them.
    flag = {
        "reason": "out_of_range",
        "window_start": "2026-11-24T13:59:00.000Z",
        "window_end": "2026-11-24T14:00:00.000Z",
        "observed_value": 104.0,
        "threshold_low": 40.0,
        "threshold_high": 100.0,
    }
    tile = state.vitals_tile(
        "p-3", {"heart_rate": "110", "spo2": "97"}, {"heart_rate": json.dumps(flag)}, RANGES
    )
    heart = next(v for v in tile["vitals"] if v["name"] == "heart_rate")
    assert (heart["low"], heart["high"], heart["out_of_range"]) == (40.0, 100.0, True)
    assert heart["flag"]["reason"] == "out_of_range"
    spo2 = next(v for v in tile["vitals"] if v["name"] == "spo2")
    assert spo2["flag"] is None and spo2["out_of_range"] is False


def test_vitals_tile_ignores_empty_values_and_reports_a_silent_device() -> None:
    signal = {"reason": "no_signal", "silent_since": "2026-11-24T14:01:00.000Z"}
    tile = state.vitals_tile(
        "p-2",
        {"heart_rate": "", "device_id": "d-9", "spo2": "97"},
        {"signal": json.dumps(signal), "spo2": "not json"},
        RANGES,
    )
    assert [v["name"] for v in tile["vitals"]] == ["spo2"]
    assert tile["device_id"] == "d-9"
    assert tile["no_signal_since"] == "2026-11-24T14:01:00.000Z"
    assert vitals_patient_key("p-2", "latest") == "streamops:vitals:patient:p-2:latest"
