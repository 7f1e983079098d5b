"""The orders job's options: the contract's topic by default, another one when asked."""

from __future__ import annotations

import pytest

from spark_jobs.jobs.orders import OrdersJobConfig, parse_args


def test_the_contract_topic_is_the_default() -> None:
    assert parse_args([]).topic == "orders"


def test_another_topic_and_options_are_passed_through() -> None:
    config = parse_args(["--topic", "orders-replay", "--max-offsets-per-trigger", "600"])
    assert (config.topic, config.max_offsets_per_trigger) == ("orders-replay", 600)


def test_an_empty_topic_is_refused() -> None:
    with pytest.raises(ValueError, match="topic is empty"):
        OrdersJobConfig(topic=" ")
