"""``/api/v1/records``: submit, list, read and retract records."""

from __future__ import annotations

from typing import Any

from flask import current_app, g, has_request_context, request
from marshmallow import Schema, fields, validate

from publisher import queries
from publisher.api.auth import may_read_protected, requires
from publisher.api.openapi import Blueprint, OneOfSchema
from publisher.api.requests import read_body
from publisher.api.schemas import (
    PLACEMENT_STATES,
    RECORD_STATES,
    SUBMIT_STATUSES,
    Closed,
    DeliveryListSchema,
    Flag,
    Instant,
    QueryInstant,
    QuerySchema,
    SecuredStatusSchema,
    SubmitItemSchema,
    choice_field,
    cursor_field,
    limit_field,
    messages,
)
from publisher.erasure import check_not_purged
from publisher.models import Record
from publisher.parsing import ACCEPTED_TYPES, MARKDOWN_TYPES, NDJSON_TYPES
from publisher.schemas import RecordSchema
from publisher.secured import visible_status
from publisher.tokens import require_scope

bp = Blueprint("records", __name__, url_prefix="/api/v1", description="Records")


# -- what the views take and answer --------------------------------------------------------


class RecordQuerySchema(QuerySchema):
    cursor = cursor_field()
    limit = limit_field()
    published = Flag(metadata={"description": "only (un)published records"})
    topic = fields.String(metadata={"description": "only records with this topic"})
    since = QueryInstant(metadata={"description": "only records changed since"})
    state = choice_field(RECORD_STATES, "only records in a state")


class RetractQuerySchema(QuerySchema):
    purge = Flag(metadata={"description": "erase the record (scope admin)"})


class SubmitOneSchema(Closed):
    """``202`` for one record (a quarantined record has no revision)."""

    status = fields.String(required=True, validate=validate.OneOf(SUBMIT_STATUSES))
    id = fields.String(required=True)
    revision = fields.Integer()
    errors = messages()
    warnings = fields.List(fields.String())


class SubmitBatchSchema(Closed):
    items = fields.List(fields.Nested(SubmitItemSchema), required=True)


class SubmitSchema(OneOfSchema):
    choices = (SubmitOneSchema, SubmitBatchSchema)

    def choose(self, obj: Any) -> type[Schema]:
        return SubmitBatchSchema if "items" in obj else SubmitOneSchema


class RetractSchema(Closed):
    id = fields.String(required=True)
    revision = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["retracted", "unchanged"]))


class PurgeSchema(Closed):
    id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["pending", "purged"]))
    requested_at = Instant(required=True)
    requested_by = fields.String(required=True, metadata={"example": "token:3"})
    purged_at = Instant(allow_none=True, required=True)
    unconfirmed = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "outputs that never confirmed the retraction"},
    )


class RetractOrPurgeSchema(OneOfSchema):
    choices = (RetractSchema, PurgeSchema)

    def choose(self, obj: Any) -> type[Schema]:
        return PurgeSchema if "requested_at" in obj else RetractSchema


class RecordSummarySchema(Closed):
    id = fields.String(required=True)
    revision = fields.Integer(required=True)
    state = fields.String(required=True, validate=validate.OneOf(RECORD_STATES))
    title = fields.String(required=True, allow_none=True)
    published = fields.Boolean(required=True)
    secured = fields.Nested(SecuredStatusSchema, required=True)
    updated_at = Instant(required=True)


class RecordListSchema(Closed):
    items = fields.List(fields.Nested(RecordSummarySchema), required=True)
    next_cursor = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "pass as `cursor`; null at the end"},
    )


class RecordDetailSchema(Closed):
    id = fields.String(required=True)
    revision = fields.Integer(required=True)
    state = fields.String(required=True, validate=validate.OneOf(RECORD_STATES))
    record = fields.Dict(required=True, metadata={"description": "the record's fields"})
    secured = fields.Nested(SecuredStatusSchema, required=True)
    warnings = fields.List(fields.String(), required=True)
    source = fields.String(required=True)
    created_at = Instant(required=True)
    updated_at = Instant(required=True)
    outputs = fields.Dict(
        keys=fields.String(),
        values=fields.String(validate=validate.OneOf(PLACEMENT_STATES)),
        required=True,
        metadata={"description": "output name -> placement state"},
    )


def record_body(description: str) -> dict[str, Any]:
    """The body intake parses (parsing.py, then ``RecordSchema``), in each accepted type."""
    many = {"type": "array", "items": RecordSchema, "minItems": 1}
    one_or_many = {"oneOf": [RecordSchema, many]}
    markdown = {
        "type": "string",
        "description": "YAML front matter (the record's fields) between `---` lines, then the body",
    }
    content: dict[str, Any] = {}
    for media_type in ACCEPTED_TYPES:  # YAML: one document, a list, or several documents
        schema = markdown if media_type in MARKDOWN_TYPES else one_or_many
        content[media_type] = {"schema": many if media_type in NDJSON_TYPES else schema}
    return {"required": True, "description": description, "content": content}


LOCATION = {"Location": {"description": "the record's URL", "schema": {"type": "string"}}}


# -- the views ------------------------------------------------------------------------------


def _services() -> Any:
    return current_app.extensions["publisher"]


@bp.post("/records")
@requires("submit")
@bp.response(
    202,
    SubmitSchema,
    description="Accepted: one record answers its id, revision and status; a batch (a JSON "
    "array, NDJSON, several YAML documents) answers per item.",
    headers=LOCATION,
)
@bp.errors(400, 413, 415, 422)
@bp.doc(requestBody=record_body("One record, or a batch; UTF-8 only"))
def submit() -> Any:
    """Submit one record or a batch

    A batch holds at most `limits.max_batch` records; an invalid item of a batch is reported
    in its place, an invalid single record answers 422.
    """
    intake = current_app.extensions["publisher.intake"]
    results, batch = intake.submit(
        read_body(),
        request.headers.get("Content-Type"),
        source="api",
        request_id=g.request_id,
    )
    if batch:
        return {"items": [r.to_dict() for r in results]}
    (result,) = results
    if result.error is not None:
        raise result.error
    return result.to_dict(), {"Location": f"/api/v1/records/{result.id}"}


@bp.get("/records")
@requires("read")
@bp.arguments(RecordQuerySchema, location="query")
@bp.response(200, RecordListSchema, description="A page of records")
@bp.errors(422)
def list_records(args: dict[str, Any]) -> Any:
    """List records, newest first

    400 for a bad `cursor`, `limit` or `published`; 422 for a bad `since`.
    """
    with _services().sessions() as session:
        rows, cursor = queries.list_records(
            session,
            published=args.get("published"),
            topic=args.get("topic"),
            since=args.get("since"),
            state=args.get("state"),
            cursor=args.get("cursor"),
            limit=args["limit"],
        )
        items = [record_summary(r) for r in rows]
    return {"items": items, "next_cursor": cursor}


@bp.get("/records/<record_id>")
@requires("read")
@bp.response(200, RecordDetailSchema, description="The record's current revision")
@bp.errors(404, 410)
def read_record(record_id: str) -> Any:
    """Read a record

    With a `read-protected` (or `admin`) token, `secured.protected` holds the decrypted
    protected fields.
    """
    services = _services()
    with services.sessions() as session:
        check_not_purged(session, record_id)
        record = queries.get_record(session, record_id)
        placements = queries.placements_of(session, record_id)
    answer = record_detail(record)
    answer["outputs"] = {p.output: p.state for p in placements}
    if may_read_protected() and record.secured_status.startswith("decrypted"):
        answer["secured"]["protected"] = services.open_protected(record.fields)
    return answer


@bp.delete("/records/<record_id>")
@requires("submit")
@bp.arguments(RetractQuerySchema, location="query")
@bp.response(202, RetractOrPurgeSchema, description="Retraction or purge accepted")
@bp.errors(404)
def retract(args: dict[str, Any], record_id: str) -> Any:
    """Retract a record from every output, or purge it

    With `purge=true` (scope `admin`) the record is retracted, then erased once every output
    confirmed it: `status` is `pending`, later `purged`; its id is refused from then on
    (`410`).
    """
    token = g.token
    if args.get("purge"):
        require_scope(token, "admin")
        eraser = current_app.extensions["publisher.eraser"]
        return eraser.purge(record_id, who=f"token:{token.id}").to_dict()
    intake = current_app.extensions["publisher.intake"]
    outcome = intake.retract(record_id, request_id=g.request_id)
    return {"id": outcome.id, "revision": outcome.revision, "status": outcome.status}


@bp.get("/records/<record_id>/deliveries")
@requires("read")
@bp.response(200, DeliveryListSchema, description="Deliveries, oldest first")
@bp.errors(404)
def record_deliveries(record_id: str) -> Any:
    """List a record's deliveries"""
    with _services().sessions() as session:
        queries.get_record(session, record_id)
        rows = queries.deliveries_of(session, record_id)
        items = delivery_dicts(session, rows)
    return {"items": items}


# -- the answers' data ------------------------------------------------------------------------


def record_summary(record: Record) -> dict[str, Any]:
    return {
        "id": record.id,
        "revision": record.revision,
        "state": record.state,
        "title": record.fields.get("title"),
        "published": record.published,
        "secured": {"status": secured_status(record)},
        "updated_at": record.updated_at,
    }


def secured_status(record: Record) -> str:
    """The status this client may see: no padding oracle for legacy envelopes (secure.py)."""
    trusted = not has_request_context() or may_read_protected()
    return visible_status(record.secured_status, record.fields.get("secured"), trusted)


def record_detail(record: Record) -> dict[str, Any]:
    fields_ = {k: v for k, v in record.fields.items() if k != "secured"}
    if record.body:
        fields_["body"] = record.body
    if "secured" in record.fields:
        fields_["secured"] = record.fields["secured"]  # the envelope itself is not secret
    return {
        "id": record.id,
        "revision": record.revision,
        "state": record.state,
        "record": fields_,
        "secured": {"status": secured_status(record)},
        "warnings": record.warnings or [],
        "source": record.source,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def delivery_dicts(session: Any, rows: Any) -> list[dict[str, Any]]:
    return _services().dispatcher.describe(session, list(rows))
