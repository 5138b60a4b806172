"""The JSON API: batches, single photos, the model catalog and the caller's account, and the
kie.ai callback (see callbacks.py)."""

import ijson
from flask import Blueprint, abort, current_app, jsonify, request
from flask_login import current_user, login_required
from sqlalchemy import select

from tasks import get_queue

from .. import billing
from ..catalog import load_catalog
from ..errors import json_error
from ..extensions import db
from ..generation.cancellation import NothingToCancel, cancel_batch
from ..generation.creation import create_batch, create_photo
from ..generation.ownership import owned_batch
from ..generation.progress import wait_until_finished
from ..generation.validation import (
    Limits,
    ValidationError,
    parse_batch_request,
    parse_photo_request,
)
from ..models import Generation
from ..providers import get_provider
from ..storage import get_storage
from . import callbacks, idempotency, presenters

# How much of the body the JSON parser reads at a time.
READ_CHUNK = 256 * 1024

bp = Blueprint("api", __name__, url_prefix="/api")
# No login: kie.ai calls it. CSRF-exempt with the rest of the API (see create_app).
bp.add_url_rule("/callbacks/kie", view_func=callbacks.kie_callback, methods=["POST"])

MAX_JOB_IDS = 200


@bp.errorhandler(ValidationError)
def invalid_request(error):
    return json_error(error.message, 400, field=error.field)


@bp.errorhandler(billing.InsufficientCredits)
def insufficient_credits(error):
    return json_error(
        "Insufficient credits", 402, required=error.required, available=error.available
    )


def _json_body():
    """The body's JSON, parsed as it streams in.

    A 50-image batch is about 70 MB of JSON. `json.loads` needs the whole text beside the
    values it parses out of it, twice the body on top of the worker's own ~100 MB; parsed from
    the stream, only the values are held. JSON is UTF-8 here, as RFC 8259 asks between systems.
    """
    if not request.is_json:
        raise ValidationError("The body must be JSON (Content-Type: application/json)", "body")
    try:
        stream = _Reader(request.stream, request.content_length)
        (payload,) = ijson.items(stream, "", use_float=True, buf_size=READ_CHUNK)
    except ijson.JSONError as error:
        reason = _parse_error(error)
        raise ValidationError(f"The body is not valid JSON: {reason}", "body") from None
    return payload


class _Reader:
    """The request stream as the parser reads it, never past Content-Length.

    The parser first reads 0 bytes to see what the stream answers, which Werkzeug's stream
    takes for a client that hung up; and under a server that ends the stream itself
    (gunicorn), one read after the last byte of a body of exactly MAX_REQUEST_BYTES would be
    taken for a body over the limit.
    """

    def __init__(self, stream, length):
        self.stream = stream
        self.remaining = length  # None: chunked, the stream itself tells where it ends

    def read(self, size=-1):
        if self.remaining is not None:
            size = self.remaining if size < 0 else min(size, self.remaining)
        if not size:
            return b""
        data = self.stream.read(size)
        if self.remaining is not None:
            self.remaining -= len(data)
        return data


def _parse_error(error):
    """The first line of the parser's message ("parse error: trailing garbage"), without the
    excerpt of the body it draws under it."""
    message = error.args[0] if error.args else ""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    lines = str(message).strip().splitlines()
    return lines[0] if lines else "it could not be read"


@bp.post("/generate/batch")
@login_required
@idempotency.idempotent
def create_batch_job(record_resource):
    """Validate, charge once, create the rows, ring the lanes."""
    spec = parse_batch_request(
        _json_body(), load_catalog(), Limits.from_config(current_app.config)
    )
    batch = _create(create_batch, spec, record_resource)
    return jsonify(presenters.batch_created(batch, list(batch.generations)))


@bp.get("/generate/batch")
@login_required
def batch_status():
    """Status of the listed generations (the contract's polling call)."""
    raw_ids = request.args.get("jobIds", "")
    job_ids = list(dict.fromkeys(part.strip() for part in raw_ids.split(",") if part.strip()))
    if not job_ids:
        return json_error("jobIds is required: comma-separated generation ids", 400, field="jobIds")
    if len(job_ids) > MAX_JOB_IDS:
        return json_error(f"jobIds lists more than {MAX_JOB_IDS} ids", 400, field="jobIds")
    batch_id = request.args.get("batchId") or None
    if batch_id:
        _own_batch(batch_id)
    found = {
        row.id: row
        for row in db.session.execute(
            select(*presenters.RESULT_COLUMNS).where(
                Generation.id.in_(job_ids), Generation.user_id == current_user.id
            )
        )
    }
    missing = [job_id for job_id in job_ids if job_id not in found]
    if missing:
        return json_error(
            f"Generation not found: {', '.join(missing[:10])}", 404, notFound=missing
        )
    generations = [found[job_id] for job_id in job_ids]
    if batch_id is None:
        batch_ids = {generation.batch_id for generation in generations}
        batch_id = batch_ids.pop() if len(batch_ids) == 1 else None
    return jsonify(presenters.results_payload(batch_id, generations))


@bp.get("/generate/batch/<batch_id>")
@login_required
def batch_detail(batch_id):
    """The whole batch: its own fields and every generation's status."""
    batch = _own_batch(batch_id)
    return jsonify(presenters.batch_detail(batch, list(batch.generations)))


@bp.post("/generate/batch/<batch_id>/cancel")
@login_required
def cancel_batch_job(batch_id):
    """Cancel: waiting images are cancelled and refunded, running ones finish. Idempotent."""
    _own_batch(batch_id)
    try:
        outcome = cancel_batch(batch_id)
    except NothingToCancel as finished:
        return json_error(
            f"The batch is already {finished.status}; there is nothing to cancel.",
            409,
            batchStatus=finished.status,
        )
    batch = _own_batch(batch_id)
    return jsonify(presenters.batch_cancelled(batch, list(batch.generations), outcome))


@bp.post("/generate/photo")
@login_required
@idempotency.idempotent
def generate_photo(record_resource):
    """One image, charged per request; answers when it is done (or 202 if it takes too long)."""
    spec = parse_photo_request(_json_body(), load_catalog(), Limits.from_config(current_app.config))
    generation = _create(create_photo, spec, record_resource)
    generation = wait_until_finished(generation.id, current_app.config["PHOTO_WAIT_SECONDS"])
    return jsonify(presenters.photo_result(generation)), 200 if generation.is_finished else 202


@bp.get("/models")
def list_models():
    """The catalog: what can be generated, in which qualities and ratios, for how much."""
    return jsonify(
        models=[model.to_json() for model in load_catalog()],
        engine=current_app.config["GENERATION_BACKEND"],
    )


@bp.get("/me")
@login_required
def me():
    return jsonify(id=current_user.id, name=current_user.name, credits=current_user.credits)


def _create(create, spec, record_resource):
    """Run a create for the caller, on this app's storage, provider and queue."""
    provider_name = get_provider().name
    return create(
        current_user.id, spec, get_storage(), provider_name, get_queue(current_app), record_resource
    )


def _own_batch(batch_id):
    """The caller's batch; a 404 JSON answer for anyone else's and for one that never existed."""
    batch = owned_batch(batch_id, current_user.id)
    if batch is None:
        abort(json_error(f"Batch not found: {batch_id}", 404))
    return batch
