"""The operator's page (``/ops/``) in a real headless browser, over a store of 5,000 records.

Debian's Chromium driven by Selenium through Debian's chromedriver (``.ci/browser`` installs
both). One app per module: 5,000 records taken in through the intake's batch path, of which
some fail at the ``flaky`` output, some are embargoed and some payloads are quarantined. The
app runs on a real WSGI server in a thread that counts the requests the page makes;
deliveries run when the test calls ``drain(app)``, between the browser's steps. Screenshots
are kept in ``PUBLISHER_TEST_SCREENSHOT_DIR`` (default: a temporary folder). Without
Chromium, chromedriver or selenium the browser tests are skipped, unless ``CI=true``.
"""

from __future__ import annotations

import json
import os
import re
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from publisher.app import create_app
from publisher.db import transaction
from publisher.dispatch import set_output_state
from publisher.models import QuarantineItem, utcnow
from publisher.testing import drain
from publisher.tokens import create_token
from tests.helpers import LOCAL_PLUGINS

CHROMIUM = os.environ.get("PUBLISHER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PUBLISHER_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
WIDE = (1440, 1000)
PHONE = (390, 860)
HOSTILE_TITLE = "<b>&\"quotes\"</b> & 'more' <script>window.pwned=1</script>"
FUTURE = "2099-01-01T00:00:00Z"
EXPIRES = "2098-06-30T12:00:00Z"
RECORDS = 5_000
FAILING = 30  # records routed to the plugin outputs, where ``flaky`` fails
EMBARGOED = 20
WAIT = 15.0
#: the API calls one view may make (a view never makes one per record)
MOST_CALLS = {"records": 2, "record": 4, "quarantine": 2, "outputs": 2}

pytestmark = pytest.mark.slow


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true, so the browser test must run (see .ci/browser)")
    pytest.skip(reason)


# -- the store: 5,000 records, built once -------------------------------------------------


@dataclass
class Store:
    app: Flask
    fail_flag: Path
    admin: str
    reader: str
    submitter: str
    zebra: str = ""
    expiring: str = ""
    hostile: str = ""
    embargoed: list[str] = field(default_factory=list)
    failing: list[str] = field(default_factory=list)
    good_item: int = 0
    bad_item: int = 0
    spare_item: int = 0


WATCHED = 'type == "watched"'


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """Files and feeds off; the plugin outputs take only ``watched`` records, so the few
    that fail stand among thousands that have no delivery at all."""
    root = tmp_path_factory.mktemp("ops-store")
    (root / "keys").mkdir(mode=0o700)
    fail_flag = root / "flaky.fail"
    fail_flag.write_text("failing\n")
    settings = {
        "data_dir": str(root / "data"),
        "keys_dir": str(root / "keys"),
        "queue_url": str(root / "data" / "queue.db"),
        "plugins_dir": str(LOCAL_PLUGINS),
        "sqlite_synchronous": "NORMAL",
        "dev_key": False,
        "plugins": {
            "recording": {"log": str(root / "recorded.jsonl"), "fail_flag": str(fail_flag)}
        },
        "delivery": {"jitter": 0.0, "retry_schedule": [0]},
        "outputs": {
            "files": {"enabled": False},
            "feeds": {"enabled": False},
            "recorder": {"when": WATCHED},
            "flaky": {"when": WATCHED},
            "protected-sink": {"when": WATCHED},
        },
    }
    app = create_app(overrides=settings, environ={})
    app.config["TESTING"] = True
    with transaction(app.extensions["publisher"].sessions) as session:
        admin = create_token(session, ["admin"])[1]
        reader = create_token(session, ["read"])[1]
        submitter = create_token(session, ["read", "submit"])[1]
    made = Store(app, fail_flag, admin, reader, submitter)
    _fill(made)
    drain(app, rounds=10_000)
    try:
        yield made
    finally:
        app.extensions["publisher"].close()


def _fill(store: Store) -> None:
    intake = store.app.extensions["publisher.intake"]
    batch: list[dict[str, Any]] = []
    for number in range(RECORDS):
        batch.append(_record(number))
        if len(batch) == 1000:
            _take(intake, batch, store)
            batch = []
    if batch:
        _take(intake, batch, store)
    with transaction(store.app.extensions["publisher"].sessions) as session:
        rows = [
            _held({"title": "Held back, fixed since", "originalUrl": "https://e.com/held"}),
            _held({"excerpt": "no title at all"}),
            _held({"title": "Nobody will fix this", "originalUrl": "not a url"}),
        ]
        session.add_all(rows)
        session.flush()
        store.good_item, store.bad_item, store.spare_item = (row.id for row in rows)


def _record(number: int) -> dict[str, Any]:
    record: dict[str, Any] = {
        "title": f"Story {number} on {('markets', 'weather', 'sport', 'arts')[number % 4]}",
        "originalUrl": f"https://news.example/{number}",
        "published": number % 10 != 0,
        "type": "article",
        "topics": [("markets", "weather", "sport", "arts")[number % 4]],
    }
    if number == 5:
        record["expiresAt"] = EXPIRES
    if number == 1200:  # deep in the store: a search must still find it
        record["title"] = "Zebra crossing reopens after the storm"
    if number >= RECORDS - FAILING - EMBARGOED:
        record.update(type="watched", published=True)
    if number >= RECORDS - EMBARGOED:
        record["publishedDateTime"] = FUTURE
    if number == RECORDS - EMBARGOED - 1:
        record["title"] = HOSTILE_TITLE
    return record


def _take(intake: Any, batch: list[dict[str, Any]], store: Store) -> None:
    results, _ = intake.submit(json.dumps(batch).encode(), "application/json", source="api")
    for record, result in zip(batch, results, strict=True):
        assert result.status == "created", result.to_dict()
        if "expiresAt" in record:
            store.expiring = result.id
        if record["title"].startswith("Zebra"):
            store.zebra = result.id
        if record["type"] == "watched":
            target = store.embargoed if "publishedDateTime" in record else store.failing
            target.append(result.id)
        if record["title"] == HOSTILE_TITLE:
            store.hostile = result.id


def _held(fields: dict[str, Any]) -> QuarantineItem:
    return QuarantineItem(
        source="api",
        content_type="application/json",
        payload=json.dumps(fields).encode(),
        reason="invalid",
        errors={"title": ["Missing data for required field."]},
        created_at=utcnow(),
    )


# -- the server, counting requests, and the browser ----------------------------------------


class Counted:
    """The app, noting each request's method and path (the page's API calls)."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.calls: list[tuple[str, str]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"].startswith("/api/"):
            self.calls.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def server(store: Store) -> Iterator[tuple[str, Counted]]:
    from werkzeug.serving import make_server

    counted = Counted(store.app)
    server = make_server("127.0.0.1", 0, counted, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="ops-page-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", counted
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots are kept: ``PUBLISHER_TEST_SCREENSHOT_DIR``, else a tmp folder."""
    given = os.environ.get("PUBLISHER_TEST_SCREENSHOT_DIR")
    folder = Path(given) if given else tmp_path_factory.mktemp("ops-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install selenium)")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            _unavailable(f"{path} not found: apt-get install {package} (or run .ci/browser)")

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download
    profile = tmp_path_factory.mktemp("chromium-profile")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={WIDE[0]},{WIDE[1]}")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.unhandled_prompt_behavior = "ignore"  # the test answers confirm() itself
    service = Service(executable_path=CHROMEDRIVER, log_output=str(profile / "driver.log"))
    chrome = webdriver.Chrome(service=service, options=options)
    chrome.set_page_load_timeout(WAIT)
    try:
        yield chrome
    finally:
        chrome.quit()


class Page:
    """What the test does with the page, through the browser only."""

    def __init__(self, driver: Any, base: str, counted: Counted, shots: Path) -> None:
        from selenium.webdriver.common.by import By

        self.driver = driver
        self.base = base
        self.counted = counted
        self.shots = shots
        self.by = By

    def open(self, fragment: str = "") -> None:
        self.driver.get(f"{self.base}/ops/{fragment}")
        self.idle()

    def go(self, fragment: str) -> list[tuple[str, str]]:
        """Follow an in-page link (no reload); the API calls the view made."""
        before = len(self.counted.calls)
        self.driver.execute_script("window.location.hash = arguments[0]", fragment)
        self.idle()
        return self.counted.calls[before:]

    def wait(self, condition: Callable[[], Any], what: str = "condition") -> Any:
        from selenium.common.exceptions import (
            NoAlertPresentException,
            NoSuchElementException,
            StaleElementReferenceException,
            TimeoutException,
        )
        from selenium.webdriver.support.ui import WebDriverWait

        waiting = WebDriverWait(
            self.driver,
            WAIT,
            poll_frequency=0.05,
            ignored_exceptions=(
                NoAlertPresentException,
                NoSuchElementException,
                StaleElementReferenceException,
            ),
        )
        try:
            return waiting.until(lambda _: condition())
        except TimeoutException:
            pytest.fail(f"timed out waiting for {what}; the page says {self.message()!r}")

    def idle(self) -> None:
        self.wait(lambda: self.js("return document.body.dataset.busy") == "0", "the requests")

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def find(self, css: str) -> Any:
        return self.driver.find_element(self.by.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        return self.driver.find_elements(self.by.CSS_SELECTOR, css)

    def click(self, css: str) -> list[tuple[str, str]]:
        before = len(self.counted.calls)
        self.find(css).click()
        self.idle()
        return self.counted.calls[before:]

    def message(self) -> str:
        from selenium.common.exceptions import WebDriverException

        try:
            return self.js("return document.getElementById('message').textContent")
        except WebDriverException:  # only for a failure's text
            return "<unreadable>"

    def wait_message(self, fragment: str) -> str:
        self.wait(lambda: fragment in self.message(), f"message containing {fragment!r}")
        return self.message()

    def sign_in(self, token: str) -> None:
        field = self.find("#token")
        field.clear()
        field.send_keys(token)
        self.find("#use-token").click()
        self.idle()

    def rows(self) -> list[str]:
        return self.js(
            "return [...document.querySelectorAll('#records-table tr.record-row')]"
            ".map((row) => row.dataset.recordId)"
        )

    def cell(self, record_id: str, output: str) -> dict[str, Any]:
        return self.js(
            """
            const row = document.querySelector(`tr.record-row[data-record-id="${arguments[0]}"]`);
            const cell = row && row.querySelector(`td[data-output="${arguments[1]}"]`);
            if (!cell) return null;
            return {status: cell.dataset.status, text: cell.querySelector('.badge, .muted')
              .textContent, redeliver: Boolean(cell.querySelector('button.redeliver'))};
            """,
            record_id,
            output,
        )

    def chip(self, kind: str) -> str:
        return self.js(
            "const c = document.querySelector(`#strip [data-chip='${arguments[0]}']`);"
            "return c ? c.textContent : null",
            kind,
        )

    def buttons(self, css: str = "main button.redeliver, main button.replay, main "
                "button.delete, main button.enable, main button.disable") -> list[str]:  # fmt: skip
        return self.js(
            "return [...document.querySelectorAll(arguments[0])]"
            ".filter((b) => !b.closest('[hidden]')).map((b) => b.textContent)",
            css,
        )

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        assert self.driver.save_screenshot(str(path))
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        return path

    def full_screenshot(self, name: str, width: int) -> Path:
        """The page's top at ``width`` (a headless screenshot holds only the viewport)."""
        height = self.js("return document.documentElement.scrollHeight")
        self.driver.set_window_size(width, min(max(height, 400), 1800))
        try:
            assert self.js("return window.innerWidth") == width
            return self.screenshot(name)
        finally:
            self.driver.set_window_size(width, PHONE[1])

    def resize(self, size: tuple[int, int]) -> None:
        self.driver.set_window_size(*size)
        # the window's outer size includes no chrome in headless mode; check the layout's
        self.wait(lambda: self.js("return window.innerWidth") == size[0], "the new width")

    def mark(self) -> None:
        """A value that lives only as long as this document: gone if the page reloads."""
        self.js("window.__notReloaded = true")

    def not_reloaded(self) -> bool:
        return self.js("return window.__notReloaded === true")


@pytest.fixture
def page(driver: Any, server: tuple[str, Counted], shots: Path) -> Iterator[Page]:
    base, counted = server
    made = Page(driver, base, counted, shots)
    driver.set_window_size(*WIDE)
    yield made
    driver.get("about:blank")


# -- no browser needed ---------------------------------------------------------------------


def test_page_and_its_files_are_served_with_a_strict_policy(store: Store) -> None:
    client = store.app.test_client()
    page = client.get("/ops/")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "'unsafe-inline'" not in policy
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    html = page.get_data(as_text=True)
    assert '<script src="/ops/static/ops.js" defer></script>' in html
    assert "<script>" not in html and "style=" not in html and "<style" not in html
    assert "http://" not in html and "https://" not in html  # nothing from other origins
    assert re.search(r"\son[a-z]+\s*=", html) is None  # no inline event handlers
    root = client.get("/")
    assert root.status_code == 302 and root.headers["Location"].endswith("/ops/")
    script = client.get("/ops/static/ops.js").get_data(as_text=True)
    assert "textContent" in script and "innerHTML" not in script and "eval(" not in script
    assert "http://" not in script and "https://" not in script
    css = client.get("/ops/static/ops.css").get_data(as_text=True)
    assert "@import" not in css and "url(" not in css


# -- the browser ---------------------------------------------------------------------------


def test_a_token_is_asked_for_and_a_wrong_one_is_refused(page: Page, server: Any) -> None:
    base, _ = server
    with urllib.request.urlopen(f"{base}/ops/", timeout=WAIT) as answer:
        assert "'unsafe-inline'" not in answer.headers["Content-Security-Policy"]
    page.open()
    page.js("sessionStorage.clear()")
    page.open()
    assert "Paste an API token" in page.wait_message("API token")
    assert page.find("#views").get_attribute("hidden") is not None
    page.sign_in("not-a-token")
    assert "401" in page.wait_message("not accepted")
    assert page.rows() == []
    page.screenshot("ops-401")


def test_an_operator_finds_sees_and_acts_without_reloading(page: Page, store: Store) -> None:
    page.open()
    page.sign_in(store.admin)
    page.wait(lambda: len(page.rows()) == 50, "the first page of records")
    assert page.js("return sessionStorage.getItem('publisher.ops.token')") == store.admin
    assert page.find("#token").get_attribute("value") == ""
    page.mark()

    # the strip: how many deliveries fail, how many wait for their time, the quarantine
    assert page.chip("failing") == f"{FAILING} failing"
    assert page.chip("failing-output") == f"flaky: {FAILING} failing"
    assert page.chip("scheduled") == f"{EMBARGOED * 3} scheduled"
    assert page.chip("quarantine") == "3 quarantined"
    page.screenshot("ops-records-wide")

    # find a record by a word of its title, deep in the store
    search = page.find("#f-q")
    search.send_keys("zebra")
    calls = page.click("#apply-filters")
    page.wait(lambda: page.rows() == [store.zebra], "the zebra story")
    assert _api_calls(calls) <= MOST_CALLS["records"]
    assert page.cell(store.zebra, "flaky") == {"status": "none", "text": "—", "redeliver": False}

    # the failing view, from the strip: only records with a dead delivery
    calls = page.click("#strip [data-chip='failing']")
    page.wait(lambda: len(page.rows()) == FAILING, "the failing records")
    assert _api_calls(calls) <= MOST_CALLS["records"]
    assert set(page.rows()) == set(store.failing)
    first = page.rows()[-1]  # the oldest: not the one whose detail is read below
    assert page.cell(first, "flaky") == {"status": "dead", "text": "failed", "redeliver": True}
    assert page.cell(first, "recorder")["text"] == "live"
    page.screenshot("ops-failing-wide")

    # redeliver one once the output works: the strip and the row change in place
    store.fail_flag.unlink()
    page.click(f"tr[data-record-id='{first}'] td[data-output='flaky'] button.redeliver")
    page.wait_message("Delivery to flaky queued again")
    page.wait(lambda: page.chip("failing") == f"{FAILING - 1} failing", "one failure fewer")
    assert page.chip("due").startswith("1 due now")
    assert first not in page.rows()
    drain(store.app)
    page.click("#refresh")
    page.go(f"#/records?q={first}")
    page.wait(lambda: page.cell(first, "flaky") and page.cell(first, "flaky")["text"] == "live",
              "flaky live")  # fmt: skip
    assert page.not_reloaded()

    # embargoed records say when they go live, at every output
    page.click("#strip [data-chip='scheduled']")
    page.wait(lambda: len(page.rows()) == EMBARGOED, "the embargoed records")
    cell = page.cell(store.embargoed[0], "recorder")
    assert cell == {"status": "pending", "text": "due 2099-01-01 00:00:00 UTC", "redeliver": False}
    state = page.find(f"tr[data-record-id='{store.embargoed[0]}'] .state-cell").text
    assert "embargoed" in state and "goes live 2099-01-01 00:00:00 UTC" in state

    # a record with an expiry says when it expires, in the table and on its page
    page.go(f"#/records?q={store.expiring}")
    page.wait(lambda: page.rows() == [store.expiring], "the expiring record")
    state = page.find(f"tr[data-record-id='{store.expiring}'] .state-cell").text
    assert "published" in state and "expires 2098-06-30 12:00:00 UTC" in state
    page.go(f"#/record/{store.expiring}")
    assert page.find("#record-facts dd[data-fact='expires']").text == "2098-06-30 12:00:00 UTC"

    # a record's detail: its deliveries, their attempts, its revisions; retract it
    calls = page.go(f"#/record/{store.hostile}")
    assert _api_calls(calls) <= MOST_CALLS["record"]
    title = page.find("#record-title")
    assert title.text == HOSTILE_TITLE
    assert page.js("return document.getElementById('record-title').children.length") == 0
    assert page.js("return window.pwned === undefined")
    flaky = page.find("#deliveries-table tr[data-output='flaky']")
    assert flaky.get_attribute("data-status") == "dead"
    assert "failing on purpose" in flaky.text
    assert flaky.find_element(page.by.CSS_SELECTOR, ".attempts").text == "1"
    tried = flaky.find_elements(page.by.CSS_SELECTOR, "li.attempt")  # the attempt history
    assert [li.get_attribute("data-outcome") for li in tried] == ["dead"]
    assert "failing on purpose" in tried[0].text
    assert flaky.find_elements(page.by.CSS_SELECTOR, "button.redeliver")
    done = page.find("#deliveries-table tr[data-output='recorder']")
    assert done.get_attribute("data-status") == "done"
    assert len(page.find_all("#revisions-table tr.revision-row")) == 1
    page.screenshot("ops-record-wide")
    page.find("#retract").click()
    alert = page.wait(lambda: page.driver.switch_to.alert, "the confirmation")
    assert "Retract" in alert.text and HOSTILE_TITLE in alert.text
    alert.accept()
    page.wait_message("Retraction")
    page.idle()
    page.wait(lambda: page.find("#view-record").get_attribute("data-state") == "retracted",
              "the record retracted")  # fmt: skip
    assert page.find("#retract").get_attribute("hidden") is not None
    events = [row.text for row in page.find_all("#deliveries-table .event")]
    assert "retracted" in events
    assert page.not_reloaded()

    # the quarantine: why, replay the fixed one, a still-broken one says why, delete one
    calls = page.click("#strip [data-chip='quarantine']")
    assert _api_calls(calls) <= MOST_CALLS["quarantine"]
    page.wait(lambda: len(page.find_all("tr.quarantine-row")) == 3, "three held items")
    row = page.find(f"tr[data-item-id='{store.good_item}']")
    assert "Missing data for required field" in row.text
    page.screenshot("ops-quarantine-wide")
    page.click(f"tr[data-item-id='{store.good_item}'] button.replay")
    page.wait_message(f"Item #{store.good_item} replayed")
    page.wait(lambda: page.chip("quarantine") == "2 quarantined", "one item fewer")
    assert not page.find_all(f"tr[data-item-id='{store.good_item}']")
    page.click(f"tr[data-item-id='{store.bad_item}'] button.replay")
    assert "422" in page.wait_message("Could not replay")
    assert "title" in page.message()
    page.find(f"tr[data-item-id='{store.spare_item}'] button.delete").click()
    page.wait(lambda: page.driver.switch_to.alert, "the confirmation").accept()
    page.wait_message(f"Item #{store.spare_item} deleted")
    page.wait(lambda: page.chip("quarantine") == "1 quarantined", "the item deleted")
    page.go("#/records?q=fixed+since")
    page.wait(lambda: len(page.rows()) == 1, "the replayed record")

    # outputs and subscribers: turn one off, a paused one resumes
    calls = page.go("#/outputs")
    assert _api_calls(calls) <= MOST_CALLS["outputs"]
    page.wait(lambda: page.find_all("tr.output-row[data-output='flaky']"), "the outputs")
    page.find("tr.output-row[data-output='flaky'] button.disable").click()
    page.wait(lambda: page.driver.switch_to.alert, "the confirmation").accept()
    page.wait_message("flaky is off")
    page.wait(lambda: page.find("tr.output-row[data-output='flaky']").get_attribute("data-state")
              == "disabled", "flaky off")  # fmt: skip
    assert page.chip("disabled") == "flaky off"
    page.click("tr.output-row[data-output='flaky'] button.enable")
    page.wait_message("flaky is on")
    with transaction(store.app.extensions["publisher"].sessions) as session:
        set_output_state(session, "recorder", False, "subscriber answered 410 Gone")
    page.click("#refresh")
    assert (
        page.find("tr.output-row[data-output='recorder']").get_attribute("data-state") == "paused"
    )
    assert page.chip("disabled") == "recorder paused"
    assert page.find("tr.output-row[data-output='recorder'] button.enable").text == "Resume"
    page.screenshot("ops-outputs-wide")
    page.click("tr.output-row[data-output='recorder'] button.enable")
    page.wait_message("recorder is on")
    assert page.chip("disabled") is None
    assert page.not_reloaded()

    # paging through the whole store with the cursor: next, previous, first
    page.go("#/records")
    page.wait(lambda: len(page.rows()) == 50, "page 1")
    top = page.rows()
    page.click("#next-page")
    page.wait(lambda: page.rows() and page.rows() != top, "page 2")
    assert page.find("#page-info").text == "page 2"
    page.click("#prev-page")
    page.wait(lambda: page.rows() == top, "page 1 again")

    assert _complaints(page) == []


def test_a_read_only_token_sees_no_action_buttons(page: Page, store: Store) -> None:
    page.open()
    page.sign_in(store.reader)
    page.wait(lambda: len(page.rows()) == 50, "the records")
    assert page.find("#whoami").text == "token: read"
    for view in ("#/records?delivery=dead", "#/quarantine", "#/outputs"):
        page.go(view)
        assert page.message() and "Could not" not in page.message()
        assert page.buttons() == [], view
    page.go("#/records?delivery=dead")
    failing = page.rows()[0]
    page.go(f"#/record/{failing}")
    page.wait(lambda: page.find("#record-title").text, "the record")
    assert page.find("#retract").get_attribute("hidden") is not None
    assert page.buttons() == []
    page.screenshot("ops-read-only")
    # submit: may retract, may not redeliver
    page.sign_in(store.submitter)
    page.go(f"#/record/{store.failing[1]}")
    page.wait(lambda: page.find("#record-title").text, "the record")
    assert page.find("#retract").get_attribute("hidden") is None
    assert page.buttons() == []


def test_the_page_is_reachable_from_the_keyboard(page: Page, store: Store) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    page.open()
    page.sign_in(store.admin)
    page.wait(lambda: len(page.rows()) == 50, "the records")
    focused: list[str] = []
    for _ in range(40):
        ActionChains(page.driver).send_keys(Keys.TAB).perform()
        focused.append(page.js("return document.activeElement.id || document.activeElement"
                               ".dataset.chip || document.activeElement.textContent"))  # fmt: skip
        if focused[-1] == "f-q":
            break
    assert "Failing" in focused and "failing" in focused and focused[-1] == "f-q", focused
    ActionChains(page.driver).send_keys("zebra", Keys.ENTER).perform()
    page.idle()
    page.wait(lambda: page.rows() == [store.zebra], "the zebra story")
    # the title is a link: Enter on it opens the record
    page.js("document.querySelector('tr.record-row a.title').focus()")
    ActionChains(page.driver).send_keys(Keys.ENTER).perform()
    page.idle()
    page.wait(lambda: page.find("#record-title").text.startswith("Zebra"), "the record")


@pytest.mark.parametrize("width", [390, 360])
@pytest.mark.parametrize("view", ["records", "failing", "record", "quarantine", "outputs"])
def test_at_phone_width_nothing_overlaps_or_is_cut_off(
    page: Page, store: Store, view: str, width: int
) -> None:
    fragments = {
        "records": "#/records",
        "failing": "#/records?delivery=dead",
        "record": f"#/record/{store.failing[0]}",
        "quarantine": "#/quarantine?replayed=all",
        "outputs": "#/outputs",
    }
    page.open()
    page.sign_in(store.admin)
    page.resize((width, PHONE[1]))
    page.go(fragments[view])
    page.wait(lambda: page.message() and page.message() != "Loading…", "the view")
    layout = page.js(LAYOUT)
    assert layout["overflow"] <= 0, layout
    assert layout["outside"] == [], layout
    assert layout["overlaps"] == [], layout
    page.full_screenshot(f"ops-{view}-{width}", width)


LAYOUT = """
const width = document.documentElement.clientWidth;
const visible = (e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
const marks = [...document.querySelectorAll('.badge, .chip, button, .schedule, .record-id')]
  .filter(visible).filter((e) => !e.closest('[hidden]'));
const name = (e) => `${e.className}: ${e.textContent.slice(0, 40)}`;
const outside = marks.filter((e) => {
  const r = e.getBoundingClientRect(); return r.left < -0.5 || r.right > width + 0.5;
}).map(name);
const cells = [...document.querySelectorAll('main td, main th, main dd')].filter(visible)
  .filter((e) => e.scrollWidth > e.clientWidth + 1).map(name);
const overlaps = [];
for (let i = 0; i < marks.length; i++) {
  const a = marks[i].getBoundingClientRect();
  for (let j = i + 1; j < marks.length; j++) {
    if (marks[i].contains(marks[j]) || marks[j].contains(marks[i])) continue;
    const b = marks[j].getBoundingClientRect();
    const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
    const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
    if (w > 0.5 && h > 0.5) overlaps.push([name(marks[i]), name(marks[j])]);
  }
}
return {
  overflow: document.documentElement.scrollWidth - width,
  outside: outside.concat(cells),
  overlaps,
};
"""


def _api_calls(calls: list[tuple[str, str]]) -> int:
    return len([c for c in calls if c[0] == "GET"])


def _complaints(page: Page) -> list[str]:
    """What the browser logged as severe, other than the 4xx answers the test provoked."""
    return [
        entry["message"]
        for entry in page.driver.get_log("browser")
        if entry["level"] == "SEVERE"
        and not any(f"status of {s}" in entry["message"] for s in (401, 403, 422))
    ]
