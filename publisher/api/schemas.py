"""What the answers and query arguments of several blueprints share: fields and schemas.

Each blueprint keeps its own schemas beside its views; this module holds the pieces more
than one of them uses (the error shape, a delivery, an item of a submission, a page's
arguments). The schemas serialise the answers and parse the query arguments, and the OpenAPI
document is generated from them (docs/decisions/openapi-from-schemas.md).
"""

from __future__ import annotations

import numbers
from datetime import datetime
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, fields, pre_load, validate

from publisher.dispatch import ATTEMPT_OUTCOMES
from publisher.records import instant_text, parse_instant

RECORD_STATES = ("draft", "embargoed", "published", "expired", "retracted")
DELIVERY_STATUSES = ("pending", "done", "dead", "superseded")
EVENTS = ("published", "updated", "retracted")
PLACEMENT_STATES = ("pending", "live", "retracted", "failed")
SUBMIT_STATUSES = ("created", "revised", "unchanged", "quarantined")


class Closed(Schema):
    """An answer object: every field it may hold is declared (``additionalProperties: false``)."""

    class Meta:
        unknown = RAISE


class Instant(fields.DateTime):
    """An instant as the API writes it, ``2026-12-02T04:00:08.561019Z`` (never ``+00:00``).

    The core's own views (shared with the CLI) hand some over already written; those pass
    as they are, so both ways in write one format.
    """

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None or isinstance(value, str):
            return value
        return instant_text(value)


class Num(fields.Number):
    """A number written as given: ``30`` stays ``30`` (marshmallow's Float writes ``30.0``)."""

    num_type = float

    def _format_num(self, value: Any) -> Any:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return value
        return float(value)


def messages() -> fields.Dict:
    return fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "messages by field path, such as `related.0.webUrl`"},
    )


class ErrorSchema(Closed):
    """The one error shape of every 4xx/5xx answer (api/errors.py writes it)."""

    code = fields.String(required=True, metadata={"example": "invalid"})
    status = fields.Integer(required=True, metadata={"example": 422})
    message = fields.String(required=True)
    errors = messages()


class SecuredStatusSchema(Closed):
    status = fields.String(required=True, metadata={"example": "decrypted"})
    protected = fields.Dict(
        allow_none=True,
        metadata={"description": "decrypted protected fields, for read-protected tokens"},
    )


class SubmitItemSchema(Closed):
    """One item of a batch answer: an id and revision, or errors."""

    status = fields.String(required=True, validate=validate.OneOf([*SUBMIT_STATUSES, "invalid"]))
    id = fields.String()
    revision = fields.Integer()
    errors = messages()
    warnings = fields.List(fields.String())


class AttemptSchema(Closed):
    at = Instant(required=True)
    outcome = fields.String(
        required=True,
        validate=validate.OneOf(ATTEMPT_OUTCOMES),
    )
    event = fields.String(required=True, allow_none=True, validate=validate.OneOf(EVENTS))
    status_code = fields.Integer(required=True, allow_none=True)
    error = fields.String(required=True, allow_none=True)
    duration_ms = fields.Integer(required=True, allow_none=True)


class DeliverySchema(Closed):
    id = fields.String(required=True)
    record_id = fields.String(required=True)
    output = fields.String(required=True)
    event = fields.String(required=True, validate=validate.OneOf(EVENTS))
    status = fields.String(required=True, validate=validate.OneOf(DELIVERY_STATUSES))
    attempts = fields.Integer(required=True)
    error = fields.String(required=True, allow_none=True)
    revision = fields.Integer(required=True)
    next_attempt_at = Instant(
        required=True, allow_none=True, metadata={"description": "set while pending"}
    )
    occurred_at = Instant(
        required=True, metadata={"description": "when the transition happened (embargo end...)"}
    )
    updated_at = Instant(required=True)
    can_redeliver = fields.Boolean(
        required=True, metadata={"description": "false once the record has moved past it"}
    )
    history = fields.List(fields.Nested(AttemptSchema), required=True)


class DeliveryListSchema(Closed):
    items = fields.List(fields.Nested(DeliverySchema), required=True)


# -- query arguments ------------------------------------------------------------------------


class QuerySchema(Schema):
    """Query arguments: unknown ones are ignored, an empty one (``?topic=``) is absent.

    A value that does not parse answers 400 ``malformed`` (422 ``invalid`` for a date-time,
    as for a record's fields): ``publisher.api.openapi.QueryParser`` says so.
    """

    class Meta:
        unknown = EXCLUDE

    @pre_load
    def _drop_empty(self, data: Any, **_kwargs: Any) -> dict[str, Any]:
        return {key: value for key, value in data.items() if value != ""}


class Flag(fields.Boolean):
    """``true``/``false`` (``1``/``0``, ``yes``/``no``), in any case."""

    truthy = {"true", "1", "yes"}  # noqa: RUF012 - marshmallow's class attribute
    falsy = {"false", "0", "no"}  # noqa: RUF012
    default_error_messages = {"invalid": "must be true or false"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        return super()._deserialize(str(value).lower(), attr, data, **kwargs)


class QueryInstant(fields.DateTime):
    """An ISO 8601 date-time with a zone (``Z`` or an offset); a bad one answers 422."""

    default_error_messages = {"invalid": "must be an ISO 8601 date-time"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        try:
            moment = parse_instant(value)
        except ValueError:
            moment = None
        if moment is None:
            raise self.make_error("invalid")
        return moment


def limit_field(default: int = 50, most: int = 500) -> fields.Integer:
    """A page's size, 1 to ``most``."""
    message = f"must be 1-{most}"
    return fields.Integer(
        load_default=default,
        validate=validate.Range(1, most, error=message),
        error_messages={"invalid": message},
        metadata={"description": "page size"},
    )


def choice_field(allowed: tuple[str, ...], description: str, **kwargs: Any) -> fields.String:
    message = f"must be one of {', '.join(allowed)}"
    return fields.String(
        validate=validate.OneOf(allowed, error=message),
        metadata={"description": description},
        **kwargs,
    )


def name_field(description: str, most: int = 200) -> fields.String:
    return fields.String(
        validate=validate.Length(max=most, error=f"is at most {most} characters"),
        metadata={"description": description},
    )


def cursor_field() -> fields.String:
    return fields.String(metadata={"description": "`next_cursor` of the previous page"})
