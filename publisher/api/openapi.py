"""``/openapi.json``: the OpenAPI 3 document, built with apispec from marshmallow schemas.

The document is built at the first request (when every blueprint and plugin route exists)
by walking ``app.url_map``: each route is described by an entry of :data:`OPERATIONS`.
A route nobody described (a third-party plugin's, say) still appears, marked
``x-undocumented``, so the document never hides a door; the tests fail on any such mark
for the routes publisher itself ships.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response, current_app, jsonify

from publisher import __version__
from publisher.api import schemas_out as out
from publisher.parsing import ACCEPTED_TYPES, JSON_TYPES, MARKDOWN_TYPES, NDJSON_TYPES
from publisher.schemas import AwareDateTime, HttpUrl, RecordSchema

bp = Blueprint("openapi", __name__)
EXTENSION = "publisher.openapi"
SKIPPED_ENDPOINTS = {"static"}
SKIPPED_METHODS = {"HEAD", "OPTIONS"}
CONVERTER_TYPES = {  # database ids are 64-bit
    "int": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
    "float": {"type": "number"},
}
FEED_FORMATS = ("atom.xml", "rss.xml", "feed.json")
FEED_TYPES = ("application/atom+xml", "application/rss+xml", "application/feed+json")


@bp.get("/openapi.json")
def document() -> Response:
    """Built once per app, then served from memory."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if EXTENSION not in app.extensions:
        app.extensions[EXTENSION] = build_document(app)
    return jsonify(app.extensions[EXTENSION])


# -- the table of operations -------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One documented operation: what it needs, takes and answers."""

    summary: str
    tag: str
    scope: str | None = None  # a bearer token scope; None = public
    params: tuple[str, ...] = ()  # names in PARAMETERS (query) or path overrides
    body: str | None = None  # a key of BODIES
    responses: Mapping[int, Any] = field(default_factory=dict)  # status -> response
    errors: tuple[int, ...] = ()  # error statuses besides the auth ones
    description: str = ""


def _json(schema: Any, description: str, headers: Mapping[str, Any] | None = None) -> dict:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        answer["headers"] = dict(headers)
    return answer


def _one_of(*names: str) -> dict[str, Any]:
    return {"oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in names]}


FEED_RESPONSES = {
    200: {
        "description": "The feed",
        "content": {media_type: {"schema": {"type": "string"}} for media_type in FEED_TYPES},
    },
    304: {"description": "Not modified (conditional request)"},
}
LOCATION = {"Location": {"description": "the record's URL", "schema": {"type": "string"}}}

OPERATIONS: dict[tuple[str, str], Op] = {
    ("/api/v1/records", "POST"): Op(
        "Submit one record or a batch",
        "records",
        scope="submit",
        body="records",
        responses={
            202: _json(
                _one_of("SubmitOne", "SubmitBatch"),
                "Accepted: one record answers its id, revision and status; a batch (a JSON "
                "array, NDJSON, several YAML documents) answers per item.",
                LOCATION,
            )
        },
        errors=(400, 413, 415, 422),
        description="A batch holds at most `limits.max_batch` records; an invalid item of a "
        "batch is reported in its place, an invalid single record answers 422.",
    ),
    ("/api/v1/records", "GET"): Op(
        "List records, newest first",
        "records",
        scope="read",
        params=("cursor", "limit", "published", "topic", "since", "state"),
        responses={200: _json("RecordList", "A page of records")},
        errors=(400, 422),
        description="400 for a bad `cursor`, `limit` or `published`; 422 for a bad `since`.",
    ),
    ("/api/v1/records/{record_id}", "GET"): Op(
        "Read a record",
        "records",
        scope="read",
        responses={200: _json("RecordDetail", "The record's current revision")},
        errors=(404,),
        description="With a `read-protected` (or `admin`) token, `secured.protected` holds "
        "the decrypted protected fields.",
    ),
    ("/api/v1/records/{record_id}", "DELETE"): Op(
        "Retract a record from every output",
        "records",
        scope="submit",
        responses={202: _json("Retract", "Retraction accepted")},
        errors=(404,),
    ),
    ("/api/v1/records/{record_id}/deliveries", "GET"): Op(
        "List a record's deliveries",
        "deliveries",
        scope="read",
        responses={200: _json("DeliveryList", "Deliveries, oldest first")},
        errors=(404,),
    ),
    ("/api/v1/deliveries", "GET"): Op(
        "List deliveries, most recently changed first (at most 200)",
        "deliveries",
        scope="read",
        params=("status", "output"),
        responses={200: _json("DeliveryList", "Deliveries")},
        errors=(400,),
    ),
    ("/api/v1/deliveries/{delivery_id}/redeliver", "POST"): Op(
        "Make a delivery pending again (same id, fresh schedule)",
        "deliveries",
        scope="admin",
        responses={202: _json("Delivery", "The delivery, pending again")},
        errors=(404,),
    ),
    ("/api/v1/plugins", "GET"): Op(
        "List loaded plugins",
        "plugins",
        scope="read",
        responses={200: _json("PluginList", "Plugins, built-ins first")},
    ),
    ("/api/v1/outputs", "GET"): Op(
        "List outputs with their routing rule and state",
        "outputs",
        scope="read",
        responses={200: _json("OutputList", "Outputs")},
    ),
    ("/api/v1/outputs/{name}/enable", "POST"): Op(
        "Turn an output back on",
        "outputs",
        scope="admin",
        responses={200: _json("Output", "The output")},
        errors=(404,),
    ),
    ("/api/v1/outputs/{name}/disable", "POST"): Op(
        "Turn an output off (its deliveries end dead until it is on again)",
        "outputs",
        scope="admin",
        responses={200: _json("Output", "The output")},
        errors=(404,),
    ),
    ("/api/v1/quarantine", "GET"): Op(
        "List quarantined payloads, newest first",
        "quarantine",
        scope="read",
        params=("source", "replayed", "cursor", "limit"),
        responses={200: _json("QuarantineList", "Quarantined payloads")},
        errors=(400,),
    ),
    ("/api/v1/quarantine/{item_id}", "GET"): Op(
        "Read a quarantined payload",
        "quarantine",
        scope="read",
        responses={200: _json("QuarantineItem", "The item, with its payload as text")},
        errors=(404,),
    ),
    ("/api/v1/quarantine/{item_id}/replay", "POST"): Op(
        "Take a quarantined payload in again",
        "quarantine",
        scope="admin",
        responses={200: _json("Replayed", "Taken in again (or held again by the policy)")},
        errors=(400, 404, 409, 413, 415, 422),
        description="409 if already replayed; a payload still refused keeps its item, with "
        "the new errors.",
    ),
    ("/webhooks/{source}", "POST"): Op(
        "Receive a Standard Webhooks delivery from a source",
        "webhooks",
        body="webhook",
        responses={
            202: _json(
                "WebhookAnswer",
                "Verified and kept, parsed and stored next (`duplicate`: a repeated "
                "webhook-id, taken in once)",
            ),
        },
        errors=(401, 413, 429),
        description="Signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, "
        "`webhook-signature`) with the source's secret, over the raw body.",
    ),
    ("/healthz", "GET"): Op(
        "Liveness: the process answers",
        "operations",
        responses={200: _json("Health", "Alive")},
    ),
    ("/readyz", "GET"): Op(
        "Readiness: the store and the queue answer",
        "operations",
        responses={
            200: _json("Readiness", "Ready"),
            503: _json("Readiness", "Not ready: `checks` says what is unreachable"),
        },
    ),
    ("/metrics", "GET"): Op(
        "Prometheus metrics (text exposition format)",
        "operations",
        errors=(404,),
        description="404 when metrics are not enabled (`publisher.metrics.register`).",
        responses={
            200: {
                "description": "Metrics of this process",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    ),
    ("/openapi.json", "GET"): Op(
        "This document",
        "operations",
        responses={
            200: {
                "description": "OpenAPI 3 document",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    ),
    ("/ops/", "GET"): Op(
        "The operator's page (HTML; its script uses the management API)",
        "operations",
        responses={200: {"description": "The page", "content": {"text/html": {}}}},
    ),
    ("/ops/static/{filename}", "GET"): Op(
        "The operator page's script and style sheet",
        "operations",
        responses={200: {"description": "A static file"}, 304: {"description": "Not modified"}},
        errors=(404,),
    ),
    ("/", "GET"): Op(
        "Leads to the operator's page",
        "operations",
        responses={302: {"description": "Redirect to `/ops/`"}},
    ),
    ("/feeds/{fmt}", "GET"): Op(
        "The site-wide feed",
        "feeds",
        params=("fmt",),
        responses=FEED_RESPONSES,
        errors=(404,),
    ),
    ("/feeds/topics/{topic}/{fmt}", "GET"): Op(
        "A topic's feed",
        "feeds",
        params=("fmt",),
        responses=FEED_RESPONSES,
        errors=(404,),
    ),
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


PARAMETERS: dict[str, dict[str, Any]] = {
    "cursor": _query("cursor", {"type": "string"}, "`next_cursor` of the previous page"),
    "limit": _query(
        "limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}, "page size"
    ),
    "published": _query("published", {"type": "boolean"}, "only (un)published records"),
    "topic": _query("topic", {"type": "string"}, "only records with this topic"),
    "since": _query(
        "since", {"type": "string", "format": "date-time"}, "only records changed since"
    ),
    "state": _query(
        "state", {"type": "string", "enum": list(out.RECORD_STATES)}, "only records in a state"
    ),
    "status": _query(
        "status", {"type": "string", "enum": list(out.DELIVERY_STATUSES)}, "delivery status"
    ),
    "output": _query("output", {"type": "string"}, "only deliveries to this output"),
    "source": _query("source", {"type": "string"}, "only items from this source"),
    "replayed": _query("replayed", {"type": "boolean"}, "only (not) replayed items"),
    "fmt": {
        "name": "fmt",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": list(FEED_FORMATS)},
    },
}

ERRORS = {
    400: ("Malformed", "Malformed request (body, parameter or cursor)"),
    401: ("Unauthenticated", "Missing, invalid or revoked credentials"),
    403: ("Forbidden", "The token lacks the scope"),
    404: ("NotFound", "No such resource"),
    409: ("Conflict", "Conflicts with the resource's state"),
    413: ("TooLarge", "The body is over `limits.max_body_bytes`"),
    415: ("UnsupportedType", "Unsupported Content-Type or charset"),
    422: ("Invalid", "Invalid: `errors` maps field paths to messages"),
    429: ("RateLimited", "Too many requests: retry after `Retry-After` seconds"),
}
ERROR_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}}},
    429: {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
}


# -- building ----------------------------------------------------------------------------


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
        response = _json("Error", description, ERROR_HEADERS.get(status))
        spec.components.response(name, response)
    return spec


def _schemas() -> dict[str, Any]:
    return {
        "Record": RecordSchema,
        "Error": out.ErrorSchema,
        "SubmitOne": out.SubmitOneSchema,
        "SubmitBatch": out.SubmitBatchSchema,
        "Retract": out.RetractSchema,
        "RecordList": out.RecordListSchema,
        "RecordDetail": out.RecordDetailSchema,
        "Delivery": out.DeliverySchema,
        "DeliveryList": out.DeliveryListSchema,
        "PluginList": out.PluginListSchema,
        "Output": out.OutputSchema,
        "OutputList": out.OutputListSchema,
        "Health": out.HealthSchema,
        "Readiness": out.ReadinessSchema,
        "QuarantineItem": out.QuarantineItemSchema,
        "QuarantineList": out.QuarantineListSchema,
        "Replayed": out.ReplayedSchema,
        "WebhookAnswer": out.WebhookAnswerSchema,
    }


def _operation(op: Op, endpoint: str) -> dict[str, Any]:
    responses: dict[str, Any] = {str(s): r for s, r in op.responses.items()}
    statuses = set(op.errors) | ({401, 403, 429} if op.scope else set())
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
        description = f"Needs a token with the `{op.scope}` scope. {description}".strip()
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


def _record_body_types() -> dict[str, Any]:
    one_or_many = {
        "oneOf": [
            {"$ref": "#/components/schemas/Record"},
            {"type": "array", "items": {"$ref": "#/components/schemas/Record"}, "minItems": 1},
        ]
    }
    many = {"type": "array", "items": {"$ref": "#/components/schemas/Record"}, "minItems": 1}
    markdown = {
        "type": "string",
        "description": "YAML front matter (the record's fields) between `---` lines, then the body",
    }
    content: dict[str, Any] = {}
    for media_type in ACCEPTED_TYPES:
        if media_type in JSON_TYPES:
            content[media_type] = {"schema": one_or_many}
        elif media_type in NDJSON_TYPES:
            content[media_type] = {"schema": many}
        elif media_type in MARKDOWN_TYPES:
            content[media_type] = {"schema": markdown}
        else:  # YAML: one document, a list, or several documents
            content[media_type] = {"schema": one_or_many}
    return content


BODIES: dict[str, dict[str, Any]] = {
    "records": {
        "required": True,
        "description": "One record, or a batch; UTF-8 only",
        "content": _record_body_types(),
    },
    "webhook": {
        "required": True,
        "description": "The payload: records, as for `POST /api/v1/records`",
        "content": _record_body_types(),
    },
}
