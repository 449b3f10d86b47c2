"""The WSGI application for gunicorn: ``gunicorn wsgi:app``; run ``publisher worker`` beside it.

A configuration error prints one line per problem and exits with status 4, which gunicorn
reads as "App failed to load" and stops on, instead of restarting workers that cannot boot.
"""

import sys

from publisher.app import create_app
from publisher.config import SERVING_DEFAULTS, problem_lines
from publisher.errors import ConfigError
from publisher.heap import freeze_startup_heap
from publisher.logs import configure_logging

#: gunicorn's APP_LOAD_ERROR: the arbiter halts rather than respawning the worker
EXIT_APP_LOAD_ERROR = 4

try:
    app = create_app(defaults=SERVING_DEFAULTS)  # enqueue: background, unless configured
except ConfigError as exc:
    print("\n".join(problem_lines(exc)), file=sys.stderr, flush=True)
    sys.exit(EXIT_APP_LOAD_ERROR)
configure_logging(app.config["PUBLISHER"])
freeze_startup_heap()  # the app is built: full collections skip it from now on
