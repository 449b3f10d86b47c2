"""The WSGI application for gunicorn: ``gunicorn wsgi:app``; run ``publisher worker`` beside it."""

from publisher.app import create_app

app = create_app()
