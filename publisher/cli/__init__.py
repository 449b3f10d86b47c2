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

    Every command is on this group (plugins' too, through ``register_commands``; ours are
    added as they are looked up, see :data:`COMMANDS`), so listing or looking one up
    (``--help``, a misspelt name) never builds the app, which would migrate the database,
    make the queue and a development key.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        for module in sorted(set(COMMANDS.values())):
            _load(self, module)
        return click.Group.list_commands(self, ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            _load(self, COMMANDS[name])
        return click.Group.get_command(self, ctx, name)


#: the module of each command, imported when the command is looked up: a command starts
#: with what it needs, not with every other command's imports (the store, the queue, the
#: crypto), so ``ingest`` has its validating workers going before it builds the app
COMMANDS = {
    **dict.fromkeys(("serve", "worker"), "run"),
    **dict.fromkeys(("ingest", "validate", "retract", "purge"), "records"),
    **dict.fromkeys(
        ("tokens", "sources", "db", "plugins", "config", "deliveries", "redeliver", "reconcile"),
        "admin",
    ),
    "outputs": "admin",
    "subscribers": "subscribers",
    "quarantine": "quarantine",
    **dict.fromkeys(("keys", "seal", "open"), "keys"),
}


def _load(group: click.Group, module: str) -> None:
    """Import ``publisher.cli.<module>`` and add its commands to ``group``.

    A command of that name already on the group stays: a plugin's ``register_commands``
    runs first, and its command replaces ours, as it did when ours came first.
    """
    from importlib import import_module

    there = dict(group.commands)
    import_module(f"publisher.cli.{module}").register(group)
    group.commands.update(there)


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
