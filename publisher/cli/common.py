"""Small helpers shared by the commands."""

from __future__ import annotations

import json
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import ScriptInfo

from publisher.config import Settings, load_settings
from publisher.inbox import InboxProcessor
from publisher.services import Services


def create_cli_app() -> Flask:
    """The app of the ``publisher`` command line, built only by commands that need it."""
    from publisher.app import create_app
    from publisher.cli import ConfigProblem
    from publisher.config import problem_lines
    from publisher.errors import ConfigError

    try:
        return create_app()
    except ConfigError as exc:  # one line per problem, not a traceback
        raise ConfigProblem("\n".join(problem_lines(exc))) from None


def read_settings() -> Settings:
    """The settings, for a command that only reads and so must create nothing on disk.

    The command line's own app is never built for it (that migrates the database, makes the
    queue and a development key): the settings are loaded from the file and environment the
    app would read. An app handed to the CLI (a test's runner, an embedding) is used as is.
    """
    info = click.get_current_context().ensure_object(ScriptInfo)
    if info.create_app is None or info.create_app is create_cli_app:
        return load_settings()
    return info.load_app().config["PUBLISHER"]


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
