"""The plugin hooks of publisher: this module is their reference documentation.

Plugins implement hooks with :data:`hookimpl`::

    from publisher.hookspecs import hookimpl

    @hookimpl
    def register_outputs(config):
        return [MyOutput(name="my-output")]

Hooks are called with keyword arguments; an implementation takes only the arguments it
uses, so hooks can grow new arguments without breaking plugins. Built-in features (the
``files``, ``feeds`` and ``webhook`` outputs) are plugins registered through these same hooks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import click
    import flask
    import marshmallow

    from publisher.outputs import Event, Output, OutputRecord

PROJECT = "publisher"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_outputs(config: Mapping[str, Any]) -> Iterable[Output] | None:
    """Return the output objects this plugin provides (or ``None``).

    Called once per app at start-up. ``config`` is the service's settings as a read-only
    mapping (``data_dir``, ``site_url``, ...); a plugin's own section of the configuration
    file is ``config["plugins"].get("<plugin name>", {})``. Validate it here and raise
    :class:`publisher.errors.ConfigError` with a clear message if it is wrong.

    Each output needs a unique ``name``; the core adds per-output options itself (``when``
    routing rules, ``retry_schedule``, ``timeout``, ``enabled``) from
    ``outputs: {<name>: {...}}``.
    """


@hookspec
def register_config_schema() -> type[marshmallow.Schema] | marshmallow.Schema | None:
    """Return the marshmallow schema of this plugin's section (or ``None``).

    The section is ``plugins: {<plugin name>: {...}}``, the plugin's name being the one it
    is registered under (its entry-point name, its file's stem in the plugins folder, or
    ``files``/``feeds``/``webhook`` for the built-ins); ``PUBLISHER_PLUGINS__<NAME>__<KEY>``
    sets one key from the environment. The section is loaded through the schema at start,
    before :func:`register_outputs` is called, and ``config["plugins"]["<name>"]`` then holds
    the loaded, typed values, defaults included. Unknown keys (unless the schema's
    ``Meta.unknown`` says otherwise), wrong types and failed validators stop ``serve``,
    ``worker`` and ``wsgi:app`` with one line per problem naming the plugin and the key::

        publisher: configuration: plugin sitemap: plugins.sitemap.max_urls: Must be ...

    Example::

        from marshmallow import Schema, fields, validate

        class SitemapSettings(Schema):
            folder = fields.String(load_default=None)
            max_urls = fields.Integer(load_default=50_000, validate=validate.Range(min=1))

        @hookimpl
        def register_config_schema():
            return SitemapSettings

    Called once per app at start-up, in the process that builds it. Raising is a start-up
    failure, as a bad section is.
    """


@hookspec
def record_received(source: str, raw: Mapping[str, Any]) -> None:
    """A raw record arrived from ``source`` (``api``, ``cli`` or a webhook source name).

    Called before validation, for observation. Must not raise.
    """


@hookspec
def record_validated(record: dict[str, Any], warnings: list[str]) -> None:
    """A record passed validation. Plugins may change ``record`` in place.

    ``warnings`` lists unknown fields and other non-fatal findings.
    """


@hookspec
def record_rejected(source: str, reason: str, errors: Mapping[str, list[str]]) -> None:
    """A record, or a whole request body, from ``source`` was refused.

    ``reason`` is the error code the client was answered (``invalid``, ``malformed``,
    ``unsupported_media_type``, ``secured_invalid``, ...); ``errors`` maps field paths to
    messages and never holds secret material. Called for observation. Must not raise.
    """


@hookspec
def record_stored(record: OutputRecord, event: str | None) -> None:
    """A record revision was committed; ``event`` is the lifecycle event it triggers.

    ``event`` is ``"published"``, ``"updated"``, ``"retracted"`` or ``None`` (no event: a
    duplicate, a volatile-only change, a draft). Called after the commit. Must not raise.
    """


@hookspec
def delivery_failed(output: str, record_id: str, event: Event, error: str, dead: bool) -> None:
    """An attempt to deliver ``event`` to ``output`` failed; ``dead`` means no retry is left."""


@hookspec
def delivery_succeeded(output: str, record_id: str, event: Event) -> None:
    """``output`` accepted ``event``: the record is live there (or retracted from it)."""


@hookspec
def register_routes(app: flask.Flask) -> None:
    """Add routes or blueprints to the Flask app (called inside ``create_app``)."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands to the ``publisher`` command line."""
