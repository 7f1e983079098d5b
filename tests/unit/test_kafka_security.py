"""Kafka SASL/SCRAM settings: what every client is given, and what the local broker is told."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from pydantic import ValidationError

from streamops.clients import kafka_config
from streamops.config import Settings
from streamops.kafka_security import (
    jaas_quote,
    librdkafka_security,
    scram_jaas_config,
    spark_kafka_security_options,
)
from streamops.stack.kafka import SCRAM_ITERATIONS, Kafka, scram_credential

SCRAM = {
    "kafka_security_protocol": "SASL_PLAINTEXT",
    "kafka_sasl_username": "streamops",
    "kafka_sasl_password": 'se"cr\\et',
}


def test_plaintext_adds_nothing(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    assert librdkafka_security(settings) == {}
    assert spark_kafka_security_options(settings) == {}
    assert "security.protocol" not in kafka_config(settings)


def test_sasl_reaches_librdkafka_and_spark(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, **SCRAM)
    config = kafka_config(settings, {"linger.ms": 0})
    assert config["security.protocol"] == "SASL_PLAINTEXT"
    assert config["sasl.mechanisms"] == "SCRAM-SHA-512"
    assert (config["sasl.username"], config["sasl.password"]) == ("streamops", 'se"cr\\et')
    assert config["linger.ms"] == 0
    options = spark_kafka_security_options(settings)
    assert options["kafka.security.protocol"] == "SASL_PLAINTEXT"
    assert options["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert options["kafka.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="streamops" password="se\\"cr\\\\et";'
    )


def test_jaas_quoting_escapes_quotes_and_backslashes() -> None:
    assert jaas_quote('a"b\\c') == '"a\\"b\\\\c"'
    assert scram_jaas_config("u", "p").endswith('password="p";')


@pytest.mark.parametrize("missing", ["kafka_sasl_username", "kafka_sasl_password"])
def test_sasl_without_a_credential_is_refused(tmp_path: Path, missing: str) -> None:
    with pytest.raises(ValidationError, match="STREAMOPS_KAFKA_SASL_PASSWORD"):
        Settings(state_dir=tmp_path, **{**SCRAM, missing: ""})


def test_the_local_broker_listens_with_sasl_and_its_properties_keep_the_escapes(
    tmp_path: Path,
) -> None:
    settings = Settings(state_dir=tmp_path, kafka_port=9192, **SCRAM)
    properties = Kafka(settings).server_properties()
    assert "\nlisteners=SASL_PLAINTEXT://127.0.0.1:9192,CONTROLLER://" in properties
    assert "inter.broker.listener.name=SASL_PLAINTEXT" in properties
    assert "sasl.enabled.mechanisms=SCRAM-SHA-512" in properties
    # A properties file halves backslashes: the JAAS line's escapes are doubled for it.
    assert 'password="se\\\\"cr\\\\\\\\et";' in properties
    plain = Kafka(Settings(state_dir=tmp_path)).server_properties()
    assert "sasl" not in plain and "listeners=PLAINTEXT://" in plain


def test_the_format_credential_is_rfc5802_salted_and_names_no_password() -> None:
    salt = b"0123456789abcdef"
    credential = scram_credential("SCRAM-SHA-256", "streamops", "hunter2", salt)
    expected = hashlib.pbkdf2_hmac("sha256", b"hunter2", salt, SCRAM_ITERATIONS)
    assert credential == (
        f"SCRAM-SHA-256=[name=streamops,iterations={SCRAM_ITERATIONS},"
        f'salt="{base64.b64encode(salt).decode()}",'
        f'saltedpassword="{base64.b64encode(expected).decode()}"]'
    )
    assert "hunter2" not in credential


def test_the_local_broker_has_no_tls(tmp_path: Path) -> None:
    from streamops.errors import StreamopsError

    settings = Settings(state_dir=tmp_path, **{**SCRAM, "kafka_security_protocol": "SASL_SSL"})
    with pytest.raises(StreamopsError, match="no TLS"):
        Kafka(settings).server_properties()
