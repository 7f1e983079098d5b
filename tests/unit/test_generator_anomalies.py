"""Labelled anomalies of the patient-vitals generator: injected at the asked rate, labelled beside
the record and never in it, and the default output unchanged."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import pytest

from streamops.generator.records import (
    ANOMALY_KINDS,
    JOINT_NOISE_UNITS,
    SPIKE_NOISE_UNITS,
    VITAL_SIGNS,
    RecordFactory,
    generate,
    validate,
)

NOW = datetime(2026, 3, 1, tzinfo=UTC)
# The generator's reading-to-reading noise per sign (records._VITALS), to size the shifts.
NOISE = {
    "heart_rate": 3.0,
    "spo2": 0.8,
    "systolic_bp": 5.0,
    "diastolic_bp": 4.0,
    "temperature_c": 0.15,
    "respiratory_rate": 1.5,
}
# Rounding to whole units (heart rate, spo2, ...) or tenths moves a value by at most this.
ROUNDING = {vital: 0.05 if vital == "temperature_c" else 0.5 for vital in VITAL_SIGNS}


def test_without_anomalies_the_bytes_are_those_of_before_and_only_episodes_are_labelled() -> None:
    plain = generate("patient-vitals", 3000, seed=5, now=NOW, malformed_ratio=0.05)
    explicit = generate(
        "patient-vitals", 3000, seed=5, now=NOW, malformed_ratio=0.05, anomaly_ratio=0.0
    )
    assert [r.value for r in plain] == [r.value for r in explicit]
    kinds = Counter(r.anomaly.kind for r in plain if r.anomaly)
    assert set(kinds) == {"episode"} and kinds["episode"] > 50


def test_injected_anomalies_move_only_their_readings_and_are_labelled_beside_them() -> None:
    plain = generate("patient-vitals", 20_000, seed=9, now=NOW)
    injected = generate("patient-vitals", 20_000, seed=9, now=NOW, anomaly_ratio=0.03)
    kinds: Counter[str] = Counter()
    for before, after in zip(plain, injected, strict=True):
        label = after.anomaly
        if label is None or label.kind == "episode":
            assert after.value == before.value
            continue
        kinds[label.kind] += 1
        assert label.kind in ANOMALY_KINDS
        assert validate("patient-vitals", after.value) is None
        old, new = json.loads(before.value), json.loads(after.value)
        assert set(new) == set(old)  # no label field, nothing added to the record
        moved = {vital for vital in VITAL_SIGNS if new.get(vital) != old.get(vital)}
        assert moved <= set(label.vitals)
        low, high = SPIKE_NOISE_UNITS if label.kind == "spike" else JOINT_NOISE_UNITS
        for vital in label.vitals:
            shift = abs(new[vital] - old[vital])
            assert low * NOISE[vital] - ROUNDING[vital] <= shift <= high * NOISE[vital] + 1
        assert len(label.vitals) == 1 if label.kind == "spike" else 2 <= len(label.vitals) <= 3
    # About 3 % of the slots, a few of which fell in an episode and were left as they were.
    assert 450 <= sum(kinds.values()) <= 650
    assert min(kinds.values()) > 200


def test_duplicates_carry_the_label_of_the_record_they_resend() -> None:
    records = generate(
        "patient-vitals", 5000, seed=3, now=NOW, duplicate_ratio=0.2, anomaly_ratio=0.2
    )
    labels = {r.value: r.anomaly for r in records if r.kind == "valid"}
    duplicates = [r for r in records if r.kind == "duplicate" and r.value in labels]
    assert duplicates and all(r.anomaly == labels[r.value] for r in duplicates)


@pytest.mark.parametrize(
    ("topic", "ratio", "message"),
    [
        ("orders", 0.1, "patient-vitals only"),
        ("patient-vitals", 1.5, "between 0 and 1"),
        ("patient-vitals", float("nan"), "between 0 and 1"),
    ],
)
def test_bad_anomaly_ratios_are_refused(topic: str, ratio: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RecordFactory(topic, seed=1, now=NOW, anomaly_ratio=ratio)
