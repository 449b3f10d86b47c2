"""Per-request plumbing: a request id that follows a record into its deliveries."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

from publisher import logs
from publisher.errors import MalformedInput, TooLarge

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


def flag_arg(name: str) -> bool | None:
    """A boolean query parameter: true/false (1/0, yes/no); absent or empty is None."""
    value = request.args.get(name)
    if value is None or value == "":
        return None
    if value.lower() in {"true", "1", "yes"}:
        return True
    if value.lower() in {"false", "0", "no"}:
        return False
    raise MalformedInput(f"{name} must be true or false", errors={name: ["not a boolean"]})


def limit_arg(default: int = 50, most: int = 500) -> int:
    """The ``limit`` query parameter of a page, 1 to ``most``."""
    value = request.args.get("limit")
    if not value:
        return default
    if not value.isdigit() or not 1 <= int(value) <= most:
        raise MalformedInput(f"limit must be 1-{most}", errors={"limit": [f"must be 1-{most}"]})
    return int(value)
