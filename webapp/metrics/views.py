"""`GET /metrics` in Prometheus' text format, and every request's latency by route.

The answer holds the events counted by this process (or, under gunicorn with
PROMETHEUS_MULTIPROC_DIR, by every process writing to that folder) and the state read from the
database and the queue (state.py). With METRICS_TOKEN set, it asks for `Authorization: Bearer
<token>` and answers 401 JSON without it. Like the health probes, it needs no sign-in, counts
against no rate limit and sets no cookie.
"""

import time

from flask import Blueprint, Response, current_app, g, request
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from ..errors import json_error
from . import REQUEST_SECONDS, UNAUTHORIZED, events_registry, token_accepted
from .state import StateCollector

bp = Blueprint("metrics", __name__)
# Methods named as they are; anything else a client invents is "other" (bounded labels).
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class _Events:
    """The events registry, as one collector of the scrape's registry."""

    def collect(self):
        return events_registry().collect()


@bp.get("/metrics")
def scrape():
    token = current_app.config["METRICS_TOKEN"]
    if not token_accepted(request.headers.get("Authorization"), token):
        response = json_error(UNAUTHORIZED, 401)
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry()
    registry.register(_Events())
    registry.register(StateCollector(current_app._get_current_object()))
    # The text format, or OpenMetrics when the scraper asks for it (as prometheus-client does).
    encode, content_type = choose_encoder(request.headers.get("Accept"))
    response = Response(encode(registry), headers={"Content-Type": content_type})
    response.headers["Cache-Control"] = "no-store"
    return response


def _start_clock():
    g.metrics_started = time.perf_counter()


def _observe(response):
    started = g.pop("metrics_started", None)
    if started is not None:
        # The URL rule, not the path: one series per route, whatever ids the paths carry.
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        method = request.method if request.method in METHODS else "other"
        REQUEST_SECONDS.labels(route, method, str(response.status_code)).observe(
            time.perf_counter() - started
        )
    return response


def init_app(app):
    from ..extensions import csrf

    app.register_blueprint(bp)
    csrf.exempt(bp)
    app.before_request(_start_clock)
    app.after_request(_observe)
