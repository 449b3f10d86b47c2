"""``/api/v1/plugins``: what is loaded."""

from __future__ import annotations

from typing import Any

from flask import current_app
from marshmallow import fields, validate

from publisher.api.auth import requires
from publisher.api.openapi import Blueprint
from publisher.api.schemas import Closed
from publisher.plugins import describe_plugins

bp = Blueprint("plugins", __name__, url_prefix="/api/v1", description="Plugins")


class PluginSchema(Closed):
    name = fields.String(required=True)
    version = fields.String(required=True)
    origin = fields.String(
        required=True, validate=validate.OneOf(["builtin", "core", "entry-point", "folder"])
    )
    hooks = fields.List(fields.String(), required=True)
    outputs = fields.List(fields.String(), required=True)


class PluginListSchema(Closed):
    items = fields.List(fields.Nested(PluginSchema), required=True)


@bp.get("/plugins")
@requires("read")
@bp.response(200, PluginListSchema, description="Plugins, built-ins first")
def list_plugins() -> Any:
    """List loaded plugins"""
    services = current_app.extensions["publisher"]
    return {"items": describe_plugins(services.pm, services.outputs)}
