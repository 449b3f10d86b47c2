"""The operator's page: one HTML page, a small script and a style sheet.

The page itself holds no data and needs no token: the script asks the management API
(``/api/v1/...``) with the bearer token the operator pastes in, so every permission check
stays where it already is. The page is served with a strict Content-Security-Policy
(``default-src 'self'``, no inline script or style), and the script writes data into the
page with ``textContent`` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, Response, redirect, render_template, send_from_directory, url_for
from flask.blueprints import BlueprintSetupState

from publisher.api.openapi import Blueprint, described

PACKAGE = Path(__file__).resolve().parent.parent

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)

STATIC = PACKAGE / "static"

bp = Blueprint(
    "ops",
    __name__,
    url_prefix="/ops",
    template_folder=str(PACKAGE / "templates"),
    description="Operations",
)


@bp.get("/")
@bp.doc(responses={"200": {"description": "The page", "content": {"text/html": {}}}})
def page() -> Response:
    """The operator's page (HTML; its script uses the management API)"""
    response = Response(render_template("ops.html"), mimetype="text/html")
    return _harden(response)


@bp.get("/static/<path:filename>")
@bp.doc(responses={"200": {"description": "A static file"}, "304": {"description": "Not modified"}})
@bp.errors(404)
def static(filename: str) -> Response:
    """The operator page's script and style sheet"""
    return send_from_directory(STATIC, filename)


@bp.after_request
def _headers(response: Response) -> Response:
    """Static files too: no sniffing, no framing, no referrer."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


def _harden(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-store"
    return response


@described(
    {
        "summary": "Leads to the operator's page",
        "tags": ["ops"],
        "security": [],
        "responses": {"302": {"description": "Redirect to `/ops/`"}},
    }
)
def _to_page() -> Any:
    return redirect(url_for("ops.page"), code=302)


@bp.record_once
def _claim_root(state: BlueprintSetupState) -> None:
    """``/`` leads to the page, unless something registered before us already serves it."""
    app: Flask = state.app
    if any(rule.rule == "/" for rule in app.url_map.iter_rules()):
        return
    app.add_url_rule("/", endpoint="ops_root", view_func=_to_page, methods=["GET"])
