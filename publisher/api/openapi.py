"""``/openapi.json``, generated from the views' own schemas (flask-smorest).

Every JSON view declares its query arguments (``@bp.arguments(Schema, location="query")``)
and its answer (``@bp.response(status, Schema)``): one marshmallow schema parses the query,
serialises the answer and writes the document, so a view cannot answer what the document
does not say (docs/decisions/openapi-from-schemas.md). ``requires(scope)`` (api/auth.py)
marks the operation's token; :meth:`Blueprint.errors` names the error answers it may give.

flask-smorest's own error handler and 422 shape are not used: api/errors.py answers every
failure, and a query argument that does not parse raises the project's errors.

The document is completed at the first request, when every plugin route exists: a route
served outside a flask-smorest blueprint (a static file, a plugin's) is still listed, marked
``x-undocumented`` if nobody described it, so the document never hides a door.
"""

from __future__ import annotations

import copy
import http
import re
from collections.abc import Callable, Iterable
from typing import Any

import flask
import flask_smorest
from apispec.ext.marshmallow import MarshmallowPlugin, OpenAPIConverter
from flask import Flask, Response, current_app, jsonify
from marshmallow import Schema
from webargs.flaskparser import FlaskParser
from werkzeug.routing import IntegerConverter

from publisher import __version__
from publisher.api.schemas import ErrorSchema, QueryInstant
from publisher.errors import InvalidRecord, MalformedInput
from publisher.schemas import AwareDateTime, HttpUrl

EXTENSION = "publisher.openapi"
API = "publisher.api"
SKIPPED_ENDPOINTS = {"static"}
SKIPPED_METHODS = {"HEAD", "OPTIONS"}
#: statuses every operation with a token may answer (the store may be down for a moment: 503)
AUTH_ERRORS = (401, 403, 429, 503)
ERRORS = {
    400: "Malformed request (body, parameter or cursor)",
    401: "Missing, invalid or revoked credentials",
    403: "The token lacks the scope",
    404: "No such resource",
    409: "Conflicts with the resource's state",
    410: "The record was purged (the time is in `message`)",
    413: "The body is over `limits.max_body_bytes`",
    415: "Unsupported Content-Type or charset",
    422: "Invalid: `errors` maps field paths to messages",
    429: "Too many requests: retry after `Retry-After` seconds",
    503: "The store failed for now: nothing was kept, retry later",
}
ERROR_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}}},
    429: {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
}

bp = flask.Blueprint("openapi", __name__)


# -- declaring: what a view says of itself ----------------------------------------------------


class QueryParser(FlaskParser):
    """Query arguments that do not parse answer the project's error shape, not webargs' 422.

    400 ``malformed`` for a bad value, 422 ``invalid`` when only date-times are wrong (as
    for a record's fields): the codes the API has always given.
    """

    def handle_error(self, error: Any, req: Any, schema: Schema, **_kwargs: Any) -> None:
        by_location = error.normalized_messages()  # webargs: {"query": {name: [...]}}
        found = next(iter(by_location.values())) if len(by_location) == 1 else by_location
        errors = {name: list(_flat(msgs)) for name, msgs in found.items()}
        name, first = next(iter(errors.items()))
        message = f"{name} {first[0]}" if first else f"invalid {name}"
        dates = {n for n, f in schema.fields.items() if isinstance(f, QueryInstant)}
        kind = InvalidRecord if set(errors) <= dates else MalformedInput
        raise kind(message, errors=errors)


def _flat(messages: Any) -> Iterable[str]:
    if isinstance(messages, dict):
        for value in messages.values():
            yield from _flat(value)
    elif isinstance(messages, list | tuple):
        for value in messages:
            yield from _flat(value)
    else:
        yield str(messages)


class Blueprint(flask_smorest.Blueprint):
    """A flask-smorest blueprint that also documents tokens and the project's errors."""

    ARGUMENTS_PARSER = QueryParser()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._prepare_doc_cbks.append(_prepare_auth_doc)

    def arguments(self, schema: Any, **kwargs: Any) -> Callable:
        """Query arguments answer 400 when they do not parse (flask-smorest's default: 422)."""
        kwargs.setdefault("error_status_code", 400)
        return super().arguments(schema, **kwargs)

    def errors(self, *statuses: int) -> Callable:
        """The error answers a view may give besides the token's (each the one error shape)."""

        def decorator(view: Callable) -> Callable:
            for status in reversed(statuses):
                view = self.alt_response(status, response=http.HTTPStatus(status).name)(view)
            return view

        return decorator


def described(operation: dict[str, Any]) -> Callable[[Callable], Callable]:
    """Describe a plain Flask view (one added with ``app.add_url_rule``) in the document."""

    def decorator(view: Callable) -> Callable:
        view.openapi_operation = operation  # type: ignore[attr-defined]
        return view

    return decorator


def _prepare_auth_doc(doc: dict, doc_info: dict, **_kwargs: Any) -> dict:
    """``requires(scope)`` left ``auth`` in the view's doc: security, 401/403/429/503."""
    scope = doc_info.get("auth")
    if scope is None:
        doc["security"] = []
        return doc
    doc["security"] = [{"bearer": []}]
    responses = doc.setdefault("responses", {})
    for status in AUTH_ERRORS:
        responses.setdefault(status, http.HTTPStatus(status).name)
    needs = "any live token" if scope == "any" else f"a token with the `{scope}` scope"
    info = doc_info["docstring"]
    info["description"] = f"Needs {needs}. {info.get('description') or ''}".strip()
    return doc


# -- generating: the spec of one app ------------------------------------------------------------


class _Converter(OpenAPIConverter):
    """A :class:`OneOfSchema` is documented as ``oneOf`` its choices."""

    def schema2jsonschema(self, schema: Any) -> dict[str, Any]:
        if isinstance(schema, OneOfSchema):
            return {"oneOf": [self.resolve_nested_schema(s) for s in schema.choices]}
        return super().schema2jsonschema(schema)


class _Marshmallow(MarshmallowPlugin):
    Converter = _Converter


class OneOfSchema(Schema):
    """An answer that is one of several schemas; :meth:`choose` picks the one that writes it."""

    choices: tuple[type[Schema], ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writers = {choice: choice() for choice in self.choices}

    def choose(self, obj: Any) -> type[Schema]:
        raise NotImplementedError

    def dump(self, obj: Any, *, many: bool | None = None) -> Any:
        return self._writers[self.choose(obj)].dump(obj, many=many)


class PublisherApi(flask_smorest.Api):
    """flask-smorest's Api without its error handler: api/errors.py answers every failure."""

    ERROR_SCHEMA = ErrorSchema
    DEFAULT_ERROR_RESPONSE_NAME = None  # each operation lists what it may answer

    def _register_error_handlers(self) -> None:
        """api/errors.py's handlers stay; flask-smorest's would write another shape."""

    def _register_pagination_header(self) -> None:
        """No flask-smorest pagination: pages are keyset cursors (``next_cursor``)."""

    def _register_responses(self) -> None:
        for status, description in ERRORS.items():
            response: dict[str, Any] = {
                "description": description,
                "content": {"application/json": {"schema": ErrorSchema}},
            }
            if status in ERROR_HEADERS:
                response["headers"] = ERROR_HEADERS[status]
            self.spec.components.response(http.HTTPStatus(status).name, response)


def register(app: Flask, blueprints: Iterable[flask.Blueprint]) -> PublisherApi:
    """Register ``blueprints``: flask-smorest ones through the Api, which documents them."""
    app.config.setdefault("API_TITLE", "publisher")
    app.config.setdefault("API_VERSION", __version__)
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    plugin = _Marshmallow()
    info = {"description": "Takes records in, checks them, stores them, hands them to outputs."}
    api = PublisherApi(app, spec_kwargs={"marshmallow_plugin": plugin, "info": info})
    plugin.map_to_openapi_type(AwareDateTime, "string", "date-time")
    plugin.map_to_openapi_type(HttpUrl, "string", "uri")
    api.spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer", "description": "an API token (pub_...)"}
    )
    api.register_converter(IntegerConverter, _database_id)
    for blueprint in blueprints:
        if isinstance(blueprint, flask_smorest.Blueprint):
            api.register_blueprint(blueprint)
        else:
            app.register_blueprint(blueprint)
    app.register_blueprint(bp)
    app.extensions[API] = api
    return api


def _database_id(_converter: Any) -> dict[str, Any]:
    return {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}  # database ids are 64-bit


# -- serving ------------------------------------------------------------------------------------


@bp.get("/openapi.json")
@described(
    {
        "summary": "This document",
        "tags": ["operations"],
        "security": [],
        "responses": {
            "200": {
                "description": "OpenAPI 3 document",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    }
)
def document() -> Response:
    """Built once per app, then served from memory."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if EXTENSION not in app.extensions:
        app.extensions[EXTENSION] = build_document(app)
    return jsonify(app.extensions[EXTENSION])


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of ``app``'s routes, as they are now."""
    api: PublisherApi = app.extensions[API]
    documented = set(app.extensions["flask-smorest"]["blp_name_to_api"])
    for name, blueprint in app.blueprints.items():  # a plugin's, registered on the app
        if isinstance(blueprint, flask_smorest.Blueprint) and name not in documented:
            blueprint.register_views_in_doc(api, app, api.spec, name=name, parameters=None)
            documented.add(name)
    doc = copy.deepcopy(api.spec.to_dict())
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint in SKIPPED_ENDPOINTS:
            continue
        operations = doc["paths"].setdefault(openapi_path(rule.rule), {})
        described = getattr(app.view_functions.get(rule.endpoint), "openapi_operation", None)
        for method in sorted((rule.methods or set()) - SKIPPED_METHODS):
            given = copy.deepcopy(described) if described else _undocumented(rule.rule)
            operation = operations.setdefault(method.lower(), given)
            operation.setdefault("operationId", rule.endpoint.replace(".", "_"))
    doc["paths"] = {path: _inline(ops) for path, ops in sorted(doc["paths"].items())}
    return doc


def _inline(operations: dict[str, Any]) -> dict[str, Any]:
    """Path parameters in each operation, as before flask-smorest (a path holds only methods)."""
    shared = operations.pop("parameters", [])
    for operation in operations.values():
        own = {(p["in"], p["name"]) for p in operation.get("parameters", [])}
        extra = [p for p in shared if (p["in"], p["name"]) not in own]
        operation["parameters"] = extra + operation.get("parameters", [])
    return operations


def openapi_path(rule: str) -> str:
    """Flask's ``/records/<record_id>`` (or ``<path:p>``) as OpenAPI's ``/records/{record_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _undocumented(rule: str) -> dict[str, Any]:
    names = re.findall(r"<(?:[^:<>]+:)?([^<>]+)>", rule)
    return {
        "summary": "Route added by a plugin (not described)",
        "x-undocumented": True,
        "parameters": [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
        ],
        "responses": {"default": {"description": "Whatever the plugin answers"}},
    }
