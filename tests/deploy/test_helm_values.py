"""values.yaml, values.schema.json, Chart.yaml and the README's values table stay in step, and
the schema turns a typo or a wrong type into a failed install."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.chart_docs import TABLE_END, TABLE_START, documented_keys, values_table
from tests.deploy.conftest import CHART_DIR, PROJECT_ROOT, HelmError, Manifest

VALUES_TEXT = (CHART_DIR / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    reference = schema.get("$ref")
    if reference is None:
        return schema
    assert reference.startswith("#/definitions/"), reference
    return resolve(SCHEMA["definitions"][reference.removeprefix("#/definitions/")])


def object_schemas(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object schema, at its path in the values (definitions included via $ref)."""
    schema = resolve(schema)
    if schema.get("type") == "object" or "properties" in schema:
        yield path or "(root)", schema
        for key, child in schema.get("properties", {}).items():
            yield from object_schemas(child, f"{path}.{key}" if path else key)
    if "items" in schema:
        yield from object_schemas(schema["items"], f"{path}[]")


def key_paths_of_values(value: Any, path: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key, child in value.items():
            child_path = f"{path}.{key}" if path else key
            yield child_path
            yield from key_paths_of_values(child, child_path)
    elif isinstance(value, list):
        for item in value:
            yield from key_paths_of_values(item, f"{path}[]")


def key_paths_of_schema() -> set[str]:
    paths: set[str] = set()
    for path, schema in object_schemas(SCHEMA):
        for key in schema.get("properties", {}):
            paths.add(key if path == "(root)" else f"{path}.{key}")
    return paths


def test_values_and_schema_have_the_same_keys() -> None:
    in_values = set(key_paths_of_values(VALUES))
    in_schema = key_paths_of_schema()
    # Empty lists in values.yaml cannot show their items' keys; those live only in the schema.
    empty_lists = {p for p in in_schema if any(p.startswith(f"{e}[].") for e in _empty_lists())}
    assert sorted(in_values - in_schema) == [], "keys in values.yaml missing from the schema"
    assert sorted(in_schema - in_values - empty_lists) == [], "schema keys missing from values"


def _empty_lists() -> set[str]:
    found = set()

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                walk(child, f"{path}.{key}" if path else key)
        elif isinstance(value, list) and not value:
            found.add(path)

    walk(VALUES, "")
    return found


def test_every_object_in_the_schema_is_closed() -> None:
    checked = 0
    for path, schema in object_schemas(SCHEMA):
        assert schema.get("additionalProperties") is False, f"{path}: additionalProperties"
        assert set(schema.get("required", [])) == set(schema.get("properties", {})), (
            f"{path}: every key of values.yaml is required, so a partial override is caught"
        )
        checked += 1
    for name, definition in SCHEMA["definitions"].items():
        if definition.get("type") == "object":
            assert definition.get("additionalProperties") is False, f"definitions.{name}"
    assert checked > 40


def test_schema_describes_every_property() -> None:
    for path, schema in object_schemas(SCHEMA):
        for key, child in schema.get("properties", {}).items():
            assert child.get("description"), f"{path}.{key} has no description"


def test_default_values_satisfy_the_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    errors = [e.message for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(VALUES)]
    assert errors == []


def test_every_key_in_values_yaml_has_a_comment() -> None:
    keys = documented_keys(VALUES_TEXT)
    assert len(keys) == len(list(key_paths_of_values(VALUES))), "the comment parser missed keys"
    undocumented = [f"line {k.line}: {k.path}" for k in keys if not k.description]
    assert undocumented == []


def test_readme_values_table_is_current() -> None:
    readme = (CHART_DIR / "README.md").read_text()
    table = readme.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    assert table == values_table(VALUES_TEXT), (
        "helm/streamops/README.md is stale: run `python -m tests.deploy.chart_docs`"
    )
    assert "`airflow.apiServer.resources.limits.memory`" in table


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["type"] == "application"
    version = re.search(
        r'^version = "([^"]+)"', (PROJECT_ROOT / "pyproject.toml").read_text(), re.M
    )
    assert version and chart["appVersion"] == version[1], "appVersion follows pyproject.toml"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    assert (CHART_DIR / "templates" / "NOTES.txt").is_file()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"kafka.enabeld": True}, "enabeld"),
        ({"unknownTopLevel": 1}, "unknownTopLevel"),
        ({"kafka.port": "9092"}, "/kafka/port"),
        ({"kafka.port": 70000}, "/kafka/port"),
        ({"image.pullPolicy": "Sometimes"}, "pullPolicy"),
        ({"airflow.scheduler.replicas": 0}, "replicas"),
        ({"airflow.apiServer.resources.limits": None}, "limits"),
        ({"mariadb.resources.limits.memory": "lots"}, "memory"),
        ({"settings.sparkMaster": "yarn"}, "sparkMaster"),
        ({"pipelines.overrides": {"orders": {"args": ["--max-offsets", "1"]}}}, "args"),
        ({"airflow.extraEnv": [{"name": "X", "value": 1}]}, "value"),
        ({"storage.persistence.accessMode": "ReadOnlyMany"}, "accessMode"),
        ({"networkPolicy.apiServer.allowedCidrs": ["everyone"]}, "allowedCidrs"),
        ({"redis.maxmemory": "256Mi"}, "maxmemory"),
    ],
    ids=[
        "typo",
        "unknown-top-level",
        "port-as-string",
        "port-out-of-range",
        "enum",
        "zero-replicas",
        "removed-limits",
        "bad-quantity",
        "bad-spark-master",
        "pipeline-field-unknown-to-spec-py",
        "env-value-not-string",
        "bad-access-mode",
        "bad-cidr",
        "redis-maxmemory-kubernetes-unit",
    ],
)
def test_schema_rejects_bad_values(
    render: Callable[..., list[Manifest]], values: dict[str, Any], expected: str
) -> None:
    with pytest.raises(HelmError) as error:
        render(values)
    output = error.value.output
    assert "values don't meet the specifications of the schema" in output, output
    assert expected in output, output
