"""JSON shapes of the API answers (the contract in docs/api.md)."""

import functools

from flask import current_app

from ..extensions import db
from ..models import Batch, Generation, GenerationStatus, utcnow
from ..storage.views import signed_url, url_signer
from ..words import count_of
from . import paging, reasons, retention
from .eta import estimates, times_of
from .progress import Progress

# All that an entry of `results` reads. The status route selects just these, as plain rows:
# loading 50 whole Generation objects through the ORM took a tenth of every poll.
RESULT_COLUMNS = (
    Generation.id,
    Generation.batch_id,
    Generation.client_id,
    Generation.status,
    Generation.result_key,
    Generation.error_code,
    Generation.error_message,
    Generation.attempts,
    Generation.not_before,
    Generation.cost,
    Generation.result_deleted_at,
    # Its batch's hold (paused, or past an unapproved canary), for its reason.
    reasons.HELD,
)
REFUNDED_STATUSES = (GenerationStatus.FAILED, GenerationStatus.CANCELLED)
# "Not given: ask": an eta of None is an answer (null).
ASK = object()


def timestamp(value):
    return value.isoformat(timespec="milliseconds") + "Z" if value else None


def generation_result(generation, signed=signed_url, ahead=None):
    """One entry of `results`: generationId, status, imageUrl, error (+ clientId, errorCode,
    attempts, charged, refunded, reason).

    `generation` is a Generation or a row of RESULT_COLUMNS; `signed` makes the imageUrl (one
    url_signer() serves all the entries of an answer); `ahead` is reasons.images_ahead of the
    answer's generations (asked here when not given).
    """
    success = (
        generation.status == GenerationStatus.SUCCESS
        and generation.result_key
        and generation.result_deleted_at is None  # past retention: the file is gone
    )
    if ahead is None:
        ahead = reasons.images_ahead([generation])
    refunded = generation.status in REFUNDED_STATUSES  # refunded as they ended (outcomes.py)
    return {
        "generationId": generation.id,
        "clientId": generation.client_id,
        "status": generation.status,
        "imageUrl": signed(generation.result_key) if success else None,
        "error": generation.error_message if generation.status == "failed" else None,
        "errorCode": generation.error_code if generation.status == "failed" else None,
        "attempts": generation.attempts,
        "charged": generation.cost,
        "refunded": generation.cost if refunded else 0,
        "reason": reasons.reason(
            generation, current_app.config["MAX_ATTEMPTS"], ahead, timestamp
        ),
    }


def summary(generations):
    """Counts by status; `completed` counts successes, as the contract names it."""
    return summary_of(Progress.of(generations))


def summary_of(progress):
    """`summary` from a Progress (as progress.progress_of counts a page of batches)."""
    return {
        "total": progress.total,
        "pending": progress.pending,
        "processing": progress.processing,
        "completed": progress.success,
        "failed": progress.failed,
        "cancelled": progress.cancelled,
    }


def results_payload(batch_id, generations, eta=ASK, queue=None, whole=False):
    """The GET /api/generate/batch answer.

    `eta`: the batch's, as batch_eta answers it (asked here when not given: null when the ids
    are of no one batch or every listed image is finished); `queue`: a shared_queue();
    `whole`: `generations` is every image of the batch (reasons.images_ahead)."""
    signed = url_signer()
    queue = queue or shared_queue()
    ahead = reasons.images_ahead(generations, queue, whole)
    finished = GenerationStatus.TERMINAL
    complete = all(generation.status in finished for generation in generations)
    if eta is ASK:
        batch = db.session.get(Batch, batch_id) if batch_id and not complete else None
        eta = batch_eta(batch, queue) if batch else None
    return {
        "batchId": batch_id,
        "results": [generation_result(generation, signed, ahead) for generation in generations],
        "summary": summary(generations),
        "isComplete": complete,
        "eta": eta,
    }


def shared_queue():
    """The queue (places.queue_now), read once when first asked: an answer's places and its
    eta share it."""
    return functools.cache(reasons.default_queue)


def batch_eta(batch, queue=None, started=None):
    """The batch's `eta` as the answers carry it: {seconds, at} or None. `started`: as
    eta.started_images answers, when the caller has the batch's images."""
    found = estimates([batch], queue or shared_queue(), utcnow(), started)[batch.id]
    return found.to_json(timestamp) if found else None


def batch_created(batch, generations):
    """The POST /api/generate/batch answer."""
    count = len(generations)
    return {
        "batchId": batch.id,
        "jobs": [{"clientId": g.client_id, "generationId": g.id} for g in generations],
        "totalCost": batch.total_cost,
        "status": batch.status,
        "message": _created_message(count, batch.canary),
        "concurrency": batch.concurrency,
        "engine": batch.provider,
        "canary": batch.canary,
    }


def _created_message(count, canary):
    if not canary:
        return f"Queued {count_of(count, 'image')} for processing"
    first = "the first runs" if canary == 1 else f"the first {canary} run"
    images = count_of(count, "image")
    return f"Queued {images}: {first}, then the batch awaits your approval of the rest"


def _approve_by(batch):
    from .canary import deadline  # imported here: canary announces through this module

    return deadline(batch, current_app.config["CANARY_APPROVAL_HOURS"])


def batch_fields(batch, eta=ASK):
    """A batch's own fields, alike in its detail and in the list of batches. `eta` as
    batch_eta answers it (asked here when not given)."""
    return {
        "batchId": batch.id,
        "status": batch.status,
        "model": batch.model,
        "prompt": batch.prompt,
        "negativePrompt": batch.negative_prompt,
        "quality": batch.quality,
        "aspectRatio": batch.aspect_ratio,
        "concurrency": batch.concurrency,
        "totalCost": batch.total_cost,
        "refunded": batch.refunded,
        "engine": batch.provider,
        "createdAt": timestamp(batch.created_at),
        "startedAt": timestamp(batch.started_at),
        "finishedAt": timestamp(batch.finished_at),
        "callbackUrl": batch.callback_url,
        # When retention deletes its results (None until it has settled).
        "expiresAt": timestamp(retention.expires_at(batch)),
        # Set while the batch is paused (pausing.py).
        "pausedAt": timestamp(batch.paused_at),
        # A canary batch (canary.py): its first `canary` images run, then it awaits approval
        # (since awaitingSince, until approveBy); approvedAt once the rest may run.
        "canary": batch.canary,
        "awaitingSince": timestamp(batch.awaiting_since),
        "approveBy": timestamp(_approve_by(batch)),
        "approvedAt": timestamp(batch.approved_at),
        # When the batch is expected to be done (eta.py): null when finished, held or unknown.
        "eta": batch_eta(batch) if eta is ASK else eta,
    }


def batch_detail(batch, generations):
    """The GET /api/generate/batch/<id> answer: the batch's fields plus its results."""
    queue = shared_queue()
    expected = batch_eta(batch, queue, {batch.id: times_of(generations)})
    return {
        **results_payload(batch.id, generations, expected, queue, whole=True),
        **batch_fields(batch, expected),
    }


def batch_list(page):
    """The GET /api/batches answer for a history.BatchPage."""
    last = page.batches[-1] if page.has_more else None
    found = estimates(page.batches, shared_queue(), utcnow())
    expected = {key: value.to_json(timestamp) if value else None for key, value in found.items()}
    return {
        "batches": [
            {
                **batch_fields(batch, expected[batch.id]),
                "summary": summary_of(page.progress[batch.id]),
            }
            for batch in page.batches
        ],
        "nextCursor": paging.batch_cursor(last) if last else None,
    }


def ledger_list(page):
    """The GET /api/ledger answer for a history.LedgerPage."""
    last = page.lines[-1].entry if page.has_more else None
    return {
        "entries": [
            {
                "id": entry.id,
                "kind": entry.kind,
                "amount": entry.amount,
                "balanceAfter": balance_after,
                "batchId": entry.batch_id,
                "generationId": entry.generation_id,
                "note": entry.note,
                "createdAt": timestamp(entry.created_at),
            }
            for entry, balance_after in page.lines
        ],
        "nextCursor": paging.ledger_cursor(last) if last else None,
    }


def batch_cancelled(batch, generations, outcome):
    """The POST /api/generate/batch/<id>/cancel answer: the batch now, and what the cancel did."""
    return {
        **batch_detail(batch, generations),
        "cancelled": outcome.cancelled,
        "refundedNow": outcome.refunded,
        "stillRunning": outcome.still_running,
        "message": outcome.message,
    }


def batch_controlled(batch, generations, message, **fields):
    """A queue-control answer (pause, resume): the batch now, what the call did, and `fields`."""
    return {**batch_detail(batch, generations), **fields, "message": message}


def photo_result(generation):
    """The POST /api/generate/photo answer."""
    return {
        **generation_result(generation),
        "cost": generation.cost,
        "refunded": generation.cost if generation.status == GenerationStatus.FAILED else 0,
        "engine": generation.provider,
        "expiresAt": timestamp(retention.Kept.from_config().results_expire(generation.finished_at)),
    }
