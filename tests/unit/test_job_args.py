"""A job's command line is its configuration dataclass, field for field
(spark_jobs.common.job_args)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from spark_jobs.common.job_args import parse_job_config
from spark_jobs.jobs import alerts, joins, orders, vitals


@dataclass(frozen=True)
class ExampleConfig:
    topic: str = "orders"
    window_seconds: int = 5
    refresh_seconds: float = 30.0
    max_offsets_per_trigger: int | None = 100_000
    trigger_interval: str | None = None
    available_now: bool = False

    def __post_init__(self) -> None:
        if self.window_seconds < 1:
            raise ValueError(f"window_seconds is {self.window_seconds}; give 1 or more.")


def parse(*argv: str) -> ExampleConfig:
    return parse_job_config(ExampleConfig, list(argv), prog="example", description="An example.")


def test_no_options_give_the_dataclass_defaults() -> None:
    assert parse() == ExampleConfig()


def test_each_field_is_an_option_of_its_type() -> None:
    config = parse(
        "--topic=scratch",
        "--window-seconds",
        "60",
        "--refresh-seconds",
        "2.5",
        "--max-offsets-per-trigger",
        "500",
        "--trigger-interval",
        "10 seconds",
        "--available-now",
    )
    assert config == ExampleConfig("scratch", 60, 2.5, 500, "10 seconds", True)


def test_a_bad_value_is_a_usage_error_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse("--window-seconds", "0")
    assert exit_info.value.code == 2
    assert "window_seconds is 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse("--window-seconds", "five")
    assert "invalid int value" in capsys.readouterr().err


@pytest.mark.parametrize("job", [alerts, joins, orders, vitals], ids=lambda m: m.__name__)
def test_every_job_option_is_a_field_of_its_config(job: object) -> None:
    config = job.parse_args([])  # type: ignore[attr-defined]
    fields = {field.name for field in dataclasses.fields(config)}
    assert config == type(config)()
    assert fields, "a job configuration without fields"
