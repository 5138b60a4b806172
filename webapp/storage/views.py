"""Serves stored images to whoever holds a valid signed link."""

import mimetypes

from flask import Blueprint, abort, current_app, request, send_file, url_for

from . import get_storage, sign, verify

bp = Blueprint("media", __name__, url_prefix="/media")


def signed_url(key):
    """An absolute, signed, expiring link to a stored file."""
    config = current_app.config
    params = sign(key, config["SECRET_KEY"], config["SIGNED_URL_SECONDS"])
    base = config["PUBLIC_BASE_URL"]
    if base:
        return base + url_for("media.download", key=key, **params)
    return url_for("media.download", key=key, _external=True, **params)


@bp.get("/<path:key>")
def download(key):
    """Send the file if the link's signature is valid and unexpired."""
    args = request.args
    secret = current_app.config["SECRET_KEY"]
    if not verify(key, args.get("expires"), args.get("signature"), secret):
        abort(403, "This link is invalid or has expired.")
    storage = get_storage()
    try:
        path = storage.path(key)
    except ValueError:
        abort(404)
    if not storage.exists(key):
        abort(404)
    mimetype = mimetypes.guess_type(path)[0] or "application/octet-stream"
    response = send_file(path, mimetype=mimetype, max_age=0)
    response.headers["Cache-Control"] = "private, max-age=300"
    return response
