"""The phases of the orders pipeline benchmark and what they share; its entry, which the runner
finds, is ``benchmarks/bench_orders_pipeline.py`` (the whole story is in its docstring)."""
