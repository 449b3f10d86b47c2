"""A real HTTP receiver on a loopback port, for tests of what publisher sends out.

Each test module writes the handler it needs (what to record, what to answer) on top of
:class:`QuietHandler`, and serves it with :func:`serving` (a free port, stopped after).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    """A handler that keeps the test output clean: it logs nothing."""

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], **state: Any) -> Iterator[ThreadingHTTPServer]:
    """Serve ``handler`` on 127.0.0.1 (a free port) with ``state`` set on the server."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    for key, value in state.items():
        setattr(httpd, key, value)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
