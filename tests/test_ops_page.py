"""The operator's page (``/ops/``) in a real headless browser.

Debian's Chromium driven by Selenium through Debian's chromedriver (``.ci/browser`` installs
both). The app runs on a real WSGI server in a thread; deliveries run when the test calls
``drain(app)``, between the browser's steps. Without Chromium, chromedriver or selenium the
test is skipped, unless ``CI=true``: then it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.conftest import drain

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
    "--window-size=1280,1100",
)
HOSTILE_TITLE = "<b>&\"quotes\"</b> & 'more' <script>window.pwned=1</script>"
WAIT = 15.0

pytestmark = pytest.mark.slow


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true, so the browser test must run (see .ci/browser)")
    pytest.skip(reason)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def fail_flag(tmp_path: Path) -> Path:
    flag = tmp_path / "flaky.fail"
    flag.write_text("failing\n")
    return flag


@pytest.fixture
def app(make_app: Callable[..., Flask], base_settings: dict[str, Any], fail_flag: Path) -> Flask:
    """One attempt per delivery, and the ``flaky`` output failing while the flag exists."""
    log = base_settings["plugins"]["recording"]["log"]
    return make_app(
        delivery={"retry_schedule": [0]},
        plugins={"recording": {"log": log, "fail_flag": str(fail_flag)}},
    )


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="ops-page-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install selenium)")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            _unavailable(f"{path} not found: apt-get install {package} (or run .ci/browser)")

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download
    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.unhandled_prompt_behavior = "ignore"  # the test answers confirm() itself
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


# -- helpers --------------------------------------------------------------------------------


def submit(app: Flask, headers: dict[str, str], seed: dict[str, Any], **fields: Any) -> str:
    record = {k: v for k, v in seed.items() if k != "secured"}
    record.update(fields)
    answer = app.test_client().post(
        "/api/v1/records",
        data=json.dumps(record),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert answer.status_code == 202, answer.json
    return answer.json["id"]


CARD_STATE = """
const card = document.querySelector(`article.record[data-record-id="${arguments[0]}"]`);
if (!card || card.classList.contains("loading")) return null;
const outputs = {};
for (const row of card.querySelectorAll("tr.output")) {
  outputs[row.dataset.output] = {
    placement: row.querySelector(".placement").textContent,
    deliveries: [...row.querySelectorAll("li.delivery")].map((item) => ({
      event: item.querySelector(".event").textContent,
      status: item.querySelector(".delivery-status").textContent,
      attempts: item.querySelector(".attempts").textContent,
      error: item.querySelector(".error-text")?.textContent ?? null,
      redeliver: Boolean(item.querySelector("button.redeliver")),
    })),
  };
}
return {
  title: card.querySelector(".title").textContent,
  title_children: card.querySelector(".title").children.length,
  id: card.querySelector(".record-id").textContent,
  state: card.querySelector(".state").textContent,
  secured: card.querySelector(".secured").textContent,
  retract: !card.querySelector("button.retract").hidden,
  outputs,
};
"""


class Page:
    """What the test does with the page, through the browser only."""

    def __init__(self, driver: Any, base: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver = driver
        self.base = base
        self.by = By

    def open(self, query: str = "") -> None:
        self.driver.get(f"{self.base}/ops/{query}")
        self.wait(lambda: self.driver.execute_script("return document.body.dataset.busy") == "0")

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
            poll_frequency=0.1,
            ignored_exceptions=(
                NoAlertPresentException,
                NoSuchElementException,
                StaleElementReferenceException,
            ),
        )
        try:
            return waiting.until(lambda _: condition())
        except TimeoutException:
            # read the page only now: a script call while a confirm() is open would close it
            pytest.fail(f"timed out waiting for {what}; the page says {self.message()!r}")

    def idle(self) -> None:
        self.wait(
            lambda: self.driver.execute_script("return document.body.dataset.busy") == "0",
            "the page to finish its requests",
        )

    def find(self, css: str) -> Any:
        return self.driver.find_element(self.by.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        return self.driver.find_elements(self.by.CSS_SELECTOR, css)

    def message(self) -> str:
        from selenium.common.exceptions import WebDriverException

        try:
            return self.driver.execute_script(
                "return document.getElementById('message').textContent"
            )
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

    def card(self, record_id: str) -> dict[str, Any] | None:
        return self.driver.execute_script(CARD_STATE, record_id)

    def wait_card(self, record_id: str, check: Callable[[dict[str, Any]], bool], what: str) -> Any:
        def ready() -> dict[str, Any] | None:
            state = self.card(record_id)
            return state if state is not None and check(state) else None

        return self.wait(ready, what)

    def refresh(self) -> None:
        self.find("#refresh").click()
        self.idle()

    def card_ids(self) -> list[str]:
        return [e.get_attribute("data-record-id") for e in self.find_all("article.record")]


def test_page_and_its_files_are_served_with_a_strict_policy(app: Flask) -> None:
    """No browser needed: headers, the redirect from ``/`` and the static files."""
    client = app.test_client()
    page = client.get("/ops/")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "'unsafe-inline'" not in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    html = page.get_data(as_text=True)
    assert '<script src="/ops/static/ops.js" defer></script>' in html
    assert "<script>" not in html and "style=" not in html
    root = client.get("/")
    assert root.status_code == 302 and root.headers["Location"].endswith("/ops/")
    script = client.get("/ops/static/ops.js")
    assert script.status_code == 200 and "textContent" in script.get_data(as_text=True)
    assert "innerHTML" not in script.get_data(as_text=True)
    assert client.get("/ops/static/ops.css").status_code == 200


# -- the scenario ---------------------------------------------------------------------------


def test_operator_page_in_a_real_browser(
    app: Flask,
    live_server: str,
    browser: Any,
    token: Callable[..., str],
    recorded: Callable[[], list[dict[str, Any]]],
    fail_flag: Path,
    seed_json: dict[str, Any],
    tmp_path: Path,
) -> None:
    admin = token("admin")
    reader = token("read")
    headers = {"Authorization": f"Bearer {admin}"}
    older = submit(app, headers, seed_json, title="An older draft", originalUrl="https://e.com/1")
    draft = submit(app, headers, seed_json, title="A draft", originalUrl="https://e.com/2")
    record_id = submit(app, headers, seed_json, title=HOSTILE_TITLE, published=True)
    drain(app)

    # the page itself: strict CSP, no inline script
    with urllib.request.urlopen(f"{live_server}/ops/", timeout=WAIT) as answer:
        csp = answer.headers["Content-Security-Policy"]
        html = answer.read().decode()
    assert "default-src 'self'" in csp
    assert "'unsafe-inline'" not in csp
    assert "<script>" not in html and "<style" not in html

    page = Page(browser, live_server)

    # no token: a clear prompt, nothing listed
    page.open()
    assert "Paste an API token" in page.wait_message("API token")
    assert page.card_ids() == []

    # a wrong token: 401, said plainly
    page.sign_in("not-a-token")
    assert "401" in page.wait_message("not accepted")
    assert page.card_ids() == []

    # a read-only token lists records; redelivering is refused with a clear 403
    page.sign_in(reader)
    page.wait(lambda: page.card(record_id) is not None, "the published record")
    card = page.wait_card(
        record_id,
        lambda c: c["outputs"].get("flaky", {}).get("placement") == "failed",
        "flaky to have failed",
    )
    page.find(
        f'article[data-record-id="{record_id}"] tr[data-output="flaky"] button.redeliver'
    ).click()
    assert "403" in page.wait_message("Not allowed to redeliver")

    # an admin token; the token is kept for the tab (sessionStorage), not in the field
    page.sign_in(admin)
    page.wait(lambda: page.card(record_id) is not None, "the published record")
    assert page.find("#token").get_attribute("value") == ""
    assert browser.execute_script("return sessionStorage.getItem('publisher.ops.token')") == admin
    assert page.card_ids() == [record_id, draft, older]

    # the title shows exactly, as text: no markup from data, no script ran
    card = page.card(record_id)
    assert card is not None
    assert card["title"] == HOSTILE_TITLE
    assert card["title_children"] == 0
    title_element = page.find(f'article[data-record-id="{record_id}"] .title')
    assert title_element.text == HOSTILE_TITLE
    assert browser.execute_script("return window.pwned === undefined")
    assert card["id"] == record_id
    assert card["state"] == "published"
    assert card["secured"] == "absent"
    assert card["retract"] is True

    # per output: live where it worked; flaky dead after its one attempt, with its error
    assert card["outputs"]["recorder"]["placement"] == "live"
    assert card["outputs"]["protected-sink"]["placement"] == "live"
    flaky = card["outputs"]["flaky"]
    assert flaky["placement"] == "failed"
    assert [(d["event"], d["status"], d["redeliver"]) for d in flaky["deliveries"]] == [
        ("published", "dead", True)
    ]
    assert flaky["deliveries"][0]["attempts"] == "1 attempt"
    assert "failing on purpose" in flaky["deliveries"][0]["error"]
    assert card["outputs"]["recorder"]["deliveries"][0]["status"] == "done"
    assert not card["outputs"]["recorder"]["deliveries"][0]["redeliver"]
    drafts = page.card(draft)
    assert drafts is not None and drafts["retract"] is False and drafts["state"] == "draft"

    screenshot = tmp_path / "ops-page.png"
    assert browser.save_screenshot(str(screenshot))
    data = screenshot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    keep = os.environ.get("PUBLISHER_TEST_SCREENSHOT_DIR")
    if keep:
        shutil.copy(screenshot, Path(keep) / "ops-page.png")

    # the failed-deliveries filter shows only the record with a dead delivery
    page.find("#filter option[value='failed']").click()
    page.idle()
    page.wait(lambda: page.card_ids() == [record_id], "only the failing record")
    page.find("#filter option[value='all']").click()
    page.idle()
    page.wait(lambda: page.card_ids() == [record_id, draft, older], "all records again")

    # redeliver once the output works again: done, live
    fail_flag.unlink()
    page.find(
        f'article[data-record-id="{record_id}"] tr[data-output="flaky"] button.redeliver'
    ).click()
    page.wait_message("queued again")
    page.idle()
    drain(app)
    page.refresh()
    card = page.wait_card(
        record_id,
        lambda c: c["outputs"]["flaky"]["placement"] == "live",
        "flaky to be live",
    )
    flaky_delivery = card["outputs"]["flaky"]["deliveries"][0]
    assert (flaky_delivery["status"], flaky_delivery["redeliver"]) == ("done", False)
    assert flaky_delivery["error"] is None
    assert ("flaky", "publish", record_id) in {
        (e["output"], e["action"], e["id"]) for e in recorded()
    }

    # retract, confirmed: retracted at every output
    page.find(f'article[data-record-id="{record_id}"] button.retract').click()
    alert = page.wait(lambda: browser.switch_to.alert, "the confirmation")
    assert "Retract" in alert.text and HOSTILE_TITLE in alert.text
    alert.accept()
    page.wait_message("Retraction")
    page.idle()
    drain(app)
    page.refresh()
    card = page.wait_card(
        record_id,
        lambda c: all(o["placement"] == "retracted" for o in c["outputs"].values()),
        "every output to be retracted",
    )
    assert card["state"] == "retracted"
    assert card["retract"] is False
    assert {"recorder", "flaky", "protected-sink"} <= set(card["outputs"])
    retracted = {
        e["output"] for e in recorded() if e["action"] == "retract" and e["id"] == record_id
    }
    assert retracted == {"recorder", "flaky", "protected-sink"}
    if keep:
        browser.save_screenshot(str(Path(keep) / "ops-page-retracted.png"))

    # pagination with the cursor: two per page
    page.open("?limit=2")
    page.wait(lambda: page.card_ids() == [record_id, draft], "page 1")
    assert page.find("#prev-page").get_attribute("disabled") is not None
    page.find("#next-page").click()
    page.idle()
    page.wait(lambda: page.card_ids() == [older], "page 2")
    assert page.find("#next-page").get_attribute("disabled") is not None
    assert page.find("#page-info").text == "page 2"
    page.find("#prev-page").click()
    page.idle()
    page.wait(lambda: page.card_ids() == [record_id, draft], "page 1 again")

    # forgetting the token clears the page and prompts again
    page.find("#forget-token").click()
    page.wait_message("Paste an API token")
    assert page.card_ids() == []

    # nothing the browser complained about, other than the 401/403 answers we provoked
    complaints = [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE"
        and "status of 401" not in entry["message"]
        and "status of 403" not in entry["message"]
    ]
    assert complaints == []
