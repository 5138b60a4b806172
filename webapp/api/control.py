"""Queue control of a batch through the API: pause and resume it; approve or reject the rest
of a canary batch once its first images are done (generation/canary.py).

Each route checks that the batch is the caller's (404 for anyone else's), calls one service
function and answers the batch as it is now, with what the call did (`message`). A state the call
does not apply to is 409 with `batchStatus`.
"""

from flask import current_app, jsonify
from flask_login import login_required

from tasks import get_queue

from ..errors import json_error
from ..generation import canary, presenters
from ..generation.pausing import NotPausable, pause_batch, resume_batch
from . import _own_batch, bp


@bp.post("/generate/batch/<batch_id>/pause")
@login_required
def pause_batch_job(batch_id):
    """Pause: no new image starts, running ones finish. Repeating it is harmless (200)."""
    _own_batch(batch_id)
    try:
        outcome = pause_batch(batch_id)
    except NotPausable as refused:
        return json_error(refused.message, 409, batchStatus=refused.status)
    return _answer(batch_id, outcome, stillRunning=outcome.still_running)


@bp.post("/generate/batch/<batch_id>/resume")
@login_required
def resume_batch_job(batch_id):
    """Resume a paused batch: its lanes are rung. Resuming a running batch is harmless (200)."""
    _own_batch(batch_id)
    try:
        outcome = resume_batch(batch_id, get_queue(current_app))
    except NotPausable as refused:
        return json_error(refused.message, 409, batchStatus=refused.status)
    return _answer(batch_id, outcome)


@bp.post("/generate/batch/<batch_id>/approve")
@login_required
def approve_batch_job(batch_id):
    """Run the rest of a batch awaiting approval. Approving again is harmless (200)."""
    _own_batch(batch_id)
    try:
        outcome = canary.approve(batch_id, get_queue(current_app))
    except canary.NotAwaitingApproval as refused:
        return json_error(refused.message, 409, batchStatus=refused.status)
    return _answer(batch_id, outcome, released=outcome.images)


@bp.post("/generate/batch/<batch_id>/reject")
@login_required
def reject_batch_job(batch_id):
    """Stop a batch awaiting approval: the rest is cancelled and refunded at once (the canary
    images stay charged). Rejecting again is harmless (200, nothing refunded)."""
    _own_batch(batch_id)
    try:
        outcome = canary.reject(batch_id)
    except canary.NotAwaitingApproval as refused:
        return json_error(refused.message, 409, batchStatus=refused.status)
    batch = _own_batch(batch_id)
    return jsonify(presenters.batch_cancelled(batch, list(batch.generations), outcome))


def _answer(batch_id, outcome, **fields):
    batch = _own_batch(batch_id)
    return jsonify(
        presenters.batch_controlled(batch, list(batch.generations), outcome.message, **fields)
    )
