"""Small helpers shared by the commands."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click
import pluggy
from flask import Flask, current_app
from flask.cli import ScriptInfo

from publisher.config import Settings, load_settings
from publisher.plugins import make_plugin_manager

if TYPE_CHECKING:  # a command imports the store and the queue only once it builds the app
    from publisher.inbox import InboxProcessor
    from publisher.services import Services

#: ``ScriptInfo.data`` key of the plugin manager ``main()`` built (for plugins' commands):
#: the one the command's app and ``publisher plugins`` use, so plugin modules run once
PLUGINS = "publisher.plugins"


def create_cli_app(defaults: Mapping[str, Any] | None = None) -> Flask:
    """The app of the ``publisher`` command line, built only by commands that need it.

    It is built with the plugin manager the command line built already, if any.
    """
    from publisher.app import create_app
    from publisher.cli import ConfigProblem
    from publisher.config import problem_lines
    from publisher.errors import ConfigError

    try:
        return create_app(defaults=defaults, plugin_manager=_info().data.get(PLUGINS))
    except ConfigError as exc:  # one line per problem, not a traceback
        raise ConfigProblem("\n".join(problem_lines(exc))) from None


def _info() -> ScriptInfo:
    return click.get_current_context().ensure_object(ScriptInfo)


def _own_app() -> bool:
    """True for the command line's own app; False for one handed to it (a test's runner)."""
    info = _info()
    return info.create_app is None or info.create_app is create_cli_app


def load_app(defaults: Mapping[str, Any] | None = None) -> Flask:
    """The command's app: the command line's own, built with the process's ``defaults``
    (``serve`` gives the serving ones), or the one handed to the CLI, as it is."""
    if _own_app():
        return create_cli_app(defaults)
    return _info().load_app()


def plugin_manager(settings: Settings) -> pluggy.PluginManager:
    """The command line's plugin manager (built once, by ``main()``), for commands that list
    or check plugins without building the app; a new one from ``settings`` otherwise."""
    built = _info().data.get(PLUGINS) if _own_app() else None
    return built or make_plugin_manager(settings)


def read_settings() -> Settings:
    """The settings, for a command that only reads and so must create nothing on disk.

    The command line's own app is never built for it (that migrates the database, makes the
    queue and a development key): the settings are loaded from the file and environment the
    app would read. An app handed to the CLI (a test's runner, an embedding) is used as is.
    """
    if _own_app():
        return load_settings()
    return _info().load_app().config["PUBLISHER"]


def services() -> Services:
    return current_app.extensions["publisher"]


def inbox() -> InboxProcessor:
    """The app's inbox processor, the one its webhook route uses (built by ``create_app``)."""
    return current_app.extensions["publisher.inbox"]


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def echo_json_line(value: Any) -> None:
    """One JSON object on one line: what listings that say "JSON lines" print."""
    click.echo(json.dumps(value, default=str))
