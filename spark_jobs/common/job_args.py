"""A job's command line, derived from its configuration dataclass: one option per field.

``--window-seconds`` sets ``window_seconds``, parsed as the field's type (``int | None`` as an
int, a ``bool`` that defaults to False as a flag); every default is the dataclass's own, so a
default changes in one place and the job's ``--help`` shows it. The dataclass validates the
values (its ``__post_init__``), and a bad one is argparse's usage error, exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

Config = TypeVar("Config")


def parse_job_config(
    config_type: type[Config],
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    help_texts: Mapping[str, str] | None = None,
) -> Config:
    """``config_type`` filled from ``argv`` (None: ``sys.argv[1:]``); ``help_texts`` by field."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    defaults = config_type()
    hints = typing.get_type_hints(config_type)
    texts = help_texts or {}
    for field in dataclasses.fields(config_type):  # type: ignore[arg-type]
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        kind = _value_type(hints[field.name])
        help_text = texts.get(field.name)
        if kind is bool:
            if default is not False:
                raise TypeError(f"{config_type.__name__}.{field.name}: a flag defaults to False")
            parser.add_argument(flag, action="store_true", help=help_text)
        elif kind is str:
            parser.add_argument(flag, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=default, help=help_text)
    try:
        return config_type(**vars(parser.parse_args(argv)))
    except ValueError as exc:
        parser.error(str(exc))


def _value_type(hint: Any) -> type:
    """``int`` of ``int | None``; the type itself otherwise."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (kind,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return typing.cast(type, kind)
    return typing.cast(type, hint)
