"""Transforms of the joins pipeline: orders ⋈ payments (stream-stream), and orders enriched with
the product catalogue (stream-static) summed per category and 1-minute window.

Orders ⋈ payments
    :func:`join_orders_payments` is a LEFT OUTER equi-join on ``order_id`` with a time bound: a
    payment matches an order when ``order_time - paid_early_tolerance <= payment_time <=
    order_time + pay_within`` (15 minutes and 1 minute by default; the tolerance admits a payment
    clock slightly behind the shop's). Both inputs must carry a watermark
    (:func:`watermarked_orders`, :func:`watermarked_payments`): with them and the bound, Spark
    drops an order from its state once the payments watermark has passed ``order_time +
    pay_within``, and a payment once the orders watermark has passed ``payment_time +
    paid_early_tolerance``, so state stays bounded. An order that no payment matched by then is
    emitted once, with NULL payment columns: ``status`` becomes ``unpaid``.

Duplicates, decided here and in the sink, so ``order_payments`` holds one row per order:
    * the same ``order_id`` twice (a producer retry) is one order: ``dropDuplicatesWithinWatermark``
      keeps the first copy, as the orders pipeline does; a copy arriving after the watermark has
      passed is dropped as late;
    * the same ``payment_id`` twice is one payment, likewise;
    * several payments of one order are several matches: each is emitted. The one kept is the
      best by :func:`payment_rank` — ``captured`` over ``authorized`` over ``failed``, then the
      latest ``payment_time``, then the greatest ``payment_id`` — so the outcome depends on the
      set of payments, not on the order they arrived in or on how batches split them
      (:func:`best_payment_per_order` within a batch, the sink's conditional update across
      batches). A matched row always beats ``unpaid``; ``unpaid`` never replaces a payment.
    Every step is deterministic, so a replayed batch writes the same rows again.

Category revenue
    :func:`enrich_with_products` joins a batch of orders with the catalogue (product_id → name,
    category; ``unknown`` when the product is not in it) and
    :func:`category_revenue_per_window` sums it per 1-minute window, category and currency.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DecimalType

from spark_jobs.transforms.orders import AMOUNT_TYPE, revenue_per_window
from streamops.contract.job_defaults import JOINS_PAID_EARLY_TOLERANCE, JOINS_PAY_WITHIN
from streamops.contract.joins import STATUS_RANKING

UNPAID = "unpaid"
UNKNOWN_CATEGORY = "unknown"
SECONDS_TO_PAY_TYPE = DecimalType(12, 3)

ORDER_SIDE_COLUMNS = (
    "order_id",
    "product_id",
    "quantity",
    "currency",
    "order_amount",
    "order_time",
)
PAYMENT_SIDE_COLUMNS = (
    "payment_order_id",
    "payment_id",
    "paid_amount",
    "payment_status",
    "payment_time",
)
ORDER_PAYMENT_COLUMNS = (
    "order_id",
    "payment_id",
    "order_amount",
    "paid_amount",
    "currency",
    "status",
    "order_time",
    "payment_time",
    "seconds_to_pay",
    "amount_mismatch",
)
ENRICHED_ORDER_COLUMNS = (
    "order_id",
    "product_id",
    "product_name",
    "category",
    "quantity",
    "currency",
    "amount",
    "event_time",
)
PRODUCT_COLUMNS = ("product_id", "name", "category")
CATEGORY_REVENUE_COLUMNS = (
    "window_start",
    "window_end",
    "category",
    "currency",
    "order_count",
    "item_count",
    "revenue",
)


def order_side(orders: DataFrame) -> DataFrame:
    """Valid orders (``valid_orders``) as the join's left side: :data:`ORDER_SIDE_COLUMNS`."""
    return orders.select(
        "order_id",
        "product_id",
        "quantity",
        "currency",
        F.col("amount").cast(AMOUNT_TYPE).alias("order_amount"),
        F.col("event_time").alias("order_time"),
    )


def payment_side(payments: DataFrame) -> DataFrame:
    """Valid payments (``valid_payments``) as the join's right side: :data:`PAYMENT_SIDE_COLUMNS`.

    Renamed so that no column name is on both sides of the join.
    """
    return payments.select(
        F.col("order_id").alias("payment_order_id"),
        "payment_id",
        F.col("amount").cast(AMOUNT_TYPE).alias("paid_amount"),
        F.col("status").alias("payment_status"),
        F.col("event_time").alias("payment_time"),
    )


def watermarked_orders(orders: DataFrame, delay: str) -> DataFrame:
    """:func:`order_side` with a watermark on ``order_time``, one row per ``order_id``."""
    return (
        order_side(orders)
        .withWatermark("order_time", delay)
        .dropDuplicatesWithinWatermark(["order_id"])
    )


def watermarked_payments(payments: DataFrame, delay: str) -> DataFrame:
    """:func:`payment_side` with a watermark on ``payment_time``, one row per ``payment_id``."""
    return (
        payment_side(payments)
        .withWatermark("payment_time", delay)
        .dropDuplicatesWithinWatermark(["payment_id"])
    )


def join_orders_payments(
    orders: DataFrame,
    payments: DataFrame,
    pay_within: str = JOINS_PAY_WITHIN,
    paid_early_tolerance: str = JOINS_PAID_EARLY_TOLERANCE,
) -> DataFrame:
    """Each order with each payment of it in the time bound, or once as ``unpaid``.

    ``orders`` has :data:`ORDER_SIDE_COLUMNS`, ``payments`` :data:`PAYMENT_SIDE_COLUMNS`; on
    streams both need a watermark. Columns are :data:`ORDER_PAYMENT_COLUMNS`. On a static
    DataFrame the result is what the stream emits once every watermark has passed.
    """
    bound = (
        (F.col("payment_order_id") == F.col("order_id"))
        & (
            F.col("payment_time")
            >= F.col("order_time") - F.expr(f"INTERVAL {paid_early_tolerance}")
        )
        & (F.col("payment_time") <= F.col("order_time") + F.expr(f"INTERVAL {pay_within}"))
    )
    joined = orders.join(payments, bound, "leftOuter")
    paid = F.col("payment_id").isNotNull()
    return joined.select(
        "order_id",
        "payment_id",
        "order_amount",
        "paid_amount",
        "currency",
        F.when(paid, F.col("payment_status")).otherwise(F.lit(UNPAID)).alias("status"),
        "order_time",
        "payment_time",
        seconds_between(F.col("order_time"), F.col("payment_time")).alias("seconds_to_pay"),
        F.when(paid, F.col("paid_amount") != F.col("order_amount")).alias("amount_mismatch"),
    )


def seconds_between(start: Column, end: Column) -> Column:
    """``end - start`` in seconds as DECIMAL(12,3), from whole microseconds; NULL if either is."""
    micros = F.unix_micros(end) - F.unix_micros(start)
    return (micros.cast(DecimalType(20, 0)) / F.lit(1_000_000)).cast(SECONDS_TO_PAY_TYPE)


def payment_rank(status: Column) -> Column:
    """0 for ``unpaid`` (or anything unknown), then :data:`STATUS_RANKING` from 1 upwards."""
    rank = F.lit(0)
    for index, name in enumerate(STATUS_RANKING, start=1):
        rank = F.when(status == name, F.lit(index)).otherwise(rank)
    return rank


def best_payment_per_order(pairs: DataFrame) -> DataFrame:
    """One row per ``order_id`` of a (static) batch of join output: the best by
    :func:`payment_rank`, then the latest ``payment_time``, then the greatest ``payment_id``.

    ``unpaid`` ranks lowest and its NULLs sort last, so any payment beats it.
    """
    best_first = Window.partitionBy("order_id").orderBy(
        payment_rank(F.col("status")).desc(),
        F.col("payment_time").desc_nulls_last(),
        F.col("payment_id").desc_nulls_last(),
    )
    return (
        pairs.withColumn("_choice", F.row_number().over(best_first))
        .where(F.col("_choice") == 1)
        .select(*ORDER_PAYMENT_COLUMNS)
    )


def enrich_with_products(orders: DataFrame, products: DataFrame) -> DataFrame:
    """Orders with their product's name and category (``unknown`` when not in ``products``).

    ``orders`` has the columns of ``valid_orders``; ``products`` :data:`PRODUCT_COLUMNS`, one
    row per product_id, small enough to broadcast. Columns are :data:`ENRICHED_ORDER_COLUMNS`.
    """
    catalogue = F.broadcast(
        products.select(
            F.col("product_id").alias("_product_id"),
            F.col("name").alias("product_name"),
            F.col("category").alias("_category"),
        )
    )
    joined = orders.join(catalogue, orders["product_id"] == F.col("_product_id"), "left")
    return joined.select(
        "order_id",
        "product_id",
        "product_name",
        F.coalesce(F.col("_category"), F.lit(UNKNOWN_CATEGORY)).alias("category"),
        "quantity",
        "currency",
        "amount",
        "event_time",
    )


def category_revenue_per_window(enriched: DataFrame, window_seconds: int = 60) -> DataFrame:
    """Orders, items and revenue per tumbling event-time window, category and currency.

    Columns are :data:`CATEGORY_REVENUE_COLUMNS`; windows are aligned on the epoch.
    """
    return revenue_per_window(enriched, window_seconds, by=("category", "currency"))
