"""Structured logs: one JSON object per line, with the request id, and never a secret.

Each line holds ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` and
``request_id`` (the API's ``X-Request-Id``; deliveries store it and the dispatcher logs it,
so one id follows a record from the request into every output), plus any ``extra`` fields
(``delivery_id``, ``output``, ``record_id``, ...) and ``exception`` for a traceback.

The :class:`RedactFilter` sits on the handler, so it sees every record that is written,
whichever logger (ours, a plugin's, a library's) made it. It masks what looks like a
secret: webhook secrets (``whsec_...``), API tokens (``pub_...``), ``Authorization``
values, JWE/JWS compact strings, and the value of any field named like ``secured``,
``secret``, ``token``, ``password`` or ``authorization``. Masking is by shape, so a
secret logged by mistake in a message, an argument or a traceback is masked too.

:func:`log_context` binds fields (``request_id`` above all) to every line logged inside
it: the HTTP layer binds the request id for each request (``api/requests.py``), the worker
binds it for each delivery. This module holds a context variable rather than reading Flask's
``g``, so the worker's dispatch logs without Flask.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

MASK = "[redacted]"
_HANDLER_MARK = "_publisher_handler"
_context: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "publisher_log_context", default=None
)

#: Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_SECRET_NAMES = re.compile(r"secured|secret|token|password|passwd|authorization|api[_-]?key", re.I)
_SECRET_SHAPES = (
    re.compile(r"whsec_[A-Za-z0-9+/=_-]+"),
    re.compile(r"\bpub_[A-Za-z0-9_-]{8,}"),
    # "Authorization: Bearer x", "'Authorization': 'Basic x'", "authorization=x"
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(?:(?:bearer|basic)\s+)?[^\s'\",;]+"),
    re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    # JWE (5 parts) and JWS/JWT (3 parts) compact serialisations: a base64url JSON header
    re.compile(r"\beyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){2,4}"),
)


def redact(text: str) -> str:
    """``text`` with everything shaped like a secret masked."""
    for pattern in _SECRET_SHAPES:
        text = pattern.sub(_mask, text)
    return text


def _mask(match: re.Match[str]) -> str:
    prefix = match.group(1) if match.re.groups else ""
    return f"{prefix}{MASK}"


def redact_value(value: Any, depth: int = 0) -> Any:
    """A copy of a log field's value with secrets masked (by key name and by shape)."""
    if isinstance(value, str):
        return redact(value)
    if depth > 8:
        return MASK
    if isinstance(value, Mapping):
        return {
            k: MASK if _SECRET_NAMES.search(str(k)) else redact_value(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact_value(v, depth + 1) for v in value]
    return value


class RedactFilter(logging.Filter):
    """Masks secrets in the message, its arguments, ``extra`` fields and tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        for name in set(vars(record)) - _STANDARD:
            value = getattr(record, name)
            setattr(record, name, MASK if _SECRET_NAMES.search(name) else redact_value(value))
        return True


class ContextFilter(logging.Filter):
    """Adds the fields bound by :func:`log_context` (``request_id`` above all)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (_context.get() or {}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        if getattr(record, "request_id", None) is None:
            record.request_id = (_context.get() or {}).get("request_id")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; unknown values are written as text."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for name in sorted(set(vars(record)) - _STANDARD - set(entry)):
            entry[name] = getattr(record, name)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind ``fields`` (``request_id=...``, ``delivery_id=...``) to every line inside."""
    token = bind(**fields)
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: Any) -> contextvars.Token[Mapping[str, Any] | None]:
    """Bind ``fields`` until :func:`unbind`: for a request, whose start and end are two hooks."""
    return _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v}})


def unbind(token: contextvars.Token[Mapping[str, Any] | None]) -> None:
    """Undo one :func:`bind` (a token from another context is dropped: nothing to undo)."""
    try:
        _context.reset(token)
    except ValueError:
        _context.set(None)


def make_handler(stream: TextIO | None = None, fmt: str = "json") -> logging.Handler:
    """A handler with the context and redaction filters (JSON, or text for a terminal)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    setattr(handler, _HANDLER_MARK, True)
    return handler


def configure_logging(settings: Mapping[str, Any], stream: TextIO | None = None) -> None:
    """Install publisher's handler on the root logger (replacing one it installed before).

    Settings: ``logging: {level: INFO, format: auto|json|text}``; ``auto`` is text on a
    terminal and JSON elsewhere (files, journald, containers). Handlers installed by others
    (pytest's, a host application's) are left alone.
    """
    own = dict(settings.get("logging") or {})
    if own.get("format", "auto") == "auto":
        own["format"] = "text" if (stream or sys.stderr).isatty() else "json"
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    root.addHandler(make_handler(stream, str(own.get("format", "json"))))
    level = str(own.get("level", "INFO")).upper()
    root.setLevel(level)
    logging.getLogger("publisher").setLevel(level)
    # werkzeug's access lines hold the query string; they go through the same filters
    logging.getLogger("werkzeug").setLevel(own.get("access_level", "WARNING"))
    # huey logs two lines per message it runs ("Executing ...", "... executed in"): a tenth
    # of a busy worker's CPU, saying less than the deliveries' attempts record; the
    # consumer's own lines (started, stopping, health) keep the main level
    logging.getLogger("huey").setLevel(own.get("task_level", "WARNING"))
    logging.getLogger("huey.consumer").setLevel(level)
