"""Benchmarks of the platform, run with ``python -m benchmarks.runner`` or, with a report,
``streamops bench`` (``python -m benchmarks.report``); see README.md.

Shared by every benchmark module: :class:`BenchmarkError`, :func:`int_env` for their size
settings, :func:`output_dir` for the folder their plots go to, and what they need of the stack
(:func:`require_services`, :func:`empty_redis_db`). Streaming queries are stopped with
``spark_jobs.common.runner.stop_between_batches``.

The package is part of the installed wheel too: nothing here may count on a source checkout
around it (:func:`source_checkout`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

OUTPUT_ENV = "BENCH_OUTPUT_DIR"
# Results of a run from an installed package: beside the user, never inside site-packages.
INSTALLED_OUTPUT = Path("benchmark-results")


def source_checkout() -> Path | None:
    """The repository this package was imported from, None when it is an installed copy."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def default_output() -> Path:
    """Where results go unless told: ``benchmarks/results/`` of a source checkout, else
    ``./benchmark-results/`` in the current directory."""
    checkout = source_checkout()
    return checkout / "benchmarks" / "results" if checkout else INSTALLED_OUTPUT


class BenchmarkError(RuntimeError):
    """A benchmark cannot run here (no broker, no Java, ...): the message says what to do.

    Defined here rather than in ``runner`` so the runner, which runs as ``__main__``, and the
    benchmark modules, which import it, share one class.
    """


def int_env(name: str, default: int, *, minimum: int = 1) -> int:
    """The whole number in environment variable ``name`` (``default`` when unset); a clear
    BenchmarkError when it is not a number or below ``minimum``."""
    text = os.environ.get(name, str(default))
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise BenchmarkError(f"{name} is {text!r}; give a whole number ≥ {minimum}.")
    return value


def output_dir() -> Path:
    """$BENCH_OUTPUT_DIR, else the runner's --output when the runner started us, else its default.

    The runner hands a benchmark only the settings, so the folder is read from its command line.
    """
    explicit = os.environ.get(OUTPUT_ENV)
    if explicit:
        return Path(explicit)
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name == "benchmarks.runner":
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("--output", type=Path, default=default_output())
        known, _ = parser.parse_known_args(sys.argv[1:])
        return Path(known.output)
    return default_output()


# --- the stack a benchmark runs on ----------------------------------------------------------------

# Redis databases a benchmark may take for its scratch keys, the highest first (0 is the stack's).
SCRATCH_REDIS_DBS = range(15, 0, -1)


def require_services(settings: Any, *, spark: bool = False) -> None:
    """Kafka, MariaDB (with the schema) and Redis answer, and with ``spark`` the Kafka
    connector jars are in the cache; else a BenchmarkError that says what to do."""
    from streamops.errors import StreamopsError
    from streamops.platform_health import check_mariadb, check_redis
    from streamops.topics import admin_client

    try:
        admin_client(settings).list_topics(timeout=10)
    except Exception as error:  # KafkaException: no broker answered
        raise BenchmarkError(
            f"Kafka at {settings.kafka_bootstrap_servers} is not reachable ({error}); start the "
            "stack with `streamops up`, or point STREAMOPS_KAFKA_HOST/PORT at a running broker."
        ) from error
    for name, check in (("MariaDB", check_mariadb), ("Redis", check_redis)):
        try:
            check(settings)
        except StreamopsError as error:
            # The MariaDB check's own errors say what to do (start it, migrate the schema).
            hint = "" if name == "MariaDB" else " Start the stack with `streamops up`."
            raise BenchmarkError(f"{name} is not usable: {error}{hint}") from error
    if spark:
        from streamops.spark_runtime import kafka_connector_jars

        try:
            kafka_connector_jars(settings)
        except StreamopsError as error:
            raise BenchmarkError(str(error)) from error


def empty_redis_db(settings: Any) -> int:
    """A Redis database of the stack's server, other than its own, that holds no key."""
    import redis

    for db in SCRATCH_REDIS_DBS:
        if db == settings.redis_db:
            continue
        client = redis.Redis.from_url(settings.model_copy(update={"redis_db": db}).redis_url)
        try:
            if client.dbsize() == 0:
                return db
        finally:
            client.close()
    raise BenchmarkError("Every Redis database 1-15 holds keys; the benchmark needs an empty one.")


def produce_orders(
    bootstrap_servers: str,
    topic: str,
    count: int,
    seed: int,
    now: Any,
    *,
    malformed_ratio: float = 0.0,
    duplicate_ratio: float = 0.0,
) -> Any:
    """``count`` generated orders into ``topic`` as fast as the generator sends (its summary),
    with those shares of malformed and duplicated records. Every record delivered, or a
    :class:`BenchmarkError` that says how many were not and why."""
    from streamops.generator.producer import KafkaUnavailableError, run_generator

    try:
        summary = run_generator(
            "orders",
            bootstrap_servers=bootstrap_servers,
            rate=0,
            count=count,
            seed=seed,
            now=now,
            progress=False,
            target_topic=topic,
            malformed_ratio=malformed_ratio,
            duplicate_ratio=duplicate_ratio,
        )
    except KafkaUnavailableError as error:
        raise BenchmarkError(str(error)) from error
    if summary.failed:
        raise BenchmarkError(
            f"{summary.failed} of {count} orders were not delivered to {topic}: "
            f"{'; '.join(summary.errors)}; check the broker's log."
        )
    return summary
