"""The Flask application factory."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pluggy
from flask import Flask

from publisher.config import load_settings
from publisher.erasure import Eraser
from publisher.inbox import InboxProcessor
from publisher.intake import Intake
from publisher.services import build_services


def create_app(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
    plugin_manager: pluggy.PluginManager | None = None,
) -> Flask:
    """Build one app, and everything it holds, once: settings, services, intake, inbox, eraser,
    metrics, blueprints, plugins' routes. The process's composition root.

    ``defaults`` are the process's own defaults under the operator's file and environment
    (``wsgi.py`` and ``publisher serve`` give ``SERVING_DEFAULTS``); ``plugin_manager`` is the
    one the process built already from the same settings (the command line's).
    """
    from publisher.api import (
        deliveries,
        errors,
        health,
        metrics,
        openapi,
        ops,
        outputs,
        overview,
        plugins,
        quarantine,
        records,
        requests,
        subscribers,
        webhooks,
    )

    settings = load_settings(environ, overrides, defaults)
    app = Flask("publisher", static_folder=None)
    app.config["PUBLISHER"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings["limits"]["max_body_bytes"]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    services = build_services(settings, plugin_manager)
    app.extensions["publisher"] = services
    intake = app.extensions["publisher.intake"] = Intake(services)
    # built here, not on first use: building it registers the inbox's huey task, which every
    # process that consumes the queue must know; the API and the CLI share this one
    inbox = app.extensions["publisher.inbox"] = InboxProcessor(services, intake)
    eraser = app.extensions["publisher.eraser"] = Eraser(services)
    # the worker's sweeper covers the inbox and erasure too (their parts need the dispatcher)
    services.dispatcher.also_sweep.extend((inbox.sweep, eraser.sweep))
    errors.register(app)
    requests.register(app)
    metrics.register(app).registry.register(intake.envelope_alarm)
    blueprints = (
        records,
        deliveries,
        outputs,
        overview,
        plugins,
        quarantine,
        subscribers,
        webhooks,
        health,
        metrics,
        ops,
    )
    # flask-smorest's Api registers them and generates /openapi.json from their schemas
    openapi.register(app, [module.bp for module in blueprints])
    services.pm.hook.register_routes(app=app)
    logging.getLogger("publisher").setLevel(logging.INFO)
    return app
