"""pipelines.yaml and its model: defaults, derived values, errors naming pipeline and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from spark_jobs.jobs import PIPELINE_QUERIES
from streamops.config import PROJECT_ROOT
from streamops.pipelines.spec import (
    PipelineSpecError,
    duration_seconds,
    load_spec,
    load_specs,
    parse_specs,
)


def _spec(**fields: Any) -> dict[str, Any]:
    body = {"job_module": "spark_jobs.jobs.orders", "queries": ["q"], **fields}
    return {"pipelines": {"orders": body}}


def _error(document: Any) -> str:
    with pytest.raises(PipelineSpecError) as raised:
        parse_specs(document, source="pipelines.yaml")
    return str(raised.value)


def test_the_repository_file_is_valid_and_matches_the_jobs() -> None:
    specs = load_specs()
    assert specs, "pipelines.yaml declares no pipeline"
    for name, spec in specs.items():
        assert spec.name == name
        assert (PROJECT_ROOT / Path(*spec.job_module.split("."))).with_suffix(".py").is_file()
        assert spec.queries == PIPELINE_QUERIES[name], "queries differ from the job's registry"


def test_defaults_and_derived_values() -> None:
    spec = parse_specs(_spec())["orders"]
    assert spec.dag_id == "streamops_supervise_orders"
    assert spec.master is None and spec.kubernetes is None
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
        ({"master": "k8s://https://x"}, "kubernetes"),
        (
            {"kubernetes": {"api_server": "https://k", "image": "i"}, "master": "local[2]"},
            "not both",
        ),
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
        ({"pipelines": {}, "extra": 1}, "unknown top-level keys ['extra']"),
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
