"""``/api/v1/outputs``: the outputs, their routing rules, and turning them on and off."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from publisher.api.auth import requires
from publisher.endpoints import health_dict, health_of, is_paused
from publisher.errors import NotFound
from publisher.models import OutputState

bp = Blueprint("outputs", __name__, url_prefix="/api/v1")


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
def list_outputs() -> Response:
    states = _states()
    names = current_app.extensions["publisher"].dispatcher.refresh()
    return jsonify({"items": [_output_dict(name, states) for name in names]})


@bp.post("/outputs/<name>/enable")
@requires("admin")
def enable(name: str) -> Response:
    """Turn an output back on (resume a paused subscriber): what changed meanwhile goes out
    to it, once, and nothing else."""
    _known(name)
    current_app.extensions["publisher"].dispatcher.set_enabled(name, True)
    return jsonify(_output_dict(name, _states()))


@bp.post("/outputs/<name>/disable")
@requires("admin")
def disable(name: str) -> Response:
    _known(name)
    current_app.extensions["publisher"].dispatcher.set_enabled(
        name, False, "disabled by an operator"
    )
    return jsonify(_output_dict(name, _states()))
