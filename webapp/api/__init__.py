"""The JSON API: batches, single photos, the model catalog and the caller's account, and the
kie.ai callback (see callbacks.py)."""

from flask import Blueprint, abort, current_app, jsonify, request
from flask_login import current_user, login_required

from tasks import get_queue

from .. import billing
from ..catalog import load_catalog
from ..conditional import conditional_get
from ..errors import json_error
from ..generation import canary, presenters, reads
from ..generation.cancellation import NothingToCancel, cancel_batch
from ..generation.creation import TooManyInFlight, create_batch, create_photo
from ..generation.ownership import owned_batch
from ..generation.progress import wait_until_finished
from ..generation.validation import (
    Limits,
    ValidationError,
    parse_batch_request,
    parse_photo_request,
)
from ..generation.webhook_endpoints import EndpointRefused, check_callback_url
from ..models import looks_like_id
from ..providers import get_provider
from ..storage import get_storage
from . import callbacks, etags, history, idempotency, openapi, webhooks
from .json_body import parse_json

bp = Blueprint("api", __name__, url_prefix="/api")
# No login: kie.ai calls it. CSRF-exempt with the rest of the API (see create_app).
bp.add_url_rule("/callbacks/kie", view_func=callbacks.kie_callback, methods=["POST"])
# The contract (openapi.yaml) and its docs page; no login either.
bp.add_url_rule("/openapi.json", view_func=openapi.openapi_json, methods=["GET"])
bp.add_url_rule("/docs", view_func=openapi.docs_page, methods=["GET"])
# The caller's history, a page at a time (history.py).
bp.add_url_rule("/batches", view_func=history.list_batches)
bp.add_url_rule("/ledger", view_func=history.list_ledger)
# A batch's webhook deliveries, and sending one again (webhooks.py).
bp.add_url_rule("/generate/batch/<batch_id>/webhooks", view_func=webhooks.batch_deliveries)
bp.add_url_rule(
    "/webhooks/deliveries/<delivery_id>/redeliver", view_func=webhooks.redeliver, methods=["POST"]
)

MAX_JOB_IDS = 200
DATA_URL_PREFIX_BYTES = 64  # "data:image/jpeg;base64," and room to spare
# When a user with too many images in flight may try again: about one image's time.
IN_FLIGHT_RETRY_SECONDS = 10


@bp.errorhandler(ValidationError)
def invalid_request(error):
    return json_error(error.message, 400, field=error.field)


@bp.errorhandler(TooManyInFlight)
def too_many_in_flight(error):
    response = json_error(error.message, 429, limit=error.limit, inFlight=error.in_flight)
    response.headers["Retry-After"] = str(IN_FLIGHT_RETRY_SECONDS)
    return response


@bp.errorhandler(EndpointRefused)
def webhook_refused(error):
    return json_error(error.message, 400, field=error.field)


@bp.errorhandler(billing.InsufficientCredits)
def insufficient_credits(error):
    return json_error(
        "Insufficient credits", 402, required=error.required, available=error.available
    )


def _json_body():
    """The request's JSON body, parsed as it streams in (json_body.py)."""
    if not request.is_json:
        raise ValidationError("The body must be JSON (Content-Type: application/json)", "body")
    return parse_json(
        request.stream, request.content_length, max_string_bytes=longest_string(current_app)
    )


def longest_string(app):
    """The longest string a body may hold: twice an image's data URL at MAX_IMAGE_BYTES (and
    at least a megabyte), so an image too large still gets the answer that names its field,
    and a string no image could be is refused as it arrives."""
    data_url = app.config["MAX_IMAGE_BYTES"] * 4 // 3 + DATA_URL_PREFIX_BYTES
    return max(2 * data_url, 2**20)


@bp.post("/generate/batch")
@login_required
@idempotency.idempotent
def create_batch_job(record_resource):
    """Validate, charge once, create the rows, ring the lanes."""
    payload = _json_body()
    spec = parse_batch_request(payload, load_catalog(), Limits.from_config(current_app.config))
    spec = canary.with_canary(spec, payload.get("canary"))
    if spec.callback_url:
        check_callback_url(current_user.id, spec.callback_url)
    batch = _create(create_batch, spec, record_resource)
    return jsonify(presenters.batch_created(batch, list(batch.generations)))


@bp.get("/generate/batch")
@login_required
@conditional_get(etags.jobs_tag)  # If-None-Match: 304, unbuilt (webapp/conditional.py)
def batch_status():
    """Status of the listed generations (the contract's polling call)."""
    raw_ids = request.args.get("jobIds", "")
    job_ids = list(dict.fromkeys(part.strip() for part in raw_ids.split(",") if part.strip()))
    if not job_ids:
        return json_error("jobIds is required: comma-separated generation ids", 400, field="jobIds")
    if len(job_ids) > MAX_JOB_IDS:
        return json_error(f"jobIds lists more than {MAX_JOB_IDS} ids", 400, field="jobIds")
    malformed = [job_id for job_id in job_ids if not looks_like_id(job_id)]
    if malformed:
        return json_error(
            f"jobIds holds {len(malformed)} value(s) that are not generation ids "
            "(letters, digits, _ and -, at most 64)",
            400,
            field="jobIds",
        )
    batch_id = request.args.get("batchId") or None
    if batch_id:
        _own_batch(batch_id)
    found = reads.result_rows(job_ids, current_user.id)  # one Core read, no unit of work
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
@conditional_get(etags.batch_tag)
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
    # The balance is read now: the caller's user may come from the token cache (auth/), and
    # money is never shown older than the database has it.
    credits = reads.balance(current_user.id)
    return jsonify(id=current_user.id, name=current_user.name, credits=credits)


def _create(create, spec, record_resource):
    """Run a create for the caller, on this app's storage, provider and queue."""
    return create(
        current_user.id,
        spec,
        get_storage(),
        get_provider().name,
        get_queue(current_app),
        record_resource,
        limits_in_flight=current_app.config["USER_MAX_PENDING_IMAGES"],
    )


def _own_batch(batch_id):
    """The caller's batch; a 404 JSON answer for anyone else's and for one that never existed."""
    batch = owned_batch(batch_id, current_user.id)
    if batch is None:
        abort(json_error(f"Batch not found: {batch_id}", 404))
    return batch


# Queue control of a batch (control.py): its routes join bp; a batch's progress as
# server-sent events (events.py).
from . import control, events  # noqa: E402,F401

events.init_app(bp)
