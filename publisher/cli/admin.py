"""Operator commands: tokens, sources, database, plugins, deliveries and outputs."""

from __future__ import annotations

import secrets as _secrets
import sys
from base64 import b64encode

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from publisher import db, store
from publisher.api.records import delivery_dict
from publisher.api.webhooks import inbox_processor
from publisher.cli.common import echo_json, read_settings, services
from publisher.config import load_settings
from publisher.db import transaction
from publisher.dispatch import disable_output, enable_output
from publisher.errors import ConfigError
from publisher.models import Delivery, Source, utcnow
from publisher.plugins import collect_outputs, describe_plugins, make_plugin_manager
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
    inbox_processor(current_app).verifier.forget(name)
    click.echo(f"source {name!r}: POST /webhooks/{name}", err=True)
    click.echo(secret)


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
        pm = make_plugin_manager(settings)
        outputs = collect_outputs(pm, settings)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    for info in describe_plugins(pm, outputs):
        click.echo(f"{info.name} {info.version} ({info.origin})")
        click.echo(f"  hooks: {', '.join(info.hooks) or '-'}")
        click.echo(f"  outputs: {', '.join(info.outputs) or '-'}")


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
    with services().sessions() as session:
        for row in session.scalars(query):
            echo_json(delivery_dict(row))


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
    for delivery_id in ids:
        svc.dispatcher.redeliver(delivery_id)
        click.echo(f"{delivery_id} pending")


@click.command("reconcile")
@click.argument("output")
@with_appcontext
def reconcile(output: str) -> None:
    """Replay what OUTPUT should hold, after it drifted (e.g. its folder was wiped)."""
    svc = services()
    route = next((r for r in svc.dispatcher.routes() if r.name == output), None)
    if route is None:
        raise click.BadParameter(f"no enabled output named {output!r}", param_hint="OUTPUT")
    with transaction(svc.sessions) as session:
        planned = store.replay_output(session, route)
    svc.dispatcher.enqueue(planned)
    click.echo(f"{len(planned)} deliveries planned for {output}")


@click.group("outputs")
def outputs() -> None:
    """Turn outputs on and off (a downstream 410 Gone turns one off)."""


@outputs.command("list")
@with_appcontext
def outputs_list() -> None:
    svc = services()
    disabled = svc.dispatcher.disabled_outputs()
    for name, spec in svc.dispatcher.outputs.items():
        state = "disabled" if name in disabled else "enabled"
        click.echo(f"{name}\t{state}\t{spec.rule or '-'}")


@outputs.command("enable")
@click.argument("name")
@with_appcontext
def outputs_enable(name: str) -> None:
    with transaction(services().sessions) as session:
        enable_output(session, name)
    click.echo(f"{name} enabled")


@outputs.command("disable")
@click.argument("name")
@with_appcontext
def outputs_disable(name: str) -> None:
    with transaction(services().sessions) as session:
        disable_output(session, name, "disabled by an operator")
    click.echo(f"{name} disabled")


def register(cli: click.Group) -> None:
    for command in (tokens, sources, database, plugins, deliveries, redeliver, reconcile, outputs):
        cli.add_command(command)
