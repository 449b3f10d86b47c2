"""``/api/v1/plugins``: what is loaded."""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, Response, current_app, jsonify

from publisher.api.auth import requires
from publisher.plugins import describe_plugins

bp = Blueprint("plugins", __name__, url_prefix="/api/v1")


@bp.get("/plugins")
@requires("read")
def list_plugins() -> Response:
    services = current_app.extensions["publisher"]
    infos = describe_plugins(services.pm, services.outputs)
    return jsonify({"items": [asdict(info) for info in infos]})
