"""Logs: the ids every line carries, a request's `X-Request-Id`, and `LOG_FORMAT=json`.

`LOG_FORMAT=text` (the default, `make run`) leaves logging as it always was. `LOG_FORMAT=json`
writes one JSON object per line to stderr (python-json-logger): `time`, `level`, `logger`,
`message`, and, when known, `request_id`, `user_id`, `batch_id`, `generation_id` (plus any
`extra=` a call passes). The ids come from two places, read by one logging filter:

- a web request: its request id (`X-Request-Id` taken from the request when it is a sane token,
  else made here, and echoed on every answer), the signed-in user once loaded, and the batch
  its URL names;
- `bound(batch_id=…, generation_id=…)`, a context variable the queue's tasks and the steps set
  around their work, so a consumer's lines name what they were working on.

This module imports nothing of the layers: any of them may bind ids.
"""

import contextvars
import logging
import re
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime

from flask import g, has_request_context, request

FORMATS = ("text", "json")
IDS = ("request_id", "user_id", "batch_id", "generation_id")
HEADER = "X-Request-Id"
# A request id we take from the client (or nginx's $request_id): bounded, and only characters
# that are safe in a header, a log line and a shell. Anything else is replaced by a new one.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
JSON_FIELDS = {"asctime": "time", "levelname": "level", "name": "logger"}

_bound = contextvars.ContextVar("batchgen_log_ids", default=None)  # a dict once bound
requests_log = logging.getLogger("webapp.requests")


@contextmanager
def bound(**ids):
    """Lines logged inside carry these ids (None leaves an id as it was)."""
    known = {**(_bound.get() or {}), **{k: v for k, v in ids.items() if v is not None}}
    token = _bound.set(known)
    try:
        yield
    finally:
        _bound.reset(token)


def current_ids():
    """The ids known here: the bound ones, then the web request's."""
    ids = dict(_bound.get() or {})
    if has_request_context():
        ids.setdefault("request_id", request_id())
        user = g.get("_login_user")  # Flask-Login's loaded user; never loaded for a log line
        if user is not None and getattr(user, "is_authenticated", False):
            ids.setdefault("user_id", user.id)
        batch_id = (request.view_args or {}).get("batch_id")
        if isinstance(batch_id, str):
            ids.setdefault("batch_id", batch_id)
    return ids


class ContextFilter(logging.Filter):
    """Adds the known ids to every record that passes (as attributes the formatter shows)."""

    def filter(self, record):
        for name, value in current_ids().items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


def request_id():
    """This request's id: the client's `X-Request-Id` when sane, else a new one (kept in g)."""
    known = g.get("request_id")
    if known is None:
        offered = request.headers.get(HEADER, "")
        known = offered if SANE_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        g.request_id = known
    return known


class _Stderr(logging.StreamHandler):
    """A stream handler on whatever sys.stderr is at the moment of writing."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def json_formatter():
    from pythonjsonlogger.json import JsonFormatter

    class Formatter(JsonFormatter):
        def formatTime(self, record, datefmt=None):  # noqa: N802 (logging's name)
            """UTC, ISO 8601, to the millisecond: 2026-01-31T12:00:00.123Z."""
            moment = datetime.fromtimestamp(record.created, UTC)
            return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    return Formatter("{asctime}{levelname}{name}{message}", style="{", rename_fields=JSON_FIELDS)


def configure(app):
    """Set up logging for LOG_FORMAT: nothing changes for text; json puts one handler on the
    root logger (replacing the one an earlier app of this process put there)."""
    log_format = app.config["LOG_FORMAT"]
    if log_format not in FORMATS:
        raise ValueError(f"LOG_FORMAT={log_format!r} is not one of {', '.join(FORMATS)}")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "batchgen", False)]:
        root.removeHandler(handler)
    if log_format != "json":
        return
    handler = _Stderr()
    handler.batchgen = True
    handler.setFormatter(json_formatter())
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    root.setLevel(app.config["LOG_LEVEL"])


def adopt_huey_logger(app):
    """`huey_consumer` gives the "huey" logger a text handler of its own (after the app is
    built); under json its lines become JSON too, once, instead of text and JSON both."""
    if app.config["LOG_FORMAT"] != "json":
        return
    huey_log = logging.getLogger("huey")
    for handler in huey_log.handlers:
        handler.setFormatter(json_formatter())
        handler.addFilter(ContextFilter())
    if huey_log.handlers:
        huey_log.propagate = False


def init_app(app):
    configure(app)

    @app.before_request
    def take_request_id():
        g.request_started = time.perf_counter()
        request_id()

    @app.after_request
    def echo_request_id(response):
        response.headers[HEADER] = request_id()
        _log_request(response)
        return response


def _log_request(response):
    """One INFO line per answer (shown under json; text logs warnings only, as before)."""
    if not requests_log.isEnabledFor(logging.INFO):
        return
    started = g.get("request_started")
    rule = request.url_rule.rule if request.url_rule else None
    # A path that carries a secret (a sign-in link's token) is logged as its route.
    path = rule if rule and "<token>" in rule else request.path
    requests_log.info(
        "%s %s %s",
        request.method,
        path,
        response.status_code,
        extra={
            "method": request.method,
            "path": path,
            "status": response.status_code,
            "client": request.remote_addr,  # nginx's X-Forwarded-For with PROXY_HOPS
            "duration_ms": round((time.perf_counter() - started) * 1000, 1) if started else None,
        },
    )
