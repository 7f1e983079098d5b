"""pipelines.yaml and its model: defaults, derived values, errors naming pipeline and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from streamops.config import PROJECT_ROOT
from streamops.supervision.spec import (
    PIPELINES_FILE,
    PipelineSpecError,
    duration_seconds,
    load_spec,
    load_specs,
    parse_specs,
)

# What the shipped pipelines.yaml parsed to before it had a `defaults:` block (issue 19), read
# from that file: the block must change how the file reads, never what it says.
_SHIPPED_SHARED: dict[str, Any] = {
    "checkpoint_root": None,
    "enabled": True,
    "health": {
        "heartbeat_timeout_seconds": 60.0,
        "job_heartbeat_timeout_seconds": 30.0,
        "max_batch_seconds": 240.0,
        "overload_load_per_core": 2.0,
        "overload_stretch": 4.0,
        "poll_interval_seconds": 5.0,
        "replay_rows_per_second": 500.0,
        "start_alone_seconds": 300.0,
        "startup_grace_seconds": 180.0,
        "trigger_intervals": 3.0,
    },
    "kubernetes": None,
    "lease_ttl_seconds": 120.0,
    "outage_ride_out_seconds": 120.0,
    "owner": "streamops",
    "spark_conn_id": "spark_default",
    "restart": {
        "backoff_multiplier": 2.0,
        "failure_window_seconds": 900.0,
        "initial_backoff_seconds": 5.0,
        "jitter_ratio": 0.2,
        "max_backoff_seconds": 300.0,
        "max_failures": 5,
        "restart_after_healthy_seconds": 0.0,
        "stable_run_seconds": 600.0,
    },
    "retries": 1,
    "schedule": "*/5 * * * *",
    "settled_nice": 10,
    "stop_timeout_seconds": 60.0,
}
_SHIPPED_SPARK_CONF = {
    "spark.driver.extraJavaOptions": "-XX:+UseSerialGC",
    "spark.driver.memory": "768m",
    "spark.sql.shuffle.partitions": "2",
    "spark.ui.enabled": "false",
}
SHIPPED_SPECS: dict[str, dict[str, Any]] = {
    "orders": {
        **_SHIPPED_SHARED,
        "name": "orders",
        "job_module": "spark_jobs.jobs.orders",
        "queries": ("orders_records", "orders_revenue"),
        "job_args": ("--max-offsets-per-trigger", "100000"),
        "spark_conf": _SHIPPED_SPARK_CONF,
        "tags": ("orders",),
        "trigger_interval": "5 seconds",
    },
    "alerts": {
        **_SHIPPED_SHARED,
        "name": "alerts",
        "job_module": "spark_jobs.jobs.alerts",
        "queries": ("alerts_counts", "alerts_records"),
        "job_args": ("--max-offsets-per-trigger", "100000", "--rules-refresh-seconds", "30"),
        "spark_conf": _SHIPPED_SPARK_CONF,
        "tags": ("alerts",),
        "trigger_interval": "5 seconds",
    },
    "joins": {
        **_SHIPPED_SHARED,
        "name": "joins",
        "job_module": "spark_jobs.jobs.joins",
        "queries": ("joins_payments_records", "joins_order_payments", "joins_category_revenue"),
        "job_args": ("--max-offsets-per-trigger", "100000", "--products-refresh-seconds", "60"),
        "spark_conf": _SHIPPED_SPARK_CONF,
        "tags": ("joins",),
        "trigger_interval": "10 seconds",
    },
    "vitals": {
        **_SHIPPED_SHARED,
        "name": "vitals",
        "job_module": "spark_jobs.jobs.vitals",
        "queries": ("vitals_records", "vitals_summary", "vitals_signal"),
        "job_args": (
            "--max-offsets-per-trigger",
            "100000",
            "--thresholds-refresh-seconds",
            "30",
            "--model-check-seconds",
            "30",
        ),
        "spark_conf": {
            **_SHIPPED_SPARK_CONF,
            "spark.sql.streaming.stateStore.providerClass": (
                "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
            ),
        },
        "tags": ("vitals",),
        "trigger_interval": "10 seconds",
    },
}


def _spec(**fields: Any) -> dict[str, Any]:
    body = {"job_module": "spark_jobs.jobs.orders", "queries": ["q"], **fields}
    return {"pipelines": {"orders": body}}


def _error(document: Any) -> str:
    with pytest.raises(PipelineSpecError) as raised:
        parse_specs(document, source="pipelines.yaml")
    return str(raised.value)


def test_the_repository_file_is_valid_and_names_real_jobs() -> None:
    specs = load_specs(PIPELINES_FILE)
    assert specs, "pipelines.yaml declares no pipeline"
    for name, spec in specs.items():
        assert spec.name == name
        assert (PROJECT_ROOT / Path(*spec.job_module.split("."))).with_suffix(".py").is_file()


def test_the_repository_file_parses_to_the_pinned_specs() -> None:
    specs = load_specs(PIPELINES_FILE)
    assert list(specs) == list(SHIPPED_SPECS), "pipelines (and their DAGs) in another order"
    assert {name: spec.model_dump() for name, spec in specs.items()} == SHIPPED_SPECS


def test_defaults_and_derived_values() -> None:
    spec = parse_specs(_spec())["orders"]
    assert spec.dag_id == "streamops_supervise_orders"
    assert spec.spark_conn_id == "spark_default" and spec.kubernetes is None
    assert spec.restart.max_failures == 5
    assert spec.heartbeat_max_age_seconds == spec.health.heartbeat_timeout_seconds
    assert spec.job_arguments() == []
    assert spec.checkpoint_location("/data/ckpt/") == "/data/ckpt/orders"


def test_a_slow_trigger_stretches_the_stall_threshold_and_reaches_the_job() -> None:
    spec = parse_specs(
        _spec(trigger_interval="2 minutes", health={"heartbeat_timeout_seconds": 60})
    )["orders"]
    assert spec.trigger_interval_seconds == 120
    assert spec.heartbeat_max_age_seconds == 360  # 3 trigger intervals beat the 60 s floor
    assert spec.job_arguments() == ["--trigger-interval", "2 minutes"]


def test_checkpoint_root_of_the_spec_wins() -> None:
    spec = parse_specs(_spec(checkpoint_root="s3a://bucket/ckpt"))["orders"]
    assert spec.checkpoint_location("/ignored") == "s3a://bucket/ckpt/orders"


def test_a_query_is_checkpointed_under_its_role() -> None:
    spec = parse_specs(_spec(queries=["orders_records", "revenue"]))["orders"]
    assert [spec.query_role(q) for q in spec.queries] == ["records", "revenue"]
    assert spec.query_checkpoint("orders_records", "/ckpt/") == "/ckpt/orders/records"
    assert spec.query_checkpoint("revenue", "/ckpt") == "/ckpt/orders/revenue"
    # A listed role keeps the spec's name; an opt-in one is named by the rule.
    assert spec.query_name_for("revenue") == "revenue"
    assert spec.query_name_for("realtime") == "orders_realtime"


def test_two_queries_of_one_role_would_share_a_checkpoint() -> None:
    message = _error(_spec(queries=["orders_records", "records"]))
    assert "share the checkpoint <root>/orders/records" in message


# --- defaults: -------------------------------------------------------------------------------


def _with_defaults(defaults: Any, **pipelines: dict[str, Any]) -> dict[str, Any]:
    bodies = {
        name: {"job_module": "spark_jobs.jobs.orders", "queries": ["q"], **body}
        for name, body in pipelines.items()
    }
    return {"defaults": defaults, "pipelines": bodies}


def test_mappings_merge_with_the_defaults_key_by_key() -> None:
    defaults = {
        "spark_conf": {"spark.ui.enabled": "false", "spark.driver.memory": "768m"},
        "restart": {"max_failures": 3, "initial_backoff_seconds": 10},
        "health": {"poll_interval_seconds": 5},
        "trigger_interval": "5 seconds",
    }
    specs = parse_specs(
        _with_defaults(
            defaults,
            orders={},
            vitals={
                "spark_conf": {"spark.driver.memory": "1g", "spark.sql.shuffle.partitions": "4"},
                "restart": {"max_failures": 7},
                "trigger_interval": "10 seconds",
            },
        )
    )
    orders, vitals = specs["orders"], specs["vitals"]
    assert orders.spark_conf == defaults["spark_conf"]
    assert (orders.restart.max_failures, orders.trigger_interval) == (3, "5 seconds")
    assert vitals.spark_conf == {
        "spark.ui.enabled": "false",
        "spark.driver.memory": "1g",
        "spark.sql.shuffle.partitions": "4",
    }
    assert (vitals.restart.max_failures, vitals.restart.initial_backoff_seconds) == (7, 10)
    assert vitals.health.poll_interval_seconds == 5
    assert vitals.trigger_interval == "10 seconds"
    # Fields set in neither place keep the model's defaults.
    assert vitals.restart.stable_run_seconds == 600 and vitals.stop_timeout_seconds == 60


def test_lists_and_nulls_replace_the_default() -> None:
    defaults = {
        "job_args": ["--max-offsets-per-trigger", "100"],
        "tags": ["streaming"],
        "kubernetes": {"api_server": "https://k", "image": "streamops:1"},
    }
    specs = parse_specs(
        _with_defaults(
            defaults,
            orders={"job_args": ["--window-seconds", "5"]},
            local={"kubernetes": None, "spark_conn_id": "spark_local"},
        )
    )
    assert specs["orders"].job_args == ("--window-seconds", "5")
    assert specs["orders"].tags == ("streaming",)
    assert specs["orders"].kubernetes is not None
    assert (specs["local"].kubernetes, specs["local"].spark_conn_id) == (None, "spark_local")


def test_an_empty_defaults_block_changes_nothing() -> None:
    assert parse_specs(_with_defaults(None, orders={})) == parse_specs(_spec(queries=["q"]))


@pytest.mark.parametrize(
    ("defaults", "expected"),
    [
        ({"restrat": {}}, "defaults: unknown fields ['restrat'] (a typo?)"),
        ({"restart": {"max_falures": 3}}, "defaults: unknown fields ['restart.max_falures']"),
        ({"kubernetes": {"apiserver": "x"}}, "defaults: unknown fields ['kubernetes.apiserver']"),
        ({"queries": ["q"]}, "defaults: ['queries'] belong to each pipeline"),
        ({"name": "x", "job_module": "m"}, "defaults: ['job_module', 'name'] belong to each"),
        (["spark_conf"], "defaults: expected a mapping"),
    ],
)
def test_a_bad_defaults_block_is_named(defaults: Any, expected: str) -> None:
    message = _error(_with_defaults(defaults, orders={}))
    assert message.startswith("pipelines.yaml: defaults: ")
    assert expected in message


def test_an_invalid_default_value_says_where_it_comes_from() -> None:
    message = _error(_with_defaults({"restart": {"max_failures": 0}}, orders={}))
    assert "pipeline 'orders': restart.max_failures: " in message
    assert "(the value comes from 'defaults')" in message
    # The pipeline's own value is the pipeline's.
    message = _error(
        _with_defaults({"restart": {"max_failures": 3}}, orders={"restart": {"max_failures": 0}})
    )
    assert "restart.max_failures" in message and "defaults" not in message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5 seconds", 5), ("1 second", 1), ("500 ms", 0.5), ("2 minutes", 120), ("1h", 3600)],
)
def test_durations(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"restart": {"max_failures": 0}}, "restart.max_failures"),
        ({"restart": {"max_failures": "many"}}, "restart.max_failures"),
        ({"restart": {"initial_backoff_seconds": 60, "max_backoff_seconds": 5}}, "restart: "),
        ({"restart": {"max_falures": 3}}, "restart.max_falures: unknown field"),
        ({"trigger_interval": "soon"}, "trigger_interval: 'soon' is not a duration"),
        ({"spark_conf": {"executor.memory": "1g"}}, "spark_conf: 'executor.memory'"),
        ({"spark_conf": {"spark.master": "yarn"}}, "spark_conf: 'spark.master'"),
        ({"queries": []}, "queries"),
        ({"job_module": "spark_jobs/jobs/orders.py"}, "job_module"),
        ({"health": {"heartbeat_timeout_seconds": -1}}, "health.heartbeat_timeout_seconds"),
        ({"master": "local[2]"}, "master: unknown field"),
        ({"kubernetes": {"api_server": "k8s.local", "image": "i"}}, "kubernetes.api_server"),
        ({"kubernetes": {"api_server": "https://k"}}, "kubernetes.image: Field required"),
    ],
)
def test_invalid_fields_are_named_with_their_pipeline(
    fields: dict[str, Any], expected: str
) -> None:
    message = _error(_spec(**fields))
    assert message.startswith("pipelines.yaml: pipeline 'orders': ")
    assert expected in message


def test_missing_job_module_is_named() -> None:
    message = _error({"pipelines": {"orders": {"queries": ["q"]}}})
    assert "pipeline 'orders': job_module: Field required" in message


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (None, "top-level 'pipelines:'"),
        ({"pipeline": {}}, "top-level 'pipelines:'"),
        ({"pipelines": {}, "extra": 1}, "unknown top-level keys ['extra']; only ['defaults', "),
        ({"pipelines": {"orders": ["a"]}}, "pipeline 'orders': expected a mapping"),
        ({"pipelines": {"Orders-1": {"job_module": "m", "queries": ["q"]}}}, "name: "),
        (
            {"pipelines": {"orders": {"name": "other", "job_module": "m", "queries": ["q"]}}},
            "differs from its key",
        ),
    ],
)
def test_document_shape_errors(document: Any, expected: str) -> None:
    assert expected in _error(document)


def test_files_unreadable_or_not_yaml_are_explained(tmp_path: Path) -> None:
    with pytest.raises(PipelineSpecError, match="Cannot read the pipeline specs"):
        load_specs(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("pipelines: [unclosed\n")
    with pytest.raises(PipelineSpecError, match="not valid YAML"):
        load_specs(broken)


def test_load_spec_by_name(tmp_path: Path) -> None:
    path = tmp_path / "pipelines.yaml"
    path.write_text(yaml.safe_dump(_spec()))
    assert load_spec("orders", path).name == "orders"
    with pytest.raises(PipelineSpecError, match=r"No pipeline 'payments'.*known: \['orders'\]"):
        load_spec("payments", path)
