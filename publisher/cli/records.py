"""``publisher ingest``, ``validate`` and ``retract``."""

from __future__ import annotations

import getpass
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext
from tqdm import tqdm

from publisher.cli.common import echo_json_line, load_app, read_settings
from publisher.errors import PublisherError
from publisher.filecheck import check_files, read
from publisher.heap import freeze_startup_heap

SUFFIXES = {".md", ".markdown", ".json", ".ndjson", ".jsonl", ".yaml", ".yml"}
CHUNK = 500  # records per transaction when ingesting


def _files(paths: Iterable[str]) -> Iterator[Path]:
    for given in paths:
        path = Path(given)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES)
        else:
            yield path


@click.command("ingest")
@click.argument("paths", nargs=-1, required=True)
@click.option("--source", default="cli", show_default=True, help="Source name for policy.")
@click.option(
    "--jobs",
    type=click.IntRange(min=0),
    default=lambda: default_jobs(os.cpu_count()),
    show_default="the CPUs but one",
    help="Processes that read and validate files while this one stores (0: this one).",
)
def ingest(paths: tuple[str, ...], source: str, jobs: int) -> None:
    """Store records from files, folders (recursively) or - (stdin), with a progress bar."""
    files = list(_files(paths))
    # the workers read and validate while this process builds its app (filecheck)
    with check_files(files, read_settings(), jobs) as checked, load_app().app_context():
        freeze_startup_heap()  # the app's objects out of the collections storing sets off
        counts, problems = _store(checked, len(files), source)
    for line in problems:
        click.echo(line, err=True)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing"
    click.echo(f"{len(files)} files: {summary}")
    if counts["invalid"] or counts["unreadable"] or counts["gone"]:  # gone: a purged id
        sys.exit(1)


def default_jobs(cpus: int | None) -> int:
    """One validating process per CPU but the one this process keeps busy storing.

    This process is CPU-bound too (the ``secured`` policy, the hooks, the store): a worker
    more than the CPUs left only takes turns with it, and each one costs a start.
    """
    return max((cpus or 1) - 1, 0)


def _store(
    checked: Iterable[tuple[Path, Any]], files: int, source: str
) -> tuple[Counter[str], list[str]]:
    """Store what the workers checked, ``CHUNK`` records a transaction: counts, problems."""
    intake = current_app.extensions["publisher.intake"]
    counts: Counter[str] = Counter()
    problems: list[str] = []
    pending: list[tuple[str, Any, Any]] = []

    def flush() -> None:
        # the worker's sweeper enqueues what this stores: no queue write per delivery here
        raws, done = [raw for _, raw, _ in pending], [result for _, _, result in pending]
        results = intake.take(raws, source=source, defer=True, checked=done)
        for (where, _, _), result in zip(pending, results, strict=True):
            counts[result.status] += 1
            for field, messages in result.errors.items():
                problems.append(f"{where}: {field}: {'; '.join(messages)}")
        pending.clear()

    bar = tqdm(checked, total=files, desc="ingest", unit="file", file=sys.stderr, mininterval=0.5)
    for path, items in bar:
        if isinstance(items, Exception):
            counts["unreadable"] += 1
            problems.append(f"{path}: {_message(items)}")
            continue
        many = len(items) > 1
        pending.extend(
            (f"{path}" + (f"[{i}]" if many else ""), raw, result)
            for i, (raw, result) in enumerate(items)
        )
        if len(pending) >= CHUNK:
            flush()
    if pending:
        flush()
    return counts, problems


@click.command("validate")
@click.argument("paths", nargs=-1, required=True)
@click.option("--source", default="cli", show_default=True, help="Source name for policy.")
@click.option("--strict", is_flag=True, help="Reject unknown fields (else: the strict setting).")
def validate(paths: tuple[str, ...], source: str, strict: bool) -> None:
    """Dry run of ``ingest``: its checks, nothing stored or created; exit 1 if any is invalid.

    The checks are ``ingest``'s own (publisher.intake.dry_run): the schema, strict mode from
    the settings, a derivable id, and the ``secured`` policy of ``--source`` with the keys
    of the keyring folder; a record the policy quarantines is counted as such.
    """
    from publisher.config import load_settings
    from publisher.intake import dry_run
    from publisher.secured import Keyring

    settings = load_settings()
    settings["strict"] = settings["strict"] or strict
    keyring = Keyring.load(settings["keys_dir"])
    counts: Counter[str] = Counter()
    for path in _files(paths):
        try:
            items = read(path)
        except (PublisherError, OSError) as exc:
            counts["invalid"] += 1
            click.echo(f"{path}: {_message(exc)}", err=True)
            continue
        for index, raw in enumerate(items):
            where = f"{path}" + (f"[{index}]" if len(items) > 1 else "")
            result = dry_run(raw, settings, keyring, source)
            counts[result.status] += 1
            for field, messages in result.errors.items():
                click.echo(f"{where}: {field}: {'; '.join(messages)}", err=True)
            for warning in result.warnings:
                click.echo(f"{where}: warning: {warning}", err=True)
            if result.status == "quarantined":
                click.echo(f"{where}: would be quarantined (secured policy)", err=True)
    total = sum(counts.values())
    quarantined = f", {counts['quarantined']} quarantined" if counts["quarantined"] else ""
    click.echo(f"{total} records checked, {counts['invalid']} invalid{quarantined}")
    if counts["invalid"]:
        sys.exit(1)


@click.command("retract")
@click.argument("record_ids", nargs=-1, required=True)
@with_appcontext
def retract(record_ids: tuple[str, ...]) -> None:
    """Retract records from every output that has them; one JSON line per record."""
    intake = current_app.extensions["publisher.intake"]
    for rid in record_ids:
        outcome = intake.retract(rid)
        echo_json_line(
            {"id": outcome.id, "status": outcome.status, "deliveries": len(outcome.deliveries)}
        )


@click.command("purge")
@click.argument("record_ids", nargs=-1, required=True)
@click.option(
    "--now", "at_once", is_flag=True, help="Erase without waiting for the outputs' receipts."
)
@with_appcontext
def purge(record_ids: tuple[str, ...], at_once: bool) -> None:
    """Retract records everywhere, then erase them, keeping a tombstone; one JSON line each.

    Without ``--now`` the erasure waits for every output's receipt of the retraction (the
    worker's sweeper finishes it): ``status`` is ``pending`` until then, ``purged`` after.
    """
    eraser = current_app.extensions["publisher.eraser"]
    who = f"cli:{getpass.getuser()}"
    for rid in record_ids:
        echo_json_line(eraser.purge(rid, who, at_once=at_once).to_dict())


def _message(exc: Exception) -> str:
    if isinstance(exc, PublisherError):
        details = "; ".join(f"{k}: {', '.join(v)}" for k, v in exc.errors.items())
        return f"{exc.message}" + (f" ({details})" if details else "")
    return str(exc)


def register(cli: click.Group) -> None:
    for command in (ingest, validate, retract, purge):
        cli.add_command(command)
