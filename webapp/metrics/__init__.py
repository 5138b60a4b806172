"""Prometheus metrics: the instruments a process counts events with, and where they are read.

Two kinds of family (docs/operations.md, "Metrics"):

- events, counted where they happen by the instruments below (prometheus-client): a request's
  latency by route, each call to the image service (create, poll, upload, download) and its
  429s, each webhook delivery attempt by outcome. They live in the process that counted them;
  under gunicorn (or huey's process workers) every process writes them to
  PROMETHEUS_MULTIPROC_DIR and a scrape adds them up (prometheus-client's multiprocess mode);
- state, read from the database and the queue at scrape time (`state.py`): exact, and it
  survives restarts. Only the web's `/metrics` serves it (`views.py`).

A consumer serves its own events on METRICS_PORT (`serve_for_consumer`), unless it shares the
web's multiprocess folder on the same machine.

This module imports nothing of the project: the providers and the services count with it,
whatever layer they sit in.
"""

import hmac
import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from wsgiref.simple_server import WSGIRequestHandler, make_server

# prometheus-client writes each process's values under this folder when it is set (it reads the
# variable when it is imported): the folder must exist before the first value is written.
MULTIPROCESS_DIRECTORY = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
if MULTIPROCESS_DIRECTORY:
    os.makedirs(MULTIPROCESS_DIRECTORY, exist_ok=True)

from prometheus_client import (  # noqa: E402  (after the folder exists)
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    make_wsgi_app,
    multiprocess,
)
from prometheus_client.exposition import ThreadingWSGIServer  # noqa: E402

# No `_created` series beside every counter and histogram: twice the series, for a time nobody
# here graphs.
disable_created_metrics()

log = logging.getLogger(__name__)

UPSTREAM_OPERATIONS = ("create", "poll", "upload", "download")
WEBHOOK_OUTCOMES = ("delivered", "retrying", "failed")

REQUEST_SECONDS = Histogram(
    "batchgen_http_request_duration_seconds",
    "Time to answer an HTTP request (to its headers), by route (the URL rule), method, status.",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
UPSTREAM_SECONDS = Histogram(
    "batchgen_upstream_request_duration_seconds",
    "Time of one call to the image service (kie.ai), by operation: create, poll, upload, "
    "download; answered or not.",
    ["operation"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
UPSTREAM_RATE_LIMITED = Counter(
    "batchgen_upstream_rate_limited",
    "Calls the image service answered 429 (too many requests), by operation.",
    ["operation"],
)
WEBHOOK_ATTEMPTS = Counter(
    "batchgen_webhook_attempts",
    "Webhook delivery attempts, by outcome: delivered; retrying (another attempt is "
    "scheduled); failed (the delivery ended undelivered).",
    ["outcome"],
)
for _operation in UPSTREAM_OPERATIONS:
    UPSTREAM_SECONDS.labels(_operation)
    UPSTREAM_RATE_LIMITED.labels(_operation)
for _outcome in WEBHOOK_OUTCOMES:
    WEBHOOK_ATTEMPTS.labels(_outcome)


@contextmanager
def upstream_call(operation, rate_limited=lambda error: False):
    """Time the call made inside; an error that `rate_limited` says is a 429 is counted too."""
    started = time.perf_counter()
    try:
        yield
    except Exception as error:
        if rate_limited(error):
            UPSTREAM_RATE_LIMITED.labels(operation).inc()
        raise
    finally:
        UPSTREAM_SECONDS.labels(operation).observe(time.perf_counter() - started)


def webhook_attempt(outcome):
    WEBHOOK_ATTEMPTS.labels(outcome).inc()


def events_registry():
    """What this process (or, in multiprocess mode, every process of the folder) counted."""
    if not MULTIPROCESS_DIRECTORY:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=MULTIPROCESS_DIRECTORY)
    return registry


def token_accepted(authorization, token):
    """Whether an Authorization header carries `Bearer <token>` (no token set: anyone may)."""
    if not token:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


UNAUTHORIZED = "Authentication required: send Authorization: Bearer <METRICS_TOKEN>."


def _guarded(wsgi_app, token):
    """prometheus-client's WSGI app, answering 401 JSON without METRICS_TOKEN when one is set."""

    def guarded(environ, start_response):
        if token_accepted(environ.get("HTTP_AUTHORIZATION"), token):
            return wsgi_app(environ, start_response)
        body = json.dumps({"error": UNAUTHORIZED}).encode()
        start_response(
            "401 Unauthorized",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("WWW-Authenticate", 'Bearer realm="metrics"'),
            ],
        )
        return [body]

    return guarded


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


def serve_for_consumer(config):
    """A consumer's own metrics on METRICS_HOST:METRICS_PORT, from a thread (None if unset).

    Only its events: the state families come from the web's /metrics, read from the database.
    """
    port = config.get("METRICS_PORT")
    if not port:
        return None
    host = config.get("METRICS_HOST") or "0.0.0.0"
    app = _guarded(make_wsgi_app(events_registry()), config.get("METRICS_TOKEN"))
    try:
        server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as error:
        # The consumer's work matters more than its metrics: it runs on, and says so.
        log.error(
            "cannot serve metrics on %s:%s (%s); the consumer runs without", host, port, error
        )
        return None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s:%s/metrics", host, port)
    return server
