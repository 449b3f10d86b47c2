"""The WSGI application for gunicorn: ``gunicorn wsgi:app``; run ``publisher worker`` beside it."""

from publisher.app import create_app
from publisher.logs import configure_logging

app = create_app()
configure_logging(app.config["PUBLISHER"])
app.extensions["publisher"].dispatcher.background_enqueue = True
