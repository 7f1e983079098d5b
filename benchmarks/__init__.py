"""Benchmarks of the platform, run with ``python -m benchmarks.runner`` (see README.md).

Shared by every benchmark module: :class:`BenchmarkError`, :func:`int_env` for their size
settings and :func:`output_dir` for the folder their plots go to.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

OUTPUT_ENV = "BENCH_OUTPUT_DIR"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results"


class BenchmarkError(RuntimeError):
    """A benchmark cannot run here (no broker, no Java, ...): the message says what to do.

    Defined here rather than in ``runner`` so the runner, which runs as ``__main__``, and the
    benchmark modules, which import it, share one class.
    """


def int_env(name: str, default: int, *, minimum: int = 1) -> int:
    """The whole number in environment variable ``name`` (``default`` when unset); a clear
    BenchmarkError when it is not a number or below ``minimum``."""
    text = os.environ.get(name, str(default))
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise BenchmarkError(f"{name} is {text!r}; give a whole number ≥ {minimum}.")
    return value


def output_dir() -> Path:
    """$BENCH_OUTPUT_DIR, else the runner's --output when the runner started us, else its default.

    The runner hands a benchmark only the settings, so the folder is read from its command line.
    """
    explicit = os.environ.get(OUTPUT_ENV)
    if explicit:
        return Path(explicit)
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name == "benchmarks.runner":
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
        known, _ = parser.parse_known_args(sys.argv[1:])
        return Path(known.output)
    return DEFAULT_OUTPUT
