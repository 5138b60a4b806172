"""The API's contract: openapi.yaml (hand-written, OpenAPI 3.1), served as JSON at
GET /api/openapi.json and browsable at /api/docs (Swagger UI, vendored in static/vendor/).

Neither needs a sign-in. The document is parsed once per process; each answer names one server,
PUBLIC_BASE_URL when set (behind a proxy the request's own root may be an inner host), else the
root URL it was asked at, so "Try it out" and generated clients call this service.
"""

import copy
import functools
import json
from importlib import resources

import yaml
from flask import current_app, render_template, request

DOCUMENT = "openapi.yaml"


@functools.cache
def load_document():
    """The parsed document (shared: callers that change it take a copy)."""
    text = resources.files(__package__).joinpath(DOCUMENT).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def document_for(root_url):
    """The document with `servers` naming `root_url` (no trailing slash)."""
    document = copy.copy(load_document())
    document["servers"] = [{"url": root_url.rstrip("/")}]
    return document


def openapi_json():
    # Not jsonify: it sorts keys, and the document reads best in the order it was written.
    root = current_app.config["PUBLIC_BASE_URL"] or request.url_root
    body = json.dumps(document_for(root), ensure_ascii=False)
    return current_app.response_class(body, mimetype="application/json")


def docs_page():
    return render_template("api/docs.html")
