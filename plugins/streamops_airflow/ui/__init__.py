"""Operations surface of the supervised pipelines: a page in the Airflow UI and its JSON API.

``pipeline_status`` assembles one status row per pipeline from plain data (pure, unit-tested);
``pipeline_sources`` reads that data from Redis, MariaDB and Kafka; ``pipelines_app`` is the
FastAPI app the plugin ``plugins/streamops_ui_plugin.py`` mounts. Start, stop and restart go
through Airflow's REST API with ``streamops.airflow_rest``, the client the CLI and ``streamops up``
use too.

Modules here import each other absolutely: Airflow's plugin loader also executes every file of the
plugins folder as a top-level module, where relative imports would fail.
"""
