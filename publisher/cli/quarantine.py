"""``publisher quarantine``: list, show, replay and prune what could not be taken in."""

from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from publisher.cli.common import echo_json, inbox, services
from publisher.errors import PublisherError
from publisher.inbox import InboxProcessor
from publisher.models import QuarantineItem
from publisher.quarantine import get_quarantined, list_quarantined, quarantine_dict


def _processor() -> InboxProcessor:
    return inbox()


@click.group("quarantine")
def quarantine_group() -> None:
    """Payloads that failed parsing, validation or the secured policy, and why."""


@quarantine_group.command("list")
@click.option("--source", default=None, help="Only this source's items.")
@click.option("--all", "everything", is_flag=True, help="Include replayed items.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 500))
@with_appcontext
def quarantine_list(source: str | None, everything: bool, limit: int) -> None:
    """One line per item: id, source, reason, fields in error."""
    with services().sessions() as session:
        rows, _ = list_quarantined(
            session, source=source, replayed=None if everything else False, limit=limit
        )
    for row in rows:
        state = "replayed" if row.replayed_at else "held"
        fields = ",".join(sorted(row.errors or {})) or "-"
        click.echo(f"{row.id}\t{row.source}\t{row.reason}\t{state}\t{fields}")


@quarantine_group.command("show")
@click.argument("item_id", type=int)
@with_appcontext
def quarantine_show(item_id: int) -> None:
    """The item as JSON, payload included."""
    try:
        with services().sessions() as session:
            row = get_quarantined(session, item_id)
    except PublisherError as exc:
        raise click.ClickException(exc.message) from None
    echo_json(quarantine_dict(row, detail=True))


@quarantine_group.command("replay")
@click.argument("item_ids", nargs=-1, type=int)
@click.option("--all", "everything", is_flag=True, help="Replay every item not yet replayed.")
@with_appcontext
def quarantine_replay(item_ids: tuple[int, ...], everything: bool) -> None:
    """Run items through intake again, after a fix; exits 1 if any still fails."""
    ids = list(item_ids)
    if everything:
        with services().sessions() as session:
            query = select(QuarantineItem.id).where(QuarantineItem.replayed_at.is_(None))
            ids += list(session.scalars(query.order_by(QuarantineItem.id)))
    if not ids:
        raise click.UsageError("give item ids or --all")
    processor = _processor()
    failed = 0
    for item_id in ids:
        try:
            outcome = processor.replay(item_id)
        except PublisherError as exc:
            failed += 1
            click.echo(f"{item_id}\tfailed\t{exc.message}\t{','.join(sorted(exc.errors))}")
            continue
        click.echo(f"{item_id}\t{outcome.status}")
    if failed:
        sys.exit(1)


@quarantine_group.command("prune")
@click.option("--days", type=float, default=None, help="Keep this many days (default: config).")
@with_appcontext
def quarantine_prune(days: float | None) -> None:
    """Delete quarantine items (and finished inbox rows) past their retention."""
    removed = _processor().prune(quarantine_days=days)
    click.echo(f"{removed} removed")


def register(cli: click.Group) -> None:
    cli.add_command(quarantine_group, "quarantine")
