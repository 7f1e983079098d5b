"""A job's context: its queries' names and checkpoints from the spec, the spec's Spark settings
in its session, and a clear failure when the job and its spec disagree."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyspark.sql import SparkSession

from spark_jobs.common import runner
from spark_jobs.common.runner import JobContext, JobQuery, job_spark_conf
from spark_jobs.common.session import build_spark_session, session_conf
from spark_jobs.jobs import orders
from streamops.config import Settings
from streamops.supervision.spec import (
    PIPELINES_FILE,
    PIPELINES_FILE_ENV,
    PipelineSpec,
    PipelineSpecError,
    load_specs,
    parse_specs,
)

SHUFFLE = "spark.sql.shuffle.partitions"


def _spec(**fields: Any) -> PipelineSpec:
    body = {"job_module": "spark_jobs.jobs.orders", "queries": ["orders_records", "orders_revenue"]}
    return parse_specs({"pipelines": {"orders": {**body, **fields}}})["orders"]


@pytest.fixture
def local_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"checkpoint_uri": "/data/ckpt"})


# --- queries by role -------------------------------------------------------------------------


def test_the_job_gets_the_spec_s_names_and_their_checkpoints_in_the_order_it_asks(
    local_settings: Settings,
) -> None:
    context = JobContext(_spec(), local_settings)
    assert context.queries("revenue", "records") == (
        JobQuery("orders_revenue", "/data/ckpt/orders/revenue"),
        JobQuery("orders_records", "/data/ckpt/orders/records"),
    )
    assert context.checkpoint_location == "/data/ckpt/orders"


def test_a_checkpoint_root_of_the_spec_wins_over_the_settings(local_settings: Settings) -> None:
    context = JobContext(_spec(checkpoint_root="s3a://bucket/ckpt"), local_settings)
    (records, _) = context.queries("records", "revenue")
    assert records.checkpoint == "s3a://bucket/ckpt/orders/records"
    assert context.checkpoint_location == "s3a://bucket/ckpt/orders"


@pytest.mark.parametrize(
    "roles",
    [
        ("records",),  # the spec lists a query the job does not start
        ("records", "revenue", "totals"),  # the job starts a query the spec does not list
        ("records", "records", "revenue"),
    ],
)
def test_roles_that_differ_from_the_spec_fail_with_both_lists(
    local_settings: Settings, roles: tuple[str, ...]
) -> None:
    context = JobContext(_spec(), local_settings)
    with pytest.raises(PipelineSpecError) as raised:
        context.queries(*roles)
    message = str(raised.value)
    assert f"starts the queries {list(roles)}" in message
    assert "lists ['orders_records', 'orders_revenue'] (roles ['records', 'revenue'])" in message


def test_an_opt_in_query_is_named_by_the_rule_and_never_listed(local_settings: Settings) -> None:
    context = JobContext(_spec(), local_settings)
    assert context.opt_in_query("realtime") == JobQuery(
        "orders_realtime", "/data/ckpt/orders/realtime"
    )
    listed = JobContext(_spec(queries=["orders_records", "orders_realtime"]), local_settings)
    with pytest.raises(PipelineSpecError, match=r"lists 'orders_realtime'.*Remove it"):
        listed.opt_in_query("realtime")


def test_a_job_whose_spec_renamed_a_query_fails_before_building_any(
    local_settings: Settings,
) -> None:
    context = JobContext(_spec(queries=["orders_records", "orders_totals"]), local_settings)
    with pytest.raises(PipelineSpecError, match="roles \\['records', 'totals'\\]"):
        orders.writers(None, context, orders.OrdersJobConfig())  # type: ignore[arg-type]


class _Built(Exception):
    """Raised by :class:`_Probe` once the job asked for its queries: nothing else gets built."""


@dataclass(frozen=True)
class _Probe(JobContext):
    def queries(self, *roles: str) -> tuple[JobQuery, ...]:
        super().queries(*roles)  # the real check
        raise _Built


@pytest.mark.parametrize("name", list(load_specs(PIPELINES_FILE)))
def test_every_shipped_job_starts_exactly_its_spec_s_queries(
    name: str, local_settings: Settings
) -> None:
    spec = load_specs(PIPELINES_FILE)[name]
    job = importlib.import_module(spec.job_module)
    config = job.parse_args(spec.job_arguments())
    with pytest.raises(_Built):
        job.writers(None, _Probe(spec, local_settings), config)


def test_the_context_is_read_from_the_specs_file_every_process_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_settings: Settings
) -> None:
    other = tmp_path / "pipelines.yaml"
    other.write_text(
        yaml.safe_dump({"pipelines": {"orders": _spec(checkpoint_root="/x").model_dump()}})
    )
    monkeypatch.setenv(PIPELINES_FILE_ENV, str(other))
    assert JobContext.of("orders", local_settings).checkpoint_location == "/x/orders"


# --- the spec's spark_conf reaches the session -----------------------------------------------


def test_the_job_s_conf_joins_the_spec_s_as_written() -> None:
    spec = _spec(spark_conf={SHUFFLE: "2", "spark.ui.enabled": "false"})
    assert job_spark_conf(spec, {"spark.master": "local[6]"}) == {
        SHUFFLE: "2",
        "spark.ui.enabled": "false",
        "spark.master": "local[6]",
    }
    assert job_spark_conf(spec, {SHUFFLE: "2"}) == spec.spark_conf


def test_a_spec_contradicting_its_job_fails_instead_of_one_silently_winning() -> None:
    spec = _spec(spark_conf={"spark.sql.streaming.stateStore.providerClass": "HDFS"})
    with pytest.raises(PipelineSpecError, match="the spec sets 'HDFS', the job needs 'RocksDB'"):
        job_spark_conf(spec, {"spark.sql.streaming.stateStore.providerClass": "RocksDB"})


def test_a_session_default_never_overrides_a_given_setting(settings: Settings) -> None:
    many_partitions = settings.model_copy(update={"kafka_partitions": 6})
    jars = [Path("/cache/spark-sql-kafka-0-10.jar")]
    defaults = session_conf(many_partitions, jars, {})
    assert defaults[SHUFFLE] == "6"
    assert defaults["spark.sql.session.timeZone"] == "UTC"
    assert defaults["spark.jars"] == "/cache/spark-sql-kafka-0-10.jar"
    given = session_conf(many_partitions, jars, {SHUFFLE: "2", "spark.master": "local[3]"})
    assert (given[SHUFFLE], given["spark.master"]) == ("2", "local[3]")


def test_run_job_builds_the_session_with_the_spec_s_spark_conf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(spark_conf={SHUFFLE: "7", "spark.ui.enabled": "false"})
    specs_file = tmp_path / "pipelines.yaml"
    specs_file.write_text(yaml.safe_dump({"pipelines": {"orders": spec.model_dump()}}))
    monkeypatch.setenv(PIPELINES_FILE_ENV, str(specs_file))
    monkeypatch.setattr(runner, "_log_to_job_log", lambda: None)
    monkeypatch.setattr(runner, "startup_refusal", lambda settings, pipeline: None)
    monkeypatch.setattr(runner, "startup_disk_full", lambda settings, pipeline: None)
    sessions: list[tuple[str, dict[str, str]]] = []

    class _SessionBuilt(Exception):
        pass

    def build(app_name: str, settings: Settings, conf: dict[str, str]) -> SparkSession:
        sessions.append((app_name, dict(conf)))
        raise _SessionBuilt

    monkeypatch.setattr(runner, "build_spark_session", build)
    with pytest.raises(_SessionBuilt):
        runner.run_job(
            "orders", orders.writers, None, {"spark.master": "local[3]"}, until_done=True
        )
    assert sessions == [
        (
            "streamops-orders",
            {SHUFFLE: "7", "spark.ui.enabled": "false", "spark.master": "local[3]"},
        )
    ]


def test_a_local_session_keeps_the_given_shuffle_partitions(
    spark: SparkSession, settings: Settings
) -> None:
    """On a real session: the default (one partition per Kafka partition, here 6) stays under
    the value given, as a spec's spark_conf gives it."""
    before = spark.conf.get(SHUFFLE)
    many_partitions = settings.model_copy(update={"kafka_partitions": 6})
    try:
        session = build_spark_session("streamops-tests", many_partitions, {SHUFFLE: "3"})
        assert session.conf.get(SHUFFLE) == "3"
        session = build_spark_session("streamops-tests", many_partitions, {})
        assert session.conf.get(SHUFFLE) == "6"
    finally:
        spark.conf.set(SHUFFLE, before)
