"""A record's instants: read as aware UTC datetimes, written as the API writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from publisher.records import instant_text, parse_instant


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
