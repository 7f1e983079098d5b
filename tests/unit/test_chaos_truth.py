"""What the records of a chaos run say the outputs must hold, and the comparisons that fail when
they do not (streamops/chaos/truth.py): small hand-made records, no service."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from streamops.chaos.truth import (
    Check,
    JoinBounds,
    KafkaRecord,
    LogLine,
    StoredAlert,
    StoredPayment,
    StoredRow,
    Watermark,
    category_revenue,
    check_alerts,
    check_category_windows,
    check_order_payments,
    check_orders,
    check_readings,
    check_revenue_windows,
    check_summaries,
    compare_quarantine,
    compare_windows,
    decide_watermark,
    expected_lines,
    expected_orders,
    expected_payments,
    expected_readings,
    parse_interval,
    possibly_late,
    pre_run_horizon,
    readings_per_window,
    stored_elsewhere,
    vitals_reason,
    window_of,
)
from streamops.contract.alerts import AlertRule, alert_id

T0 = datetime(2026, 3, 1, 12, 0, 0)  # naive UTC, on a minute boundary
_EPOCH = datetime(1970, 1, 1)
CLOSED = Watermark(T0 + timedelta(hours=1), "test")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds") + "Z"


def stamp(seconds: float) -> int:
    return int((at(seconds) - _EPOCH) / timedelta(milliseconds=1))


def record(
    partition: int, offset: int, value: bytes | None, sent: float | None = None
) -> KafkaRecord:
    return KafkaRecord(partition, offset, value, None if sent is None else stamp(sent))


def order(
    order_id: str,
    seconds: float,
    quantity: int = 2,
    price: str | float = "9.99",
    currency: str | None = "EUR",
    product: str = "SKU-10001",
) -> bytes:
    fields: dict[str, object] = {
        "order_id": order_id,
        "customer_id": "cust-1",
        "product_id": product,
        "quantity": quantity,
        "unit_price": price,
        "event_time": iso(at(seconds)),
    }
    if currency is not None:
        fields["currency"] = currency
    return json.dumps(fields).encode()


MALFORMED = b'{"order_id": "broken", '


# --- time and watermarks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10 seconds", 10), ("2 minutes", 120), ("1 minute", 60), ("1 minute 30 seconds", 90)],
)
def test_parse_interval_reads_the_jobs_watermark_options(text: str, seconds: int) -> None:
    assert parse_interval(text) == timedelta(seconds=seconds)


def test_parse_interval_refuses_anything_else() -> None:
    with pytest.raises(ValueError, match="interval"):
        parse_interval("soon")


def test_window_of_aligns_on_the_epoch() -> None:
    assert window_of(at(7.5), timedelta(seconds=5)) == at(5)
    assert window_of(at(59.999), timedelta(seconds=60)) == T0


def test_a_watermark_published_past_the_records_means_lateness_is_unknown() -> None:
    assert not decide_watermark(at(50), at(50), "redis").ahead
    assert decide_watermark(at(80), at(50), "redis").ahead
    estimated = decide_watermark(None, at(50), "")
    assert estimated.at == at(50) and "estimated" in estimated.source
    assert decide_watermark(None, None, "").at is None
    assert not Watermark(None, "none").closes(at(0))


def test_pre_run_horizon_is_after_the_latest_record_before_the_run() -> None:
    assert pre_run_horizon([], []) is None
    before = [record(0, 4, b"x", sent=10), record(1, 9, b"x", sent=12)]
    assert pre_run_horizon(before, [at(11)]) == at(12) + timedelta(seconds=5)


# --- lateness -----------------------------------------------------------------------------------


def test_possibly_late_flags_what_came_behind_the_largest_event_time_seen() -> None:
    truth = expected_orders(
        [
            record(0, 0, order("a", 0), sent=0),
            record(0, 1, order("b", 20), sent=20),
            record(0, 2, order("c", 15), sent=21),  # 5 s behind: within a 10-s watermark
            record(0, 3, order("d", -30), sent=22),  # 50 s behind: late
            record(0, 4, order("e", 10), sent=23),  # exactly at the watermark: Spark drops it
            # Another partition, stamped before anything of partition 0 moved the maximum.
            record(1, 0, order("f", -5), sent=0),
            # Stamped when partition 0 already held 20 s: read after it, so late.
            record(1, 1, order("g", 1), sent=20.5),
        ]
    )
    late = possibly_late(truth.all_copies, timedelta(seconds=10))
    assert late == {(0, 3), (0, 4), (1, 1)}


def test_possibly_late_counts_the_records_before_the_run() -> None:
    truth = expected_orders([record(0, 0, order("a", 0), sent=0)])
    assert possibly_late(truth.all_copies, timedelta(seconds=10)) == set()
    late = possibly_late(truth.all_copies, timedelta(seconds=10), seen_before=at(30))
    assert late == {(0, 0)}


def test_a_record_without_a_broker_timestamp_counts_as_read_last() -> None:
    truth = expected_orders(
        [record(0, 0, order("a", 0), sent=None), record(1, 0, order("b", 60), sent=0)]
    )
    assert possibly_late(truth.all_copies, timedelta(seconds=10)) == {(0, 0)}


# --- orders -------------------------------------------------------------------------------------


def test_expected_orders_keeps_every_valid_copy_first_one_first_and_the_rejects() -> None:
    truth = expected_orders(
        [
            record(0, 2, order("a", 1)),  # a duplicate, later in the partition
            record(0, 0, order("a", 1)),
            record(0, 1, MALFORMED),
            record(1, 0, order("b", 2, quantity=3, price=24.9, currency=None)),
            record(1, 1, None),  # a tombstone
            record(1, 2, order("c", 3, quantity=0)),  # quantity_not_positive
        ]
    )
    assert [copy.position for copy in truth.copies["a"]] == [(0, 0), (0, 2)]
    assert truth.first_copies["a"].amount == Decimal("19.98")
    b = truth.first_copies["b"]
    assert (b.amount, b.currency, b.event_time) == (Decimal("74.7"), "EUR", at(2))
    assert truth.rejects == {(0, 1), (1, 1), (1, 2)}


def test_an_event_time_past_the_kafka_timestamp_and_the_skew_is_a_reject_as_in_the_jobs() -> None:
    truth = expected_orders(
        [
            record(0, 0, order("a", 300), sent=0),  # exactly the 5-minute skew: valid
            record(0, 1, order("b", 300.001), sent=0),  # event_time_in_future
            record(0, 2, order("c", 10_000)),  # no timestamp: nothing to judge against
        ]
    )
    assert set(truth.copies) == {"a", "c"}
    assert truth.rejects == {(0, 1)}
    readings = expected_readings(
        [record(0, 0, vital("p", 301), sent=0), record(0, 1, vital("p", 299), sent=0)]
    )
    assert readings.rejects == {(0, 0)}


def _orders_truth() -> tuple:
    truth = expected_orders(
        [
            record(0, 0, order("a", 1)),
            record(0, 1, MALFORMED),
            record(0, 2, order("a", 1)),
            record(1, 0, order("b", 2, quantity=1, price="5.00")),
        ]
    )
    stored = {
        "a": StoredRow(Decimal("19.98"), (0, 0)),
        "b": StoredRow(Decimal("5.00"), (1, 0)),
    }
    in_range = {(0, 0): "a", (1, 0): "b"}
    return truth, stored, in_range


def test_check_orders_passes_when_every_order_is_stored_once_and_every_reject_quarantined() -> None:
    truth, stored, in_range = _orders_truth()
    check = check_orders(truth, stored, in_range, {(0, 1)})
    assert check.passed, check.detail
    assert check.counts["orders"] == 2 and check.counts["duplicate_copies"] == 1
    assert "2 orders of 3 valid records" in check.detail


def test_check_orders_fails_on_a_lost_order() -> None:
    truth, stored, in_range = _orders_truth()
    del stored["b"], in_range[(1, 0)]
    check = check_orders(truth, stored, in_range, {(0, 1)})
    assert not check.passed
    assert check.counts["missing"] == 1
    assert "1 orders lost (b)" in check.detail


def test_check_orders_fails_on_a_wrong_amount_and_on_a_row_from_a_rejected_record() -> None:
    truth, stored, in_range = _orders_truth()
    stored["b"] = StoredRow(Decimal("5.01"), (1, 0))
    in_range[(0, 1)] = "broken"
    check = check_orders(truth, stored, in_range, {(0, 1)})
    assert not check.passed
    assert check.counts["wrong_amount"] == 1 and check.counts["rows_from_wrong_record"] == 1


def test_check_orders_fails_on_quarantine_holes_and_valid_records_in_quarantine() -> None:
    truth, stored, in_range = _orders_truth()
    check = check_orders(truth, stored, in_range, {(1, 0)})
    assert not check.passed
    assert check.counts["rejects_missing"] == 1 and check.counts["valid_in_quarantine"] == 1
    assert "not in quarantine (0:1)" in check.detail


def test_an_order_first_stored_before_the_run_is_neither_lost_nor_compared() -> None:
    truth, stored, in_range = _orders_truth()
    stored["b"] = StoredRow(Decimal("1.00"), (1, -7))  # a copy from before the range
    del in_range[(1, 0)]
    check = check_orders(truth, stored, in_range, {(0, 1)})
    assert check.passed, check.detail
    assert check.counts["stored_before_run"] == 1
    assert stored_elsewhere(truth.copies, stored) == {"b"}


# --- order revenue windows ----------------------------------------------------------------------


def _revenue_case() -> tuple:
    truth = expected_orders(
        [
            record(0, 0, order("a", 1, quantity=1, price="10.00"), sent=1),
            record(0, 1, order("b", 2, quantity=2, price="10.00"), sent=2),
            record(1, 0, order("c", 6, quantity=1, price="1.50"), sent=6),
        ]
    )
    computed = {
        (at(0), "EUR"): (2, 3, Decimal("30.00")),
        (at(5), "EUR"): (1, 1, Decimal("1.50")),
    }
    return truth, dict(computed), computed


def _revenue(truth, stored, computed, **options) -> Check:
    defaults = {
        "redis_totals": {"EUR:order_count": "3", "EUR:item_count": "4", "EUR:revenue": "31.50"},
        "table_totals": {"EUR": (3, 4, Decimal("31.5"))},
    }
    late = options.pop("late", set())
    watermark = options.pop("watermark", CLOSED)
    return check_revenue_windows(
        truth, late, watermark, stored, computed, **{**defaults, **options}
    )


def test_revenue_windows_equal_to_sql_and_redis_totals_equal_to_mariadb_pass() -> None:
    truth, stored, computed = _revenue_case()
    check = _revenue(truth, stored, computed)
    assert check.passed, check.detail
    assert check.counts["windows_checked"] == 2 and check.counts["windows_equal"] == 2


def test_a_double_counted_window_fails() -> None:
    truth, stored, computed = _revenue_case()
    stored[(at(0), "EUR")] = (3, 4, Decimal("40.00"))  # order b counted twice
    check = _revenue(truth, stored, computed)
    assert not check.passed
    assert check.counts["windows_exceeded"] == 1
    assert "counted twice" in check.detail and "2026-03-01T12:00:00.000Z/EUR" in check.detail


def test_a_window_short_by_a_possibly_late_record_is_exempted_and_reported() -> None:
    truth, stored, computed = _revenue_case()
    stored[(at(0), "EUR")] = (1, 1, Decimal("10.00"))  # b dropped behind the watermark
    check = _revenue(truth, stored, computed, late={(0, 1)})
    assert check.passed, check.detail
    assert check.counts["windows_exempted_late"] == 1
    assert "1 short only by possibly-late records or rows from before the run" in check.detail


def test_a_window_holding_rows_from_before_the_run_may_be_short_but_never_above() -> None:
    truth, stored, computed = _revenue_case()
    # A fourth order in the first window, stored before the run (its record is not in range):
    # it was behind the watermark then, so the window never counted it.
    computed[(at(0), "EUR")] = (3, 4, Decimal("40.00"))
    check = _revenue(truth, stored, computed, table_totals={"EUR": (3, 4, Decimal("31.5"))})
    assert check.passed, check.detail
    assert check.counts["windows_with_rows_before_run"] == 1
    stored[(at(0), "EUR")] = (4, 5, Decimal("50.00"))  # above even the rows: counted twice
    check = _revenue(truth, stored, computed)
    assert not check.passed and check.counts["windows_exceeded"] == 1


def test_a_window_short_beyond_its_late_records_fails() -> None:
    truth, stored, computed = _revenue_case()
    del stored[(at(0), "EUR")]  # two orders missing, one of them possibly late
    check = _revenue(truth, stored, computed, late={(0, 1)})
    assert not check.passed
    assert check.counts["windows_short"] == 1


def test_open_windows_are_not_compared() -> None:
    truth, stored, computed = _revenue_case()
    stored[(at(5), "EUR")] = (0, 0, Decimal(0))
    check = _revenue(truth, stored, computed, watermark=Watermark(at(7), "test"))
    assert check.passed, check.detail
    assert (check.counts["windows_checked"], check.counts["windows_open"]) == (1, 1)


def test_redis_totals_other_than_mariadb_fail() -> None:
    truth, stored, computed = _revenue_case()
    check = _revenue(
        truth,
        stored,
        computed,
        redis_totals={"EUR:order_count": "4", "EUR:item_count": "4", "EUR:revenue": "31.50"},
    )
    assert not check.passed
    assert "Redis totals differ" in check.detail and check.counts["totals_mismatched"] == 1


def test_when_lateness_is_unknown_short_windows_pass_but_a_double_count_still_fails() -> None:
    truth, stored, computed = _revenue_case()
    ahead = Watermark(at(3600), "test", ahead=True)
    stored[(at(0), "EUR")] = (1, 1, Decimal("10.00"))
    assert _revenue(truth, stored, computed, watermark=ahead).passed
    stored[(at(0), "EUR")] = (3, 3, Decimal("30.00"))
    assert not _revenue(truth, stored, computed, watermark=ahead).passed


def test_windows_of_an_order_id_stored_before_the_run_are_not_compared() -> None:
    truth, stored, computed = _revenue_case()
    stored[(at(5), "EUR")] = (2, 2, Decimal("3.00"))  # the stream counted c anew
    check = _revenue(truth, stored, computed, ids_stored_elsewhere={"c"})
    assert check.passed, check.detail
    assert check.counts["windows_not_compared"] == 1


def test_compare_windows_treats_a_missing_row_as_zeros() -> None:
    result = compare_windows(
        ["w"], {}, {"w": (1, Decimal(1))}, closed=lambda _: True, late_allowance={"w": 1}
    )
    assert result.excused == ["w"] and result.passed
    result = compare_windows(
        ["w"], {"w": (1, Decimal(1))}, {}, closed=lambda _: True, late_allowance={}
    )
    assert result.exceeded == ["w"] and not result.passed


def test_compare_quarantine() -> None:
    result = compare_quarantine({(0, 1), (0, 2)}, {(0, 2), (1, 5)})
    assert (result.missing, result.unexpected) == ([(0, 1)], [(1, 5)])


# --- alerts -------------------------------------------------------------------------------------


def line(seconds: float, level: str = "ERROR", service: str = "checkout") -> bytes:
    return f'{iso(at(seconds))},{level},{service},"Timeout, retrying"'.encode()


RULE = AlertRule("burst", "ERROR", None, 10, 3)


def test_expected_lines_normalise_the_level_and_set_rejects_apart() -> None:
    lines, rejects = expected_lines(
        [
            record(0, 0, line(1, "fatal")),
            record(0, 1, line(2, "Warning")),
            record(0, 2, b'2026-03-01T12:00:03Z,ERROR,svc,"open'),
            record(0, 3, line(4, "NOTICE")),
        ]
    )
    assert [(x.level, x.event_time) for x in lines] == [("CRITICAL", at(1)), ("WARN", at(2))]
    assert rejects == {(0, 2), (0, 3)}


def _alerts_case() -> dict:
    lines, rejects = expected_lines(
        [
            record(0, 0, line(1), sent=1),
            record(0, 1, line(2), sent=2),
            record(0, 2, line(3, service="auth"), sent=3),
            record(0, 3, line(4, "INFO"), sent=4),
            record(0, 4, b"not,a,line"),
        ]
    )
    the_id = alert_id("burst", T0, 10)
    return {
        "rules": [RULE],
        "lines": lines,
        "late": set(),
        "watermark": CLOSED,
        "horizon": None,
        "alerts": [StoredAlert(the_id, "burst", T0, at(10), 3)],
        "seconds": {
            ("checkout", "ERROR", at(1)): 1,
            ("checkout", "ERROR", at(2)): 1,
            ("auth", "ERROR", at(3)): 1,
            ("checkout", "INFO", at(4)): 1,
        },
        "redis_counts": {the_id: 3},
        "rejects": rejects,
        "quarantined": {(0, 4)},
    }


def _alerts(case: dict) -> Check:
    return check_alerts(
        case["rules"],
        case["lines"],
        case["late"],
        case["watermark"],
        horizon=case["horizon"],
        alerts=case["alerts"],
        seconds=case["seconds"],
        redis_counts=case["redis_counts"],
        rejects=case["rejects"],
        quarantined=case["quarantined"],
    )


def test_one_alert_per_rule_and_window_counting_every_line_passes() -> None:
    check = _alerts(_alerts_case())
    assert check.passed, check.detail
    assert check.counts["alerts_compared"] == 1 and check.counts["windows_exact"] == 1
    assert check.counts["seconds_checked"] == 4


def test_a_duplicated_alert_fails() -> None:
    case = _alerts_case()
    case["alerts"].append(StoredAlert("f" * 64, "burst", T0, at(10), 3))
    check = _alerts(case)
    assert not check.passed
    assert check.counts["duplicated"] == 1
    assert "1 rule windows with more than one alert (burst@2026-03-01T12:00:00.000Z ×2)" in (
        check.detail
    )


def test_a_missing_alert_fails() -> None:
    case = _alerts_case()
    case["alerts"] = []
    check = _alerts(case)
    assert not check.passed and check.counts["missing"] == 1


def test_lost_and_double_counted_lines_fail() -> None:
    case = _alerts_case()
    case["seconds"][("checkout", "ERROR", at(2))] = 0
    case["alerts"][0] = StoredAlert(case["alerts"][0].alert_id, "burst", T0, at(10), 2)
    case["redis_counts"] = {case["alerts"][0].alert_id: 2}
    lost = _alerts(case)
    assert not lost.passed and lost.counts["lost_lines"] == 2  # the second and the window

    case = _alerts_case()
    case["seconds"][("checkout", "ERROR", at(2))] = 2
    case["alerts"][0] = StoredAlert(case["alerts"][0].alert_id, "burst", T0, at(10), 4)
    case["redis_counts"] = {case["alerts"][0].alert_id: 4}
    doubled = _alerts(case)
    assert not doubled.passed and doubled.counts["counted_twice"] == 2
    # Before the run's first clean second, lines from before the run may add to it.
    case["horizon"] = at(30)
    assert _alerts(case).passed


def test_an_alert_not_equal_to_its_seconds_or_to_redis_fails() -> None:
    case = _alerts_case()
    case["redis_counts"] = {case["alerts"][0].alert_id: 2}
    check = _alerts(case)
    assert not check.passed and check.counts["redis_differs"] == 1
    case = _alerts_case()
    case["seconds"][("search", "ERROR", at(5))] = 1  # a line from outside the range
    check = _alerts(case)
    assert not check.passed and check.counts["not_sum_of_seconds"] == 1


# --- vitals -------------------------------------------------------------------------------------


def vital(patient: str, seconds: float, device: str | None = "dev-1", **extra: object) -> bytes:
    fields: dict[str, object] = {"patient_id": patient, "event_time": iso(at(seconds))}
    if device is not None:
        fields["device_id"] = device
    return json.dumps({**fields, "heart_rate": 70, **extra}).encode()


def test_vitals_reason_adds_the_discharge_rule() -> None:
    assert vitals_reason(vital("p", 0)) is None
    assert vitals_reason(vital("p", 0, discharged=True)) is None
    assert vitals_reason(vital("p", 0, discharged="yes")) == "discharged_not_boolean"
    assert vitals_reason(None) == "missing_payload"


def _vitals_truth():
    return expected_readings(
        [
            record(0, 0, vital("p1", 1), sent=1),
            record(0, 1, vital("p1", 1), sent=2),  # the same reading again
            record(0, 2, vital("p1", 30, device=None), sent=30),
            record(0, 3, vital("p2", 61, discharged=True), sent=61),
            record(0, 4, b"[1, 2]"),
        ]
    )


def test_every_reading_stored_once_passes_and_a_lost_one_fails() -> None:
    truth = _vitals_truth()
    assert truth.discharges == 1 and truth.rejects == {(0, 4)}
    keys = list(truth.copies)
    assert keys == [("p1", at(1), "dev-1"), ("p1", at(30), "")]
    stored = {keys[0]: StoredRow(None, (0, 0)), keys[1]: StoredRow(None, (0, 2))}
    in_range = {(0, 0): keys[0], (0, 2): keys[1]}
    check = check_readings(truth, stored, in_range, {(0, 4)})
    assert check.passed, check.detail
    del stored[keys[1]], in_range[(0, 2)]
    check = check_readings(truth, stored, in_range, {(0, 4)})
    assert not check.passed and check.counts["missing"] == 1


def test_a_double_counted_summary_window_fails_and_a_late_short_one_is_exempted() -> None:
    truth = _vitals_truth()
    computed = readings_per_window([("p1", at(1)), ("p1", at(30)), ("p0", at(2))])
    assert computed == {("p1", T0): (2,), ("p0", T0): (1,)}
    assert check_summaries(truth, set(), CLOSED, dict(computed), computed).passed
    doubled = check_summaries(truth, set(), CLOSED, {("p1", T0): (3,)}, computed)
    assert not doubled.passed and doubled.counts["windows_exceeded"] == 1
    short = {("p1", T0): (1,)}
    assert not check_summaries(truth, set(), CLOSED, short, computed).passed
    assert check_summaries(truth, {(0, 2)}, CLOSED, short, computed).passed


# --- joins --------------------------------------------------------------------------------------


def payment(
    payment_id: str, order_id: str, seconds: float, status: str = "captured", amount: str = "19.98"
) -> bytes:
    return json.dumps(
        {
            "payment_id": payment_id,
            "order_id": order_id,
            "amount": amount,
            "status": status,
            "event_time": iso(at(seconds)),
        }
    ).encode()


BOUNDS = JoinBounds(pay_within=timedelta(minutes=15), paid_early_tolerance=timedelta(minutes=1))


def _joins_case() -> dict:
    orders = expected_orders(
        [
            record(0, 0, order("paid", 0)),
            record(0, 1, order("unpaid", 1)),
            record(0, 2, order("twice", 2)),
        ]
    )
    payments = expected_payments(
        [
            record(0, 0, payment("pay-1", "paid", 10)),
            record(0, 1, payment("pay-2", "twice", 20, status="failed")),
            record(0, 2, payment("pay-3", "twice", 30, status="captured")),
            record(0, 3, payment("pay-4", "twice", 40, status="authorized")),
            record(0, 4, payment("pay-5", "paid", 20 * 60)),  # beyond the bound
            record(0, 5, b'{"payment_id": "x"}'),
        ]
    )
    stored = {
        "paid": StoredPayment("pay-1", "captured", Decimal("19.98")),
        "unpaid": StoredPayment(None, "unpaid", Decimal("19.98")),
        "twice": StoredPayment("pay-3", "captured", Decimal("19.98")),
    }
    return {
        "orders": orders,
        "payments": payments,
        "stored": stored,
        "watermark": Watermark(at(3600), "test"),
    }


def _joined(case: dict, orders_late=frozenset(), payments_late=frozenset()) -> Check:
    return check_order_payments(
        case["orders"],
        set(orders_late),
        case["payments"],
        set(payments_late),
        case["watermark"],
        case["stored"],
        bounds=BOUNDS,
        quarantined={(0, 5)},
    )


def test_order_payments_with_the_best_payment_and_the_unpaid_rows_pass() -> None:
    check = _joined(_joins_case())
    assert check.passed, check.detail
    assert (check.counts["paid_checked"], check.counts["unpaid_checked"]) == (2, 1)


def test_a_paid_order_without_its_payment_fails() -> None:
    case = _joins_case()
    del case["stored"]["paid"]
    check = _joined(case)
    assert not check.passed and check.counts["missing_paid"] == 1


def test_a_row_not_holding_the_best_payment_fails_unless_a_better_one_may_be_late() -> None:
    case = _joins_case()
    case["stored"]["twice"] = StoredPayment("pay-4", "authorized", Decimal("19.98"))
    assert not _joined(case).passed
    case["stored"]["twice"] = StoredPayment("pay-3", "captured", Decimal("19.98"))
    assert _joined(case, payments_late={(0, 1)}).passed  # at least as good as the on-time ones


def test_an_unpaid_order_is_required_only_once_the_watermark_passed_its_bound() -> None:
    case = _joins_case()
    del case["stored"]["unpaid"]
    assert not _joined(case).passed
    case["watermark"] = Watermark(at(600), "test")
    check = _joined(case)
    assert check.passed and check.counts["waiting_for_bound"] == 1


def test_category_windows_equal_to_sql_pass_and_a_double_count_fails() -> None:
    truth = expected_orders(
        [
            record(0, 0, order("a", 1, product="SKU-10001")),
            record(0, 1, order("b", 2, product="SKU-20001")),
            record(0, 2, order("c", 3, product="SKU-NEW")),
        ]
    )
    categories = {"SKU-10001": "electronics", "SKU-20001": "coffee"}
    rows = [
        (c.event_time, c.product_id, c.currency, c.quantity, c.amount) for c in truth.all_copies
    ]
    computed = category_revenue(rows, categories)
    assert computed[(T0, "unknown", "EUR")] == (1, 2, Decimal("19.98"))
    assert check_category_windows(truth, set(), CLOSED, dict(computed), computed, categories).passed
    doubled = {**computed, (T0, "coffee", "EUR"): (2, 4, Decimal("39.96"))}
    check = check_category_windows(truth, set(), CLOSED, doubled, computed, categories)
    assert not check.passed and check.counts["windows_exceeded"] == 1


def test_check_to_dict() -> None:
    check = Check("orders exactly once", True, "fine", {"orders": 2})
    assert check.to_dict() == {
        "name": "orders exactly once",
        "passed": True,
        "detail": "fine",
        "counts": {"orders": 2},
    }


def test_log_lines_are_events_for_possibly_late() -> None:
    lines = [
        LogLine((0, 0), stamp(100), at(100), "ERROR", "a"),
        LogLine((0, 1), stamp(101), at(-100), "ERROR", "a"),
    ]
    assert possibly_late(lines, timedelta(minutes=2)) == {(0, 1)}


# --- reading the range back (a fake consumer, no broker) ---------------------------------------


class FakeMessage:
    def __init__(self, partition: int, offset: int, eof: bool = False) -> None:
        self._partition, self._offset, self._eof = partition, offset, eof

    def error(self) -> object:
        if not self._eof:
            return None
        from confluent_kafka import KafkaError

        return KafkaError(KafkaError._PARTITION_EOF)

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_000 + self._offset)

    def value(self) -> bytes:
        return f"{self._partition}:{self._offset}".encode()


class FakeConsumer:
    """Partition 0 holds offsets 0-9 (3 deleted by retention when ``low`` says so), partition 1
    offsets 0-4; ``consume`` hands out what was assigned, then EOF, or nothing when ``stuck``."""

    def __init__(self, low: int = 0, stuck: bool = False) -> None:
        self.high = {0: 10, 1: 5}
        self.low, self.stuck, self.pending, self.closed = low, stuck, [], False

    def get_watermark_offsets(self, tp: Any, timeout: float, cached: bool) -> tuple[int, int]:
        return (self.low if tp.partition == 0 else 0, self.high[tp.partition])

    def assign(self, partitions: list[Any]) -> None:
        for tp in partitions:
            self.pending += [
                FakeMessage(tp.partition, o) for o in range(tp.offset, self.high[tp.partition])
            ]
            self.pending.append(FakeMessage(tp.partition, self.high[tp.partition], eof=True))

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        if self.stuck:
            return []
        batch, self.pending = self.pending[:num_messages], self.pending[num_messages:]
        return batch

    def close(self) -> None:
        self.closed = True


def test_read_records_reads_the_range_and_a_lookback_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamops.chaos import truth
    from streamops.config import Settings

    consumer = FakeConsumer()
    monkeypatch.setattr(truth, "_consumer", lambda settings: consumer)
    read = truth.read_records(Settings(), "orders", {0: 6, 1: 5}, {0: 8, 1: 5}, lookback=2)
    assert [r.position for r in read.records] == [(0, 6), (0, 7)]  # offsets 8-9 came after
    assert [r.position for r in read.before] == [(0, 4), (0, 5), (1, 3), (1, 4)]
    assert read.records[0].value == b"0:6" and read.records[0].timestamp_ms == 1_006
    assert consumer.closed


def test_read_records_names_the_partition_it_cannot_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamops.chaos import truth
    from streamops.config import Settings

    monkeypatch.setattr(truth, "_consumer", lambda settings: FakeConsumer(low=3))
    with pytest.raises(truth.TruthError, match=r"Offsets 1–2 of orders\[0\] are no longer"):
        truth.read_records(Settings(), "orders", {0: 1}, {0: 8})
    monkeypatch.setattr(truth, "_consumer", lambda settings: FakeConsumer(stuck=True))
    with pytest.raises(truth.TruthError, match=r"Could not read orders\[0\] offsets 0–7"):
        truth.read_records(Settings(), "orders", {0: 0}, {0: 8}, timeout=0.3)
