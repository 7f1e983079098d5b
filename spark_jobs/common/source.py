"""Kafka as a streaming source, read the same way by every job."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

from streamops.config import Settings
from streamops.kafka_security import spark_kafka_security_options


@dataclass(frozen=True)
class KafkaSourceOptions:
    topic: str
    # Only used on a query's first start; afterwards the checkpoint's offsets decide.
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = 100_000
    # Offsets that aged out of retention fail the query (and so alert), never pass silently.
    fail_on_data_loss: bool = True
    # Records' headers as a `headers` column (array of key/value structs).
    include_headers: bool = False

    def __post_init__(self) -> None:
        if self.max_offsets_per_trigger is not None and self.max_offsets_per_trigger < 1:
            raise ValueError(
                f"max_offsets_per_trigger is {self.max_offsets_per_trigger}; give a positive "
                "number of records, or None for no limit."
            )
        if self.starting_offsets not in (
            "earliest",
            "latest",
        ) and not self.starting_offsets.startswith("{"):
            raise ValueError(
                f"starting_offsets is {self.starting_offsets!r}; use earliest, latest or a JSON "
                "object of offsets per partition."
            )


def read_kafka_stream(
    spark: SparkSession, settings: Settings, options: KafkaSourceOptions
) -> DataFrame:
    """key, value, topic, partition, offset, timestamp, timestampType of every record."""
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("subscribe", options.topic)
        .option("startingOffsets", options.starting_offsets)
        .option("failOnDataLoss", str(options.fail_on_data_loss).lower())
        .options(**spark_kafka_security_options(settings))
    )
    if options.include_headers:
        reader = reader.option("includeHeaders", "true")
    if options.max_offsets_per_trigger is not None:
        reader = reader.option("maxOffsetsPerTrigger", str(options.max_offsets_per_trigger))
    return reader.load()
