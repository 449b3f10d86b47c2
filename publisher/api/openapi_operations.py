"""The table behind ``/openapi.json``: what each route of publisher needs, takes and answers.

Declarative on purpose: :mod:`publisher.api.openapi` walks the app's routes and looks each
one up in :data:`OPERATIONS`, so describing a new route means adding one entry here. The
parameters, request bodies and error responses the entries name are defined below them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from publisher.api import schemas_out as out
from publisher.parsing import ACCEPTED_TYPES, JSON_TYPES, MARKDOWN_TYPES, NDJSON_TYPES

FEED_FORMATS = ("atom.xml", "rss.xml", "feed.json")


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


def json_response(schema: Any, description: str, headers: Mapping[str, Any] | None = None) -> dict:
    """A response with a JSON body matching ``schema`` (a schema, or a component's name)."""
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
        "content": {
            "application/atom+xml": {"schema": {"type": "string"}},
            "application/rss+xml": {"schema": {"type": "string"}},
            "application/feed+json": {
                "schema": {"type": "object", "description": "a JSON Feed 1.1 document"}
            },
        },
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
            202: json_response(
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
        responses={200: json_response("RecordList", "A page of records")},
        errors=(400, 422),
        description="400 for a bad `cursor`, `limit` or `published`; 422 for a bad `since`.",
    ),
    ("/api/v1/records/{record_id}", "GET"): Op(
        "Read a record",
        "records",
        scope="read",
        responses={200: json_response("RecordDetail", "The record's current revision")},
        errors=(404, 410),
        description="With a `read-protected` (or `admin`) token, `secured.protected` holds "
        "the decrypted protected fields.",
    ),
    ("/api/v1/records/{record_id}", "DELETE"): Op(
        "Retract a record from every output, or purge it",
        "records",
        scope="submit",
        params=("purge",),
        responses={202: json_response(_one_of("Retract", "Purge"), "Retraction or purge accepted")},
        errors=(400, 403, 404),
        description="With `purge=true` (scope `admin`) the record is retracted, then erased "
        "once every output confirmed it: `status` is `pending`, later `purged`; its id is "
        "refused from then on (`410`).",
    ),
    ("/api/v1/records/{record_id}/deliveries", "GET"): Op(
        "List a record's deliveries",
        "deliveries",
        scope="read",
        responses={200: json_response("DeliveryList", "Deliveries, oldest first")},
        errors=(404,),
    ),
    ("/api/v1/deliveries", "GET"): Op(
        "List deliveries, most recently changed first",
        "deliveries",
        scope="read",
        params=("status", "output", "cursor", "limit"),
        responses={200: json_response("DeliveryPage", "A page of deliveries")},
        errors=(400,),
        description="`limit` 1-500 (default 200); `next_cursor` gives the next page. 400 for "
        "a bad `status`, `cursor` or `limit`.",
    ),
    ("/api/v1/deliveries/{delivery_id}/redeliver", "POST"): Op(
        "Make a delivery pending again (same id, fresh schedule)",
        "deliveries",
        scope="admin",
        responses={202: json_response("Delivery", "The delivery, pending again")},
        errors=(404,),
    ),
    ("/api/v1/plugins", "GET"): Op(
        "List loaded plugins",
        "plugins",
        scope="read",
        responses={200: json_response("PluginList", "Plugins, built-ins first")},
    ),
    ("/api/v1/outputs", "GET"): Op(
        "List outputs with their routing rule and state",
        "outputs",
        scope="read",
        responses={200: json_response("OutputList", "Outputs")},
    ),
    ("/api/v1/outputs/{name}/enable", "POST"): Op(
        "Turn an output back on",
        "outputs",
        scope="admin",
        responses={200: json_response("Output", "The output")},
        errors=(404,),
    ),
    ("/api/v1/outputs/{name}/disable", "POST"): Op(
        "Turn an output off (its deliveries end dead until it is on again)",
        "outputs",
        scope="admin",
        responses={200: json_response("Output", "The output")},
        errors=(404,),
    ),
    ("/api/v1/subscribers", "GET"): Op(
        "List webhook subscribers (YAML ones read-only), without secrets",
        "subscribers",
        scope="read",
        responses={200: json_response("SubscriberList", "Subscribers")},
    ),
    ("/api/v1/subscribers", "POST"): Op(
        "Add a webhook subscriber: every process sends to it within seconds, no restart",
        "subscribers",
        scope="admin",
        body="subscriber",
        responses={201: json_response("SubscriberSecret", "Added; the secret is shown once")},
        errors=(400, 409, 413, 422),
    ),
    ("/api/v1/subscribers/{name}", "DELETE"): Op(
        "Remove a subscriber added through the API",
        "subscribers",
        scope="admin",
        responses={204: {"description": "Removed"}},
        errors=(404, 409),
    ),
    ("/api/v1/subscribers/{name}/rotate-secret", "POST"): Op(
        "Sign with a new secret, and with the old one too until the grace ends",
        "subscribers",
        scope="admin",
        body="rotation",
        responses={200: json_response("SubscriberSecret", "The new secret, shown once")},
        errors=(400, 404, 409, 413, 422),
    ),
    ("/api/v1/quarantine", "GET"): Op(
        "List quarantined payloads, newest first",
        "quarantine",
        scope="read",
        params=("source", "replayed", "cursor", "limit"),
        responses={200: json_response("QuarantineList", "Quarantined payloads")},
        errors=(400,),
    ),
    ("/api/v1/quarantine/{item_id}", "GET"): Op(
        "Read a quarantined payload",
        "quarantine",
        scope="read",
        responses={200: json_response("QuarantineItem", "The item, with its payload as text")},
        errors=(404,),
    ),
    ("/api/v1/quarantine/{item_id}/replay", "POST"): Op(
        "Take a quarantined payload in again",
        "quarantine",
        scope="admin",
        responses={200: json_response("Replayed", "Taken in again (or held again by the policy)")},
        errors=(400, 404, 409, 413, 415, 422),
        description="409 if already replayed; a payload still refused keeps its item, with "
        "the new errors.",
    ),
    ("/api/v1/quarantine/{item_id}", "DELETE"): Op(
        "Delete a quarantined payload for good",
        "quarantine",
        scope="admin",
        responses={204: {"description": "Deleted"}},
        errors=(404,),
    ),
    ("/api/v1/whoami", "GET"): Op(
        "What this token may do",
        "operations",
        scope="any",
        responses={200: json_response("Whoami", "The token's scopes, implied ones included")},
        description="Any live token; the operator's page shows only the actions it allows.",
    ),
    ("/api/v1/overview/records", "GET"): Op(
        "A page of records with each output's standing (the operator's table)",
        "records",
        scope="read",
        params=(
            "q",
            "state",
            "delivery",
            "output",
            "topic",
            "source",
            "since",
            "until",
            "order",
            "cursor",
            "limit",
        ),  # fmt: skip
        responses={200: json_response("OverviewPage", "A page of records, in arrival order")},
        errors=(400, 422),
        description="Keyset pages in arrival order (`order`: newest or oldest first). `q` "
        "matches a record id or URL exactly, or records with every word in the title. 400 "
        "for a bad parameter or cursor; 422 for a bad `since` or `until`.",
    ),
    ("/api/v1/overview/counts", "GET"): Op(
        "Failing, due and scheduled deliveries per output; quarantine; outputs turned off",
        "deliveries",
        scope="read",
        responses={200: json_response("Counts", "The counts of the operator's header strip")},
        description="Reads only pending and dead deliveries (through an index), at most "
        "10,000 of them: `capped` says the numbers are lower bounds.",
    ),
    ("/api/v1/records/{record_id}/revisions", "GET"): Op(
        "List a record's revisions, newest first",
        "records",
        scope="read",
        responses={200: json_response("RevisionList", "Revisions, newest first (at most 200)")},
        errors=(404,),
    ),
    ("/webhooks/{source}", "POST"): Op(
        "Receive a Standard Webhooks delivery from a source",
        "webhooks",
        body="webhook",
        responses={
            202: json_response(
                "WebhookAnswer",
                "Verified and kept, parsed and stored next (`duplicate`: a repeated "
                "webhook-id, taken in once)",
            ),
        },
        errors=(401, 413, 429, 503),
        description="Signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, "
        "`webhook-signature`) with the source's secret, over the raw body.",
    ),
    ("/healthz", "GET"): Op(
        "Liveness: the process answers",
        "operations",
        responses={200: json_response("Health", "Alive")},
    ),
    ("/readyz", "GET"): Op(
        "Readiness: this process can accept and durably store",
        "operations",
        responses={
            200: json_response("Readiness", "Ready"),
            503: json_response("Readiness", "Not ready: `checks` says what failed"),
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
    "purge": _query("purge", {"type": "boolean"}, "erase the record (scope admin)"),
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
    "q": _query(
        "q", {"type": "string", "maxLength": 200}, "a record id or URL, or words of the title"
    ),
    "delivery": _query(
        "delivery",
        {"type": "string", "enum": ["dead", "pending", "due", "scheduled"]},
        "only records with such a delivery (`due`: pending and due now; `scheduled`: later)",
    ),
    "until": _query(
        "until", {"type": "string", "format": "date-time"}, "only records changed before"
    ),
    "order": _query(
        "order",
        {"type": "string", "enum": ["newest", "oldest"], "default": "newest"},
        "arrival order",
    ),  # fmt: skip
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
    410: ("Gone", "The record was purged (the time is in `message`)"),
    413: ("TooLarge", "The body is over `limits.max_body_bytes`"),
    415: ("UnsupportedType", "Unsupported Content-Type or charset"),
    422: ("Invalid", "Invalid: `errors` maps field paths to messages"),
    429: ("RateLimited", "Too many requests: retry after `Retry-After` seconds"),
    503: ("Unavailable", "The store failed for now: nothing was kept, retry later"),
}
ERROR_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}}},
    429: {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
}


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


SUBSCRIBER_BODY = {
    "type": "object",
    "required": ["name", "url"],
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
        "url": {"type": "string", "format": "uri"},
        "secret": {"type": "string", "description": "whsec_...; made if absent"},
        "events": {"type": "array", "items": {"enum": ["published", "updated", "retracted"]}},
        "protected": {"type": "boolean"},
        "allow_private": {"type": "boolean"},
        "backfill": {"type": "boolean", "description": "also send what is live now"},
    },
}
ROTATION_BODY = {
    "type": "object",
    "properties": {
        "secret": {"type": "string", "description": "whsec_...; made if absent"},
        "grace_seconds": {"type": "number", "minimum": 0, "maximum": 366 * 86400},
    },
}

BODIES: dict[str, dict[str, Any]] = {
    "subscriber": {
        "required": True,
        "content": {"application/json": {"schema": SUBSCRIBER_BODY}},
    },
    "rotation": {
        "required": False,
        "content": {"application/json": {"schema": ROTATION_BODY}},
    },
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
