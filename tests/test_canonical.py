"""The canonical form a JWS covers: RFC 8785 (JCS) plus our documented normalisation."""

from __future__ import annotations

import struct
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
import yaml

from publisher.secured.canonical import canonical_bytes, canonical_fields, canonical_json, es_number


def test_documented_example() -> None:
    record = {
        "title": "Hi",
        "heat": -1,
        "publishedDateTime": "2022-05-23T15:36:00+02:00",
        "secured": "...",
    }
    expected = b'{"heat":-1,"publishedDateTime":"2022-05-23T13:36:00Z","title":"Hi"}'
    assert canonical_bytes(record) == expected


def test_rfc8785_member_order_is_by_utf16_code_units() -> None:
    # RFC 8785 section 3.2.3
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    names = [
        "\\r",
        "1",
        "\u0080",
        "\u00f6",
        "\u20ac",
        "\U0001f600",
        "\ufb33",
    ]
    text = canonical_json(value)
    positions = [text.index(f'"{n}"') for n in names]
    assert positions == sorted(positions)


@pytest.mark.parametrize(
    ("bits", "expected"),
    [  # RFC 8785 appendix B
        ("0000000000000000", "0"),
        ("8000000000000000", "0"),
        ("0000000000000001", "5e-324"),
        ("8000000000000001", "-5e-324"),
        ("7fefffffffffffff", "1.7976931348623157e+308"),
        ("ffefffffffffffff", "-1.7976931348623157e+308"),
        ("4340000000000000", "9007199254740992"),
        ("c340000000000000", "-9007199254740992"),
        ("4430000000000000", "295147905179352830000"),
        ("44b52d02c7e14af5", "9.999999999999997e+22"),
        ("44b52d02c7e14af6", "1e+23"),
        ("44b52d02c7e14af7", "1.0000000000000001e+23"),
        ("444b1ae4d6e2ef4e", "999999999999999700000"),
        ("444b1ae4d6e2ef4f", "999999999999999900000"),
        ("444b1ae4d6e2ef50", "1e+21"),
        ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
        ("3eb0c6f7a0b5ed8d", "0.000001"),
        ("41b3de4355555553", "333333333.3333332"),
        ("41b3de4355555554", "333333333.33333325"),
        ("41b3de4355555555", "333333333.3333333"),
        ("41b3de4355555556", "333333333.3333334"),
        ("41b3de4355555557", "333333333.33333343"),
        ("becbf647612f3696", "-0.0000033333333333333333"),
        ("43143ff3c1cb0959", "1424953923781206.2"),
    ],
)
def test_rfc8785_numbers(bits: str, expected: str) -> None:
    (value,) = struct.unpack(">d", bytes.fromhex(bits))
    assert es_number(value) == expected


def test_strings_escape_like_json_stringify() -> None:
    assert canonical_json('a\u0001\n"\\/\u2028é') == '"a\\u0001\\n\\"\\\\/\u2028é"'


def test_yaml_datetime_and_json_string_give_the_same_bytes() -> None:
    from_yaml = yaml.safe_load("publishedDateTime: 2022-05-23T13:36:00Z\ntitle: x\n")
    assert isinstance(from_yaml["publishedDateTime"], datetime)
    from_json = {"publishedDateTime": "2022-05-23T13:36:00Z", "title": "x"}
    assert canonical_bytes(from_yaml) == canonical_bytes(from_json)


def test_nested_date_times_and_offsets() -> None:
    fields = canonical_fields(
        {
            "related": [{"publishedDateTime": "2022-05-23T10:24:00.500-01:00"}],
            "when": datetime(2022, 5, 23, 12, 0, tzinfo=timezone(timedelta(hours=2))),
            "day": date(2022, 5, 23),
            "noted": "2022-05-23T10:24:00+01:00",
        }
    )
    assert fields["related"][0]["publishedDateTime"] == "2022-05-23T11:24:00.5Z"
    assert fields["when"] == "2022-05-23T10:00:00Z"
    assert fields["day"] == "2022-05-23"
    assert fields["noted"] == "2022-05-23T10:24:00+01:00"  # only *DateTime members


def test_secured_is_left_out_and_body_trimmed() -> None:
    a = canonical_bytes({"title": "t", "body": "\n# Hi\n\n", "secured": "x"})
    b = canonical_bytes({"title": "t", "body": "# Hi"})
    assert a == b == b'{"body":"# Hi","title":"t"}'


def test_any_change_changes_the_bytes() -> None:
    base = {"title": "t", "heat": -1, "topics": ["AI"], "published": False}
    for changed in ({**base, "heat": 0}, {**base, "topics": ["ai"]}, {**base, "published": True}):
        assert canonical_bytes(changed) != canonical_bytes(base)


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), 2**53, {1: "x"}, b"bytes", {"a": {1, 2}}]
)
def test_non_json_data_is_refused(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        canonical_json(value)


def test_naive_datetime_is_taken_as_utc() -> None:
    assert canonical_fields({"x": datetime(2022, 1, 1)})["x"] == "2022-01-01T00:00:00Z"
    aware = datetime(2022, 1, 1, tzinfo=UTC)
    assert canonical_fields({"x": aware}) == canonical_fields({"x": datetime(2022, 1, 1)})
