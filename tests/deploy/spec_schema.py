"""The chart's schema of pipeline spec fields (``pipelines.defaults``, ``pipelines.overrides``),
generated from the spec's own models (streamops.supervision.spec), so that `helm install` rejects
a field or a type that parse_specs would reject later, at DAG parse time.

A test keeps values.schema.json equal to what this produces. Regenerate after changing a spec
model: ``python -m tests.deploy.spec_schema``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streamops.supervision.spec import PIPELINE_NAME, PipelineSpec

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "helm" / "streamops" / "values.schema.json"
# Definition of values.schema.json ← model of the spec ($defs name in pydantic's JSON schema).
NESTED = {"RestartPolicy": "specRestart", "HealthThresholds": "specHealth"}
NESTED["KubernetesSubmit"] = "specKubernetes"
# Fields that say which pipeline a spec is: never in `defaults:`; `name` is the override's key.
PER_PIPELINE = ("name", "job_module", "queries")
_KEPT = (
    "type",
    "items",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minItems",
    "minLength",
    "additionalProperties",
    "description",
)


def _field(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic field schema as draft-07, which Helm validates values with."""
    if "$ref" in schema:
        return {"$ref": "#/definitions/" + NESTED[schema["$ref"].rsplit("/", 1)[1]]}
    if "anyOf" in schema:
        options = [option for option in schema["anyOf"] if option.get("type") != "null"]
        assert len(options) == 1, schema
        inner = _field(options[0])
        if "$ref" in inner:
            return {"oneOf": [inner, {"type": "null"}]}
        return {**inner, "type": [inner["type"], "null"]}
    return {key: schema[key] for key in _KEPT if key in schema}


def _object(properties: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "description": description,
        "properties": {name: _field(field) for name, field in properties.items()},
    }


def spec_definitions() -> dict[str, dict[str, Any]]:
    """The definitions values.schema.json holds for spec fields, from the spec's models."""
    model = PipelineSpec.model_json_schema()
    fields = model["properties"]
    definitions = {
        "pipelineDefaults": _object(
            {k: v for k, v in fields.items() if k not in PER_PIPELINE},
            "Fields of a pipeline spec that `defaults:` may set (streamops/supervision/spec.py).",
        ),
        "pipelineOverride": _object(
            {k: v for k, v in fields.items() if k != "name"},
            "Fields of one pipeline's spec (streamops/supervision/spec.py); its name is the key.",
        ),
    }
    for model_name, definition in NESTED.items():
        nested = model["$defs"][model_name]
        definitions[definition] = _object(nested["properties"], nested["description"])
    return definitions


def pipelines_property() -> dict[str, Any]:
    """The schema of the `pipelines` value."""
    return {
        "type": "object",
        "additionalProperties": False,
        "description": "Pipeline specs: the repository's pipelines.yaml (files/pipelines.yaml) "
        "with these fields merged over it, rendered into the RELEASE-streamops-pipelines "
        "ConfigMap and read by every Airflow pod through STREAMOPS_PIPELINES_FILE.",
        "properties": {
            "defaults": {
                "description": "Spec fields merged over the file's `defaults:`.",
                # allOf, not $ref: spec fields are optional, unlike the chart's own values.
                "allOf": [{"$ref": "#/definitions/pipelineDefaults"}],
            },
            "overrides": {
                "type": "object",
                "additionalProperties": False,
                "description": "Per pipeline name, fields merged over that pipeline's entry; a "
                "name the file lacks adds a pipeline.",
                "patternProperties": {
                    PIPELINE_NAME.pattern: {"$ref": "#/definitions/pipelineOverride"}
                },
            },
        },
        "required": ["defaults", "overrides"],
    }


def updated_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with the generated definitions and `pipelines` property, everything else kept."""
    definitions = {**schema["definitions"], **spec_definitions()}
    properties = {**schema["properties"], "pipelines": pipelines_property()}
    return {**schema, "definitions": definitions, "properties": properties}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    SCHEMA_FILE.write_text(render(updated_schema(schema)))
    print(f"updated the pipeline spec definitions of {SCHEMA_FILE}")


if __name__ == "__main__":
    main()
