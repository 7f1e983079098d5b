"""The live dashboard (:mod:`streamops.dashboard`) as the plugin mounts it under
``/streamops-dashboard`` of the api-server: the same app as ``python -m streamops.dashboard``,
with Airflow's ``get_user`` as a dependency of every route (page, scripts, snapshot, event stream,
health). A request without the UI's session cookie or a bearer token from ``POST /auth/token``
gets 401 (403 for an invalid token); a browser opening the page gets a link to the login.

The dashboard shows patient vitals: any authenticated Airflow user may see it, whatever their
role (the roles govern DAGs, Connections and the like, not this page).
"""

from __future__ import annotations

from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, HTTPException

from streamops.config import load_settings
from streamops.dashboard.app import create_app
from streamops_airflow.ui.login import login_hint

# Built when the plugin is imported; its Redis subscription starts with the api-server's lifespan,
# which enters the lifespan of every mounted FastAPI app.
app = create_app(load_settings(), dependencies=[Depends(get_user)])
app.add_exception_handler(HTTPException, login_hint)
