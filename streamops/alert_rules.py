"""The enabled alert rules as MariaDB's ``alert_rules`` holds them: read by the alerts job (through
``spark_jobs.common.rules.RuleCache``, which keeps them fresh) and by the chaos checks."""

from __future__ import annotations

from contextlib import closing

from streamops.config import Settings
from streamops.contract.alerts import AlertRule
from streamops.db import connect

_SELECT_ENABLED = (
    "SELECT rule_id, level, service, window_seconds, threshold_count, enabled "
    "FROM alert_rules WHERE enabled ORDER BY rule_id"
)


def load_enabled_rules(settings: Settings) -> list[AlertRule]:
    """Every enabled rule, ordered by rule_id."""
    with closing(connect(settings)) as connection:
        cursor = connection.cursor()
        cursor.execute(_SELECT_ENABLED)
        return [
            AlertRule(
                rule_id=str(rule_id),
                level=str(level),
                service=None if service is None else str(service),
                window_seconds=int(window_seconds),
                threshold_count=int(threshold_count),
                enabled=bool(enabled),
            )
            for rule_id, level, service, window_seconds, threshold_count, enabled in cursor
        ]
