"""The error-log records of the alerts pipeline: their levels and field limits (CONTRACT.md)."""

from __future__ import annotations

LEVELS = ("DEBUG", "INFO", "WARN", "ERROR", "CRITICAL")
# Spellings on the wire (case-insensitive) → the level stored and matched against rules.
LEVEL_ALIASES = {level: level for level in LEVELS} | {"WARNING": "WARN", "FATAL": "CRITICAL"}
# error_counts.service and alerts.service are VARCHAR(128).
SERVICE_MAX_LENGTH = 128
