"""One error path: every failure answers ``{"code", "status", "message", "errors"}``."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from publisher.errors import PublisherError

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
        response = error_response(exc.code or 500, code, exc.description or exc.name or "error")
        if exc.code == 405 and exc.response is None:
            allowed = getattr(exc, "valid_methods", None)
            if allowed:
                response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # never a traceback to the client; the log has it, under the request id
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")
