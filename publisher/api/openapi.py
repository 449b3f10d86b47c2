"""Placeholder: being written (see docs/architecture.md)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("openapi", __name__)
