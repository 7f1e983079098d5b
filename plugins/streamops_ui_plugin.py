"""Airflow plugin: the streamops pipelines page (status and start/stop/restart/reset-breaker).

Mounts the FastAPI app of :mod:`streamops_airflow.ui.pipelines_app` under ``/streamops`` of the
api-server and adds a "Pipelines" entry to the Airflow UI's navigation, which shows that page
inside the UI. Every route of the app requires Airflow's own login (see the app's docstring).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from streamops_airflow.ui.pipelines_app import app

URL_PREFIX = "/streamops"


class StreamopsUiPlugin(AirflowPlugin):
    name = "streamops_pipelines"
    fastapi_apps = [  # noqa: RUF012 - the plugin interface is class attributes
        {"app": app, "url_prefix": URL_PREFIX, "name": "streamops pipelines"}
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Pipelines",
            # Relative to Airflow's base URL, so it works behind a proxy's path prefix too.
            "href": URL_PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "category": "browse",
            "url_route": "streamops-pipelines",
        }
    ]
