"""One error path: every failure answers ``{"code", "status", "message", "errors"}``."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from publisher.errors import PublisherError, TooLarge

log = logging.getLogger("publisher.api")


def error_response(
    status: int, code: str, message: str, errors: dict | None = None, headers: dict | None = None
) -> Response:
    response = jsonify({"code": code, "status": status, "message": message, "errors": errors or {}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register(app: Flask) -> None:
    @app.errorhandler(PublisherError)
    def _publisher_error(exc: PublisherError) -> Response:
        if exc.status >= 500:
            log.error("server error: %s", exc.code)
        body = exc.to_dict()
        return error_response(
            exc.status, body["code"], body["message"], body["errors"], exc.headers
        )

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        if exc.code == TooLarge.status:  # werkzeug's, from Content-Length: the service's code
            code = TooLarge.code
        response = error_response(exc.code or 500, code, exc.description or exc.name or "error")
        if exc.code == 405 and exc.response is None:
            allowed = getattr(exc, "valid_methods", None)
            if allowed:
                response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(PoolTimeout)
    @app.errorhandler(DBAPIError)
    def _store_unavailable(exc: Exception) -> Response:
        # the database went away or stayed locked: nothing of this request was kept, and
        # the client should come back, as from a 503 anywhere (the log has the details)
        operational = isinstance(exc, OperationalError | PoolTimeout)
        if not operational and not getattr(exc, "connection_invalidated", False):
            return _unexpected(exc)  # a statement the database refused: a bug, not an outage
        log.error("store unavailable: %s", type(exc).__name__)
        return error_response(
            503,
            "unavailable",
            "the store is unavailable; retry later",
            headers={"Retry-After": "5"},
        )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # never a traceback to the client; the log has it, under the request id
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")
