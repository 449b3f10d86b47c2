"""The built-in outputs pass the output contract kit, as a third-party output would."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from publisher.outputs import Output
from publisher.testing import OutputContract, load_outputs, make_record
from publisher_plugins import feeds, files, webhook
from tests.receivers import QuietHandler, serving

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class TestFeedsContract(OutputContract):
    inventory_required = True

    @pytest.fixture
    def output(self, tmp_path: Path) -> Output:
        (output,) = load_outputs(feeds, data_dir=str(tmp_path))
        return output

    @pytest.fixture
    def read_back(self, output: feeds.FeedsOutput) -> Callable[[str], str]:
        """The record's entry in the site feed's state, as JSON text."""

        def read(record_id: str) -> str:
            state = json.loads((output.folder / "state.json").read_text("utf-8"))
            found = [e for e in state["entries"] if e["record_id"] == record_id]
            return json.dumps(found, ensure_ascii=False)

        return read


class TestFilesContract(OutputContract):
    inventory_required = True

    @pytest.fixture
    def output(self, tmp_path: Path) -> Output:
        (output,) = load_outputs(files, data_dir=str(tmp_path))
        return output

    @pytest.fixture
    def read_back(self, output: files.FilesOutput) -> Callable[[str], str]:
        def read(record_id: str) -> str:
            pattern = f"*-{files.record_hash(record_id)}.md"
            return "".join(path.read_text("utf-8") for path in output.folder.rglob(pattern))

        return read


class Subscriber(QuietHandler):
    """A downstream subscriber: keeps what it receives; ``/gone`` answers 410."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.server.received.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(410 if self.path == "/gone" else 204)
        self.send_header("content-length", "0")
        self.end_headers()


@pytest.fixture
def subscriber() -> Iterator[ThreadingHTTPServer]:
    with serving(Subscriber, received=[]) as httpd:
        yield httpd


def _webhook(httpd: ThreadingHTTPServer, path: str) -> Output:
    url = f"http://127.0.0.1:{httpd.server_address[1]}{path}"
    sub = {"name": "down", "url": url, "secret": SECRET, "allow_private": True}
    (output,) = load_outputs(webhook, plugins={"webhook": {"subscribers": [sub]}})
    return output


class TestWebhookContract(OutputContract):
    """The webhook forwards events and holds nothing, so it has no inventory(): the kit skips
    the rules it observes through one (ordering is the subscriber's, by ``revision``), and
    checks the rest against what a real subscriber receives."""

    @pytest.fixture
    def output(self, subscriber: ThreadingHTTPServer) -> Output:
        return _webhook(subscriber, "/hook")

    @pytest.fixture
    def read_back(self, subscriber: ThreadingHTTPServer) -> Callable[[str], str]:
        def read(record_id: str) -> str:
            received = subscriber.received  # type: ignore[attr-defined]
            return json.dumps([m for m in received if m["data"]["id"] == record_id])

        return read

    @pytest.fixture
    def failing_output(self, subscriber: ThreadingHTTPServer) -> Output:
        return _webhook(subscriber, "/gone")


def test_the_feeds_inventory_is_read_from_disk(tmp_path: Path) -> None:
    """A new output object over the same folder (another process, a restart) sees the same."""
    (first,) = load_outputs(feeds, data_dir=str(tmp_path))
    record = make_record({"title": "Kept", "webUrl": "https://example.com/kept"}, revision=4)
    from publisher.testing import make_event

    first.publish(record, make_event(record))
    (second,) = load_outputs(feeds, data_dir=str(tmp_path))
    assert second.inventory() == {record.id: 4}
    second.retract(record, make_event(record, "retracted"))
    assert first.inventory() == {}
