"""What every command module of the CLI shares: the typer app, the consoles, the settings of this
invocation and the way a command fails. It imports no command module, so each of them can import
it at the top without a cycle."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, NoReturn, Optional, ParamSpec, TypeVar

import typer
from rich.console import Console

from streamops.errors import StreamopsError

if TYPE_CHECKING:
    from streamops.config import Settings

app = typer.Typer(
    help="streamops: Kafka → Spark Structured Streaming → MariaDB and Redis, run by Airflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


class _Overrides:
    """Global options of this invocation (set by the callback, read by every command)."""

    values: ClassVar[dict[str, object]] = {}


def settings() -> Settings:
    # Loaded here rather than at the top: pydantic-settings is a good part of a bare
    # `streamops --help`, and only commands that touch the platform need it.
    from pydantic import ValidationError

    from streamops.config import load_settings

    try:
        return load_settings(**_Overrides.values)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            lines.append(
                f"  STREAMOPS_{field.upper()}: {error['msg']} (got {error.get('input')!r})"
            )
        fail("The settings are not valid:\n" + "\n".join(lines))
    except FileNotFoundError as exc:
        fail(str(exc))


def spark_python(cfg: Settings) -> Path:
    """The Spark environment's interpreter, which runs whatever runs Spark in process (a job in
    the foreground, the benchmarks); its absence fails with the fix."""
    python = cfg.spark_python
    if not python.is_file():
        fail(
            f"The Spark environment {cfg.spark_venv_dir} has no Python. Run `streamops install`, "
            "which makes it, or set STREAMOPS_SPARK_VENV_DIR to the one that holds PySpark."
        )
    return python


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@app.callback()
def main(
    state_dir: Annotated[
        Optional[Path],  # noqa: UP045 - typer needs Optional here
        typer.Option(help="State folder (default .streamops/; env STREAMOPS_STATE_DIR)."),
    ] = None,
) -> None:
    """Global options apply to every command and beat env vars and streamops.toml."""
    _Overrides.values = {"state_dir": state_dir}


_P = ParamSpec("_P")
_R = TypeVar("_R")


def exit_on_streamops_error(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Print a StreamopsError as its paragraph (no traceback) and exit 1."""

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return func(*args, **kwargs)
        except StreamopsError as exc:
            fail(str(exc))

    return wrapper
