"""How clients authenticate to Kafka: one place for librdkafka's settings and Spark's options.

``kafka_security_protocol`` PLAINTEXT (the local stack's default, on loopback) needs nothing.
SASL_PLAINTEXT or SASL_SSL authenticates with SCRAM: librdkafka clients (generators, the CLI,
Airflow's probes) take ``sasl.*`` settings, and Spark's Kafka source and sink take ``kafka.*``
options with a JAAS line. Spark redacts an option whose value names a password
(``spark.redaction.regex``) in plans and the UI; the password never goes on an argv either: jobs
read it from their environment (``STREAMOPS_KAFKA_SASL_PASSWORD``).
"""

from __future__ import annotations

from streamops.config import Settings

SCRAM_LOGIN_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"


def sasl_enabled(settings: Settings) -> bool:
    return settings.kafka_security_protocol.startswith("SASL_")


def librdkafka_security(settings: Settings) -> dict[str, str]:
    """librdkafka's settings for the configured protocol ({} for PLAINTEXT)."""
    if not sasl_enabled(settings):
        return {}
    return {
        "security.protocol": settings.kafka_security_protocol,
        "sasl.mechanisms": settings.kafka_sasl_mechanism,
        "sasl.username": settings.kafka_sasl_username,
        "sasl.password": settings.kafka_sasl_password,
    }


def jaas_quote(value: str) -> str:
    """``value`` as a JAAS option value: Kafka parses the line with a StreamTokenizer, which reads
    backslash escapes inside double quotes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def scram_jaas_config(username: str, password: str) -> str:
    return (
        f"{SCRAM_LOGIN_MODULE} required username={jaas_quote(username)} "
        f"password={jaas_quote(password)};"
    )


def spark_kafka_security_options(settings: Settings) -> dict[str, str]:
    """Options of Spark's Kafka source and sink for the configured protocol ({} for PLAINTEXT)."""
    if not sasl_enabled(settings):
        return {}
    return {
        "kafka.security.protocol": settings.kafka_security_protocol,
        "kafka.sasl.mechanism": settings.kafka_sasl_mechanism,
        "kafka.sasl.jaas.config": scram_jaas_config(
            settings.kafka_sasl_username, settings.kafka_sasl_password
        ),
    }
