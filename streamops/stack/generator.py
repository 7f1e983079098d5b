"""Data generators of `streamops up --with-generator`: one background producer per input topic."""

from __future__ import annotations

import sys

from streamops.stack.base import Component, Health

# Modest default rates: enough to watch windows fill on a dashboard, light on a 2-core machine.
DEFAULT_RATES = {"orders": 20.0, "payments": 15.0, "error-logs": 5.0, "patient-vitals": 10.0}


class TopicGenerator(Component):
    """`streamops generate TOPIC` run for an unbounded time, as a supervised background process."""

    topic: str
    stop_timeout_seconds = 15.0
    # Set by `up` to one value for all generators, so payments line up with the orders sent in
    # the same run, while a later run sends new order ids instead of repeating old ones.
    seed: int = 0

    def ports(self) -> dict[str, int]:
        return {}

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "streamops",
            "generate",
            self.topic,
            "--rate",
            str(DEFAULT_RATES[self.topic]),
            "--duration",
            str(365 * 24 * 3600),
            "--malformed-ratio",
            "0.01",
            "--duplicate-ratio",
            "0.01",
            "--late-ratio",
            "0.02",
            "--seed",
            str(self.seed),
            "--no-progress",
        ]

    def environment(self) -> dict[str, str]:
        return {**super().environment(), **self.settings.as_env()}

    def check_health(self) -> Health:
        return Health(True, f"producing to {self.topic} at {DEFAULT_RATES[self.topic]:g}/s")


def _generator_class(topic: str) -> type[TopicGenerator]:
    return type(
        f"Generator_{topic.replace('-', '_')}",
        (TopicGenerator,),
        {"topic": topic, "name": f"generator-{topic}"},
    )


GENERATOR_COMPONENTS = [_generator_class(topic) for topic in DEFAULT_RATES]
