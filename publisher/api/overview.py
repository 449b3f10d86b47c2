"""What the operator's page asks for, in one call per view rather than one per record.

``/api/v1/overview/records`` is a page of records with each output's standing;
``/api/v1/overview/counts`` is the "is anything wrong?" strip; ``/api/v1/whoami`` tells
the page which buttons the token may use, so a read-only token sees none; a record's
revisions are at ``/api/v1/records/<id>/revisions``. The queries are in
:mod:`publisher.overview`.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, g
from marshmallow import fields, validate

from publisher import overview, queries
from publisher.api.auth import bearer_token, needs, requires
from publisher.api.limits import check_token_rate
from publisher.api.openapi import Blueprint
from publisher.api.records import secured_status
from publisher.api.schemas import (
    DELIVERY_STATUSES,
    EVENTS,
    PLACEMENT_STATES,
    RECORD_STATES,
    Closed,
    Instant,
    QueryInstant,
    QuerySchema,
    SecuredStatusSchema,
    choice_field,
    cursor_field,
    limit_field,
    name_field,
)
from publisher.models import Record, Revision, utcnow
from publisher.tokens import SCOPES, authenticate_cached

bp = Blueprint("overview", __name__, url_prefix="/api/v1", description="Operator's page")


class OverviewQuerySchema(QuerySchema):
    q = name_field("a record id or URL, or words of the title")
    state = choice_field(RECORD_STATES, "only records in a state")
    delivery = choice_field(
        overview.DELIVERY_FILTERS,
        "only records with such a delivery (`due`: pending and due now; `scheduled`: later)",
    )
    output = name_field("only records with a delivery to this output")
    topic = name_field("only records with this topic")
    source = name_field("only records from this source")
    since = QueryInstant(metadata={"description": "only records changed since"})
    until = QueryInstant(metadata={"description": "only records changed before"})
    order = choice_field(overview.ORDERS, "arrival order", load_default="newest")
    cursor = cursor_field()
    limit = limit_field()


class WhoamiSchema(Closed):
    scopes = fields.List(
        fields.String(validate=validate.OneOf(SCOPES)),
        required=True,
        metadata={"description": "what the token may do, implied scopes included"},
    )


class OutputCellSchema(Closed):
    """Where a record stands at one output: the ledger, and its newest delivery if any."""

    placement = fields.String(
        required=True, allow_none=True, validate=validate.OneOf(PLACEMENT_STATES)
    )
    delivery_id = fields.String()
    event = fields.String(validate=validate.OneOf(EVENTS))
    status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES))
    attempts = fields.Integer()
    error = fields.String(allow_none=True)
    due_at = Instant(
        allow_none=True, metadata={"description": "when a pending delivery is due (embargo)"}
    )
    can_redeliver = fields.Boolean()


class OverviewRecordSchema(Closed):
    id = fields.String(required=True)
    revision = fields.Integer(required=True)
    state = fields.String(required=True, validate=validate.OneOf(RECORD_STATES))
    title = fields.String(required=True, allow_none=True)
    source = fields.String(required=True)
    secured = fields.Nested(SecuredStatusSchema, required=True)
    published_at = Instant(required=True, allow_none=True)
    expires_at = Instant(required=True, allow_none=True)
    updated_at = Instant(required=True)
    outputs = fields.Dict(
        keys=fields.String(), values=fields.Nested(OutputCellSchema), required=True
    )


class OverviewPageSchema(Closed):
    outputs = fields.List(fields.String(), required=True, metadata={"description": "columns"})
    items = fields.List(fields.Nested(OverviewRecordSchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class OutputCountsSchema(Closed):
    output = fields.String(required=True)
    dead = fields.Integer(required=True)
    due = fields.Integer(required=True)
    scheduled = fields.Integer(required=True)
    oldest_due_at = Instant(required=True, allow_none=True)
    next_scheduled_at = Instant(required=True, allow_none=True)


class TotalsSchema(Closed):
    dead = fields.Integer(required=True)
    due = fields.Integer(required=True)
    scheduled = fields.Integer(required=True)


class HeldSchema(Closed):
    held = fields.Integer(required=True)
    capped = fields.Boolean(required=True)


class DisabledOutputSchema(Closed):
    name = fields.String(required=True)
    reason = fields.String(required=True, allow_none=True)
    since = Instant(required=True, allow_none=True)


class CountsSchema(Closed):
    totals = fields.Nested(TotalsSchema, required=True)
    oldest_due_at = Instant(required=True, allow_none=True)
    capped = fields.Boolean(
        required=True, metadata={"description": "true: the counts are lower bounds"}
    )
    outputs = fields.List(fields.Nested(OutputCountsSchema), required=True)
    quarantine = fields.Nested(HeldSchema, required=True)
    disabled = fields.List(fields.Nested(DisabledOutputSchema), required=True)


class RevisionSchema(Closed):
    revision = fields.Integer(required=True)
    event = fields.String(required=True, allow_none=True)
    title = fields.String(required=True, allow_none=True)
    content_hash = fields.String(required=True)
    created_at = Instant(required=True)


class RevisionListSchema(Closed):
    items = fields.List(fields.Nested(RevisionSchema), required=True)


def _services() -> Any:
    return current_app.extensions["publisher"]


@bp.get("/whoami")
@needs("any")
@bp.response(200, WhoamiSchema, description="The token's scopes, implied ones included")
def whoami() -> Any:
    """What this token may do

    Any live token; the operator's page shows only the actions it allows.
    """
    services = _services()
    token = authenticate_cached(services.token_cache, bearer_token(), services.engine.connect)
    check_token_rate(current_app, token.id)
    g.token = token
    granted = set(token.scopes)
    if "admin" in granted:
        granted = set(SCOPES)
    if "read-protected" in granted:
        granted.add("read")
    return {"scopes": [s for s in SCOPES if s in granted]}


@bp.get("/overview/records")
@requires("read")
@bp.arguments(OverviewQuerySchema, location="query")
@bp.response(200, OverviewPageSchema, description="A page of records, in arrival order")
@bp.errors(422)
def records_page(args: dict[str, Any]) -> Any:
    """A page of records with each output's standing (the operator's table)

    Keyset pages in arrival order (`order`: newest or oldest first). `q` matches a record id
    or URL exactly, or records with every word in the title. 400 for a bad parameter or
    cursor; 422 for a bad `since` or `until`.
    """
    filters = ("q", "state", "delivery", "output", "topic", "source", "since", "until")
    wanted = overview.RecordFilter(order=args["order"], **{k: args.get(k) for k in filters})
    services = _services()
    now = utcnow()
    with services.sessions() as session:
        rows, cursor = overview.record_page(session, wanted, now, args.get("cursor"), args["limit"])
        cells = overview.output_summaries(
            session, rows, lambda d, r, held: services.dispatcher.may_redeliver(d, r, held, now)
        )
        items = [_row(r, cells[r.id]) for r in rows]
    names = list(services.dispatcher.outputs)
    return {"outputs": names, "items": items, "next_cursor": cursor}


@bp.get("/overview/counts")
@requires("read")
@bp.response(200, CountsSchema, description="The counts of the operator's header strip")
def counts() -> Any:
    """Failing, due and scheduled deliveries per output; quarantine; outputs turned off

    Reads only pending and dead deliveries (through an index), at most 10,000 of them:
    `capped` says the numbers are lower bounds.
    """
    services = _services()
    with services.sessions() as session:
        per_output, capped = overview.delivery_counts(session, utcnow())
        held, held_capped = overview.quarantine_count(session)
        disabled = overview.disabled_outputs(session, services.dispatcher.outputs)
    totals = {k: sum(r[k] for r in per_output) for k in ("dead", "due", "scheduled")}
    due = [r["oldest_due_at"] for r in per_output if r["oldest_due_at"]]
    return {
        "totals": totals,
        "oldest_due_at": min(due) if due else None,
        "capped": capped,
        "outputs": per_output,
        "quarantine": {"held": held, "capped": held_capped},
        "disabled": disabled,
    }


@bp.get("/records/<record_id>/revisions")
@requires("read")
@bp.response(200, RevisionListSchema, description="Revisions, newest first (at most 200)")
@bp.errors(404)
def revisions(record_id: str) -> Any:
    """List a record's revisions, newest first"""
    with _services().sessions() as session:
        queries.get_record(session, record_id)
        rows = overview.revisions_of(session, record_id)
    return {"items": [_revision(r) for r in rows]}


def _row(record: Record, cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    title = record.fields.get("title")
    return {
        "id": record.id,
        "revision": record.revision,
        "state": record.state,
        "title": title if isinstance(title, str) else None,
        "source": record.source,
        "secured": {"status": secured_status(record)},  # no padding oracle (secure.py)
        "published_at": record.published_at,
        "expires_at": record.expires_at,
        "updated_at": record.updated_at,
        "outputs": cells,
    }


def _revision(revision: Revision) -> dict[str, Any]:
    title = revision.fields.get("title") if isinstance(revision.fields, dict) else None
    return {
        "revision": revision.revision,
        "event": revision.event,
        "title": title if isinstance(title, str) else None,
        "content_hash": revision.content_hash,
        "created_at": revision.created_at,
    }
