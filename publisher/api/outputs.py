"""``/api/v1/outputs``: the outputs, their routing rules, and turning them on and off."""

from __future__ import annotations

from typing import Any

from flask import current_app
from marshmallow import fields

from publisher.api.auth import requires
from publisher.api.openapi import Blueprint
from publisher.api.schemas import Closed, Instant, Num
from publisher.endpoints import health_dict, health_of, is_paused
from publisher.errors import NotFound
from publisher.models import OutputState

bp = Blueprint("outputs", __name__, url_prefix="/api/v1", description="Outputs")


class OutputHealthSchema(Closed):
    consecutive_failures = fields.Integer(required=True)
    failing_since = Instant(
        required=True, allow_none=True, metadata={"description": "first failure since a success"}
    )
    last_success_at = Instant(required=True, allow_none=True)
    last_failure_at = Instant(required=True, allow_none=True)


class OutputSchema(Closed):
    name = fields.String(required=True)
    enabled = fields.Boolean(required=True)
    paused = fields.Boolean(
        required=True, metadata={"description": "off because it failed (410, or for too long)"}
    )
    health = fields.Nested(OutputHealthSchema, required=True)
    reason = fields.String(required=True, allow_none=True, metadata={"description": "why off"})
    accepts_protected = fields.Boolean(required=True)
    when = fields.String(required=True, allow_none=True, metadata={"description": "routing rule"})
    timeout = Num(required=True)
    retry_schedule = fields.List(Num(), required=True)


class OutputListSchema(Closed):
    items = fields.List(fields.Nested(OutputSchema), required=True)


def _states() -> tuple[dict[str, OutputState], dict[str, Any]]:
    with current_app.extensions["publisher"].sessions() as session:
        states = {row.name: row for row in session.query(OutputState)}
        return states, health_of(session.connection())


def _output_dict(name: str, known: tuple[dict[str, OutputState], dict[str, Any]]) -> dict:
    spec = current_app.extensions["publisher"].dispatcher.outputs[name]
    states, health = known
    state = states.get(name)
    enabled = state is None or state.enabled
    return {
        "name": name,
        "enabled": enabled,
        "paused": is_paused(state),
        "health": health_dict(health.get(name)),
        "reason": None if enabled or state is None else state.reason,
        "accepts_protected": bool(spec.output.accepts_protected),
        "when": spec.rule,
        "timeout": spec.timeout,
        "retry_schedule": list(spec.retry_schedule),
    }


def _known(name: str) -> None:
    if name not in current_app.extensions["publisher"].dispatcher.refresh():
        raise NotFound(f"no output named {name!r}")


@bp.get("/outputs")
@requires("read")
@bp.response(200, OutputListSchema, description="Outputs")
def list_outputs() -> Any:
    """List outputs with their routing rule and state"""
    states = _states()
    names = current_app.extensions["publisher"].dispatcher.refresh()
    return {"items": [_output_dict(name, states) for name in names]}


@bp.post("/outputs/<name>/enable")
@requires("admin")
@bp.response(200, OutputSchema, description="The output")
@bp.errors(404)
def enable(name: str) -> Any:
    """Turn an output back on

    A paused subscriber resumes: what changed meanwhile goes out to it, once, and nothing
    else.
    """
    _known(name)
    current_app.extensions["publisher"].dispatcher.set_enabled(name, True)
    return _output_dict(name, _states())


@bp.post("/outputs/<name>/disable")
@requires("admin")
@bp.response(200, OutputSchema, description="The output")
@bp.errors(404)
def disable(name: str) -> Any:
    """Turn an output off (its deliveries end dead until it is on again)"""
    _known(name)
    current_app.extensions["publisher"].dispatcher.set_enabled(
        name, False, "disabled by an operator"
    )
    return _output_dict(name, _states())
