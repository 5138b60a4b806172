"""Errors are answers: JSON with an `error` string for the API, never a stack trace."""

import logging

from flask import jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .extensions import db

log = logging.getLogger(__name__)


def wants_json():
    return request.path.startswith(("/api/", "/media/"))


def json_error(message, status, **fields):
    response = jsonify(error=message, **fields)
    response.status_code = status
    return response


def init_app(app):
    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error):
        limit = app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024)
        message = f"The request body is larger than the {limit} MB limit."
        if wants_json():
            return json_error(message, 413)
        return message, 413

    @app.errorhandler(HTTPException)
    def http_error(error):
        if wants_json():
            return json_error(error.description or error.name, error.code)
        return error

    @app.errorhandler(Exception)
    def unexpected_error(error):
        db.session.rollback()
        log.exception("unhandled error on %s %s", request.method, request.path)
        message = "Internal server error; the operators have been told."
        if wants_json():
            return json_error(message, 500)
        return message, 500
