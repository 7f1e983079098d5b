"""Configuration precedence: CLI/init arguments > environment > streamops.toml > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from streamops.config import Settings, load_settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(__import__("os").environ):
        if name.startswith("STREAMOPS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_are_loopback_and_standard_ports(clean_env: Path) -> None:
    settings = load_settings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert (settings.mariadb_port, settings.redis_port, settings.airflow_port) == (3306, 6379, 8080)
    assert settings.state_dir == (clean_env / ".streamops").resolve()
    assert settings.kafka_partitions == 2


def test_file_beats_defaults_env_beats_file_and_arguments_beat_env(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / "streamops.toml").write_text(
        'kafka_port = 29092\nredis_port = 26379\nmariadb_password = "from-file"\n'
    )
    from_file = load_settings()
    assert (from_file.kafka_port, from_file.redis_port) == (29092, 26379)
    assert from_file.mariadb_password == "from-file"

    monkeypatch.setenv("STREAMOPS_REDIS_PORT", "36379")
    from_env = load_settings()
    assert (from_env.kafka_port, from_env.redis_port) == (29092, 36379)

    from_args = load_settings(redis_port=46379, kafka_port=None)
    assert (from_args.kafka_port, from_args.redis_port) == (29092, 46379)


def test_config_file_named_by_env(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = clean_env / "elsewhere.toml"
    config.write_text("kafka_partitions = 6\n")
    monkeypatch.setenv("STREAMOPS_CONFIG", str(config))
    assert load_settings().kafka_partitions == 6
    monkeypatch.setenv("STREAMOPS_CONFIG", str(clean_env / "missing.toml"))
    with pytest.raises(FileNotFoundError, match="STREAMOPS_CONFIG"):
        load_settings()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"kafka_port": 0}, "greater than or equal to 1"),
        ({"kafka_partitions": 0}, "greater than or equal to 1"),
        ({"redis_port": 3306}, "both 3306"),
        ({"mariadb_database": "drop table;"}, "pattern"),
        ({"unknown_setting": 1}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_settings_are_rejected(clean_env: Path, override: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**override)


def test_env_values_are_validated_too(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMOPS_KAFKA_PORT", "not-a-port")
    with pytest.raises(ValidationError, match="kafka_port"):
        load_settings()


def test_as_env_round_trips(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = load_settings(kafka_port=19999, state_dir=clean_env / "state")
    for name, value in original.as_env().items():
        monkeypatch.setenv(name, value)
    assert load_settings() == original
