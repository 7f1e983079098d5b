"""The live dashboard: a FastAPI app that pushes the pipelines' Redis updates to the browser.

See docs/dashboard.md. ``python -m streamops.dashboard`` serves it on the configured
``dashboard_host``/``dashboard_port``; ``streamops up`` starts it as the ``dashboard`` component.
"""
