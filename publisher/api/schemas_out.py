"""marshmallow schemas of what the API answers, for the OpenAPI document only.

The views build their answers as plain dicts; these schemas describe them so that the
document (and the schemathesis run against it) can hold the views to their word. Answers
are closed (``additionalProperties: false``): a field added to a view without being added
here fails ``tests/test_openapi.py``, which is the point.
"""

from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

RECORD_STATES = ("draft", "embargoed", "published", "expired", "retracted")
DELIVERY_STATUSES = ("pending", "done", "dead", "superseded")
EVENTS = ("published", "updated", "retracted")
PLACEMENT_STATES = ("pending", "live", "retracted", "failed")


class Closed(Schema):
    """An answer object: every field it may hold is declared."""

    class Meta:
        unknown = RAISE


def _messages() -> fields.Dict:
    return fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "messages by field path, such as `related.0.webUrl`"},
    )


class ErrorSchema(Closed):
    """The one error shape of every 4xx/5xx answer."""

    code = fields.String(required=True, metadata={"example": "invalid"})
    status = fields.Integer(required=True, metadata={"example": 422})
    message = fields.String(required=True)
    errors = _messages()


class SubmitOneSchema(Closed):
    """``202`` for one record (a quarantined record has no revision)."""

    id = fields.String(required=True)
    revision = fields.Integer()
    status = fields.String(
        required=True, validate=validate.OneOf(["created", "revised", "unchanged", "quarantined"])
    )
    warnings = fields.List(fields.String())


class SubmitItemSchema(Closed):
    """One item of a batch answer: an id and revision, or errors."""

    status = fields.String(
        required=True,
        validate=validate.OneOf(["created", "revised", "unchanged", "quarantined", "invalid"]),
    )
    id = fields.String()
    revision = fields.Integer()
    errors = _messages()
    warnings = fields.List(fields.String())


class SubmitBatchSchema(Closed):
    items = fields.List(fields.Nested(SubmitItemSchema), required=True)


class RetractSchema(Closed):
    id = fields.String(required=True)
    revision = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["retracted", "unchanged"]))


class PurgeSchema(Closed):
    id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["pending", "purged"]))
    requested_at = fields.DateTime(required=True)
    requested_by = fields.String(required=True, metadata={"example": "token:3"})
    purged_at = fields.DateTime(allow_none=True, required=True)
    unconfirmed = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "outputs that never confirmed the retraction"},
    )


class SecuredStatusSchema(Closed):
    status = fields.String(required=True, metadata={"example": "decrypted"})
    protected = fields.Dict(
        allow_none=True,
        metadata={"description": "decrypted protected fields, for read-protected tokens"},
    )


class RecordSummarySchema(Closed):
    id = fields.String(required=True)
    revision = fields.Integer(required=True)
    state = fields.String(required=True, validate=validate.OneOf(RECORD_STATES))
    title = fields.String(required=True, allow_none=True)
    published = fields.Boolean(required=True)
    secured = fields.Nested(SecuredStatusSchema, required=True)
    updated_at = fields.DateTime(required=True)


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
    outputs = fields.Dict(
        keys=fields.String(),
        values=fields.String(validate=validate.OneOf(PLACEMENT_STATES)),
        required=True,
        metadata={"description": "output name -> placement state"},
    )
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


class AttemptSchema(Closed):
    at = fields.DateTime(required=True)
    outcome = fields.String(
        required=True,
        validate=validate.OneOf(["delivered", "failed", "dead", "redelivered", "skipped"]),
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
    next_attempt_at = fields.DateTime(
        required=True, allow_none=True, metadata={"description": "set while pending"}
    )
    occurred_at = fields.DateTime(
        required=True, metadata={"description": "when the transition happened (embargo end...)"}
    )
    updated_at = fields.DateTime(required=True)
    can_redeliver = fields.Boolean(
        required=True, metadata={"description": "false once the record has moved past it"}
    )
    history = fields.List(fields.Nested(AttemptSchema), required=True)


class DeliveryListSchema(Closed):
    items = fields.List(fields.Nested(DeliverySchema), required=True)


class DeliveryPageSchema(DeliveryListSchema):
    next_cursor = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "pass as `cursor`; null at the end"},
    )


class PluginSchema(Closed):
    name = fields.String(required=True)
    version = fields.String(required=True)
    origin = fields.String(
        required=True, validate=validate.OneOf(["builtin", "core", "entry-point", "folder"])
    )
    hooks = fields.List(fields.String(), required=True)
    outputs = fields.List(fields.String(), required=True)


class PluginListSchema(Closed):
    items = fields.List(fields.Nested(PluginSchema), required=True)


class OutputHealthSchema(Closed):
    consecutive_failures = fields.Integer(required=True)
    failing_since = fields.DateTime(
        required=True, allow_none=True, metadata={"description": "first failure since a success"}
    )
    last_success_at = fields.DateTime(required=True, allow_none=True)
    last_failure_at = fields.DateTime(required=True, allow_none=True)


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
    timeout = fields.Float(required=True)
    retry_schedule = fields.List(fields.Float(), required=True)


class OutputListSchema(Closed):
    items = fields.List(fields.Nested(OutputSchema), required=True)


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
    previous_valid_until = fields.DateTime(
        metadata={"description": "the old secret signs beside the new one until then"}
    )
    backfill = fields.Dict(keys=fields.String(), values=fields.Integer())


class HealthSchema(Closed):
    status = fields.String(required=True, validate=validate.OneOf(["ok"]))


class ReadinessSchema(Closed):
    status = fields.String(required=True, validate=validate.OneOf(["ok", "unavailable"]))
    checks = fields.Dict(
        keys=fields.String(),
        values=fields.String(validate=validate.OneOf(["ok", "unreachable", "full"])),
        required=True,
        metadata={
            "description": "`database` (ok, unreachable) and `disk` (ok, full, unreachable) "
            "decide readiness; `queue` (ok, unreachable) is reported only: intake works "
            "without it"
        },
    )


class QuarantineItemSchema(Closed):
    """A payload that could not be taken in, with the reason."""

    id = fields.Integer(required=True)
    source = fields.String(required=True)
    content_type = fields.String(required=True)
    reason = fields.String(required=True, metadata={"example": "secured"})
    errors = _messages()
    record_id = fields.String(required=True, allow_none=True)
    created_at = fields.DateTime(required=True)
    replayed_at = fields.DateTime(required=True, allow_none=True)
    payload = fields.String(metadata={"description": "the payload as text (detail only)"})


class QuarantineListSchema(Closed):
    items = fields.List(fields.Nested(QuarantineItemSchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class ReplayedSchema(Closed):
    id = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["replayed", "quarantined"]))
    items = fields.List(fields.Nested(SubmitItemSchema), required=True)


class WebhookAnswerSchema(Closed):
    """A webhook delivery was verified and kept (or recognised as a repeat)."""

    status = fields.String(required=True, validate=validate.OneOf(["accepted", "duplicate"]))
    id = fields.String(required=True, metadata={"description": "the webhook-id"})


# -- what the operator's page reads (publisher.api.overview) --------------------------------


class WhoamiSchema(Closed):
    scopes = fields.List(
        fields.String(validate=validate.OneOf(["submit", "read", "read-protected", "admin"])),
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
    due_at = fields.DateTime(
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
    published_at = fields.DateTime(required=True, allow_none=True)
    expires_at = fields.DateTime(required=True, allow_none=True)
    updated_at = fields.DateTime(required=True)
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
    oldest_due_at = fields.DateTime(required=True, allow_none=True)
    next_scheduled_at = fields.DateTime(required=True, allow_none=True)


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
    since = fields.DateTime(required=True, allow_none=True)


class CountsSchema(Closed):
    totals = fields.Nested(TotalsSchema, required=True)
    oldest_due_at = fields.DateTime(required=True, allow_none=True)
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
    created_at = fields.DateTime(required=True)


class RevisionListSchema(Closed):
    items = fields.List(fields.Nested(RevisionSchema), required=True)
