"""The status benchmark's reference: a bare Flask app that answers `GET /api/generate/batch` with
one fixed JSON document (captured from the real route), without database, auth or signing.

It is what the same gunicorn and the same JSON encoding cost on their own, so the real route's
requests/s over this one's is the share left after the app's own work.

    gunicorn -k gevent --worker-connections 2000 -w 2 "bench.bare_status:create_app('status.json')"
"""

import json

from flask import Flask, jsonify


def create_app(document_path):
    """The bare app, answering the document stored at `document_path` (encoded per request)."""
    with open(document_path, encoding="utf-8") as handle:
        document = json.load(handle)
    app = Flask(__name__)

    @app.get("/api/generate/batch")
    def batch_status():
        return jsonify(document)

    return app
