"""The contract's Kafka topics (../shared/CONTRACT.md). Input topics first, then outputs."""

from __future__ import annotations

INPUT_TOPICS = ("orders", "payments", "error-logs", "patient-vitals")
# The alerts pipeline publishes every alert state here.
ALERTS_TOPIC = "alerts"
OUTPUT_TOPICS = (ALERTS_TOPIC,)
CONTRACT_TOPICS = INPUT_TOPICS + OUTPUT_TOPICS
