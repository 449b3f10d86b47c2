"""Small helpers shared by the commands."""

from __future__ import annotations

import json
from typing import Any

import click
from flask import current_app

from publisher.services import Services


def services() -> Services:
    return current_app.extensions["publisher"]


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def echo_json_line(value: Any) -> None:
    """One JSON object on one line: what listings that say "JSON lines" print."""
    click.echo(json.dumps(value, default=str))
