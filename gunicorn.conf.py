"""gunicorn settings for publisher: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Every value can be overridden on the command line or through ``GUNICORN_CMD_ARGS``; the
environment variables below are the ones the systemd unit and the container file set.
Run ``publisher worker`` beside it (on this host or others): the web processes only store
and enqueue, they never deliver.
"""

import multiprocessing
import os

bind = os.environ.get("PUBLISHER_BIND", "127.0.0.1:8000")
# threaded workers: concurrent requests of one worker (webhooks, API submissions) share one
# transaction and its durable commit (group commit, publisher/groupcommit.py), which a sync
# worker, one request at a time, cannot do (docs/deploy.md, "Sizing").
# PUBLISHER_WORKER_CLASS=sync goes back to one request per process.
# Put a buffering reverse proxy or load balancer in front for slow clients.
worker_class = os.environ.get("PUBLISHER_WORKER_CLASS", "gthread")
# gunicorn turns a sync worker with threads > 1 into gthread: threads only for gthread
threads = int(os.environ.get("PUBLISHER_THREADS", "8" if worker_class == "gthread" else "1"))
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
# no preload: each worker builds its own app (engine pool, huey connection) after the fork,
# so no database or Redis socket is ever shared between processes
preload_app = False
timeout = int(os.environ.get("PUBLISHER_WEB_TIMEOUT", "30"))
# SIGTERM: stop accepting, finish in-flight requests for up to graceful_timeout seconds.
# A request cut off after that was never answered 202, so the sender retries it.
graceful_timeout = int(os.environ.get("PUBLISHER_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
# recycle workers now and then; jitter so they do not all restart at once (0 = never)
max_requests = int(os.environ.get("PUBLISHER_MAX_REQUESTS", "0"))
max_requests_jitter = max(0, max_requests // 10)
# bodies are bounded by the app (limits.max_body_bytes -> 413); headers by gunicorn
limit_request_field_size = 16384
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = os.environ.get("PUBLISHER_ACCESS_LOG") or None  # "-" for stdout
errorlog = "-"
loglevel = os.environ.get("PUBLISHER_LOG_LEVEL", "info")
proc_name = "publisher-web"
