"""``publisher serve`` and ``publisher worker``."""

from __future__ import annotations

import signal

import click
from flask import Flask
from flask.cli import with_appcontext

from publisher.cli.common import load_app, services
from publisher.config import SERVING_DEFAULTS
from publisher.heap import freeze_startup_heap
from publisher.logs import configure_logging


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--threads", default=8, show_default=True, type=int, help="HTTP threads.")
@click.option(
    "--worker/--no-worker",
    default=None,
    help="Run a delivery worker in this process (default: on, the embedded setting).",
)
def serve(host: str, port: int, threads: int, worker: bool | None) -> None:
    """Run the service (waitress) with the embedded defaults, worker included."""
    # the serving defaults (enqueue: background, requests commit and answer, a thread writes
    # the queue) go into the app as it is built, under the operator's file and environment
    app = load_app(SERVING_DEFAULTS)
    with app.app_context():
        _serve(app, host, port, threads, worker)


def _serve(app: Flask, host: str, port: int, threads: int, worker: bool | None) -> None:
    from publisher.serving import make_server
    from publisher.worker import EmbeddedWorker

    svc = services()
    configure_logging(svc.settings)
    run_worker = svc.settings["embedded_worker"] if worker is None else worker
    embedded = EmbeddedWorker(svc, svc.settings["worker"]["threads"]) if run_worker else None
    if embedded:
        embedded.start()
        svc.dispatcher.sweep(grace=0)
    click.echo(f"publisher serving on http://{host}:{port} (worker: {'on' if embedded else 'off'})")
    signal.signal(signal.SIGTERM, _interrupt)  # stop as on Ctrl-C: finish in-flight work
    # a key added to or removed from the keys folder is seen within a second anyway
    signal.signal(signal.SIGHUP, lambda *_: svc.keyring.reload())
    max_body = int(svc.settings["limits"]["max_body_bytes"])
    freeze_startup_heap()
    try:
        make_server(app, host=host, port=port, threads=threads, max_body=max_body).run()
    except KeyboardInterrupt:
        click.echo("publisher stopping", err=True)
    finally:
        if embedded:
            embedded.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@click.command("worker")
@click.option("--threads", default=None, type=int, help="Delivery threads (default: config).")
@with_appcontext
def worker(threads: int | None) -> None:
    """Run the background worker: deliveries, retries, the sweeper. SIGTERM is graceful."""
    from publisher.worker import run_worker

    svc = services()
    configure_logging(svc.settings)
    freeze_startup_heap()
    run_worker(svc, threads or svc.settings["worker"]["threads"])


def register(cli: click.Group) -> None:
    cli.add_command(serve)
    cli.add_command(worker)
