"""JSON shapes of the API answers (the contract in docs/api.md)."""

from ..models import Generation, GenerationStatus
from ..storage.views import signed_url, url_signer
from ..words import count_of
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
)


def _timestamp(value):
    return value.isoformat(timespec="milliseconds") + "Z" if value else None


def generation_result(generation, signed=signed_url):
    """One entry of `results`: generationId, status, imageUrl, error (+ clientId, errorCode).

    `generation` is a Generation or a row of RESULT_COLUMNS; `signed` makes the imageUrl (one
    url_signer() serves all the entries of an answer).
    """
    success = generation.status == GenerationStatus.SUCCESS and generation.result_key
    return {
        "generationId": generation.id,
        "clientId": generation.client_id,
        "status": generation.status,
        "imageUrl": signed(generation.result_key) if success else None,
        "error": generation.error_message if generation.status == "failed" else None,
        "errorCode": generation.error_code if generation.status == "failed" else None,
    }


def summary(generations):
    """Counts by status; `completed` counts successes, as the contract names it."""
    progress = Progress.of(generations)
    return {
        "total": progress.total,
        "pending": progress.pending,
        "processing": progress.processing,
        "completed": progress.success,
        "failed": progress.failed,
        "cancelled": progress.cancelled,
    }


def results_payload(batch_id, generations):
    """The GET /api/generate/batch answer."""
    signed = url_signer()
    finished = GenerationStatus.TERMINAL
    return {
        "batchId": batch_id,
        "results": [generation_result(generation, signed) for generation in generations],
        "summary": summary(generations),
        "isComplete": all(generation.status in finished for generation in generations),
    }


def batch_created(batch, generations):
    """The POST /api/generate/batch answer."""
    count = len(generations)
    return {
        "batchId": batch.id,
        "jobs": [{"clientId": g.client_id, "generationId": g.id} for g in generations],
        "totalCost": batch.total_cost,
        "status": batch.status,
        "message": f"Queued {count_of(count, 'image')} for processing",
        "concurrency": batch.concurrency,
        "engine": batch.provider,
    }


def batch_detail(batch, generations):
    """The GET /api/generate/batch/<id> answer: the batch's fields plus its results."""
    return {
        **results_payload(batch.id, generations),
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
        "createdAt": _timestamp(batch.created_at),
        "startedAt": _timestamp(batch.started_at),
        "finishedAt": _timestamp(batch.finished_at),
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


def photo_result(generation):
    """The POST /api/generate/photo answer."""
    return {
        **generation_result(generation),
        "cost": generation.cost,
        "refunded": generation.cost if generation.status == GenerationStatus.FAILED else 0,
        "engine": generation.provider,
    }
