"""Record validation: the seed record in every form, field-path errors, unknown fields."""

from __future__ import annotations

import copy
import json
import statistics
import time
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from publisher.errors import InvalidRecord
from publisher.parsing import parse_body, parse_file
from publisher.schemas import Validated, format_datetime, validate_record

DATA = Path(__file__).parent / "data"
SEED_MD = (DATA / "seed-record.md").read_bytes()
SEED_JSON = (DATA / "seed-record.json").read_bytes()
SEED_YAML = SEED_MD.split(b"---\n")[1]


def _seed() -> dict[str, Any]:
    return json.loads(SEED_JSON)


def _errors(raw: Any, *, strict: bool = False) -> dict[str, list[str]]:
    with pytest.raises(InvalidRecord) as info:
        validate_record(raw, strict=strict)
    assert info.value.status == 422
    return info.value.errors


# -- the seed record -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (SEED_MD, "text/markdown"),
        (SEED_JSON, "application/json"),
        (SEED_YAML + b"body: ''\n", "application/yaml"),
    ],
)
def test_seed_record_validates_the_same_from_every_form(body: bytes, content_type: str) -> None:
    [raw] = parse_body(body, content_type).items
    result = validate_record(raw)
    assert result.warnings == []
    data = result.data
    assert data["publishedDateTime"] == "2022-05-23T13:36:00Z"
    assert data["heat"] == -1
    assert data["published"] is False
    assert data["quality"] == 17
    assert data["topics"] == ["AI"]
    assert data["provider"] == {"name": "Digital Journal", "domain": "digitaljournal.com"}
    assert [item["quality"] for item in data["related"]] == [59, 39, 32, 19]
    assert [len(item.get("images", [])) for item in data["related"]] == [1, 1, 1, 0]
    assert data["related"][0]["images"][0] == {
        "url": _seed()["related"][0]["images"][0]["url"],
        "width": 620,
        "height": 372,
        "isCached": True,
    }
    assert data["secured"].endswith(";axjDBUcCJVQ6cMCpSUqRzA==")
    assert data == _seed(), "every form gives the JSON form, field for field"
    assert json.loads(json.dumps(data)) == data, "the data is JSON-ready"


def test_seed_record_validates_fast() -> None:
    raw = parse_body(SEED_MD, "text/markdown").items[0]
    timings = []
    for _ in range(200):
        started = time.perf_counter()
        validate_record(raw)
        timings.append(time.perf_counter() - started)
    assert statistics.median(timings) < 0.002  # about 0.25 ms here; generous for slow CI


def test_minimal_record() -> None:
    assert validate_record({"title": "Hello"}) == Validated(data={"title": "Hello"}, warnings=[])


# -- date-times ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2022-05-23T13:36:00Z", "2022-05-23T13:36:00Z"),
        ("2022-05-23T13:36:00+00:00", "2022-05-23T13:36:00Z"),
        ("2022-05-23t13:36:00z", "2022-05-23T13:36:00Z"),
        ("2022-05-23 15:36:00+02:00", "2022-05-23T15:36:00+02:00"),
        ("2022-05-23T13:36Z", "2022-05-23T13:36:00Z"),
        ("2022-05-23T13:36:00.250-05:00", "2022-05-23T13:36:00.250000-05:00"),
        (datetime(2022, 5, 23, 13, 36, tzinfo=UTC), "2022-05-23T13:36:00Z"),
        (
            datetime(2022, 5, 23, 15, 36, tzinfo=timezone(timedelta(hours=2))),
            "2022-05-23T15:36:00+02:00",
        ),
    ],
)
def test_date_times_keep_the_sender_offset(value: Any, expected: str) -> None:
    assert validate_record({"title": "t", "publishedDateTime": value}).data == {
        "title": "t",
        "publishedDateTime": expected,
    }


@pytest.mark.parametrize(
    "value",
    [
        "2022-05-23T13:36:00",  # naive
        datetime(2022, 5, 23, 13, 36),  # naive, as YAML gives "2022-05-23 13:36:00"
        date(2022, 5, 23),
        "2022-05-23",
        "2022-02-30T10:00:00Z",
        "20220523T133600Z",
        "yesterday",
        1653312960,
        "2022-05-23T13:36:00Z" + "0" * 100,
    ],
)
def test_bad_or_naive_date_times_are_refused(value: Any) -> None:
    assert list(_errors({"title": "t", "publishedDateTime": value})) == ["publishedDateTime"]


def test_naive_yaml_timestamp_is_refused_at_its_path() -> None:
    [raw] = parse_body(b"title: t\npublishedDateTime: 2022-05-23 13:36:00\n", "text/yaml").items
    assert _errors(raw) == {
        "publishedDateTime": ["A date-time needs a zone (Z or an offset such as +02:00)."]
    }


def test_expiry_must_follow_publication() -> None:
    record = {"title": "t", "publishedDateTime": "2022-05-23T13:36:00Z"}
    ok = validate_record({**record, "expiresAt": "2022-05-24T13:36:00+02:00"}).data
    assert ok["expiresAt"] == "2022-05-24T13:36:00+02:00"
    assert list(_errors({**record, "expiresAt": "2022-05-23T15:36:00+02:00"})) == ["expiresAt"]


def test_format_datetime() -> None:
    assert format_datetime(datetime(2022, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2022-01-02T03:04:05Z"


# -- the invalid examples --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("no-title.md", "title"),
        ("bad-url.md", "webUrl"),
        ("quality-high.md", "quality"),
        ("related-missing-weburl.md", "related.1.webUrl"),
    ],
)
def test_invalid_examples_name_their_field(name: str, path: str) -> None:
    [raw] = parse_file(DATA / "invalid" / name).items
    errors = _errors(raw)
    assert list(errors) == [path]
    assert errors[path] and all(isinstance(message, str) for message in errors[path])


# -- field rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": None}, "title"),
        ({"title": 42}, "title"),
        ({"title": "x" * 1001}, "title"),
        ({"quality": "17"}, "quality"),
        ({"quality": True}, "quality"),
        ({"quality": 17.5}, "quality"),
        ({"heat": 2**63}, "heat"),
        ({"published": "false"}, "published"),
        ({"published": 0}, "published"),
        ({"webUrl": "ftp://example.org/x"}, "webUrl"),
        ({"webUrl": "https://"}, "webUrl"),
        ({"webUrl": "https://exa mple.org/"}, "webUrl"),
        ({"webUrl": "https://example.org:99999/"}, "webUrl"),
        ({"originalUrl": "https://example.org/" + "x" * 2048}, "originalUrl"),
        ({"originalUrl": "/relative/path"}, "originalUrl"),
        ({"topics": ["AI", 3]}, "topics.1"),
        ({"topics": "AI"}, "topics"),
        ({"topics": ["t"] * 101}, "topics"),
        ({"provider": {"name": ["Digital Journal"]}}, "provider.name"),
        ({"provider": "Digital Journal"}, "provider"),
        ({"secured": b"binary"}, "secured"),
        ({"id": ""}, "id"),
    ],
)
def test_field_rules(change: dict[str, Any], path: str) -> None:
    assert list(_errors({**_seed(), **change})) == [path]


def test_related_item_errors_have_dotted_paths() -> None:
    record = _seed()
    record["related"][2]["images"][0]["width"] = -1
    record["related"][3]["provider"]["domain"] = 7
    record["related"][1] = "not a mapping"
    assert sorted(_errors(record)) == [
        "related.1",
        "related.2.images.0.width",
        "related.3.provider.domain",
    ]


def test_several_errors_are_all_reported() -> None:
    errors = _errors({"quality": "high", "webUrl": "nope", "related": [{"title": "x"}]})
    assert sorted(errors) == ["quality", "related.0.webUrl", "title", "webUrl"]


@pytest.mark.parametrize("raw", [[], "a record", 42, None, [{"title": "x"}]])
def test_a_record_must_be_a_mapping(raw: Any) -> None:
    assert list(_errors(raw)) == ["_schema"]


def test_error_message_lists_the_paths() -> None:
    with pytest.raises(InvalidRecord) as info:
        validate_record({"quality": "high"})
    assert "quality" in info.value.message and "title" in info.value.message
    assert info.value.to_dict()["errors"]["quality"] == ["Not a valid integer."]


# -- unknown fields --------------------------------------------------------------------------


def test_unknown_fields_are_kept_with_warnings() -> None:
    record = _seed()
    record["sentiment"] = {"score": 0.5, "labels": ["neutral"]}
    record["related"][0]["rank"] = 1
    record["related"][0]["images"][0]["alt"] = "a face"
    record["provider"]["country"] = "CA"
    result = validate_record(record)
    assert sorted(result.warnings) == [
        "unknown field: provider.country",
        "unknown field: related.0.images.0.alt",
        "unknown field: related.0.rank",
        "unknown field: sentiment",
    ]
    assert result.data["sentiment"] == {"score": 0.5, "labels": ["neutral"]}
    assert result.data["related"][0]["rank"] == 1
    assert result.data["related"][0]["images"][0]["alt"] == "a face"
    assert result.data["provider"]["country"] == "CA"


def test_unknown_fields_are_errors_in_strict_mode() -> None:
    record = _seed()
    record["sentiment"] = "neutral"
    record["related"][0]["rank"] = 1
    assert _errors(record, strict=True) == {
        "sentiment": ["Unknown field."],
        "related.0.rank": ["Unknown field."],
    }
    assert validate_record(_seed(), strict=True).warnings == []


def test_strict_mode_reports_unknown_and_invalid_fields_together() -> None:
    errors = _errors({"title": "t", "quality": "high", "extra": 1}, strict=True)
    assert errors == {"extra": ["Unknown field."], "quality": ["Not a valid integer."]}


def test_unknown_yaml_values_become_json() -> None:
    body = b"title: t\nseen: 2022-05-23T13:36:00Z\nday: 2022-05-23\nratio: 0.5\n"
    [raw] = parse_body(body, "application/yaml").items
    data = validate_record(raw).data
    assert data == {"title": "t", "seen": "2022-05-23T13:36:00Z", "day": "2022-05-23", "ratio": 0.5}


@pytest.mark.parametrize(
    "value", [b"bytes", {1, 2}, float("nan"), float("inf"), {1: "int key"}, object()]
)
def test_unknown_values_must_be_json_values(value: Any) -> None:
    assert list(_errors({"title": "t", "extra": value})) == ["extra"]


def test_non_text_field_names_are_refused() -> None:
    assert list(_errors({"title": "t", 7: "seven"})) == ["7"]


def test_shared_values_cannot_expand_without_end() -> None:
    value: Any = ["x"] * 10
    for _ in range(8):
        value = [value] * 10  # 10^9 leaves, built from shared lists
    started = time.perf_counter()
    assert list(_errors({"title": "t", "bomb": value})) == ["bomb"]
    assert time.perf_counter() - started < 1.0


def test_validation_does_not_change_its_input() -> None:
    record = _seed()
    record["extra"] = {"nested": [1, 2]}
    before = copy.deepcopy(record)
    validate_record(record)
    assert record == before


# -- the parser's word on strings --------------------------------------------------------

#: pieces of JSON string source: plain text, escapes of every kind, and look-alikes
_JSON_PIECES = ["a", "é", "\\\\", '\\"', "\\n", "\\u00e9", "\\u0000", "\\ud800", "\\uDC00",
                "\\ud83d\\ude00", "\\\\u0000", "\\\\ud800"]  # fmt: skip
_json_string = st.lists(st.sampled_from(_JSON_PIECES), max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(title=_json_string, name=_json_string, value=_json_string, limit=st.integers(1, 80))
def test_the_parsers_word_on_strings_never_changes_an_answer(title, name, value, limit):
    """Skipping the walk over every string (``text_bound``) answers as the walk would: the
    same refusals of NUL, lone surrogates and long text, the same data when valid."""
    body = f'{{"title": "{title}", "{name}": "{value}"}}'.encode()
    parsed = parse_body(body, "application/json")

    def answer(text_bound: int | None) -> Any:
        try:
            return validate_record(parsed.items[0], max_string=limit, text_bound=text_bound).data
        except InvalidRecord as exc:
            return exc.errors

    assert answer(parsed.text_bound) == answer(None)
