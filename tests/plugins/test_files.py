"""The files output: safe names, atomic writes, moves on update, removal on retract."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from publisher.errors import ConfigError
from publisher.outputs import Event, OutputRecord
from publisher_plugins import files


def make_output(tmp_path: Path, **options: Any) -> files.FilesOutput:
    config = {"data_dir": str(tmp_path), "plugins": {"files": options}}
    (output,) = files.register_outputs(config=config)
    return output


def record(record_id: str = "rec-1", revision: int = 1, **fields: Any) -> OutputRecord:
    base = {"title": "Hello world", "category": "news", "type": "article", "published": True}
    base.update(fields)
    return OutputRecord(id=record_id, revision=revision, fields=base, body="Some *text*.")


def event(rec: OutputRecord, kind: str = "published") -> Event:
    return Event(
        kind=kind,  # type: ignore[arg-type]
        delivery_id=f"d-{rec.id}-{rec.revision}-{kind}",
        record_id=rec.id,
        revision=rec.revision,
        occurred_at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def markdown_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.md") if ".publisher" not in p.parts)


def front_matter(path: Path) -> dict[str, Any]:
    text = path.read_text("utf-8")
    assert text.startswith("---\n")
    front, _, body = text[4:].partition("\n---\n")
    return yaml.safe_load(front)


def test_default_folder_and_layout(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    assert output.name == "files" and output.accepts_protected is False
    rec = record(title="UK fines US AI firm £7.5m over mass image collection")
    output.publish(rec, event(rec))
    (path,) = markdown_files(tmp_path / "site")
    assert path.parent == (tmp_path / "site" / "news").resolve()
    assert path.name.startswith("uk-fines-us-ai-firm-7-5m-over-mass-image-collection-")
    text = path.read_text("utf-8")
    assert text.rstrip().endswith("Some *text*.")
    meta = front_matter(path)
    assert meta["title"] == "UK fines US AI firm £7.5m over mass image collection"
    assert meta["params"]["publisher"]["id"] == "rec-1" and meta["categories"] == ["news"]


def test_seed_record_round_trips_through_front_matter(tmp_path: Path) -> None:
    seed = (Path(__file__).parents[1] / "data" / "seed-record.md").read_text("utf-8")
    fields = yaml.safe_load(seed.split("---\n")[1])
    fields["published"] = True
    fields["publishedDateTime"] = fields["publishedDateTime"].isoformat()
    for item in fields["related"]:
        item["publishedDateTime"] = item["publishedDateTime"].isoformat()
    fields.pop("secured")
    rec = OutputRecord(id="seed", revision=1, fields=fields, body="")
    output = make_output(tmp_path)
    output.publish(rec, event(rec))
    (path,) = markdown_files(tmp_path / "site")
    meta = front_matter(path)
    assert meta["params"]["publisher"]["fields"]["related"] == fields["related"]
    assert meta["date"] == fields["publishedDateTime"]
    assert "secured" not in meta


@pytest.mark.parametrize(
    "title",
    [
        "../../etc/passwd",
        "..",
        "/absolute/path",
        "a\x00b\x01c\x1f\x7f\nd\r\te",
        "\x00\x01\x02",
        "CON",
        "😀" * 300,
        "x" * 5000,
        "C:\\Windows\\system32",
    ],
)
def test_hostile_titles_stay_inside_the_folder(tmp_path: Path, title: str) -> None:
    output = make_output(tmp_path, folder=str(tmp_path / "out"))
    rec = record(title=title, category="../../../escape")
    output.publish(rec, event(rec))
    root = (tmp_path / "out").resolve()
    (path,) = markdown_files(tmp_path)
    assert path.resolve().is_relative_to(root)
    name = path.name
    assert len(name) < 90
    assert all(ch.isascii() and ch.isprintable() for ch in name)
    assert "/" not in name and "\\" not in name and not name.startswith(".")
    assert front_matter(path)["title"] == title


def test_two_records_with_one_title_get_two_files(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    for rid in ("a", "b"):
        rec = record(record_id=rid, title="Same title")
        output.publish(rec, event(rec))
    paths = markdown_files(tmp_path / "site")
    assert len(paths) == 2
    assert {front_matter(p)["params"]["publisher"]["id"] for p in paths} == {"a", "b"}


def test_update_is_idempotent_and_moves_on_category_or_title_change(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    first = record(revision=1)
    output.publish(first, event(first))
    output.publish(first, event(first))  # a duplicate delivery
    assert len(markdown_files(tmp_path / "site")) == 1
    moved = record(revision=2, category="tech", title="New title")
    output.publish(moved, event(moved, "updated"))
    (path,) = markdown_files(tmp_path / "site")
    assert path.parent.name == "tech" and path.name.startswith("new-title-")


def test_a_late_retry_of_an_old_revision_changes_nothing(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    old, new = record(revision=1, title="Old"), record(revision=2, title="New")
    output.publish(new, event(new))
    output.publish(old, event(old))
    (path,) = markdown_files(tmp_path / "site")
    assert front_matter(path)["title"] == "New"
    gone = record(revision=3, title="New")
    output.retract(gone, event(gone, "retracted"))
    output.publish(new, event(new))  # retried after the retraction: stays retracted
    assert markdown_files(tmp_path / "site") == []


def test_retract_removes_the_file_and_is_idempotent(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    rec = record()
    output.publish(rec, event(rec))
    output.retract(rec, event(rec, "retracted"))
    output.retract(rec, event(rec, "retracted"))
    assert markdown_files(tmp_path / "site") == []
    # Retracting a record never written (index lost) is fine too.
    other = record(record_id="never")
    output.retract(other, event(other, "retracted"))


def test_layouts(tmp_path: Path) -> None:
    flat = make_output(tmp_path, folder=str(tmp_path / "flat"), layout="flat")
    by_type = make_output(
        tmp_path, folder=str(tmp_path / "typed"), layout="type", section_prefix="_"
    )
    rec = record(category=None)
    flat.publish(rec, event(rec))
    by_type.publish(rec, event(rec))
    (flat_path,) = markdown_files(tmp_path / "flat")
    assert flat_path.parent == (tmp_path / "flat").resolve()
    (typed_path,) = markdown_files(tmp_path / "typed")
    assert typed_path.parent.name == "_article"
    uncategorised = make_output(tmp_path, folder=str(tmp_path / "cat"))
    uncategorised.publish(rec, event(rec))
    assert markdown_files(tmp_path / "cat")[0].parent.name == "uncategorized"


def test_bad_configuration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        make_output(tmp_path, layout="by-date")
    with pytest.raises(ConfigError):
        make_output(tmp_path, section_prefix="../")


def test_no_temporary_files_are_left_and_threads_do_not_collide(tmp_path: Path) -> None:
    output = make_output(tmp_path)

    def work(i: int) -> None:
        for rev in range(1, 4):
            rec = record(record_id=f"r{i}", revision=rev, title=f"Title {i} v{rev}")
            output.publish(rec, event(rec))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    paths = markdown_files(tmp_path / "site")
    assert len(paths) == 8
    assert not [p for p in (tmp_path / "site").rglob("*") if p.name.startswith(".tmp-")]


def test_a_batch_ends_where_the_same_deliveries_one_by_one_end(tmp_path: Path) -> None:
    one, many = make_output(tmp_path / "one"), make_output(tmp_path / "many")
    recs = [record(f"rec-{n}", title=f"Story {n}") for n in range(5)]
    renamed = record("rec-1", revision=2, title="A new title")
    back = record("rec-2", revision=3, title="Story 2")  # retracted, then published again
    items = [(rec, event(rec)) for rec in recs] + [(renamed, event(renamed))]
    items += [(recs[2], event(record("rec-2", revision=2), "retracted")), (back, event(back))]
    for rec, evt in items:
        (one.retract if evt.kind == "retracted" else one.publish)(rec, evt)
    assert many.deliver_many(items) == [None] * len(items)

    def tree(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): p.read_text()
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "lock"
        }

    assert tree(one.folder) == tree(many.folder)
    names = [p.name for p in markdown_files(many.folder)]
    assert len(names) == 5 and any(n.startswith("a-new-title-") for n in names)


def test_a_refused_path_in_a_batch_fails_only_its_delivery(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    good, bad = record("good"), record("bad")
    outside = OSError("no")

    def path_for(rec: OutputRecord, folders: dict[str, Path] | None = None) -> Path:
        if rec.id == "bad":
            raise outside
        return files.FilesOutput.path_for(output, rec, folders)

    output.path_for = path_for  # type: ignore[method-assign]
    assert output.deliver_many([(bad, event(bad)), (good, event(good))]) == [outside, None]
    assert len(markdown_files(output.folder)) == 1


# -- the front matter mapping ----------------------------------------------------------------

HOSTILE_FIELDS = {
    "url": "/news/another-record/",
    "aliases": ["/"],
    "layout": "evil",
    "draft": True,
    "type": "page",
    "outputs": ["rss"],
    "slug": "../../index",
    "permalink": "/",
    "date": "1970-01-01T00:00:00Z",
    "params": {"url": "/"},
}


def at(rec: OutputRecord, kind: str = "published", when: datetime | None = None) -> Event:
    base = event(rec, kind)
    return Event(
        base.kind, base.delivery_id, base.record_id, base.revision, when or base.occurred_at
    )


def test_known_fields_map_to_hugo_keys_and_the_rest_is_namespaced(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    rec = record(
        topics=["AI", "Law"],
        excerpt="Short.",
        publishedDateTime="2022-05-23T13:36:00Z",
        **HOSTILE_FIELDS,
    )
    output.publish(rec, event(rec))
    (path,) = markdown_files(tmp_path / "site")
    meta = front_matter(path)
    assert meta == {
        "title": "Hello world",
        "date": "2022-05-23T13:36:00Z",
        "lastmod": "2024-01-02T03:04:05Z",
        "draft": False,
        "slug": path.stem,
        "tags": ["AI", "Law"],
        "categories": ["news"],
        "description": "Short.",
        "params": {
            "publisher": {
                "id": "rec-1",
                "revision": 1,
                "fields": {"published": True, **HOSTILE_FIELDS, "type": "page"},
            }
        },
    }


def test_jekyll_gets_its_own_keys_and_a_permalink_chosen_here(tmp_path: Path) -> None:
    output = make_output(tmp_path, generator="jekyll", section_prefix="_")
    rec = record(topics=["AI"], **HOSTILE_FIELDS)
    output.publish(rec, event(rec))
    (path,) = markdown_files(tmp_path / "site")
    meta = front_matter(path)
    assert path.parent.name == "_news"
    assert meta["permalink"] == f"/news/{path.stem}/" and meta["published"] is True
    assert meta["last_modified_at"] == "2024-01-02T03:04:05Z" and meta["tags"] == ["AI"]
    assert "layout" not in meta and "url" not in meta and "params" not in meta
    assert meta["publisher"]["fields"]["layout"] == "evil"


def test_without_a_publication_date_the_first_seen_time_is_the_date(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    first = record(revision=1)
    output.publish(first, at(first, when=datetime(2024, 3, 1, 12, tzinfo=UTC)))
    edited = record(revision=2, excerpt="Edited.")
    output.publish(edited, at(edited, "updated", datetime(2024, 3, 5, 8, tzinfo=UTC)))
    meta = front_matter(markdown_files(tmp_path / "site")[0])
    assert (meta["date"], meta["lastmod"]) == ("2024-03-01T12:00:00Z", "2024-03-05T08:00:00Z")


def test_a_retitle_or_recategorisation_keeps_the_old_urls_as_aliases(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    first = record(revision=1, title="First title")
    output.publish(first, event(first))
    (old,) = markdown_files(tmp_path / "site")
    retitled = record(revision=2, title="Second title")
    output.publish(retitled, event(retitled, "updated"))
    moved = record(revision=3, title="Second title", category="tech")
    output.publish(moved, event(moved, "updated"))
    (path,) = markdown_files(tmp_path / "site")
    second = f"/news/{path.stem}/"
    assert front_matter(path)["aliases"] == [f"/news/{old.stem}/", second]
    back = record(revision=4, title="First title", category="news")
    output.publish(back, event(back, "updated"))
    (path,) = markdown_files(tmp_path / "site")
    assert path.stem == old.stem
    assert front_matter(path)["aliases"] == [
        second,
        f"/tech/{path.stem.replace('first', 'second')}/",
    ]


def test_a_section_left_empty_is_removed(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    rec = record(category="Tech")
    output.publish(rec, event(rec))
    assert (tmp_path / "site" / "tech").is_dir()
    moved = record(revision=2, category="Science")
    output.publish(moved, event(moved, "updated"))
    assert not (tmp_path / "site" / "tech").exists()
    gone = record(revision=3, category="Science")
    output.retract(gone, event(gone, "retracted"))
    assert sorted(p.name for p in (tmp_path / "site").iterdir()) == [".publisher"]


@pytest.mark.parametrize(
    ("title", "slug"),
    [("東京", "東京"), ("Привет, мир!", "привет-мир"), ("Crème brûlée", "crème-brûlée")],
)
def test_non_latin_titles_keep_a_readable_slug(tmp_path: Path, title: str, slug: str) -> None:
    output = make_output(tmp_path)
    rec = record(title=title)
    output.publish(rec, event(rec))
    (path,) = markdown_files(tmp_path / "site")
    assert path.name == f"{slug}-{files.record_hash('rec-1')}.md"
    ascii_output = make_output(tmp_path / "ascii", slugs="ascii")
    ascii_output.publish(rec, event(rec))
    (ascii_path,) = markdown_files(ascii_output.folder)
    assert ascii_path.name.isascii() and not ascii_path.name.startswith("record-")


def test_a_category_named_like_a_taxonomy_gets_a_section_of_its_own(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    rec = record(category="Tags")
    output.publish(rec, event(rec))
    assert markdown_files(tmp_path / "site")[0].parent.name == "tags-section"


# -- the output contract: inventory() read from disk ----------------------------------------


def test_inventory_follows_publish_update_and_retract(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    assert output.inventory() == {}
    one, two = record("one"), record("two")
    output.deliver_many([(one, event(one)), (two, event(two))])
    output.publish(one, event(one))  # again: one copy, same content
    assert output.inventory() == {"one": 1, "two": 1}
    assert len(markdown_files(tmp_path / "site")) == 2
    newer = record("one", revision=3, title="Newer")
    output.publish(newer, event(newer, "updated"))
    older = record("one", revision=2, title="Older")
    output.publish(older, event(older, "updated"))  # late: changes nothing
    assert output.inventory() == {"one": 3, "two": 1}
    output.retract(two, event(two, "retracted"))
    output.retract(two, event(two, "retracted"))
    never = record("never")
    output.retract(never, event(never, "retracted"))
    assert output.inventory() == {"one": 3}
    # a fresh object on the same folder sees the same: the answer comes from disk
    assert make_output(tmp_path).inventory() == {"one": 3}


def test_a_retraction_is_remembered_until_a_newer_revision(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    rec = record("r", revision=2)
    output.publish(rec, event(rec))
    output.retract(rec, event(rec, "retracted"))  # a DELETE keeps the revision
    output.publish(rec, event(rec))
    output.publish(record("r", revision=1), event(record("r", revision=1)))
    assert output.inventory() == {}
    again = record("r", revision=3)
    output.publish(again, event(again, "updated"))
    assert output.inventory() == {"r": 3}


def test_a_file_deleted_by_hand_is_missing_from_the_inventory_until_republished(
    tmp_path: Path,
) -> None:
    output = make_output(tmp_path)
    rec = record("gone-by-hand")
    output.publish(rec, event(rec))
    markdown_files(tmp_path / "site")[0].unlink()
    assert output.inventory() == {}
    output.publish(rec, event(rec))  # what reconcile sends
    assert output.inventory() == {"gone-by-hand": 1}
    assert len(markdown_files(tmp_path / "site")) == 1


def test_a_batch_is_flushed_to_disk_once(tmp_path: Path, monkeypatch) -> None:
    """Pages and index entries of a batch share one flush (``syncfs`` waits for the whole
    disk on a busy machine: one a batch, not one per kind of file)."""
    from publisher import fileio

    flushes: list[int] = []
    real = fileio._flush
    monkeypatch.setattr(fileio, "_flush", lambda paths: (flushes.append(len(paths)), real(paths)))
    output = make_output(tmp_path)
    items = [(rec, event(rec)) for rec in (record("a"), record("b"), record("c"))]
    assert output.deliver_many(items) == [None, None, None]
    assert flushes == [6]  # three pages and three index entries
