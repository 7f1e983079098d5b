"""Job entry points, one module per pipeline; this registry is light enough for the CLI and stack.

Each pipeline maps to the names of the streaming queries its job starts (their progress is
published under those names, see docs/redis-keys.md).
"""

PIPELINE_QUERIES: dict[str, tuple[str, ...]] = {
    "orders": ("orders_records", "orders_revenue"),
    "alerts": ("alerts_counts", "alerts_records"),
    "joins": ("joins_payments_records", "joins_order_payments", "joins_category_revenue"),
    "vitals": ("vitals_records", "vitals_summary", "vitals_signal"),
}
