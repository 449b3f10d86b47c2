"""A record's instants (read as aware UTC datetimes, written as the API writes them) and its
content hashes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from publisher.records import content_hashes, instant_text, parse_instant


def test_an_instant_is_written_in_utc_with_z_and_reads_back_the_same():
    moment = datetime(2026, 12, 2, 3, 4, 5, tzinfo=UTC)
    assert instant_text(moment) == "2026-12-02T03:04:05Z"
    assert parse_instant(instant_text(moment)) == moment


def test_an_instant_with_another_offset_reads_as_the_same_moment():
    east = datetime(2026, 12, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert parse_instant("2026-12-02T05:04:05+02:00") == east
    assert parse_instant("2026-12-02T05:04:05+02:00") == parse_instant("2026-12-02T03:04:05Z")


def test_no_instant_is_written_as_null():
    assert instant_text(None) is None
    assert parse_instant(None) is None and parse_instant("") is None


#: stored in every records row: a new value for the same content would make every stored
#: record look changed (these are what the hashes were before session 5's one-pass form)
FIELDS = {
    "title": "Zürich",
    "heat": 3,
    "id": "a",
    "topics": ["x"],
    "nested": {"b": 1, "a": [1.5, None]},
}
CONTENT = "65d80144fa25263a16410ec0ceb6d1de249feb4d705c6142a43cd78a13804a55"
MEANING = "e11a0aac171b4c0a5e8080f70d08379426ba0f611dd678486e96ea29c03f1e8b"


def test_the_content_hashes_keep_their_values():
    assert content_hashes({**FIELDS, "zz": True}, "body", ["heat"]) == (CONTENT, MEANING)


@pytest.mark.parametrize(
    "volatile", [["heat"], ["a"], ["zz"], ["a", "id", "zz"], ["title", "heat"]]
)
def test_the_meaning_hash_is_the_content_hash_of_the_fields_without_the_volatile_ones(volatile):
    fields = {**FIELDS, "a": 0, "zz": True}
    kept = {key: value for key, value in fields.items() if key not in volatile}
    assert content_hashes(fields, "body", volatile)[1] == content_hashes(kept, "body")[0]


def test_without_volatile_fields_both_hashes_are_one():
    content, meaning = content_hashes({"title": "t"}, "", ["heat"])
    assert content == meaning == "a4df3abb2a1e3215bebec3dcebdfbd429359f9e5cdb0d6d24556ed962a8b1c74"
