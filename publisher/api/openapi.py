"""``/openapi.json``: the OpenAPI 3 document, built with apispec from marshmallow schemas.

The document is built at the first request (when every blueprint and plugin route exists)
by walking ``app.url_map``: each route is described by an entry of :data:`OPERATIONS` (the
table in :mod:`publisher.api.openapi_operations`). A route nobody described (a third-party
plugin's, say) still appears, marked ``x-undocumented``, so the document never hides a door;
the tests fail on any such mark for the routes publisher itself ships.
"""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response, current_app, jsonify

from publisher import __version__
from publisher.api import schemas_out as out
from publisher.api.openapi_operations import (
    BODIES,
    ERROR_HEADERS,
    ERRORS,
    OPERATIONS,
    PARAMETERS,
    Op,
    json_response,
)
from publisher.schemas import AwareDateTime, HttpUrl, RecordSchema

bp = Blueprint("openapi", __name__)
EXTENSION = "publisher.openapi"
SKIPPED_ENDPOINTS = {"static"}
SKIPPED_METHODS = {"HEAD", "OPTIONS"}
CONVERTER_TYPES = {  # database ids are 64-bit
    "int": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
    "float": {"type": "number"},
}


@bp.get("/openapi.json")
def document() -> Response:
    """Built once per app, then served from memory."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if EXTENSION not in app.extensions:
        app.extensions[EXTENSION] = build_document(app)
    return jsonify(app.extensions[EXTENSION])


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of ``app``'s routes, as they are now."""
    spec = _new_spec()
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint in SKIPPED_ENDPOINTS:
            continue
        path = openapi_path(rule.rule)
        for method in sorted((rule.methods or set()) - SKIPPED_METHODS):
            op = OPERATIONS.get((path, method))
            operation = _operation(op, rule.endpoint) if op else _undocumented(rule.endpoint)
            operation["parameters"] = _path_params(rule.rule, op) + operation.get("parameters", [])
            paths.setdefault(path, {})[method.lower()] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def openapi_path(rule: str) -> str:
    """Flask's ``/records/<record_id>`` (or ``<path:p>``) as OpenAPI's ``/records/{record_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _new_spec() -> APISpec:
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="publisher",
        version=__version__,
        openapi_version="3.0.3",
        plugins=[plugin],
        info={"description": "Takes records in, checks them, stores them, hands them to outputs."},
    )
    plugin.map_to_openapi_type(AwareDateTime, "string", "date-time")
    plugin.map_to_openapi_type(HttpUrl, "string", "uri")
    spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer", "description": "an API token (pub_...)"}
    )
    for name, schema in _schemas().items():
        spec.components.schema(name, schema=schema)
    for status, (name, description) in ERRORS.items():
        response = json_response("Error", description, ERROR_HEADERS.get(status))
        spec.components.response(name, response)
    return spec


def _schemas() -> dict[str, Any]:
    return {
        "Record": RecordSchema,
        "Error": out.ErrorSchema,
        "SubmitOne": out.SubmitOneSchema,
        "SubmitBatch": out.SubmitBatchSchema,
        "Retract": out.RetractSchema,
        "Purge": out.PurgeSchema,
        "RecordList": out.RecordListSchema,
        "RecordDetail": out.RecordDetailSchema,
        "Attempt": out.AttemptSchema,
        "Delivery": out.DeliverySchema,
        "DeliveryList": out.DeliveryListSchema,
        "DeliveryPage": out.DeliveryPageSchema,
        "PluginList": out.PluginListSchema,
        "Output": out.OutputSchema,
        "OutputList": out.OutputListSchema,
        "Subscriber": out.SubscriberSchema,
        "SubscriberList": out.SubscriberListSchema,
        "SubscriberSecret": out.SubscriberSecretSchema,
        "Health": out.HealthSchema,
        "Readiness": out.ReadinessSchema,
        "QuarantineItem": out.QuarantineItemSchema,
        "QuarantineList": out.QuarantineListSchema,
        "Replayed": out.ReplayedSchema,
        "WebhookAnswer": out.WebhookAnswerSchema,
        "Whoami": out.WhoamiSchema,
        "OverviewPage": out.OverviewPageSchema,
        "Counts": out.CountsSchema,
        "RevisionList": out.RevisionListSchema,
    }


def _operation(op: Op, endpoint: str) -> dict[str, Any]:
    responses: dict[str, Any] = {str(s): r for s, r in op.responses.items()}
    # any operation with a token reads the store, which may be down for a moment (503)
    statuses = set(op.errors) | ({401, 403, 429, 503} if op.scope else set())
    for status in sorted(statuses):
        responses[str(status)] = ERRORS[status][0]
    operation: dict[str, Any] = {
        "operationId": endpoint.replace(".", "_"),
        "summary": op.summary,
        "tags": [op.tag],
        "responses": responses,
        "parameters": [PARAMETERS[p] for p in op.params if PARAMETERS[p]["in"] == "query"],
    }
    description = op.description
    if op.scope:
        operation["security"] = [{"bearer": []}]
        needs = "any live token" if op.scope == "any" else f"a token with the `{op.scope}` scope"
        description = f"Needs {needs}. {description}".strip()
    else:
        operation["security"] = []
    if description:
        operation["description"] = description
    if op.body:
        operation["requestBody"] = BODIES[op.body]
    return operation


def _undocumented(endpoint: str) -> dict[str, Any]:
    return {
        "operationId": endpoint.replace(".", "_"),
        "summary": "Route added by a plugin (not described)",
        "x-undocumented": True,
        "responses": {"default": {"description": "Whatever the plugin answers"}},
    }


def _path_params(rule: str, op: Op | None) -> list[dict[str, Any]]:
    """Path parameters, typed by their converter (``<int:item_id>`` is an integer)."""
    given = {p: PARAMETERS[p] for p in (op.params if op else ()) if PARAMETERS[p]["in"] == "path"}
    params = []
    for converter, name in re.findall(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>", rule):
        schema = CONVERTER_TYPES.get(converter, {"type": "string"})
        params.append(given.get(name) or {"name": name, "in": "path", "required": True,
                                          "schema": dict(schema)})  # fmt: skip
    return params
