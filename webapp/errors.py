"""Errors are answers: JSON with an `error` string for the API, a friendly page for people.

No stack trace ever reaches a client.
"""

import logging

from flask import jsonify, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .extensions import db

log = logging.getLogger(__name__)


def wants_json():
    return request.path.startswith(("/api/", "/media/"))


def json_error(message, status, **fields):
    response = jsonify(error=message, **fields)
    response.status_code = status
    return response


def _answer(status, title, message):
    if wants_json():
        return json_error(message, status)
    return render_template("errors/error.html", code=status, title=title, message=message), status


def init_app(app):
    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error):
        limit = app.config["MAX_CONTENT_LENGTH"]
        message = f"The request body is larger than the limit of {limit:,} bytes"
        return _answer(413, "Too large", f"{message} ({limit / 2**20:.4g} MiB).")

    @app.errorhandler(HTTPException)
    def http_error(error):
        return _answer(error.code, error.name, error.description or error.name)

    @app.errorhandler(Exception)
    def unexpected_error(error):
        db.session.rollback()
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _answer(500, "Something went wrong", "Internal server error; it has been logged.")
