"""Run claimed generations: call the engine, record the outcome fenced on the lease, finish.

Failures are refunded in the transaction that marks them failed; retryable ones go back to
pending with backoff while attempts remain. See claims.py for how work is claimed.
"""

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from .. import billing
from ..catalog import load_catalog
from ..extensions import db
from ..models import Batch, BatchStatus, Generation, GenerationStatus, utcnow
from ..providers import Done, Failed, GenerationRequest, Pending, Submitted
from .claims import Claim, claim_for_batch, claim_generation

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 300.0


@dataclass(frozen=True)
class StepResult:
    """What the queue should do after a lane step."""

    worked: bool = False  # a generation was claimed: ring the lane again
    wake_at: datetime | None = None  # nothing runnable before then
    poll_generation: str | None = None  # submitted to an async engine: poll it
    ring_batch: str | None = None  # a slot of this batch came free: ring its lane


def run_claim(claim, provider, storage, settings):
    """Do the claimed attempt's work and record the outcome; answers the outcome."""
    generation = claim.generation
    try:
        input_image = storage.read(generation.input_key) if generation.input_key else None
    except FileNotFoundError:
        outcome = Failed("input_missing", "The input image is missing from storage.")
    else:
        try:
            outcome = provider.submit(_request_for(generation, input_image))
        except Exception:
            log.exception("engine failed on %s", generation.id)
            outcome = Failed("engine_error", "The image engine failed unexpectedly.", True)
    record_outcome(claim, outcome, storage, settings)
    return outcome


def record_outcome(claim, outcome, storage, settings):
    """Write an attempt's outcome, fenced on its lease; False if the lease was lost."""
    if isinstance(outcome, Done):
        return _finish_success(claim, outcome, storage)
    if isinstance(outcome, Submitted):
        return _fenced_update(
            claim, provider_task_id=outcome.task_id, lease_expires_at=_lease_end(settings)
        )
    return _finish_failure(claim, outcome, settings)


def _lease_end(settings):
    return utcnow() + timedelta(seconds=settings.lease_seconds)


def _fenced_update(claim, **values):
    result = db.session.execute(
        update(Generation)
        .where(
            Generation.id == claim.generation.id,
            Generation.lease_owner == claim.token,
            Generation.status == GenerationStatus.PROCESSING,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        db.session.rollback()
        log.warning("lease on %s was lost; outcome dropped", claim.generation.id)
        return False
    _touch_batch(claim.generation.batch_id)
    db.session.commit()
    return True


def _touch_batch(batch_id):
    if batch_id:
        db.session.execute(update(Batch).where(Batch.id == batch_id).values(heartbeat_at=utcnow()))


def _finish_success(claim, outcome, storage):
    generation = claim.generation
    folder = generation.batch_id or "photos"
    key = f"results/{folder}/{generation.id}.{outcome.extension}"
    storage.save(key, outcome.image)
    return _fenced_update(
        claim,
        status=GenerationStatus.SUCCESS,
        result_key=key,
        finished_at=utcnow(),
        lease_expires_at=None,
        error_code=None,
        error_message=None,
    )


def _finish_failure(claim, failed, settings):
    generation = claim.generation
    if failed.retryable and generation.attempts < settings.max_attempts:
        return _fenced_update(
            claim,
            status=GenerationStatus.PENDING,
            lease_owner=None,
            lease_expires_at=None,
            not_before=utcnow() + timedelta(seconds=backoff_seconds(generation.attempts)),
            error_code=failed.code,
            error_message=failed.message,
        )
    return fail_and_refund(generation, claim.token, failed.code, failed.message)


def fail_and_refund(generation, token, code, message):
    """Mark an in-flight generation failed and refund it, in one transaction, fenced on token."""
    result = db.session.execute(
        update(Generation)
        .where(
            Generation.id == generation.id,
            Generation.lease_owner == token,
            Generation.status == GenerationStatus.PROCESSING,
        )
        .values(
            status=GenerationStatus.FAILED,
            finished_at=utcnow(),
            lease_expires_at=None,
            error_code=code,
            error_message=message,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        db.session.rollback()
        return False
    billing.refund_generation(generation, note=code)
    _touch_batch(generation.batch_id)
    db.session.commit()
    return True


def backoff_seconds(attempts):
    """Exponential backoff with full jitter: base·2^(n-1), capped, times a random 0.5–1."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1))
    return ceiling * random.uniform(0.5, 1.0)


def status_counts(batch_id):
    """{status: count} for one batch's generations."""
    rows = db.session.execute(
        select(Generation.status, func.count())
        .where(Generation.batch_id == batch_id)
        .group_by(Generation.status)
    ).all()
    return dict(rows)


def final_status(counts):
    """The batch status once every generation is terminal, or None while some are not."""
    if counts.get(GenerationStatus.PENDING) or counts.get(GenerationStatus.PROCESSING):
        return None
    total = sum(counts.values())
    success = counts.get(GenerationStatus.SUCCESS, 0)
    if success == total:
        return BatchStatus.COMPLETED
    return BatchStatus.PARTIAL if success else BatchStatus.FAILED


def finalize_batch(batch_id):
    """Give the batch its final status if all its generations are terminal; True if it did."""
    status = final_status(status_counts(batch_id))
    if status is None:
        db.session.rollback()
        return False
    result = db.session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status.in_(BatchStatus.ACTIVE))
        .values(status=status, finished_at=utcnow())
    )
    db.session.commit()
    return result.rowcount == 1


def next_wake(batch_id):
    """When the batch's earliest backed-off generation becomes runnable (None if none waits)."""
    wake = db.session.scalar(
        select(func.min(Generation.not_before)).where(
            Generation.batch_id == batch_id,
            Generation.status == GenerationStatus.PENDING,
            Generation.not_before > utcnow(),
        )
    )
    db.session.rollback()
    return wake


def lane_step(batch_id, provider, storage, settings):
    """One turn of a batch's lane: claim one generation and work on it."""
    claim = claim_for_batch(batch_id, settings)
    if claim is None:
        finalize_batch(batch_id)
        return StepResult(wake_at=next_wake(batch_id))
    outcome = run_claim(claim, provider, storage, settings)
    poll = claim.generation.id if isinstance(outcome, Submitted) else None
    if poll is None:
        finalize_batch(batch_id)
    return StepResult(worked=True, poll_generation=poll)


def photo_step(generation_id, provider, storage, settings):
    """Work on one single-photo generation, if it is runnable."""
    claim = claim_generation(generation_id, settings)
    if claim is None:
        wake = db.session.scalar(
            select(Generation.not_before).where(
                Generation.id == generation_id,
                Generation.status == GenerationStatus.PENDING,
                Generation.not_before > utcnow(),
            )
        )
        db.session.rollback()
        return StepResult(wake_at=wake)
    outcome = run_claim(claim, provider, storage, settings)
    poll = claim.generation.id if isinstance(outcome, Submitted) else None
    return StepResult(worked=True, poll_generation=poll)


def poll_step(generation_id, provider, storage, settings):
    """Ask an async engine about a submitted generation and record what it says."""
    generation = db.session.scalar(
        select(Generation).where(
            Generation.id == generation_id,
            Generation.status == GenerationStatus.PROCESSING,
            Generation.provider_task_id.is_not(None),
        )
    )
    db.session.close()
    if generation is None:
        return StepResult()  # finished or reclaimed: a duplicate poll does nothing
    claim = Claim(generation, generation.lease_owner)
    try:
        outcome = provider.poll(generation.provider_task_id, _request_for(generation))
    except Exception:
        # The task is paid for upstream: keep asking (until the deadline), never resubmit.
        log.exception("polling %s failed", generation.id)
        outcome = Pending()
    if isinstance(outcome, Pending):
        waited = (utcnow() - generation.started_at).total_seconds()
        if waited <= settings.poll_timeout_seconds:
            _fenced_update(claim, lease_expires_at=_lease_end(settings))
            return StepResult(poll_generation=generation.id)
        message = (
            "The image engine did not finish this image within "
            f"{_duration(settings.poll_timeout_seconds)}. Your credits were refunded."
        )
        fail_and_refund(generation, claim.token, "upstream_timeout", message)
    else:
        record_outcome(claim, outcome, storage, settings)
    if generation.batch_id:
        finalize_batch(generation.batch_id)
    return StepResult(ring_batch=generation.batch_id)


def _duration(seconds):
    if seconds < 120:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{seconds // 60} minutes"


def _request_for(generation, input_image=None):
    return GenerationRequest(
        generation_id=generation.id,
        model=load_catalog().get(generation.model),
        mode=generation.mode,
        prompt=generation.prompt,
        negative_prompt=generation.negative_prompt,
        quality=generation.quality,
        aspect_ratio=generation.aspect_ratio,
        input_image=input_image,
    )
