"""The soak's probe records against the contract, and what each output must show for a probe
(streamops/soak/probes.py, streamops/soak/run.py), without Kafka or a database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from streamops.contract.alerts import alert_id
from streamops.generator.records import validate
from streamops.soak.probes import (
    ALERT_OUTPUTS,
    OUTPUTS,
    PROBE_CURRENCY,
    PROBE_RULE_ID,
    Ack,
    Expectation,
    ProbeWindows,
    WindowCounts,
    build_probe,
    discharge_record,
    expectations_for,
    satisfied_by_counts,
)
from streamops.soak.run import job_option

MOMENT = datetime(2026, 12, 2, 10, 0, 3, 123456, tzinfo=UTC)
PRODUCT = ("SKU-30001", "4.99")
RUN = "20261202T100000Z"


def test_the_valid_probe_records_keep_the_contract() -> None:
    records = build_probe(RUN, 7, MOMENT, PRODUCT)
    assert validate("orders", records.order[1]) is None
    assert validate("payments", records.payment[1]) is None
    assert validate("error-logs", records.error_line[1]) is None
    assert validate("patient-vitals", records.vitals[1]) is None


def test_the_malformed_order_breaks_one_named_rule() -> None:
    records = build_probe(RUN, 7, MOMENT, PRODUCT)
    assert validate("orders", records.malformed_order[1]) == "quantity_not_positive"
    assert records.malformed_order[0] == f"soak-{RUN}-7-bad".encode()


def test_probe_records_are_tagged_and_fit_the_tables() -> None:
    records = build_probe(RUN, 12345, MOMENT, PRODUCT)
    order = json.loads(records.order[1])
    payment = json.loads(records.payment[1])
    reading = json.loads(records.vitals[1])
    assert order["order_id"] == records.order_id == f"soak-{RUN}-12345"
    assert order["currency"] == PROBE_CURRENCY
    assert payment["order_id"] == order["order_id"] and payment["amount"] == order["unit_price"]
    assert reading["patient_id"] == records.patient_id == f"soak-{RUN}"
    assert reading["heart_rate"] > 130  # out of the default range
    # order_id, payment_id and patient_id are VARCHAR(64) in MariaDB.
    for text in (order["order_id"], payment["payment_id"], reading["patient_id"]):
        assert len(text) <= 64
    # Milliseconds and Z, the precision the jobs keep.
    assert order["event_time"] == "2026-12-02T10:00:03.123Z"
    assert records.error_line[1].startswith(b"2026-12-02T10:00:03.123Z,ERROR,soak-probe,")


def test_build_probe_refuses_a_naive_moment() -> None:
    with pytest.raises(ValueError, match="naive"):
        build_probe(RUN, 0, MOMENT.replace(tzinfo=None), PRODUCT)


def test_the_discharge_record_is_a_control_record_of_the_probe_patient() -> None:
    key, value = discharge_record(RUN, MOMENT)
    body = json.loads(value)
    assert key == f"soak-{RUN}".encode()
    assert body == {
        "patient_id": f"soak-{RUN}",
        "event_time": "2026-12-02T10:00:03.123Z",
        "discharged": True,
    }
    assert validate("patient-vitals", value) is None


def acks(at: float = 1000.0) -> dict[str, Ack]:
    return {
        "order": Ack(at),
        "payment": Ack(at + 0.01),
        "malformed_order": Ack(at, partition=1, offset=42),
        "error_line": Ack(at + 0.002),
        "vitals": Ack(at + 0.003),
    }


def counts() -> dict[str, WindowCounts]:
    return {"revenue_window": WindowCounts(), "alerts": WindowCounts(), "vitals": WindowCounts()}


def test_every_output_expects_each_probe_once() -> None:
    found = expectations_for(
        build_probe(RUN, 0, MOMENT, PRODUCT), acks(), ProbeWindows(), counts(), alerts=True
    )
    assert sorted(e.output for e in found) == sorted(OUTPUTS)
    by_output = {e.output: e for e in found}
    assert by_output["orders_row"].target == f"soak-{RUN}-0"
    assert by_output["revenue_window"].target == datetime(2026, 12, 2, 10, 0, 0)
    assert by_output["vitals_summary"].target == datetime(2026, 12, 2, 10, 0, 0)
    assert by_output["quarantine_row"].target == (1, 42)
    assert by_output["quarantine_row"].payload is not None
    # The same id the alerts job computes for the rule and its 10-s window.
    expected_id = alert_id(PROBE_RULE_ID, datetime(2026, 12, 2, 10, 0, 0), 10)
    assert {by_output[o].target for o in ALERT_OUTPUTS} == {expected_id}
    # The join needs both records: timed from the later acknowledgement.
    assert by_output["order_payment"].produced_at == 1000.01


def test_a_window_must_count_every_probe_sent_into_it() -> None:
    windows, shared = ProbeWindows(), counts()
    first = expectations_for(
        build_probe(RUN, 0, MOMENT, PRODUCT), acks(), windows, shared, alerts=True
    )
    second = expectations_for(
        build_probe(RUN, 1, MOMENT + timedelta(seconds=1), PRODUCT),
        acks(1001.0),
        windows,
        shared,
        alerts=True,
    )
    third = expectations_for(
        build_probe(RUN, 2, MOMENT + timedelta(seconds=5), PRODUCT),
        acks(1005.0),
        windows,
        shared,
        alerts=True,
    )

    def need(found: list[Expectation], output: str) -> int:
        return next(e.need for e in found if e.output == output)

    assert [need(f, "revenue_window") for f in (first, second, third)] == [1, 2, 1]
    assert [need(f, "alert_mariadb") for f in (first, second, third)] == [1, 2, 3]
    assert [need(f, "vitals_alert") for f in (first, second, third)] == [1, 2, 3]
    assert [need(f, "orders_row") for f in (first, second, third)] == [1, 1, 1]


def test_an_undelivered_record_expects_nothing_and_alerts_can_be_skipped() -> None:
    failed = acks()
    failed["order"] = Ack(1000.0, error="broker down")
    found = expectations_for(
        build_probe(RUN, 0, MOMENT, PRODUCT), failed, ProbeWindows(), counts(), alerts=False
    )
    outputs = {e.output for e in found}
    assert outputs == {"quarantine_row", "vitals_summary", "vitals_alert"}


def test_satisfied_by_counts_needs_the_count_reached() -> None:
    window = datetime(2026, 12, 2, 10, 0, 0)
    one = Expectation("revenue_window", 0, 1.0, window, need=1)
    two = Expectation("revenue_window", 1, 2.0, window, need=2)
    other = Expectation("revenue_window", 2, 3.0, window + timedelta(seconds=5), need=1)
    assert satisfied_by_counts([one, two, other], {window: 1}) == [one]
    assert satisfied_by_counts([one, two, other], {window: 2}) == [one, two]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ([], 5),
        (["--max-offsets-per-trigger", "100", "--window-seconds", "10"], 10),
        (["--window-seconds=30"], 30),
        (["--window-seconds"], 5),  # no value: the default
    ],
)
def test_job_option_reads_a_jobs_window_from_its_arguments(
    arguments: list[str], expected: int
) -> None:
    assert job_option(arguments, "--window-seconds", 5) == expected
