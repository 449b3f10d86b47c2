"""The Flask application factory."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from publisher.config import load_settings
from publisher.erasure import Eraser
from publisher.inbox import InboxProcessor
from publisher.intake import Intake
from publisher.services import build_services


def create_app(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Flask:
    """Build one app: settings, store, queue, keys, plugins, blueprints."""
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

    settings = load_settings(environ, overrides)
    app = Flask("publisher", static_folder=None)
    app.config["PUBLISHER"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings["limits"]["max_body_bytes"]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    services = build_services(settings)
    app.extensions["publisher"] = services
    intake = app.extensions["publisher.intake"] = Intake(services)
    # built here, not on first use: building it registers the inbox's huey task, which every
    # process that consumes the queue must know; the API and the CLI share this one
    inbox = app.extensions[webhooks.EXTENSION] = InboxProcessor(services, intake)
    services.dispatcher.also_sweep.append(inbox.sweep)
    app.extensions["publisher.eraser"] = Eraser(services)
    services.dispatcher.also_sweep.append(app.extensions["publisher.eraser"].sweep)
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
