"""What a webhook subscriber is: one schema for the YAML ones and the table's alike.

Part of the plugin API: the core checks a subscriber added through the API or the CLI
(:mod:`publisher.subscribers`), and the webhook plugin checks the ones of its
``plugins.webhook.subscribers`` settings, with this same schema, so the two can never
disagree on a name, a URL or a secret.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from urllib.parse import urlsplit

from marshmallow import Schema, ValidationError, fields, validate

EVENTS = ("published", "updated", "retracted")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def signing_secret(secret: str) -> None:
    """A Standard Webhooks secret: ``whsec_`` and base64 of at least one byte."""
    try:
        usable = secret.startswith("whsec_") and bool(b64decode(secret[6:] + "=="))
    except (ValueError, binascii.Error):
        usable = False
    if not usable:
        raise ValidationError("must be a whsec_... secret")


def http_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("must be an http(s) URL")
    if parts.username or parts.password:
        raise ValidationError("must not carry credentials")


class SubscriberSchema(Schema):
    """One downstream subscriber: where to send, how to sign, which events, what it may get."""

    name = fields.String(
        required=True,
        validate=validate.Regexp(NAME, error="must be 1-64 letters, digits, '.', '_' or '-'"),
    )
    url = fields.String(required=True, validate=http_url)
    secret = fields.String(required=True, validate=signing_secret)
    events = fields.List(
        fields.String(validate=validate.OneOf(EVENTS, error="must be one of " + ", ".join(EVENTS)))
    )
    allow_private = fields.Boolean()
    protected = fields.Boolean(load_default=False)
    timeout = fields.Float(validate=validate.Range(min=0, min_inclusive=False))
