"""Request bodies to raw items: every form, and every hostile input refused fast and cleanly."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from publisher.errors import MalformedInput, TooLarge, UnsupportedType
from publisher.parsing import ACCEPTED_TYPES, Parsed, parse_body, parse_file

DATA = Path(__file__).parent / "data"
SEED_MD = (DATA / "seed-record.md").read_bytes()
SEED_JSON = (DATA / "seed-record.json").read_bytes()
# The seed's front matter alone is a plain YAML document.
SEED_YAML = SEED_MD.split(b"---\n")[1]


def _malformed(body: bytes, content_type: str = "application/json") -> MalformedInput:
    started = time.perf_counter()
    with pytest.raises(MalformedInput) as info:
        parse_body(body, content_type)
    assert time.perf_counter() - started < 0.5, "hostile input must be refused quickly"
    assert info.value.status == 400
    assert info.value.errors["_body"]
    return info.value


# -- the seed record in every form -------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (SEED_MD, "text/markdown"),
        (SEED_MD, "text/markdown; charset=UTF-8"),
        (SEED_YAML, "application/yaml"),
        (SEED_YAML, "application/x-yaml"),
        (SEED_YAML, "text/yaml"),
    ],
)
def test_seed_yaml_forms_keep_yaml_types(body: bytes, content_type: str) -> None:
    parsed = parse_body(body, content_type)
    assert parsed.batch is False
    [record] = parsed.items
    assert record["publishedDateTime"] == datetime(2022, 5, 23, 13, 36, tzinfo=UTC)
    assert record["heat"] == -1
    assert record["published"] is False
    assert len(record["related"]) == 4
    assert record["related"][0]["images"][0]["isCached"] is True


def test_seed_json_is_one_record() -> None:
    parsed = parse_body(SEED_JSON, "application/json; charset=utf-8")
    assert parsed == Parsed(items=[json.loads(SEED_JSON)], batch=False)


def test_markdown_body_is_the_text_after_the_front_matter() -> None:
    body = b"---\ntitle: Hello\n---\n\n# Heading\n\n    code block\n\n"
    [record] = parse_body(body, "text/markdown").items
    assert record == {"title": "Hello", "body": "# Heading\n\n    code block"}


def test_markdown_without_text_has_an_empty_body() -> None:
    [record] = parse_body(SEED_MD, "text/markdown").items
    assert record["body"] == ""


def test_markdown_body_given_twice_is_refused() -> None:
    _malformed(b"---\ntitle: x\nbody: one\n---\ntwo\n", "text/markdown")


@pytest.mark.parametrize(
    "body",
    [b"# no front matter\n", b"---\ntitle: never closed\n", b"---\n- a list\n---\ntext\n"],
)
def test_markdown_needs_a_closed_mapping_front_matter(body: bytes) -> None:
    _malformed(body, "text/markdown")


def test_byte_order_mark_is_dropped() -> None:
    assert parse_body(b"\xef\xbb\xbf" + SEED_JSON, "application/json").items


# -- batches -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"title": "caf\\u00e9 \\ud7ff"}', "application/json"),
        (b'[{"title": "one"}, {"title": "two"}]', "application/json"),
        (b'{"title": "one"}\n{"title": "\\u0001"}\n', "application/x-ndjson"),
    ],
)
def test_json_vouches_for_its_strings_when_no_escape_can_make_nul_or_a_surrogate(
    body: bytes, content_type: str
) -> None:
    """Validation then skips its walk over every string (``Parsed.text_bound``)."""
    parsed = parse_body(body, content_type)
    longest = max(len(line) for line in body.decode().split("\n"))
    assert parsed.text_bound == longest
    assert all(len(v) <= longest for item in parsed.items for v in (*item, *item.values()))


@pytest.mark.parametrize(
    "escape", [b"\\u0000", b"\\ud800", b"\\uDFFF", b"\\ud83d\\ude00", b"\\\\u0000"]
)
def test_json_that_may_hold_nul_or_a_surrogate_leaves_the_strings_to_validation(
    escape: bytes,
) -> None:
    """A pair (an emoji) or an escaped backslash only looks like one: the walk decides."""
    assert parse_body(b'{"title": "a' + escape + b'"}', "application/json").text_bound is None


@pytest.mark.parametrize("content_type", ["application/yaml", "text/markdown"])
def test_yaml_leaves_the_strings_to_validation(content_type: str) -> None:
    body = b"---\ntitle: x\n---\n" if content_type == "text/markdown" else b"title: x\n"
    assert parse_body(body, content_type).text_bound is None


def test_json_array_is_a_batch() -> None:
    record = json.loads(SEED_JSON)
    parsed = parse_body(json.dumps([record, record]).encode(), "application/json")
    assert parsed.batch is True
    assert parsed.items == [record, record]


@pytest.mark.parametrize("content_type", ["application/x-ndjson", "application/jsonl"])
def test_ndjson_is_a_batch_skipping_blank_lines(content_type: str) -> None:
    line = json.dumps(json.loads(SEED_JSON)).encode()
    parsed = parse_body(line + b"\n\n" + line + b"\r\n", content_type)
    assert parsed.batch is True
    assert len(parsed.items) == 2
    assert parsed.items[1]["heat"] == -1


def test_single_line_ndjson_is_still_a_batch() -> None:
    assert parse_body(b'{"title": "x"}', "application/x-ndjson") == Parsed([{"title": "x"}], True)


def test_ndjson_error_names_the_line() -> None:
    error = _malformed(b'{"title": "ok"}\n\n{"title": \n', "application/x-ndjson")
    assert "line 3" in error.message


def test_multi_document_yaml_is_a_batch() -> None:
    parsed = parse_body(b"---\ntitle: a\n---\ntitle: b\n...\n", "application/yaml")
    assert parsed == Parsed(items=[{"title": "a"}, {"title": "b"}], batch=True)


def test_yaml_list_is_a_batch() -> None:
    parsed = parse_body(b"- title: a\n- title: b\n", "application/yaml")
    assert parsed == Parsed(items=[{"title": "a"}, {"title": "b"}], batch=True)


@pytest.mark.parametrize(
    ("body", "content_type"), [(b"[]", "application/json"), (b"---\n...\n", "application/yaml")]
)
def test_empty_batch_is_refused(body: bytes, content_type: str) -> None:
    _malformed(body, content_type)


def test_batch_size_is_bounded() -> None:
    with pytest.raises(TooLarge):
        parse_body(b"[{}, {}, {}]", "application/json", max_items=2)
    assert len(parse_body(b"[{}, {}]", "application/json", max_items=2).items) == 2


# -- malformed input ---------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"  \n\t "])
def test_empty_body_is_malformed(body: bytes) -> None:
    _malformed(body)


def test_malformed_json_says_line_and_column() -> None:
    error = _malformed(b'{\n  "title": "x",\n  "heat": -1,,\n}')
    assert "line 3, column 14" in error.message
    assert error.errors["_body"] == [error.message]


def test_malformed_yaml_says_line_and_column() -> None:
    error = _malformed(b"title: x\nrelated: [a, b\nheat: -1\n", "application/yaml")
    assert "line 3" in error.message and "column" in error.message


def test_front_matter_error_line_counts_from_the_file_start() -> None:
    error = _malformed(b"---\ntitle: ok\nheat: [1,\n---\ntext\n", "text/markdown")
    assert "line 4" in error.message  # the closing --- is where the flow list breaks


def test_deeply_nested_json_is_refused_fast() -> None:
    error = _malformed(b"[" * 100_000)
    assert "too deeply" in error.message


def test_deep_nesting_inside_strings_does_not_count() -> None:
    body = json.dumps({"title": "[" * 1000 + '\\"{' * 100}).encode()
    assert parse_body(body, "application/json").items[0]["title"].startswith("[[[")


def test_json_depth_limit_is_configurable() -> None:
    body = b'{"a": ' * 5 + b"1" + b"}" * 5
    assert parse_body(body, "application/json", max_depth=5).items
    with pytest.raises(MalformedInput):
        parse_body(body, "application/json", max_depth=4)


def test_unterminated_strings_of_quotes_scan_in_linear_time() -> None:
    _malformed(b'["' + b'\\"' * 1_000_000 + b"[" * 100)


def test_deeply_nested_yaml_is_refused() -> None:
    _malformed(b"a: " + b"[" * 10_000 + b"]" * 10_000, "application/yaml")


def test_yaml_alias_bomb_is_refused_fast() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    error = _malformed("\n".join(lines).encode(), "application/yaml")
    assert "alias" in error.message


def test_many_aliases_are_refused() -> None:
    body = "base: &b x\nlist: [" + ", ".join(["*b"] * 500) + "]\n"
    assert "alias" in _malformed(body.encode(), "application/yaml").message


def test_a_few_aliases_are_fine() -> None:
    body = b"p: &p {name: Example, domain: example.org}\nr: [{provider: *p}, {provider: *p}]\n"
    [item] = parse_body(body, "application/yaml").items
    assert item["r"][1]["provider"] == {"name": "Example", "domain": "example.org"}


@pytest.mark.parametrize(
    "body",
    [
        b"title: !!python/object/apply:os.system ['echo hacked']\n",
        b"title: !!python/name:os.system\n",
        b"!!python/object/new:os.system [echo hacked]\n",
    ],
)
def test_python_tags_are_refused(body: bytes) -> None:
    error = _malformed(body, "application/yaml")
    assert "line 1" in error.message


def test_python_tag_in_front_matter_is_refused() -> None:
    _malformed(
        b"---\ntitle: !!python/object/apply:os.system ['echo hacked']\n---\n", "text/markdown"
    )


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"\xff\xfe{}", "application/json"),
        (b'{"title": "caf\xe9"}', "application/json"),
        (b"title: \xc3\x28\n", "application/yaml"),
        (b"---\ntitle: \x80\n---\n", "text/markdown"),
    ],
)
def test_invalid_utf8_is_malformed(body: bytes, content_type: str) -> None:
    assert "UTF-8" in _malformed(body, content_type).message


@pytest.mark.parametrize(
    ("body", "content_type", "key"),
    [
        (b'{"title": "a", "title": "b"}', "application/json", "title"),
        (b'[{"provider": {"name": "a", "name": "b"}}]', "application/json", "name"),
        (b"title: a\ntitle: b\n", "application/yaml", "title"),
        (b"---\nprovider: {name: a, name: b}\n---\n", "text/markdown", "name"),
    ],
)
def test_duplicate_keys_are_refused(body: bytes, content_type: str, key: str) -> None:
    assert f"duplicate key {key!r}" in _malformed(body, content_type).message


def test_yaml_merge_keys_may_override() -> None:
    body = b"base: &b {type: article, quality: 1}\nrecord:\n  <<: *b\n  quality: 2\n"
    [item] = parse_body(body, "application/yaml").items
    assert item["record"] == {"type": "article", "quality": 2}


@pytest.mark.parametrize("body", [b'{"heat": NaN}', b'{"heat": Infinity}', b'{"heat": -Infinity}'])
def test_non_json_numbers_are_refused(body: bytes) -> None:
    _malformed(body)


def test_huge_integer_is_malformed_not_a_crash() -> None:
    _malformed(b'{"heat": ' + b"9" * 10_000 + b"}")


# -- content types -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        "text/markdown; charset=utf-16",
    ],
)
def test_unsupported_content_type_is_415_listing_accepted_types(content_type: str | None) -> None:
    with pytest.raises(UnsupportedType) as info:
        parse_body(b"{}", content_type)
    assert info.value.status == 415
    assert all(accepted in info.value.message for accepted in ACCEPTED_TYPES)


def test_content_type_is_case_insensitive_with_parameters() -> None:
    assert parse_body(b"{}", 'Application/JSON; charset="UTF-8"; foo=bar').items == [{}]


# -- files -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["seed-record.md", "seed-record.json"])
def test_parse_file_by_extension(name: str) -> None:
    [record] = parse_file(DATA / name).items
    assert record["heat"] == -1


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".ndjson", ".jsonl", ".markdown"])
def test_parse_file_other_extensions(suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"record{suffix}"
    if suffix == ".markdown":
        path.write_bytes(SEED_MD)
    elif suffix in (".ndjson", ".jsonl"):
        path.write_bytes(json.dumps(json.loads(SEED_JSON)).encode() + b"\n")
    else:
        path.write_bytes(SEED_YAML)
    assert parse_file(path).items[0]["heat"] == -1


def test_parse_file_unknown_extension_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "record.txt"
    path.write_text("title: x")
    with pytest.raises(UnsupportedType):
        parse_file(path)
