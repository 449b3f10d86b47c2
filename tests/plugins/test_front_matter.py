"""The files output's YAML writer: the very text ``yaml.dump`` writes, for any plain data."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from publisher_plugins import front_matter

DATA = Path(__file__).parent.parent / "data"

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
TRICKY = st.sampled_from(
    ["", "yes", "No", "on", "~", "null", "1.0", "0x1f", "1e3", "2026-12-02", "12:30", "#x",
     "a: b", "- a", "'q'", '"q"', " lead", "trail ", "a\nb", "<<", "=", "é", "\u2028", "…"]
)  # fmt: skip
#: lines about as long as the width, where libyaml folds at a space
LONG = st.text(st.sampled_from("ab é'"), min_size=980, max_size=1010)
#: keys about as long as a simple key may be (in bytes: ``é`` is two)
LONG_KEY = st.text(st.sampled_from("ké"), min_size=60, max_size=130)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT
    | TRICKY
    | LONG
)
PLAIN = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(TEXT | TRICKY | LONG_KEY, children, max_size=4)
    ),
    max_leaves=30,
)


def reference(data: object) -> str:
    return yaml.dump(
        data, Dumper=front_matter.DUMPER, sort_keys=False, allow_unicode=True, width=1000
    )


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(TEXT | TRICKY | LONG_KEY, PLAIN, max_size=8))
def test_writes_what_yaml_dump_writes(data):
    assert front_matter.dump(data) == reference(data)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text("abc:#- '", max_size=6), st.text("abc:#- '\"-.?", max_size=8)))
def test_indicators_and_quotes_are_written_as_libyaml_writes_them(data):
    assert front_matter.dump(data) == reference(data)


def test_a_record_front_matter_is_the_same_text():
    record = yaml.safe_load((DATA / "seed-record.json").read_text())
    assert front_matter.dump(record) == reference(record)


def test_a_record_is_written_without_the_emitter(monkeypatch):
    """The seed record's text is written directly: libyaml's emitter is not called."""
    record = yaml.safe_load((DATA / "seed-record.json").read_text())
    expected = reference(record)

    def refuse(*args, **kwargs):
        raise AssertionError("the emitter was called")

    monkeypatch.setattr(yaml, "emit", refuse)
    monkeypatch.setattr(yaml, "dump", refuse)
    assert front_matter.dump(record) == expected


def test_what_it_does_not_write_itself_goes_to_yaml_dump():
    shared = ["a"]
    data = {"first": shared, "again": shared, "when": __import__("datetime").date(2026, 12, 2)}
    assert front_matter.dump(data) == reference(data)
    assert "&id001" in front_matter.dump(data)  # the alias PyYAML writes for a shared list
