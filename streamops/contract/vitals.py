"""The vitals pipeline's default out-of-range bounds: the job flags readings by them and the
dashboard draws them."""

from __future__ import annotations

from collections.abc import Mapping

# Adult ranges outside which a single reading is flagged (low, high); None = no bound. Wide enough
# that normal variation (the generator's resting values) stays inside, tight enough that its
# clinical episodes (tachycardia, hypoxaemia, fever, ...) fall outside. patient_thresholds
# overrides them per patient and vital.
DEFAULT_THRESHOLDS: Mapping[str, tuple[float | None, float | None]] = {
    "heart_rate": (40.0, 130.0),
    "spo2": (90.0, None),
    "systolic_bp": (85.0, 165.0),
    "diastolic_bp": (50.0, 105.0),
    "temperature_c": (35.5, 38.3),
    "respiratory_rate": (8.0, 24.0),
}
