"""Airflow plugin: the streamops pipelines page (status and start/stop/restart/reset-breaker) and
the live dashboard, both served by the api-server behind Airflow's login.

Mounts the FastAPI app of :mod:`streamops_airflow.ui.pipelines_app` under ``/streamops`` and the
dashboard's (:mod:`streamops_airflow.ui.dashboard_app`) under ``/streamops-dashboard``, and adds
"Pipelines" and "Live dashboard" entries to the Airflow UI's navigation, which show those pages
inside the UI. Every route of both apps requires Airflow's own login (see their docstrings).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from streamops_airflow.ui.dashboard_app import app as dashboard_app
from streamops_airflow.ui.pipelines_app import app

URL_PREFIX = "/streamops"
DASHBOARD_URL_PREFIX = "/streamops-dashboard"


class StreamopsUiPlugin(AirflowPlugin):
    name = "streamops_pipelines"
    fastapi_apps = [  # noqa: RUF012 - the plugin interface is class attributes
        {"app": app, "url_prefix": URL_PREFIX, "name": "streamops pipelines"},
        {"app": dashboard_app, "url_prefix": DASHBOARD_URL_PREFIX, "name": "streamops dashboard"},
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Pipelines",
            # Relative to Airflow's base URL, so it works behind a proxy's path prefix too.
            "href": URL_PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "category": "browse",
            "url_route": "streamops-pipelines",
        },
        {
            "name": "Live dashboard",
            # The trailing slash matters: the page's own URLs are relative to it.
            "href": DASHBOARD_URL_PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "category": "browse",
            "url_route": "streamops-dashboard",
        },
    ]
