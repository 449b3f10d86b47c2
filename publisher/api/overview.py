"""What the operator's page asks for, in one call per view rather than one per record.

``/api/v1/overview/records`` is a page of records with each output's standing;
``/api/v1/overview/counts`` is the "is anything wrong?" strip; ``/api/v1/whoami`` tells
the page which buttons the token may use, so a read-only token sees none; a record's
revisions are at ``/api/v1/records/<id>/revisions``. The queries are in
:mod:`publisher.overview`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from publisher import overview, queries
from publisher.api.auth import bearer_token, requires
from publisher.api.limits import check_token_rate
from publisher.api.records import secured_status
from publisher.api.requests import limit_arg
from publisher.api.schemas_out import RECORD_STATES
from publisher.errors import InvalidRecord, MalformedInput
from publisher.models import Record, Revision, utcnow
from publisher.records import instant_text, parse_instant
from publisher.tokens import SCOPES, authenticate_cached

bp = Blueprint("overview", __name__, url_prefix="/api/v1")
MAX_SEARCH = 200
MAX_NAME = 200


def _services() -> Any:
    return current_app.extensions["publisher"]


@bp.get("/whoami")
def whoami() -> Response:
    """Any live token may ask what it may do: the page hides what it may not."""
    services = _services()
    token = authenticate_cached(services.token_cache, bearer_token(), services.engine.connect)
    check_token_rate(current_app, token.id)
    g.token = token
    granted = set(token.scopes)
    if "admin" in granted:
        granted = set(SCOPES)
    if "read-protected" in granted:
        granted.add("read")
    return jsonify({"scopes": [s for s in SCOPES if s in granted]})


@bp.get("/overview/records")
@requires("read")
def records_page() -> Response:
    wanted = _record_filter()
    services = _services()
    now = utcnow()
    with services.sessions() as session:
        rows, cursor = overview.record_page(
            session, wanted, now, request.args.get("cursor") or None, limit_arg(default=50)
        )
        cells = overview.output_summaries(
            session, rows, lambda d, r, held: services.dispatcher.may_redeliver(d, r, held, now)
        )
        items = [_row(r, cells[r.id]) for r in rows]
    names = list(services.dispatcher.outputs)
    return jsonify({"outputs": names, "items": items, "next_cursor": cursor})


@bp.get("/overview/counts")
@requires("read")
def counts() -> Response:
    services = _services()
    with services.sessions() as session:
        per_output, capped = overview.delivery_counts(session, utcnow())
        held, held_capped = overview.quarantine_count(session)
        disabled = overview.disabled_outputs(session, services.dispatcher.outputs)
    for row in per_output:
        row["oldest_due_at"] = instant_text(row["oldest_due_at"])
        row["next_scheduled_at"] = instant_text(row["next_scheduled_at"])
    for row in disabled:
        row["since"] = instant_text(row["since"])
    totals = {k: sum(r[k] for r in per_output) for k in ("dead", "due", "scheduled")}
    due = [r["oldest_due_at"] for r in per_output if r["oldest_due_at"]]
    return jsonify(
        {
            "totals": totals,
            "oldest_due_at": min(due) if due else None,
            "capped": capped,
            "outputs": per_output,
            "quarantine": {"held": held, "capped": held_capped},
            "disabled": disabled,
        }
    )


@bp.get("/records/<record_id>/revisions")
@requires("read")
def revisions(record_id: str) -> Response:
    with _services().sessions() as session:
        queries.get_record(session, record_id)
        rows = overview.revisions_of(session, record_id)
    return jsonify({"items": [_revision(r) for r in rows]})


def _record_filter() -> overview.RecordFilter:
    args = request.args
    state = _choice("state", RECORD_STATES)
    delivery = _choice("delivery", overview.DELIVERY_FILTERS)
    order = _choice("order", overview.ORDERS) or "newest"
    text = args.get("q") or None
    if text is not None and len(text) > MAX_SEARCH:
        message = f"q is at most {MAX_SEARCH} characters"
        raise MalformedInput(message, errors={"q": [message]})
    return overview.RecordFilter(
        q=text,
        state=state,
        delivery=delivery,
        output=_name("output"),
        topic=_name("topic"),
        source=_name("source"),
        since=_instant("since"),
        until=_instant("until"),
        order=order,
    )


def _choice(name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.args.get(name) or None
    if value is not None and value not in allowed:
        message = f"{name} must be one of {', '.join(allowed)}"
        raise MalformedInput(message, errors={name: [message]})
    return value


def _name(name: str) -> str | None:
    value = request.args.get(name) or None
    if value is not None and len(value) > MAX_NAME:
        message = f"{name} is at most {MAX_NAME} characters"
        raise MalformedInput(message, errors={name: [message]})
    return value


def _instant(name: str) -> datetime | None:
    value = request.args.get(name)
    if not value:
        return None
    try:
        moment = parse_instant(value)
    except ValueError as exc:
        raise InvalidRecord(
            f"{name} must be an ISO 8601 date-time", errors={name: [str(exc)]}
        ) from exc
    if moment is None:
        raise InvalidRecord(
            f"{name} must be an ISO 8601 date-time", errors={name: ["not a date-time"]}
        )
    return moment


def _row(record: Record, cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    for cell in cells.values():
        if "due_at" in cell:
            cell["due_at"] = instant_text(cell["due_at"])
    title = record.fields.get("title")
    return {
        "id": record.id,
        "revision": record.revision,
        "state": record.state,
        "title": title if isinstance(title, str) else None,
        "source": record.source,
        "secured": {"status": secured_status(record)},  # no padding oracle (secure.py)
        "published_at": instant_text(record.published_at),
        "expires_at": instant_text(record.expires_at),
        "updated_at": instant_text(record.updated_at),
        "outputs": cells,
    }


def _revision(revision: Revision) -> dict[str, Any]:
    title = revision.fields.get("title") if isinstance(revision.fields, dict) else None
    return {
        "revision": revision.revision,
        "event": revision.event,
        "title": title if isinstance(title, str) else None,
        "content_hash": revision.content_hash,
        "created_at": instant_text(revision.created_at),
    }
