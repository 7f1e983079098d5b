"""The threshold-1 alert rules as a DataFrame that a real-time query reads anew at every batch.

A stream-static join re-plans its static side at every batch of a real-time query (Spark 4.2),
so a side read by a data source sees rule changes within a batch, with no restart; a side built
with ``createDataFrame`` would be frozen at the query's start (measured, docs/pipelines/alerts.md).
This Python data source (``spark.read.format("streamops_first_line_rules")``) reads MariaDB's
enabled rules through the same :class:`spark_jobs.common.rules.RuleCache` as the other paths, so
a rule is re-read at most every ``refresh_seconds`` and a failed read keeps the rules in hand.

It runs in a Python worker, which reads its connection settings from the job's environment
(``load_settings``): no password is ever a data source option, which Spark would show in plans.
"""

from __future__ import annotations

from collections.abc import Iterator

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition

from spark_jobs.common.rules import DEFAULT_REFRESH_SECONDS, RuleCache, first_line_rules

SOURCE_NAME = "streamops_first_line_rules"
RULES_SCHEMA = (
    "rule_id STRING, level STRING, service STRING, window_seconds INT, threshold_count INT"
)

# One per Python worker process (workers are reused across tasks): refresh interval → cache.
_CACHES: dict[float, RuleCache] = {}


class FirstLineRulesSource(DataSource):
    """``spark.read.format("streamops_first_line_rules").option("refresh_seconds", …)``."""

    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> str:
        return RULES_SCHEMA

    def reader(self, schema: object) -> DataSourceReader:
        return _RulesReader(float(self.options.get("refresh_seconds", DEFAULT_REFRESH_SECONDS)))


class _RulesReader(DataSourceReader):
    def __init__(self, refresh_seconds: float) -> None:
        self.refresh_seconds = refresh_seconds

    def read(self, partition: InputPartition) -> Iterator[tuple[object, ...]]:
        for rule in first_line_rules(_cache(self.refresh_seconds).current()):
            yield (
                rule.rule_id,
                rule.level,
                rule.service,
                rule.window_seconds,
                rule.threshold_count,
            )


def _cache(refresh_seconds: float) -> RuleCache:
    cache = _CACHES.get(refresh_seconds)
    if cache is None:
        from streamops.config import load_settings

        cache = _CACHES[refresh_seconds] = RuleCache(load_settings(), refresh_seconds)
    return cache


def first_line_rules_frame(spark: SparkSession, refresh_seconds: float) -> DataFrame:
    """The rules DataFrame (:data:`RULES_SCHEMA`), registering the source on first use."""
    spark.dataSource.register(FirstLineRulesSource)
    return spark.read.format(SOURCE_NAME).option("refresh_seconds", str(refresh_seconds)).load()
