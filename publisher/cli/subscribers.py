"""``publisher subscribers add|list|remove|rotate-secret``: webhook subscribers, live.

The same keys as ``plugins.webhook.subscribers`` in YAML; every running server and worker
takes a change in within ``subscribers.refresh_seconds``, without a restart.
"""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from publisher import subscribers
from publisher.cli.common import echo_json_line
from publisher.subscription import EVENTS


@click.group("subscribers")
def subscribers_group() -> None:
    """Webhook subscribers added without a restart (YAML ones are listed, read-only)."""


@subscribers_group.command("add")
@click.argument("name")
@click.option("--url", required=True, help="Where to POST the events.")
@click.option("--secret", help="A whsec_... secret (default: a new one, printed once).")
@click.option("--event", "events", multiple=True, type=click.Choice(EVENTS), help="Repeatable.")
@click.option("--protected", is_flag=True, help="Also send decrypted protected fields.")
@click.option("--allow-private", is_flag=True, default=None, help="Allow private addresses.")
@click.option("--backfill", is_flag=True, help="Also send it what is live now.")
@with_appcontext
def add(
    name: str,
    url: str,
    secret: str | None,
    events: tuple[str, ...],
    protected: bool,
    allow_private: bool | None,
    backfill: bool,
) -> None:
    """Add a subscriber; prints it with its secret (shown only now), one JSON line."""
    services = current_app.extensions["publisher"]
    given = {"name": name, "url": url, "protected": protected}
    given |= {"secret": secret} if secret else {}
    given |= {"events": list(events)} if events else {}
    given |= {"allow_private": True} if allow_private else {}
    answer = subscribers.add(services.sessions, services.settings, given)
    if backfill:
        services.dispatcher.refresh(force=True)
        answer["backfill"] = services.dispatcher.reconcile(answer["output"])
    echo_json_line(answer)


@subscribers_group.command("list")
@with_appcontext
def list_() -> None:
    """One JSON object per line; no secrets."""
    services = current_app.extensions["publisher"]
    for item in subscribers.listing(services.sessions, services.settings):
        echo_json_line(item)


@subscribers_group.command("remove")
@click.argument("name")
@with_appcontext
def remove(name: str) -> None:
    """Remove a subscriber added through the API or the CLI; its open deliveries end."""
    services = current_app.extensions["publisher"]
    subscribers.remove(services.sessions, services.settings, name)
    click.echo(f"removed {name}")


@subscribers_group.command("rotate-secret")
@click.argument("name")
@click.option("--grace", type=click.FloatRange(min=0), help="Seconds the old secret still signs.")
@click.option("--secret", help="The new whsec_... secret (default: a new one).")
@with_appcontext
def rotate_secret(name: str, grace: float | None, secret: str | None) -> None:
    """Sign with a new secret, and with the old one too until the grace ends; prints it."""
    services = current_app.extensions["publisher"]
    echo_json_line(subscribers.rotate(services.sessions, services.settings, name, grace, secret))


def register(cli: click.Group) -> None:
    cli.add_command(subscribers_group)
