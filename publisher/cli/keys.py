"""``publisher keys ...``, ``publisher seal`` and ``publisher open``.

Plain click commands: they need the keys folder only (``--keys-dir``, else
``PUBLISHER_KEYS_DIR``, else ``keys``), not the Flask app. They never print secret key
material: ``generate`` and ``rotate`` print the new kid alone on its line.

``open`` exits 0 when the envelope opened, 2 when it is ``sealed`` (no key of ours for it)
and 1 when it is ``invalid`` (with the one uniform message).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from publisher.errors import ConfigError, EnvelopeError
from publisher.secured import (
    KIND_ALIASES,
    KINDS,
    Keyring,
    generate_key,
    open_envelope,
    rotate,
    seal,
    write_key,
)

F = TypeVar("F", bound=Callable[..., Any])
_KIND_CHOICE = click.Choice([*KINDS, *KIND_ALIASES])


def keys_dir_option(func: F) -> F:
    """The keys folder option shared by every command here."""
    return click.option(
        "--keys-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="PUBLISHER_KEYS_DIR",
        default="keys",
        show_default=True,
        help="Folder of JWK files (env PUBLISHER_KEYS_DIR).",
    )(func)


def _load(keys_dir: Path) -> Keyring:
    try:
        return Keyring.load(keys_dir)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None


@click.group("keys")
def keys_group() -> None:
    """Manage the keyring: JWK files in the keys folder."""


@keys_group.command("generate")
@click.option("--kind", type=_KIND_CHOICE, default="dir", show_default=True)
@click.option("--kid", default=None, help="Key id (default: made from kind, date and random).")
@keys_dir_option
def generate_command(kind: str, kid: str | None, keys_dir: Path) -> None:
    """Make a new key and write it (mode 0600); print its kid."""
    try:
        jwk = generate_key(kind, kid)
        path = write_key(keys_dir, jwk)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"wrote {jwk.get('alg') or kind} key to {path}", err=True)
    click.echo(jwk["kid"])


@keys_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@keys_dir_option
def list_command(as_json: bool, keys_dir: Path) -> None:
    """List the keys (never their secret material)."""
    rows = _load(keys_dir).describe()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no keys in {keys_dir}", err=True)
        return
    click.echo(f"{'kid':40} {'kind':16} {'kty':4} {'created':28} active")
    for row in rows:
        active = "yes" if row["active"] else ""
        click.echo(
            f"{row['kid']:40} {row['kind']:16} {row['kty']:4} {row['created'] or '-':28} {active}"
        )


@keys_group.command("rotate")
@click.option("--kind", type=_KIND_CHOICE, default="dir", show_default=True)
@keys_dir_option
def rotate_command(kind: str, keys_dir: Path) -> None:
    """Make a new active key of a kind; older keys stay so old envelopes still open."""
    try:
        kid = rotate(keys_dir, kind)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"new active {kind} key; older keys of this kind still open envelopes", err=True)
    click.echo(kid)


@keys_group.command("export-public")
@keys_dir_option
def export_public_command(keys_dir: Path) -> None:
    """Print a JWKS of the public keys (what senders need to encrypt to us)."""
    click.echo(json.dumps(_load(keys_dir).public_jwks(), indent=2))


def _read(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {source}: {exc}") from None


@click.command("seal")
@click.argument("source", default="-")
@click.option(
    "--format", "fmt", type=click.Choice(["legacy", "jwe", "jws"]), default="jwe", show_default=True
)
@click.option("--kid", default=None, help="Key to use (default: the active one).")
@keys_dir_option
def seal_command(source: str, fmt: str, kid: str | None, keys_dir: Path) -> None:
    """Seal a JSON object (or text) from SOURCE (a file, or - for stdin); print the envelope."""
    text = _read(source)
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    plaintext: Any = parsed if isinstance(parsed, dict) else text.rstrip("\n")
    try:
        click.echo(seal(plaintext, _load(keys_dir), fmt, kid))  # type: ignore[arg-type]
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None


@click.command("open")
@click.argument("source", default="-")
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON record whose other fields a detached JWS signs.",
)
@keys_dir_option
def open_command(source: str, record: Path | None, keys_dir: Path) -> None:
    """Open an envelope from SOURCE (a file, or - for stdin); print status and plaintext."""
    payload = None
    if record is not None:
        from publisher.secured import canonical_bytes

        try:
            payload = canonical_bytes(json.loads(_read(str(record))))
        except (ValueError, TypeError) as exc:
            raise click.ClickException(f"--record must be a JSON object: {exc}") from None
    result = open_envelope(_read(source).strip(), _load(keys_dir), payload)
    out = {**result.public(), "protected": result.protected}
    click.echo(json.dumps(out, indent=2, ensure_ascii=False))
    if result.status == "invalid":
        click.echo(EnvelopeError.MESSAGE, err=True)
        click.get_current_context().exit(1)
    if result.status == "sealed":
        click.get_current_context().exit(2)


def register(cli: click.Group) -> None:
    cli.add_command(keys_group, "keys")
    cli.add_command(seal_command, "seal")
    cli.add_command(open_command, "open")
