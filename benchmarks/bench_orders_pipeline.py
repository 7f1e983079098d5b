"""The orders pipeline under load: throughput with and without its sinks, produce → visible
latency at steady rates, and the floor under the trigger interval. One run, one Spark driver.

The job's two queries are started in-process by the job's own ``orders.start``
(``spark_jobs.jobs.orders``) with the ``ProgressPublisher`` listener, as the supervised job runs
them but for what a benchmark must change (``JobOverrides``): a scratch topic, scratch
checkpoints, the trigger, and no-op sinks for the baseline (``benchmarks.orders.support``).

1. **Throughput.** ``BENCH_ORDERS`` orders (1 % malformed, 1 % duplicates) are produced into a
   scratch topic first; then both queries drain it with ``trigger(availableNow=True)``, once with
   the real sinks (MariaDB, quarantine, Parquet archive, Redis) and once with no-op sinks that still
   force the work (the batch is persisted and counted, the windows collected). Each drain has its
   own checkpoints; ``BENCH_REPEATS`` rounds alternate which goes first; the best round counts.
   A first drain with the real sinks warms the driver up and is discarded (``BENCH_WARM_UP=0``
   skips it). Right after each no-op drain, Kafka's ``kafka-consumer-perf-test``
   (``ConsumerPerformance``, from the stack's Kafka jars) reads the same topic, every record, in a
   consumer group of its own: the ceiling of reading it (``benchmarks.orders.consumer_perf``).
2. **Latency.** For each rate of ``BENCH_RATES`` (orders/s), the queries run with the job's default
   trigger on a fresh topic while a separate producer process sends at that rate for
   ``BENCH_LATENCY_SECONDS``. Sampled orders are timed from ``produce()`` to the row being visible
   in ``orders`` (polled) and to a ``streamops:orders:updates`` message whose window counts them.
   The windows query's state rows after each batch are kept (``state_series``).
3. **Floor.** One order every two seconds for ``BENCH_FLOOR_SECONDS``, into no-op sinks and then
   into the real ones, followed by up to ``BENCH_IDLE_SECONDS`` with no input: the duration of
   one-order batches, of the empty batches Spark runs to evict state, of an idle trigger's offset
   check, and (from phase 2) the shortest trigger-to-trigger interval under load.

Leaving things as they were: orders use seeds whose order ids (``ord-<seed>-…``) no one else uses,
and event times in a day of 2001 holding no window, so the rows written are deleted afterwards by
order id, topic and window range; Redis writes go to an empty database of the same server; the
topics, checkpoints and archive are scratch and removed. Only ``streamops:orders:updates`` and
``streamops:query:events`` (channels, global to the server) carry the benchmark's messages.

This module is the entry the runner finds (``bench_*.py``); the phases live in
``benchmarks/orders/``: ``throughput``, ``latency`` and ``floor``, with ``support`` (sizes, the
pipeline's start, helpers), ``scratch`` (the scratch world and its removal), ``queries`` (the
queries' progress and waits) and ``charts``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pyspark

from benchmarks import output_dir, plots, require_services
from benchmarks.orders.charts import draw_charts
from benchmarks.orders.floor import floor_phase
from benchmarks.orders.latency import latency_phase
from benchmarks.orders.scratch import scratch_world, spark_session
from benchmarks.orders.support import Sizes, load_average
from benchmarks.orders.throughput import throughput_phase
from spark_jobs.jobs.orders import OrdersJobConfig
from streamops.config import Settings


def run(settings: Settings) -> dict[str, Any]:
    sizes = Sizes.from_env()
    plots.require_matplotlib()
    output = output_dir()
    require_services(settings, spark=True)
    load: dict[str, list[float]] = {"start": load_average()}
    with scratch_world(settings) as scratch, spark_session(scratch) as spark:
        load["throughput"] = load_average()
        throughput = throughput_phase(spark, scratch, sizes)
        latency = []
        for index, rate in enumerate(sizes.rates):
            load[f"latency_{rate}"] = load_average()
            latency.append(latency_phase(spark, scratch, sizes, rate, index))
        load["floor"] = load_average()
        floor = floor_phase(spark, scratch, sizes, latency)
    ceiling = throughput["sinks"]["best"]["orders_per_second"]
    for entry in latency:
        # A batch takes a fixed time plus a time per order, and with the default trigger the next
        # one holds what arrived meanwhile: batches settle at a finite size only while the rate
        # stays below what the pipeline drains per second. Above it, the backlog only grows.
        entry["below_sinks_throughput"] = entry["target_rate"] < ceiling
    load["end"] = load_average()
    results: dict[str, Any] = {
        "sizes": {
            "orders": sizes.orders,
            "repeats": sizes.repeats,
            "rates": list(sizes.rates),
            "latency_seconds": sizes.latency_seconds,
            "floor_seconds": sizes.floor_seconds,
            "idle_seconds": sizes.idle_seconds,
            "warm_up": sizes.warm_up,
        },
        "job_config": asdict(OrdersJobConfig()),
        "spark": {"master": settings.spark_master, "version": pyspark.__version__},
        "partitions": settings.kafka_partitions,
        # 1, 5 and 15 minute load averages as each phase began. Before the run it is other work
        # on the machine, competing for the same cores; later the benchmark's own processes
        # (Spark, Kafka, MariaDB, the producer) count too.
        "load_average": load,
        "throughput": throughput,
        "latency": latency,
        "floor": floor,
    }
    results["plots"] = draw_charts(results, output, scratch.stamp)
    return results
