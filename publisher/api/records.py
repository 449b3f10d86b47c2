"""``/api/v1/records``: submit, list, read and retract records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, g, has_request_context, jsonify, request

from publisher import queries
from publisher.api.auth import current_token, may_read_protected, requires
from publisher.api.requests import flag_arg, limit_arg, read_body
from publisher.erasure import check_not_purged
from publisher.errors import InvalidRecord
from publisher.models import Record
from publisher.records import parse_instant
from publisher.secured import visible_status
from publisher.tokens import require_scope

bp = Blueprint("records", __name__, url_prefix="/api/v1")


def _services() -> Any:
    return current_app.extensions["publisher"]


@bp.post("/records")
@requires("submit")
def submit() -> Response:
    """One record answers its id, revision and status; a batch answers per item."""
    intake = current_app.extensions["publisher.intake"]
    results, batch = intake.submit(
        read_body(),
        request.headers.get("Content-Type"),
        source="api",
        request_id=g.request_id,
    )
    if batch:
        response = jsonify({"items": [r.to_dict() for r in results]})
        response.status_code = 202
        return response
    (result,) = results
    if result.error is not None:
        raise result.error
    response = jsonify(result.to_dict())
    response.status_code = 202
    response.headers["Location"] = f"/api/v1/records/{result.id}"
    return response


@bp.get("/records")
@requires("read")
def list_records() -> Response:
    args = request.args
    with _services().sessions() as session:
        rows, cursor = queries.list_records(
            session,
            published=flag_arg("published"),
            topic=args.get("topic") or None,
            since=_instant(args.get("since")),
            state=args.get("state") or None,
            cursor=args.get("cursor") or None,
            limit=limit_arg(),
        )
        items = [record_summary(r) for r in rows]
    return jsonify({"items": items, "next_cursor": cursor})


@bp.get("/records/<record_id>")
@requires("read")
def read_record(record_id: str) -> Response:
    services = _services()
    with services.sessions() as session:
        check_not_purged(session, record_id)
        record = queries.get_record(session, record_id)
        placements = queries.placements_of(session, record_id)
    answer = record_detail(record)
    answer["outputs"] = {p.output: p.state for p in placements}
    if may_read_protected() and record.secured_status.startswith("decrypted"):
        answer["secured"]["protected"] = services.open_protected(record.fields)
    return jsonify(answer)


@bp.delete("/records/<record_id>")
def retract(record_id: str) -> Response:
    """Retract (scope ``submit``), or with ``purge=true`` purge (scope ``admin``): ``202``.

    A purge answers its state: ``pending`` until every output confirmed the retraction,
    then ``purged`` (docs/operations.md, "Erasure").
    """
    token = current_token("submit")
    if flag_arg("purge"):
        require_scope(token, "admin")
        eraser = current_app.extensions["publisher.eraser"]
        state = eraser.purge(record_id, who=f"token:{token.id}")
        response = jsonify(state.to_dict())
        response.status_code = 202
        return response
    intake = current_app.extensions["publisher.intake"]
    outcome = intake.retract(record_id, request_id=g.request_id)
    response = jsonify({"id": outcome.id, "revision": outcome.revision, "status": outcome.status})
    response.status_code = 202
    return response


@bp.get("/records/<record_id>/deliveries")
@requires("read")
def record_deliveries(record_id: str) -> Response:
    with _services().sessions() as session:
        queries.get_record(session, record_id)
        rows = queries.deliveries_of(session, record_id)
        items = delivery_dicts(session, rows)
    return jsonify({"items": items})


def record_summary(record: Record) -> dict[str, Any]:
    return {
        "id": record.id,
        "revision": record.revision,
        "state": record.state,
        "title": record.fields.get("title"),
        "published": record.published,
        "secured": {"status": secured_status(record)},
        "updated_at": _iso(record.updated_at),
    }


def secured_status(record: Record) -> str:
    """The status this client may see: no padding oracle for legacy envelopes (secure.py)."""
    trusted = not has_request_context() or may_read_protected()
    return visible_status(record.secured_status, record.fields.get("secured"), trusted)


def record_detail(record: Record) -> dict[str, Any]:
    fields = {k: v for k, v in record.fields.items() if k != "secured"}
    if record.body:
        fields["body"] = record.body
    if "secured" in record.fields:
        fields["secured"] = record.fields["secured"]  # the envelope itself is not secret
    return {
        "id": record.id,
        "revision": record.revision,
        "state": record.state,
        "record": fields,
        "secured": {"status": secured_status(record)},
        "warnings": record.warnings or [],
        "source": record.source,
        "created_at": _iso(record.created_at),
        "updated_at": _iso(record.updated_at),
    }


def delivery_dicts(session: Any, rows: Any) -> list[dict[str, Any]]:
    return _services().dispatcher.describe(session, list(rows))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _instant(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise InvalidRecord(
            "since must be an ISO 8601 date-time", errors={"since": [str(exc)]}
        ) from exc
