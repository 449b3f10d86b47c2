"""The ``publisher`` command line: click commands through Flask's CLI."""

from __future__ import annotations

import sys
from typing import Any

import click
import pluggy
from flask.cli import FlaskGroup, NoAppException, ScriptInfo

from publisher import __version__
from publisher.cli.common import PLUGINS, create_cli_app

#: sysexits' EX_CONFIG: the exit status of a command stopped by a configuration error
EXIT_CONFIG = 78


class ConfigProblem(NoAppException):
    """A configuration error as Flask's CLI shows a failed app load: our lines, no traceback."""

    exit_code = EXIT_CONFIG

    def show(self, file: Any = None) -> None:
        click.echo(self.format_message(), err=True)


class PublisherGroup(FlaskGroup):
    """Flask's command group without looking for commands on the app.

    Every command is on this group (plugins' too, through ``register_commands``), so listing
    or looking one up (``--help``, a misspelt name) never builds the app, which would migrate
    the database, make the queue and a development key.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return click.Group.list_commands(self, ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return click.Group.get_command(self, ctx, name)


@click.group(
    cls=PublisherGroup,
    create_app=create_cli_app,
    add_default_commands=False,
    add_version_option=False,
    set_debug_flag=False,
    load_dotenv=False,
)
@click.version_option(__version__, prog_name="publisher")
def cli() -> None:
    """publisher: take records in, check them, publish them to every output."""


def _register() -> None:
    from publisher.cli import admin, records, run, subscribers
    from publisher.cli.quarantine import quarantine_group

    for module in (run, records, admin, subscribers):
        module.register(cli)
    cli.add_command(quarantine_group, "quarantine")
    try:
        from publisher.cli import keys
    except ImportError:  # pragma: no cover - keys are optional while being built
        return
    cli.add_command(keys.keys_group, "keys")
    cli.add_command(keys.seal_command, "seal")
    cli.add_command(keys.open_command, "open")


_register()


def _plugin_commands() -> pluggy.PluginManager | None:
    """Let plugins add commands (``register_commands``) before click parses the line.

    Returns the plugin manager, which the command's app is then built with (the plugin
    modules run once per process), or None if the settings or plugins failed to load.
    """
    from publisher.config import load_settings
    from publisher.errors import ConfigError
    from publisher.plugins import make_plugin_manager

    try:
        pm = make_plugin_manager(load_settings())
    except ConfigError as exc:
        click.echo(f"publisher: {exc.message}", err=True)
        return None
    except Exception as exc:  # noqa: BLE001 - one plugin must not take the whole CLI down
        click.echo(f"publisher: a plugin failed to load: {exc!r}", err=True)
        return None
    try:
        pm.hook.register_commands(cli=cli)
    except Exception as exc:  # noqa: BLE001 - one plugin must not take the whole CLI down
        click.echo(f"publisher: a plugin's register_commands failed: {exc!r}", err=True)
    return pm


def main() -> None:
    """Entry point of the ``publisher`` script: a configuration error is lines, not a trace."""
    from publisher.config import problem_lines
    from publisher.errors import ConfigError

    info = ScriptInfo(create_app=create_cli_app, set_debug_flag=False, load_dotenv_defaults=False)
    info.data[PLUGINS] = _plugin_commands()
    try:
        cli(prog_name="publisher", obj=info)
    except ConfigError as exc:  # commands that read the settings without the app
        click.echo("\n".join(problem_lines(exc)), err=True)
        sys.exit(EXIT_CONFIG)
