"""PySpark and its JVM agree, and Spark reads Kafka through the connector jars from the cache."""

from __future__ import annotations

import pyspark
from confluent_kafka import Producer
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from streamops.config import Settings


def test_python_package_and_jvm_are_the_same_spark_release(spark: SparkSession) -> None:
    # pyspark-client (pulled in by the Spark provider) writes into the same folder as pyspark:
    # mixed releases would put Python files of one over the jars of another.
    assert pyspark.__version__ == spark.version


def test_session_is_utc(spark: SparkSession) -> None:
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"


def test_spark_reads_records_back_from_kafka(spark: SparkSession, settings: Settings) -> None:
    topic, marker = "error-logs", f"spark-{id(spark)}"
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "acks": "all"})
    for i in range(20):
        producer.produce(topic, key=marker.encode(), value=f"{marker},{i}".encode())
    assert producer.flush(30) == 0

    frame = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
        .where(F.col("key") == F.lit(marker).cast("binary"))
        .select(F.col("value").cast("string").alias("value"), "partition", "offset")
    )
    values = sorted(row.value for row in frame.collect())
    assert values == sorted(f"{marker},{i}" for i in range(20))
