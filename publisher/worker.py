"""Background workers: huey's consumer running deliveries, beside the sweeper."""

from __future__ import annotations

import logging

from huey.consumer import Consumer

from publisher.background import SweeperThread
from publisher.services import Services

log = logging.getLogger("publisher.worker")


class EmbeddedConsumer(Consumer):
    """huey's consumer without signal handlers, to run inside ``publisher serve``.

    The web server owns the process's signals there; it stops this consumer on exit.
    """

    def _set_signal_handlers(self) -> None:
        return None


def make_consumer(services: Services, threads: int, *, embedded: bool = False) -> Consumer:
    cls = EmbeddedConsumer if embedded else Consumer
    return cls(
        services.huey,
        workers=threads,
        worker_type="thread",
        periodic=False,
        initial_delay=0.05,
        max_delay=1.0,
        check_worker_health=True,
        # SIGTERM (what systemd, docker and Kubernetes send) finishes in-flight deliveries;
        # whatever outlives the timeout keeps its lease and the sweeper re-enqueues it.
        graceful_signal="TERM",
        shutdown_timeout=services.settings["delivery"]["timeout"] + 5,
    )


def run_worker(services: Services, threads: int) -> None:
    """Run until SIGTERM/SIGINT: the consumer in the foreground, the sweeper beside it."""
    sweeper = start_sweeper(services)
    services.dispatcher.sweep(grace=0)  # whatever a previous worker left behind
    try:
        make_consumer(services, threads).run()
    finally:
        sweeper.stopping.set()


def start_sweeper(services: Services) -> SweeperThread:
    sweeper = SweeperThread(services.dispatcher, services.settings["delivery"]["sweep_interval"])
    sweeper.start()
    return sweeper


class EmbeddedWorker:
    """The worker that ``publisher serve`` runs in its own process (embedded defaults)."""

    def __init__(self, services: Services, threads: int) -> None:
        self.consumer = make_consumer(services, threads, embedded=True)
        self.sweeper = SweeperThread(
            services.dispatcher, services.settings["delivery"]["sweep_interval"]
        )

    def start(self) -> None:
        self.consumer.start()
        self.sweeper.start()

    def stop(self) -> None:
        self.sweeper.stopping.set()
        self.consumer.stop(graceful=True)
