"""Test data for the contract's input topics: deterministic records and a Kafka producer loop."""

from streamops.generator.producer import (
    GeneratorSummary,
    KafkaUnavailableError,
    run_generator,
    validate_options,
)
from streamops.generator.records import (
    RECORD_KINDS,
    TOPICS,
    GeneratedRecord,
    RecordFactory,
    generate,
    validate,
)

__all__ = [
    "RECORD_KINDS",
    "TOPICS",
    "GeneratedRecord",
    "GeneratorSummary",
    "KafkaUnavailableError",
    "RecordFactory",
    "generate",
    "run_generator",
    "validate",
    "validate_options",
]
