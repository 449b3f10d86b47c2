"""The waitress server of ``publisher serve``: size limits before reading, errors as JSON.

waitress reads a whole request body into its buffer before the application sees it, so the
app's ``413`` alone would come after a 50 MiB upload had been read. Here waitress itself is
given the limit (``max_request_body_size``): a declared ``Content-Length`` over it is refused
from the headers, with nothing read, and ``Expect: 100-continue`` is answered with the
``413`` instead of a ``100 Continue``; a chunked body is cut off at the limit. The errors
waitress answers on its own (framing: a bad chunk size, a negative or repeated
``Content-Length``, headers over ``max_request_header_size``) get the service's one error
shape ``{"code", "status", "message", "errors"}`` instead of waitress's ``text/plain``.

This uses waitress's ``channel_class`` and ``error_task_class`` attributes, the classes a
server builds per connection and per refused request.
"""

from __future__ import annotations

import json
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask

#: waitress's error reasons as the service's error codes (``publisher.errors``)
CODES = {400: "malformed", 413: "too_large", 431: "headers_too_large", 501: "not_implemented"}


class JSONErrorTask(ErrorTask):
    """waitress's own refusals in the service's error shape."""

    def execute(self) -> None:
        error = self.request.error
        message = f"{error.reason}: {error.body}" if error.body else error.reason
        body = json.dumps(
            {
                "code": CODES.get(error.code, "bad_request"),
                "status": error.code,
                "message": message,
                "errors": {},
            }
        ).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class Channel(HTTPChannel):
    """A connection that never invites a body it has refused already."""

    error_task_class = JSONErrorTask

    def send_continue(self) -> None:
        # waitress would send "100 Continue" even for a request it refused from its headers
        if self.request is not None and self.request.error is not None:
            self.request.expect_continue = False
            return
        super().send_continue()


def make_server(app: Any, *, host: str, port: int, threads: int, max_body: int) -> Any:
    """A waitress server for ``app`` (``.run()`` it); ``max_body``: ``limits.max_body_bytes``."""
    server = create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        ident="publisher",
        # waitress refuses a body of this size or more; ours allows exactly max_body bytes
        max_request_body_size=max_body + 1,
    )
    server.channel_class = Channel  # one host and port: one listening server
    return server
