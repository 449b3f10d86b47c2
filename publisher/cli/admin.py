"""Operator commands: tokens, sources, database, plugins, deliveries and outputs."""

from __future__ import annotations

import json
import secrets as _secrets
import sys
from base64 import b64encode

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from publisher import db
from publisher.cli.common import (
    echo_json_line,
    inbox,
    plugin_manager,
    read_settings,
    services,
)
from publisher.config import effective, load_settings
from publisher.db import transaction
from publisher.endpoints import is_paused
from publisher.errors import ConfigError, PublisherError
from publisher.models import Delivery, OutputState, Source, utcnow
from publisher.plugins import collect_outputs, describe_plugins
from publisher.settings_schema import check_plugin_settings
from publisher.tokens import SCOPES, create_token, list_tokens, revoke_token


@click.group("tokens")
def tokens() -> None:
    """API tokens (stored hashed; shown once)."""


@tokens.command("create")
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(SCOPES))
@click.option("--name", default="", help="A label to recognise the token by.")
@with_appcontext
def tokens_create(scopes: tuple[str, ...], name: str) -> None:
    """Print a new token on stdout, alone on its line."""
    with transaction(services().sessions) as session:
        token_id, token = create_token(session, scopes, name)
    click.echo(f"token {token_id} created with scopes {', '.join(scopes)}", err=True)
    click.echo(token)


@tokens.command("revoke")
@click.argument("token_id", type=int)
@with_appcontext
def tokens_revoke(token_id: int) -> None:
    """Revoke a token: at once here, within ``token_cache_seconds`` in running servers."""
    with transaction(services().sessions) as session:
        revoke_token(session, token_id)
    services().token_cache.clear()
    click.echo(f"token {token_id} revoked")


@tokens.command("list")
@with_appcontext
def tokens_list() -> None:
    """List tokens (never their value)."""
    with services().sessions() as session:
        rows = list_tokens(session)
    for row in rows:
        state = "revoked" if row.revoked_at else "active"
        click.echo(f"{row.id}\t{state}\t{','.join(row.scopes)}\t{row.name}")


@click.group("sources")
def sources() -> None:
    """Webhook senders and their signing secrets."""


@sources.command("add")
@click.argument("name")
@with_appcontext
def sources_add(name: str) -> None:
    """Create a source (or add a secret to it) and print the secret, alone on its line."""
    secret = "whsec_" + b64encode(_secrets.token_bytes(32)).decode()
    with transaction(services().sessions) as session:
        source = session.get(Source, name)
        if source is None:
            session.add(Source(name=name, secrets=[secret], created_at=utcnow()))
        else:
            source.secrets = [*source.secrets, secret]
    # this process's cache at once; other processes within webhooks.secrets_cache_seconds
    inbox().verifier.forget(name)
    click.echo(f"source {name!r}: POST /webhooks/{name}", err=True)
    click.echo(secret)


@sources.command("remove-secret")
@click.argument("name")
@click.argument("secret_or_prefix")
@with_appcontext
def sources_remove_secret(name: str, secret_or_prefix: str) -> None:
    """Remove one of NAME's secrets, given whole or by a prefix that matches only it.

    The last step of a rotation (docs/webhooks.md): this process forgets the secret at
    once, every other within ``webhooks.secrets_cache_seconds``.
    """
    if len(secret_or_prefix) < MIN_SECRET_PREFIX:
        raise click.BadParameter(
            f"give at least {MIN_SECRET_PREFIX} characters of the secret",
            param_hint="SECRET-OR-PREFIX",
        )
    svc = services()
    configured = ((svc.settings["sources"].get(name) or {}).get("secrets")) or []
    with transaction(svc.sessions) as session:
        source = session.get(Source, name)
        stored = list(source.secrets) if source is not None else []
        matches = [s for s in stored if _matches(s, secret_or_prefix)]
        if len(matches) != 1:
            raise click.ClickException(
                _no_single_match(name, matches, configured, secret_or_prefix)
            )
        source.secrets = [s for s in stored if s != matches[0]]  # type: ignore[union-attr]
        left = len(source.secrets) + len(configured)  # type: ignore[union-attr]
    inbox().verifier.forget(name)
    click.echo(f"source {name!r}: secret removed, {left} left")
    if not left:
        click.echo(f"warning: source {name!r} has no secret: its deliveries are refused", err=True)


MIN_SECRET_PREFIX = 10  # "whsec_" and four characters


def _matches(secret: str, given: str) -> bool:
    if len(given) == len(secret):
        return _secrets.compare_digest(secret.encode(), given.encode())
    return secret.startswith(given)


def _no_single_match(name: str, matches: list[str], configured: list[str], given: str) -> str:
    if matches:
        return f"{len(matches)} secrets of {name!r} start so: give more characters"
    if any(_matches(s, given) for s in configured):
        return f"that secret is in the configuration file: remove it from sources.{name}.secrets"
    return f"no secret of source {name!r} matches"


@sources.command("list")
@with_appcontext
def sources_list() -> None:
    """List sources and how many secrets each has (never the secrets)."""
    svc = services()
    with svc.sessions() as session:
        rows = {s.name: len(s.secrets) for s in session.scalars(select(Source))}
    for name, conf in (svc.settings.get("sources") or {}).items():
        rows[name] = rows.get(name, 0) + len((conf or {}).get("secrets") or [])
    for name, count in sorted(rows.items()):
        click.echo(f"{name}\t{count} secret(s)")


@click.group("db")
def database() -> None:
    """The record store's schema."""


@database.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply schema migrations (Alembic)."""
    settings = load_settings()
    db.upgrade(settings["database_url"], revision)
    click.echo(f"database at {revision}")


@click.command("plugins")
def plugins() -> None:
    """List loaded plugins: name, version, origin, hooks, outputs (creates nothing)."""
    settings = read_settings()
    try:
        pm = plugin_manager(settings)
        outputs = collect_outputs(pm, settings)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    for info in describe_plugins(pm, outputs):
        click.echo(f"{info.name} {info.version} ({info.origin})")
        click.echo(f"  hooks: {', '.join(info.hooks) or '-'}")
        click.echo(f"  outputs: {', '.join(info.outputs) or '-'}")


@click.command("config")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def config(as_json: bool) -> None:
    """Print the effective configuration, secrets masked, and where each value came from.

    The origin is ``default``, the configuration file's path, the environment variable's
    name, or ``overrides``. Plugins' sections are shown as their schemas load them.
    Nothing is created on disk.
    """
    settings = load_settings()
    check_plugin_settings(plugin_manager(settings), settings)
    for key, value, origin in effective(settings):
        if as_json:
            click.echo(json.dumps({"key": key, "value": value, "origin": origin}, default=str))
        else:
            click.echo(f"{key} = {json.dumps(value, default=str)}  ({origin})")


@click.command("deliveries")
@click.option("--failed", is_flag=True, help="Only dead deliveries.")
@click.option("--pending", is_flag=True, help="Only pending deliveries.")
@click.option("--record", "record_id", default=None, help="Only this record's deliveries.")
@with_appcontext
def deliveries(failed: bool, pending: bool, record_id: str | None) -> None:
    """List deliveries as JSON lines."""
    query = select(Delivery).where(Delivery.status != "superseded").order_by(Delivery.updated_at)
    if failed:
        query = query.where(Delivery.status == "dead")
    if pending:
        query = query.where(Delivery.status == "pending")
    if record_id:
        query = query.where(Delivery.record_id == record_id)
    svc = services()
    with svc.sessions() as session:
        for row in session.scalars(query):
            (item,) = svc.dispatcher.describe(session, [row])
            echo_json_line(item)


@click.command("redeliver")
@click.argument("delivery_ids", nargs=-1)
@click.option("--all-failed", is_flag=True, help="Redeliver every dead delivery.")
@with_appcontext
def redeliver(delivery_ids: tuple[str, ...], all_failed: bool) -> None:
    """Make deliveries pending again (same id), now."""
    svc = services()
    ids = list(delivery_ids)
    if all_failed:
        with svc.sessions() as session:
            ids += list(session.scalars(select(Delivery.id).where(Delivery.status == "dead")))
    if not ids:
        click.echo("nothing to redeliver", err=True)
        sys.exit(1)
    failed = 0
    for delivery_id in ids:
        try:
            svc.dispatcher.redeliver(delivery_id)
        except PublisherError as exc:  # one out-of-date delivery does not stop the others
            failed += 1
            click.echo(f"{delivery_id}: {exc.message}", err=True)
            continue
        click.echo(f"{delivery_id} pending")
    if failed:
        sys.exit(1)


@click.command("reconcile")
@click.argument("output")
@with_appcontext
def reconcile(output: str) -> None:
    """Repair what OUTPUT holds that drifted from what it should hold.

    An output with ``inventory()`` is compared record by record (missing, stale, should be
    gone) and only that is repaired; one without is sent its desired state again under the
    original delivery ids, so its receivers can drop what they already have.
    """
    svc = services()
    if output not in svc.dispatcher.outputs:
        raise click.BadParameter(f"no output named {output!r}", param_hint="OUTPUT")
    counts = svc.dispatcher.reconcile(output)
    click.echo(", ".join(f"{count} {what}" for what, count in counts.items()) + f" ({output})")


@click.group("outputs")
def outputs() -> None:
    """Turn outputs on and off (a subscriber answering 410 Gone, or failing for
    ``delivery.pause_after_seconds``, is paused: turned off until enabled)."""


@outputs.command("list")
@with_appcontext
def outputs_list() -> None:
    """Each output: enabled, disabled or paused (a subscriber that failed), and its rule."""
    svc = services()
    with svc.sessions() as session:
        states = {row.name: row for row in session.scalars(select(OutputState))}
    for name, spec in svc.dispatcher.refresh().items():
        state = states.get(name)
        shown = "enabled" if state is None or state.enabled else "disabled"
        shown = "paused" if is_paused(state) else shown
        click.echo(f"{name}\t{shown}\t{spec.rule or '-'}")


@outputs.command("enable")
@click.argument("name")
@with_appcontext
def outputs_enable(name: str) -> None:
    sent = _known_output(name).set_enabled(name, True)
    click.echo(f"{name} enabled; {sent} deliveries waiting for it sent")


@outputs.command("disable")
@click.argument("name")
@with_appcontext
def outputs_disable(name: str) -> None:
    _known_output(name).set_enabled(name, False, "disabled by an operator")
    click.echo(f"{name} disabled; its deliveries wait for it, pending")


def _known_output(name: str):  # noqa: ANN202 - the dispatcher
    dispatcher = services().dispatcher
    if name not in dispatcher.refresh():
        raise click.BadParameter(f"no output named {name!r}", param_hint="NAME")
    return dispatcher


def register(cli: click.Group) -> None:
    commands = (tokens, sources, database, plugins, config, deliveries, redeliver, reconcile)
    for command in (*commands, outputs):
        cli.add_command(command)
