"""What a browser gets from a plugin page it opens without Airflow's login."""

from __future__ import annotations

import html

from fastapi import HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, Response


async def login_hint(request: Request, exc: Exception) -> Response:
    """An app's exception handler for ``HTTPException``: a browser opening the app's page (its
    root) without a session gets the 401 with a link to Airflow's login; every other refusal is
    FastAPI's JSON one."""
    assert isinstance(exc, HTTPException)
    page_path = request.scope.get("root_path", "").rstrip("/") + "/"
    wants_html = "text/html" in request.headers.get("accept", "")
    if exc.status_code in (401, 403) and request.url.path == page_path and wants_html:
        from airflow.api_fastapi.app import get_auth_manager

        login = get_auth_manager().get_url_login(next_url=str(request.url))
        return HTMLResponse(
            f"<!doctype html><title>Log in</title><p>Not logged in to Airflow ({exc.detail}). "
            f'<a href="{html.escape(login)}">Log in</a>, then open this page again.</p>',
            status_code=exc.status_code,
        )
    return await http_exception_handler(request, exc)
