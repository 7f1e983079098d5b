"""Kafka with SASL/SCRAM, end to end on a real broker: the local stack's Kafka formatted with a
SCRAM user, librdkafka clients from the settings (producer, consumer, admin) and Spark's Kafka
source and sink with the options the jobs use. A client without the credential is refused, and
the password is on no process's argv.

The broker is this test's own (a temporary state folder, free ports); the shared test stack is
not touched.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic
from pyspark.sql import SparkSession

from streamops.clients import kafka_admin, kafka_consumer, kafka_producer
from streamops.config import Settings
from streamops.errors import StreamopsError
from streamops.kafka_security import spark_kafka_security_options
from streamops.stack.kafka import Kafka
from tests.integration.support import free_port

# Quotes, a backslash, '=' and ',' and ']': every character the JAAS line, the java argument
# file and the --add-scram value treat specially.
PASSWORD = 'p@ss "w\\rd",=] ' + uuid.uuid4().hex[:8]


@pytest.fixture
def _running_stack() -> None:
    """Overrides the package's autouse fixture: this test brings its own broker."""


@pytest.fixture
def scram(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    private = settings.model_copy(
        update={
            "state_dir": tmp_path / "state",
            "kafka_port": free_port(),
            "kafka_controller_port": free_port(),
            "kafka_heap": "256m",
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": "streamops",
            "kafka_sasl_password": PASSWORD,
        }
    )
    component = Kafka(private)
    component.start()
    try:
        component.wait_healthy()  # the health check's admin client logs in with SCRAM too
        yield private
    finally:
        component.stop()


def test_scram_clients_work_and_a_client_without_credentials_is_refused(
    scram: Settings, spark: SparkSession
) -> None:
    topic = f"scram-{uuid.uuid4().hex[:8]}"
    admin = kafka_admin(scram)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)

    producer = kafka_producer(scram)
    for index in range(3):
        producer.produce(topic, key=str(index).encode(), value=f"record {index}".encode())
    assert producer.flush(30) == 0

    # Spark's source, with the jobs' options: the three records back.
    options = spark_kafka_security_options(scram)
    rows = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", scram.kafka_bootstrap_servers)
        .options(**options)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
        .selectExpr("CAST(value AS STRING) AS value")
        .collect()
    )
    assert sorted(row.value for row in rows) == ["record 0", "record 1", "record 2"]
    # Spark's sink, the same way: one more record, read back by a librdkafka consumer.
    spark.createDataFrame([("spark",)], "value STRING").write.format("kafka").option(
        "kafka.bootstrap.servers", scram.kafka_bootstrap_servers
    ).options(**options).option("topic", topic).save()
    consumer = kafka_consumer(
        scram, f"scram-test-{uuid.uuid4().hex[:6]}", {"auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    seen: list[str] = []
    try:
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                seen.append(message.value().decode())
            if len(seen) == 4:
                break
    finally:
        consumer.close()
    assert sorted(seen) == ["record 0", "record 1", "record 2", "spark"]

    # Spark's plan shows no password (spark.redaction.regex matches the JAAS value).
    plan = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", scram.kafka_bootstrap_servers)
        .options(**options)
        .option("subscribe", topic)
        .load()
        ._jdf.queryExecution()
        .toString()
    )
    assert PASSWORD not in plan

    # Without the credential (PLAINTEXT) and with a wrong one, the broker answers nothing.
    for update in (
        {"kafka_security_protocol": "PLAINTEXT", "kafka_sasl_password": ""},
        {"kafka_sasl_password": "wrong"},
    ):
        stranger = kafka_admin(scram.model_copy(update=update), {"socket.timeout.ms": 3000})
        with pytest.raises(KafkaException):
            stranger.list_topics(topic, timeout=5)

    # The password is on no argv: not the broker's, not the format's (it went in a file).
    for process in psutil.process_iter(["cmdline"]):
        assert PASSWORD not in " ".join(process.info["cmdline"] or [])
    state = scram.state_dir / "kafka"
    assert not (state / "format.args").exists()
    assert (state / "server.properties").stat().st_mode & 0o077 == 0


def test_turning_sasl_on_for_a_formatted_broker_is_a_clear_error(
    scram: Settings, tmp_path: Path
) -> None:
    # The running broker was formatted for "streamops"; another user needs a fresh data folder.
    other = Kafka(scram.model_copy(update={"kafka_sasl_username": "someone-else"}))
    with pytest.raises(StreamopsError, match="streamops reset"):
        other.prepare()
