"""One error path: every failure the service reports derives from :class:`PublisherError`.

The API turns each into the same JSON shape: ``{"code", "status", "message", "errors"}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class PublisherError(Exception):
    """Base of every error the service reports to a client or an operator."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        errors: Mapping[str, list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.errors = dict(errors or {})
        self.headers = dict(headers or {})

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "status": self.status,
            "message": self.message,
            "errors": self.errors,
        }


class MalformedInput(PublisherError):
    """The body could not be parsed (bad JSON/YAML, bad encoding, too deep)."""

    status, code = 400, "malformed"


class Unauthenticated(PublisherError):
    status, code = 401, "unauthenticated"


class Forbidden(PublisherError):
    status, code = 403, "forbidden"


class NotFound(PublisherError):
    status, code = 404, "not_found"


class Conflict(PublisherError):
    status, code = 409, "conflict"


class TooLarge(PublisherError):
    status, code = 413, "too_large"


class UnsupportedType(PublisherError):
    status, code = 415, "unsupported_media_type"


class InvalidRecord(PublisherError):
    """Validation failed; ``errors`` maps field paths (``related.0.webUrl``) to messages."""

    status, code = 422, "invalid"


class TooManyRequests(PublisherError):
    status, code = 429, "rate_limited"


class Unavailable(PublisherError):
    """A store or queue we depend on failed for now: nothing was accepted, retry later."""

    status, code = 503, "unavailable"


class ConfigError(PublisherError):
    """The configuration (file, environment, plugin section) is wrong; raised at start-up."""

    status, code = 500, "config_error"


class EnvelopeError(PublisherError):
    """A ``secured`` envelope could not be opened.

    Deliberately uniform: one status, one message, whatever failed (base64, padding, MAC,
    tag, key), so that no padding or decryption oracle exists. Never put details in it.
    """

    status, code = 422, "secured_invalid"
    MESSAGE = "the secured field could not be opened"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE, errors={"secured": [self.MESSAGE]})


class Gone(PublisherError):
    """A record that was purged: its id may not be used again (the tombstone keeps it)."""

    status, code = 410, "gone"
