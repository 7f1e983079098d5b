"""`streamops rules`: list, add, enable and disable the alert rules in MariaDB ``alert_rules``.

The running alerts job re-reads the enabled rules at least every 30 s (``--rules-refresh-seconds``
of ``streamops run alerts``), so a change here applies within a minute without a restart.
The MariaDB driver is imported where a command talks to the database, so that loading the CLI
(every `streamops --help`) does not pay for it.
"""

from __future__ import annotations

import json
import re
from contextlib import closing
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from streamops.cli._app import console, exit_on_streamops_error, settings
from streamops.contract.error_logs import LEVEL_ALIASES, LEVELS, SERVICE_MAX_LENGTH
from streamops.errors import StreamopsError

if TYPE_CHECKING:
    import mariadb

rules_app = typer.Typer(
    help="Alert rules of the error-log pipeline (MariaDB alert_rules).", no_args_is_help=True
)

RULE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
DESCRIPTION_MAX_LENGTH = 255
_COLUMNS = (
    "rule_id",
    "level",
    "service",
    "window_seconds",
    "threshold_count",
    "enabled",
    "description",
)


def _connection() -> mariadb.Connection:
    from streamops.db import connect

    return connect(settings())


def normalise_rule_level(level: str) -> str:
    """A level as rules store it (``warning`` → ``WARN``); StreamopsError for an unknown one."""
    canonical = LEVEL_ALIASES.get(level.strip().upper())
    if canonical is None:
        raise StreamopsError(
            f"Unknown level {level!r}; use one of {', '.join(LEVELS)} (WARNING and FATAL are "
            "accepted as WARN and CRITICAL)."
        )
    return canonical


def check_rule(rule_id: str, service: str | None, description: str | None) -> None:
    if not RULE_ID_PATTERN.fullmatch(rule_id):
        raise StreamopsError(
            f"Rule id {rule_id!r} is not valid: use 1-64 letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit."
        )
    if service is not None and (not service.strip() or len(service) > SERVICE_MAX_LENGTH):
        raise StreamopsError(
            f"Service {service!r} is not valid: give 1-{SERVICE_MAX_LENGTH} characters, or leave "
            "--service out to match every service."
        )
    if description is not None and len(description) > DESCRIPTION_MAX_LENGTH:
        raise StreamopsError(f"The description is longer than {DESCRIPTION_MAX_LENGTH} characters.")


@rules_app.command("list")
def list_rules(
    enabled_only: Annotated[
        bool, typer.Option("--enabled-only", help="Show enabled rules only.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the alert rules, ordered by rule id."""

    @exit_on_streamops_error
    def run() -> None:
        sql = f"SELECT {', '.join(_COLUMNS)} FROM alert_rules"
        if enabled_only:
            sql += " WHERE enabled"
        with closing(_connection()) as connection:
            cursor = connection.cursor()
            cursor.execute(sql + " ORDER BY rule_id")
            rules = [dict(zip(_COLUMNS, row, strict=True)) for row in cursor.fetchall()]
        for rule in rules:
            rule["enabled"] = bool(rule["enabled"])
        if as_json:
            console.print_json(json.dumps(rules))
            return
        table = Table(show_header=True, header_style="bold")
        for column in _COLUMNS:
            table.add_column(column)
        for rule in rules:
            table.add_row(
                *(
                    "(any)" if v is None and k == "service" else str(v or "")
                    for k, v in rule.items()
                )
            )
        console.print(table)

    run()


@rules_app.command("add")
def add_rule(
    rule_id: Annotated[str, typer.Argument(help="Unique id, e.g. payments-error-burst.")],
    level: Annotated[str, typer.Option(help=f"One of {', '.join(LEVELS)}.")],
    window_seconds: Annotated[int, typer.Option(min=1, help="Tumbling window length, seconds.")],
    threshold: Annotated[
        int, typer.Option(min=1, help="Alert when a window holds at least this many lines.")
    ],
    service: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional here
        typer.Option(help="Only this service's lines; leave out to count every service."),
    ] = None,
    description: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional here
        typer.Option(help="What the rule is for."),
    ] = None,
    enabled: Annotated[bool, typer.Option(help="Start enabled (default) or disabled.")] = True,
) -> None:
    """Add a rule; it applies to the running job within a minute."""

    @exit_on_streamops_error
    def run() -> None:
        import mariadb

        canonical = normalise_rule_level(level)
        check_rule(rule_id, service, description)
        with closing(_connection()) as connection:
            cursor = connection.cursor()
            try:
                cursor.execute(
                    "INSERT INTO alert_rules (rule_id, level, service, window_seconds, "
                    "threshold_count, enabled, description) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (rule_id, canonical, service, window_seconds, threshold, enabled, description),
                )
                connection.commit()
            except mariadb.IntegrityError as error:
                connection.rollback()
                raise StreamopsError(
                    f"Rule {rule_id!r} already exists; pick another id, or enable/disable it "
                    "with `streamops rules enable|disable`."
                ) from error
        scope = f"service {service}" if service else "any service"
        console.print(
            f"added rule {rule_id}: ≥ {threshold} {canonical} lines from {scope} in "
            f"{window_seconds} s ({'enabled' if enabled else 'disabled'})"
        )

    run()


def _set_enabled(rule_id: str, enabled: bool) -> None:
    with closing(_connection()) as connection:
        cursor = connection.cursor()
        cursor.execute("SELECT enabled FROM alert_rules WHERE rule_id = ?", (rule_id,))
        row = cursor.fetchone()
        if row is None:
            raise StreamopsError(
                f"There is no rule {rule_id!r}; `streamops rules list` shows the rules."
            )
        cursor.execute("UPDATE alert_rules SET enabled = ? WHERE rule_id = ?", (enabled, rule_id))
        connection.commit()
    state = "enabled" if enabled else "disabled"
    note = " (it already was)" if bool(row[0]) == enabled else ""
    console.print(f"rule {rule_id} {state}{note}")


@rules_app.command("enable")
def enable_rule(rule_id: Annotated[str, typer.Argument(help="The rule to enable.")]) -> None:
    """Enable a rule; the running job starts alerting on it within a minute."""
    exit_on_streamops_error(_set_enabled)(rule_id, True)


@rules_app.command("disable")
def disable_rule(rule_id: Annotated[str, typer.Argument(help="The rule to disable.")]) -> None:
    """Disable a rule; the running job stops alerting on it within a minute."""
    exit_on_streamops_error(_set_enabled)(rule_id, False)
