"""``/api/v1/subscribers``: webhook subscribers added, removed and rotated without a restart.

YAML-configured subscribers are listed too, read-only. A secret is shown only in the answer
that made it (add, rotate-secret).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response, current_app
from marshmallow import fields, validate

from publisher import subscribers
from publisher.api.auth import requires
from publisher.api.openapi import Blueprint
from publisher.api.requests import read_body
from publisher.api.schemas import EVENTS, Closed, Instant
from publisher.errors import InvalidRecord, MalformedInput

bp = Blueprint("subscribers", __name__, url_prefix="/api/v1", description="Subscribers")


class SubscriberSchema(Closed):
    name = fields.String(required=True)
    output = fields.String(required=True, metadata={"example": "webhook:search-index"})
    url = fields.String(required=True)
    events = fields.List(fields.String(), required=True)
    protected = fields.Boolean(required=True)
    allow_private = fields.Boolean(required=True, allow_none=True)
    source = fields.String(required=True, validate=validate.OneOf(["config", "api"]))
    signing_secrets = fields.Integer(
        required=True, metadata={"description": "secrets signing now (2 during a rotation)"}
    )


class SubscriberListSchema(Closed):
    items = fields.List(fields.Nested(SubscriberSchema), required=True)


class SubscriberSecretSchema(SubscriberSchema):
    secret = fields.String(required=True, metadata={"description": "shown only here"})
    previous_valid_until = Instant(
        metadata={"description": "the old secret signs beside the new one until then"}
    )
    backfill = fields.Dict(keys=fields.String(), values=fields.Integer())


MAX_GRACE = 366 * 86400

# The bodies are checked by publisher.subscribers (the CLI's way in too); described here.
SUBSCRIBER_BODY = {
    "type": "object",
    "required": ["name", "url"],
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
        "url": {"type": "string", "format": "uri"},
        "secret": {"type": "string", "description": "whsec_...; made if absent"},
        "events": {"type": "array", "items": {"enum": list(EVENTS)}},
        "protected": {"type": "boolean"},
        "allow_private": {"type": "boolean"},
        "backfill": {"type": "boolean", "description": "also send what is live now"},
    },
}
ROTATION_BODY = {
    "type": "object",
    "properties": {
        "secret": {"type": "string", "description": "whsec_...; made if absent"},
        "grace_seconds": {"type": "number", "minimum": 0, "maximum": MAX_GRACE},
    },
}


def _json_body(schema: dict[str, Any], required: bool) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _services() -> Any:
    return current_app.extensions["publisher"]


def _json_object(empty_ok: bool = False) -> dict[str, Any]:
    body = read_body()
    if not body.strip() and empty_ok:
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedInput(
            "the body must be a JSON object", errors={"_body": ["not JSON"]}
        ) from None
    if not isinstance(value, dict):
        raise MalformedInput("the body must be a JSON object", errors={"_body": ["not an object"]})
    return value


@bp.get("/subscribers")
@requires("read")
@bp.response(200, SubscriberListSchema, description="Subscribers")
def list_subscribers() -> Any:
    """List webhook subscribers (YAML ones read-only), without secrets"""
    services = _services()
    return {"items": subscribers.listing(services.sessions, services.settings)}


@bp.post("/subscribers")
@requires("admin")
@bp.response(201, SubscriberSecretSchema, description="Added; the secret is shown once")
@bp.errors(400, 409, 413, 422)
@bp.doc(requestBody=_json_body(SUBSCRIBER_BODY, required=True))
def add_subscriber() -> Any:
    """Add a webhook subscriber: every process sends to it within seconds, no restart

    `name`, `url`, `secret` (or a new one is made), `events`, `protected`, `allow_private`;
    `backfill: true` also sends it what is live now.
    """
    services = _services()
    given = _json_object()
    backfill = given.pop("backfill", False) is True
    answer = subscribers.add(services.sessions, services.settings, given)
    services.dispatcher.refresh(force=True)  # this process at once; the others within seconds
    if backfill:
        answer["backfill"] = services.dispatcher.reconcile(answer["output"])
    return answer, {"Location": f"/api/v1/subscribers/{answer['name']}"}


@bp.delete("/subscribers/<name>")
@requires("admin")
@bp.response(204, description="Removed")
@bp.errors(404, 409)
def remove_subscriber(name: str) -> Response:
    """Remove a subscriber added through the API"""
    services = _services()
    subscribers.remove(services.sessions, services.settings, name)
    services.dispatcher.refresh(force=True)
    return Response(status=204)


@bp.post("/subscribers/<name>/rotate-secret")
@requires("admin")
@bp.response(200, SubscriberSecretSchema, description="The new secret, shown once")
@bp.errors(400, 404, 409, 413, 422)
@bp.doc(requestBody=_json_body(ROTATION_BODY, required=False))
def rotate_secret(name: str) -> Any:
    """Sign with a new secret, and with the old one too until the grace ends

    A new secret (or the one given); the old one keeps signing beside it for the grace
    (`grace_seconds`, default `subscribers.rotation_grace_seconds`).
    """
    services = _services()
    given = _json_object(empty_ok=True)
    grace = _grace(given.get("grace_seconds"))
    answer = subscribers.rotate(
        services.sessions, services.settings, name, grace, given.get("secret") or None
    )
    services.dispatcher.refresh(force=True)
    return answer


def _grace(grace: Any) -> float | None:
    """The documented range: beyond it a ``timedelta`` overflows (a 500, not an answer)."""
    if grace is None:
        return None
    if not isinstance(grace, int | float) or isinstance(grace, bool):
        raise MalformedInput(
            "grace_seconds must be a number", errors={"grace_seconds": ["not a number"]}
        )
    if not 0 <= grace <= MAX_GRACE:
        message = f"grace_seconds must be 0-{MAX_GRACE}"
        raise InvalidRecord(message, errors={"grace_seconds": [message]})
    return grace
