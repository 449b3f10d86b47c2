"""A real Hugo site built from the files output, with records that try to take it over.

Records go in through the API, the worker writes the files, Debian's ``hugo`` builds the site
(``.ci/hugo`` installs it). Without hugo the test is skipped, unless ``CI=true``: then it
fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from publisher.testing import drain
from publisher_plugins import files
from tests.helpers import bearer

pytestmark = pytest.mark.slow

HUGO = os.environ.get("PUBLISHER_TEST_HUGO") or shutil.which("hugo") or "/usr/bin/hugo"
CONFIG = """
baseURL = "http://site.example/"
title = "Test site"
ignoreFiles = ['\\.publisher/']
disableKinds = ["RSS", "sitemap", "robotsTXT"]
"""
LAYOUTS = {
    "_default/single.html": (
        '<h1>{{ .Title }}</h1><time>{{ .Date.Format "2006-01-02" }}</time>'
        "<ul>{{ range .Params.tags }}<li class=tag>{{ . }}</li>{{ end }}</ul>"
        "{{ range .Params.categories }}<span class=category>{{ . }}</span>{{ end }}"
        "<article>{{ .Content }}</article>"
    ),
    "_default/list.html": "<p>LIST {{ .Title }}</p>{{ range .Pages }}{{ .RelPermalink }} {{ end }}",
    "index.html": "<p>HOME</p>{{ range .Site.RegularPages }}{{ .RelPermalink }} {{ end }}",
}
#: every key a generator gives a meaning to, as a hostile sender sets them
TAKEOVER = {
    "url": "/",
    "aliases": ["/", "/news/"],
    "layout": "evil",
    "draft": True,
    "type": "evil",
    "outputs": ["json"],
    "slug": "index",
}


def _hugo_or_skip() -> str:
    if Path(HUGO).is_file() and os.access(HUGO, os.X_OK):
        return HUGO
    reason = f"hugo not found at {HUGO} (install it with .ci/hugo)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true, so the Hugo build test must run", pytrace=False)
    pytest.skip(reason)


def _site(root: Path) -> None:
    (root / "content").mkdir(parents=True)
    (root / "config.toml").write_text(CONFIG)
    for name, text in LAYOUTS.items():
        (root / "layouts" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "layouts" / name).write_text(text)


def _record(record_id: str, title: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": record_id,
        "title": title,
        "category": "news",
        "published": True,
        "body": f"BODY-OF-{record_id}",
        **fields,
    }


def _url(record_id: str, title: str, section: str = "news") -> str:
    return f"/{section}/{files.slugify(title)}-{files.record_hash(record_id)}/"


def _page(public: Path, url: str) -> str:
    return (public / url.strip("/") / "index.html").read_text("utf-8")


def test_a_hugo_site_builds_and_no_sender_decides_a_path(make_app, tmp_path: Path) -> None:
    hugo = _hugo_or_skip()
    root = tmp_path / "hugo-site"
    _site(root)
    app = make_app(plugins={"files": {"folder": str(root / "content")}})
    client, headers = app.test_client(), bearer(app, "submit")
    victim_url = _url("victim", "The victim")
    records = [
        _record("victim", "The victim", topics=["Alpha"], publishedDateTime="2022-05-23T13:36:00Z"),
        _record("takeover", "Takeover", **TAKEOVER),
        _record("squatter", "Squatter", url=victim_url, aliases=[victim_url], topics=["Beta"]),
        _record("tokyo", "東京", category="世界"),
        _record("undated", "No date given"),
        _record("moving", "Before the move"),
    ]
    answer = client.post("/api/v1/records", json=records, headers=headers)
    assert answer.status_code == 202, answer.json
    drain(app)
    retitled = _record("moving", "After the move", category="Tech")
    assert client.post("/api/v1/records", json=retitled, headers=headers).status_code == 202
    drain(app)

    built = subprocess.run(
        [hugo, "--source", str(root), "--destination", str(root / "public"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    public = root / "public"

    urls = {
        "victim": victim_url,
        "takeover": _url("takeover", "Takeover"),
        "squatter": _url("squatter", "Squatter"),
        "tokyo": _url("tokyo", "東京", "世界"),
        "undated": _url("undated", "No date given"),
        "moving": _url("moving", "After the move", "tech"),
    }
    for record_id, url in urls.items():  # each page where publisher put it, with its content
        assert f"BODY-OF-{record_id}" in _page(public, url), (record_id, url)
    pages = {
        path.relative_to(public).as_posix()
        for path in public.rglob("index.html")
        if "BODY-OF-" in path.read_text("utf-8")
    }
    assert pages == {url.strip("/") + "/index.html" for url in urls.values()}  # none replaced
    assert "HOME" in (public / "index.html").read_text("utf-8")
    assert "LIST" in _page(public, "/news/")
    assert "BODY-OF-takeover" not in json.dumps(sorted(p.name for p in public.rglob("*.json")))

    moved_from = _page(public, _url("moving", "Before the move"))
    assert re.search(r'http-equiv="?refresh"?[^>]*' + re.escape(urls["moving"]), moved_from)

    victim = _page(public, victim_url)
    assert "<time>2022-05-23</time>" in victim
    assert "<li class=tag>Alpha</li>" in victim and "<span class=category>news</span>" in victim
    assert "<time>0001-01-01</time>" not in _page(public, urls["undated"])
    assert "BODY-OF-" in _page(public, "/tags/alpha/") or "victim" in _page(public, "/tags/alpha/")
    assert (public / "categories" / "news" / "index.html").is_file()
