"""The values table of helm/streamops/README.md, generated from the comments in values.yaml.

A test checks that the README's table is what this produces, so the two never drift apart.
Regenerate after changing values.yaml: ``python -m tests.deploy.chart_docs``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "streamops"
TABLE_START = "<!-- values-table:start -->"
TABLE_END = "<!-- values-table:end -->"
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<dash>- )?(?P<key>[A-Za-z][A-Za-z0-9_]*):(?P<rest>.*)$")


@dataclass(frozen=True)
class ValuesKey:
    path: str  # dotted, with [] for "every item of this list": pipelines[].name
    description: str  # the comment lines right above the key, joined
    line: int


def documented_keys(text: str) -> list[ValuesKey]:
    """Every mapping key of a values.yaml in file order, with the comment right above it."""
    keys: list[ValuesKey] = []
    stack: list[tuple[int, str]] = []  # (indent of the key, path segment)
    comment: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        match = _KEY_LINE.match(line)
        if not match:
            comment = []
            continue
        indent = len(match["indent"])
        if match["dash"]:
            # "- key:" opens a list item: the list's own key is the closest shallower one.
            while stack and stack[-1][0] >= indent:
                stack.pop()
            if stack and not stack[-1][1].endswith("[]"):
                stack[-1] = (stack[-1][0], stack[-1][1] + "[]")
            indent += 2
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([*(segment for _, segment in stack), match["key"]])
        inline = match["rest"].split(" #", 1)[1].strip() if " #" in match["rest"] else ""
        keys.append(ValuesKey(path, " ".join(comment) or inline, number))
        stack.append((indent, match["key"]))
        comment = []
    return keys


def _lookup(values: Any, path: str) -> Any:
    node = values
    for segment in path.split("."):
        node = node[segment[:-2]][0] if segment.endswith("[]") else node[segment]
    return node


def values_table(text: str) -> str:
    """The Markdown table of every leaf value: key, default, description."""
    values = yaml.safe_load(text)
    rows = ["| Key | Default | Description |", "| --- | --- | --- |"]
    for key in documented_keys(text):
        default = _lookup(values, key.path)
        if isinstance(default, dict):
            continue
        if isinstance(default, list) and default and isinstance(default[0], dict):
            continue
        shown = json.dumps(default).replace("|", "\\|")
        description = key.description.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        rows.append(f"| `{key.path}` | `{shown}` | {description} |")
    return "\n".join(rows)


def readme_with_table(readme: str, table: str) -> str:
    before, start, rest = readme.partition(TABLE_START)
    _, end, after = rest.partition(TABLE_END)
    if not start or not end:
        raise ValueError(f"README.md lacks the {TABLE_START} ... {TABLE_END} markers")
    return f"{before}{TABLE_START}\n{table}\n{TABLE_END}{after}"


def main() -> None:
    readme_path = CHART_DIR / "README.md"
    table = values_table((CHART_DIR / "values.yaml").read_text())
    readme_path.write_text(readme_with_table(readme_path.read_text(), table))
    print(f"updated the values table of {readme_path}")


if __name__ == "__main__":
    main()
