"""The plugin hooks of publisher: this module is their reference documentation.

Plugins implement hooks with :data:`hookimpl`::

    from publisher.hookspecs import hookimpl

    @hookimpl
    def register_outputs(plugin_config):
        return [MyOutput(name="my-output", options=plugin_config)]

Hooks are called with keyword arguments; an implementation takes only the arguments it
uses, so hooks can grow new arguments without breaking plugins (the versioning policy is in
docs/plugins.md). Built-in features (the ``files``, ``feeds`` and ``webhook`` outputs) are
plugins registered through these same hooks.

Two arguments are offered to ``register_outputs`` and to every broadcast hook beyond its
own: ``plugin_config``, the read-only section ``plugins.<name>`` of the configuration, where
``<name>`` is the plugin's registered name (its entry-point name, its file's stem in the
plugins folder, or the built-in's module name); and (broadcast hooks) ``settings``, the app's
settings that are safe to share (``data_dir``, ``site_url``, ``site_title``, ``strict``,
``volatile_fields``, ``limits``, ``delivery``; never secrets).
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
def register_outputs(
    config: Mapping[str, Any], plugin_config: Mapping[str, Any]
) -> Iterable[Output] | None:
    """Return the output objects this plugin provides (or ``None``).

    Called once per app at start-up, in every process that builds one (web server workers,
    ``publisher worker``, commands), on the main thread. ``config`` is the service's
    settings as a read-only mapping (``data_dir``, ``site_url``, ...); ``plugin_config`` is
    this plugin's own section (``config["plugins"]["<plugin name>"]``, ``{}`` if absent).
    Validate it here and raise :class:`publisher.errors.ConfigError` with a clear message if
    it is wrong: the start stops with that message. Do no I/O beyond reading: ``publisher
    plugins`` calls this hook too and must create nothing.

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
def record_received(
    source: str,
    raw: Mapping[str, Any],
    plugin_config: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> None:
    """A raw record arrived from ``source`` (``api``, ``cli`` or a webhook source name).

    Called before validation, for observation, on the thread that takes the record in: the
    API request's thread in the web server, the ``publisher ingest`` process, or a worker
    thread for a webhook's inbox. ``raw`` is the mapping as sent (``{}`` if it was not one).
    Raising a :class:`publisher.errors.PublisherError` refuses the record with that error;
    any other exception is logged and ignored.
    """


@hookspec
def record_validated(
    record: dict[str, Any],
    warnings: list[str],
    plugin_config: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> None:
    """A record passed validation. Plugins may change ``record`` in place.

    ``record`` holds the validated fields (``id`` filled in, date-times parsed);
    ``warnings`` lists unknown fields and other non-fatal findings. Called on the same thread
    as :func:`record_received`, before the record is stored. Raising a
    :class:`publisher.errors.PublisherError` (e.g. ``ValidationError``) refuses the record;
    any other exception is logged and ignored.
    """


@hookspec
def record_rejected(
    source: str,
    reason: str,
    errors: Mapping[str, list[str]],
    plugin_config: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> None:
    """A record, or a whole request body, from ``source`` was refused.

    ``reason`` is the error code the client was answered (``invalid``, ``malformed``,
    ``unsupported_media_type``, ``secured_invalid``, ...); ``errors`` maps field paths to
    messages and never holds secret material. Called for observation on the thread that
    took the record in. Must not raise (an exception is logged and ignored).
    """


@hookspec
def record_stored(
    record: OutputRecord,
    event: str | None,
    plugin_config: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> None:
    """A record revision was committed; ``event`` is the lifecycle event it triggers.

    ``record`` is the stored revision as a public output sees it (``protected`` is
    ``None``); ``event`` is ``"published"``, ``"updated"``, ``"retracted"`` or ``None`` (no
    event: a duplicate, a volatile-only change, a draft). Called after the commit, on the
    thread that stored it (an API request, ``publisher ingest``, a worker thread). Must not
    raise (an exception is logged and ignored: the record is stored whatever happens here).
    """


@hookspec
def delivery_failed(
    output: str,
    record_id: str,
    event: Event,
    error: str,
    dead: bool,
    plugin_config: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> None:
    """An attempt to deliver ``event`` to ``output`` failed; ``dead`` means no retry is left.

    ``error`` is the message stored on the delivery (the output's exception as text).
    Called in the worker process, on the thread that ran the delivery, after the failure is
    committed. Must not raise (an exception is logged and ignored).
    """


@hookspec
def delivery_succeeded(
    output: str,
    record_id: str,
    event: Event,
    plugin_config: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> None:
    """``output`` accepted ``event``: the record is live there (or retracted from it).

    Called in the worker process, on the thread that ran the delivery, after the success is
    committed. Must not raise (an exception is logged and ignored).
    """


@hookspec
def subscriber_paused(
    output: str,
    reason: str,
    plugin_config: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> None:
    """A subscriber's output (``webhook:<name>``) was paused: it answered ``410 Gone``, or
    its deliveries failed with no success for ``delivery.pause_after_seconds``.

    ``reason`` is the one the output shows (``paused: ...``). Its deliveries now wait,
    pending; an operator's enable sends what changed meanwhile. Called in the worker
    process, on the thread that ran the failing delivery, after the pause is committed;
    once per pause. Must not raise (an exception is logged and ignored).
    """


@hookspec(firstresult=True)
def subscriber_output(
    subscriber: Mapping[str, Any],
    previous: tuple[tuple[str, float], ...],
    config: Mapping[str, Any],
) -> Output | None:
    """Build the output of one subscriber stored through ``/api/v1/subscribers`` or
    ``publisher subscribers add`` (or return ``None``: this plugin delivers to none).

    ``subscriber`` holds the stored keys, already checked by the core: ``name``, ``url``,
    ``secret`` (the current ``whsec_...`` signing secret), ``events`` (``None``: every
    event), ``protected`` and, when set, ``allow_private``. ``previous`` holds the
    rotated-out secrets that still sign beside the current one, each with the time (epoch
    seconds) its grace ends. ``config`` is the service's settings, read-only. The output must
    be named ``webhook:<name>``. The first output returned wins; pluggy asks the plugin
    registered last first, so an installed or folder plugin comes before the built-in
    ``webhook``. With no plugin implementing it, stored subscribers are not delivered to.

    Called in every process that delivers or takes records in (web servers, workers,
    commands), on the thread that looks at the table (at most every
    ``subscribers.refresh_seconds``), once for each stored subscriber added or changed.
    Raising skips that subscriber with a logged error; the others, intake and delivery go on.
    """


@hookspec
def register_routes(app: flask.Flask) -> None:
    """Add routes or blueprints to the Flask app.

    Called once inside ``create_app``, on the main thread of every process that builds an
    app; ``app.config["PUBLISHER"]`` holds the settings. Raising stops the start.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands to the ``publisher`` command line.

    Called once in the ``publisher`` process, before the command line is parsed (so also
    for ``--help``: create nothing here). A command that needs the app uses
    ``flask.cli.with_appcontext``. If it raises, the error is reported in one line and the
    command line runs without this plugin's commands.
    """
