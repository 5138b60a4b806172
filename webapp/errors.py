"""Errors are answers: JSON with an `error` string for the API, a friendly page for people.

No stack trace ever reaches a client.
"""

import logging

import redis
from flask import current_app, jsonify, make_response, render_template, request
from flask_limiter import RateLimitExceeded
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .extensions import db
from .limits import over_limit_headers
from .storage import StorageUnavailable

log = logging.getLogger(__name__)

# What an outage answer tells a client to wait before it tries again.
RETRY_AFTER_SECONDS = 5


def wants_json():
    """The client is a program (the API, a media link): it gets JSON, never a page. A media
    link opened in a browser tab (which asks for HTML first) gets a page."""
    if request.path.startswith("/api/"):
        return True
    if request.path.startswith("/media/"):
        offered = request.accept_mimetypes.best_match(["application/json", "text/html"])
        return offered != "text/html"
    return False


def is_htmx():
    """The request comes from htmx (the one place that reads HX-Request)."""
    return request.headers.get("HX-Request") == "true"


def json_error(message, status, **fields):
    response = jsonify(error=message, **fields)
    response.status_code = status
    return response


def _answer(status, title, message):
    if wants_json():
        return json_error(message, status)
    html = render_template("errors/error.html", code=status, title=title, message=message)
    return make_response(html, status)


def _outage_answer(part, error):
    """503 with Retry-After: `part` ("database", "queue", "image storage") cannot be reached, an
    outage and not a bug. The page asks nothing of the database: it is rendered without the context
    processors (Flask-Login's would load the signed-in user)."""
    log.error("%s unavailable on %s %s: %s", part, request.method, request.path, error)
    message = (
        f"The service is briefly unavailable (its {part} cannot be reached); "
        f"try again in {RETRY_AFTER_SECONDS} seconds."
    )
    if wants_json():
        response = json_error(message, 503)
    else:
        template = current_app.jinja_env.get_template("errors/outage.html")
        response = make_response(template.render(title="Try again shortly", message=message), 503)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def init_app(app):
    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error):
        limit = app.config["MAX_CONTENT_LENGTH"]
        message = f"The request body is larger than the limit of {limit:,} bytes"
        return _answer(413, "Too large", f"{message} ({limit / 2**20:.4g} MiB).")

    @app.errorhandler(StorageUnavailable)
    def storage_unavailable(error):
        return _outage_answer("image storage", error)

    @app.errorhandler(RateLimitExceeded)
    def too_many_requests(error):
        """Over an abuse limit (webapp/limits.py), with Retry-After and the limit's headers."""
        message = f"Too many requests: at most {error.description}. Try again shortly."
        response = _answer(429, "Too many requests", message)
        response.headers.update(over_limit_headers())
        return response

    @app.errorhandler(HTTPException)
    def http_error(error):
        return _answer(error.code, error.name, error.description or error.name)

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def database_unavailable(error):
        """The database cannot be reached (or is too busy)."""
        try:
            db.session.rollback()
        except Exception:  # the connection is gone: there is nothing to roll back
            pass
        return _outage_answer("database", error)

    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    def queue_unavailable(error):
        """The queue's Redis cannot be reached as a route rings it (a kie callback's poll, say):
        what the request committed stays, the reaper rings it later, and the client may try
        again (kie retries a callback that was not answered 200)."""
        db.session.rollback()
        return _outage_answer("queue", error)

    @app.errorhandler(Exception)
    def unexpected_error(error):
        db.session.rollback()
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _answer(500, "Something went wrong", "Internal server error; it has been logged.")
