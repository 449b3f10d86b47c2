"""Per-request plumbing: a request id that follows a record into its deliveries; bounded bodies."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

from publisher import logs
from publisher.errors import TooLarge

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def register(app: Flask) -> None:
    @app.before_request
    def _request_id() -> None:
        given = request.headers.get("X-Request-Id", "")
        g.request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        # every line logged while answering carries the id; logs.py itself knows no Flask
        g.log_binding = logs.bind(request_id=g.request_id)

    @app.after_request
    def _echo_request_id(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        return response

    @app.teardown_request
    def _unbind_request_id(_error: BaseException | None) -> None:
        binding = g.pop("log_binding", None)
        if binding is not None:
            logs.unbind(binding)


def read_body() -> bytes:
    """The whole body, or 413 if it is over ``MAX_CONTENT_LENGTH``.

    A body without Content-Length (chunked) is read through werkzeug's limited stream,
    which stops at the limit *without* an error: the rest would be cut off silently and
    a truncated record (or batch) taken in. So a body that fills the limit is checked for
    one byte more.
    """
    body = request.get_data(cache=False)
    limit = request.max_content_length
    filled = limit is not None and request.content_length is None and len(body) >= limit
    if filled and request.environ["wsgi.input"].read(1):
        message = f"the body is over {limit} bytes"
        raise TooLarge(message, errors={"_body": [message]})
    return body
