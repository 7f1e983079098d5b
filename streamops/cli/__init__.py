"""The `streamops` command line: install, run and inspect the local platform, and feed it data.

The commands of ``main`` register on the shared app of ``_app`` as that module is imported; the
other command modules know nothing of the app and are mounted below, in the order
`streamops --help` lists them.
"""

from __future__ import annotations

from streamops.chaos.cli import chaos
from streamops.cli._app import app
from streamops.cli.bench import bench
from streamops.cli.main import db_app, maintenance_app
from streamops.cli.pipeline import pipeline_app
from streamops.cli.rules import rules_app
from streamops.soak.cli import soak

app.command("bench")(bench)
app.command("soak")(soak)
app.command("chaos")(chaos)
app.add_typer(db_app, name="db")
app.add_typer(maintenance_app, name="maintenance")
app.add_typer(rules_app, name="rules")
app.add_typer(pipeline_app, name="pipeline")

__all__ = ["app", "run"]


def run() -> None:
    """The `streamops` console script (and `python -m streamops`)."""
    app(prog_name="streamops")
