"""Run claimed generations: call the engine, record the outcome fenced on the lease, finish.

Failures are refunded in the transaction that marks them failed; retryable ones go back to
pending with backoff while attempts remain. See claims.py for how work is claimed.
"""

import logging
import random
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from .. import billing
from ..catalog import load_catalog
from ..extensions import db
from ..models import Batch, BatchStatus, Generation, GenerationStatus, utcnow
from ..providers import (
    RETRIED,
    Done,
    Failed,
    GenerationRequest,
    Pending,
    Submitted,
    Throttled,
)
from .claims import Claim, claim_for_batch, claim_generation

log = logging.getLogger(__name__)

SHORT_WAIT_SECONDS = 2.0
CANCELLED_MESSAGE = "Cancelled before it started; its credits were refunded."


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
    with _holding(claim):
        try:
            input_image = storage.read(generation.input_key) if generation.input_key else None
        except FileNotFoundError:
            outcome = Failed("input_missing", "The input image is missing from storage.")
        else:
            try:
                outcome = provider.submit(_request_for(generation, input_image))
            except Exception:
                log.exception("engine failed on %s", generation.id)
                message = f"The image engine failed unexpectedly. {RETRIED}"
                outcome = Failed("engine_error", message, True)
        outcome = _bound_upstream_wait(outcome, generation, settings)
        record_outcome(claim, outcome, storage, settings)
    return outcome


def _bound_upstream_wait(outcome, generation, settings):
    """An upstream refusal that only asks for time (a 429, an empty upstream account) waits
    without spending an attempt while the image is younger than POLL_TIMEOUT_SECONDS; after
    that it counts as the retryable failure it stands for, so an upstream that refuses forever
    fails the image (refunded) after MAX_ATTEMPTS instead of holding it forever."""
    if not isinstance(outcome, Throttled) or outcome.refusal is None:
        return outcome
    age = (utcnow() - generation.created_at).total_seconds()
    return outcome.refusal if age > settings.poll_timeout_seconds else outcome


# The attempts this process is working on (lease token → Claim), so a consumer that is told to
# stop can hand them back at once instead of leaving them to expire.
_held = {}
_held_lock = threading.Lock()


@contextmanager
def _holding(claim):
    with _held_lock:
        _held[claim.token] = claim
    try:
        yield
    except KeyboardInterrupt:
        raise  # a process worker told to stop: it stays held for release_held_claims
    except BaseException:
        _forget(claim)
        raise
    _forget(claim)


def _forget(claim):
    with _held_lock:
        _held.pop(claim.token, None)


def release_held_claims():
    """Give back every attempt this process holds, uncounted: the worker is stopping mid-way.

    An attempt that already reached an async engine keeps its lease: it is paid for upstream,
    so it is polled, never submitted again. Answers the released generation ids.
    """
    with _held_lock:
        claims = list(_held.values())
        _held.clear()
    released = []
    for claim in claims:
        if return_to_pending(
            claim.generation,
            claim.token,
            Generation.provider_task_id.is_(None),
            attempts=Generation.attempts - 1,
        ):
            released.append(claim.generation.id)
    return released


def record_outcome(claim, outcome, storage, settings):
    """Write an attempt's outcome, fenced on its lease; False if the lease was lost."""
    if isinstance(outcome, Done):
        return _finish_success(claim, outcome, storage)
    if isinstance(outcome, Submitted):
        return _fenced_update(
            claim, provider_task_id=outcome.task_id, lease_expires_at=_lease_end(settings)
        )
    if isinstance(outcome, Throttled):
        # Nothing was created upstream: back in line, the attempt uncounted. The image shows
        # why it waits when the upstream refused.
        shown = outcome.refusal
        reason = {"error_code": shown.code, "error_message": shown.message} if shown else {}
        return return_to_pending(
            claim.generation,
            claim.token,
            attempts=Generation.attempts - 1,
            not_before=utcnow() + timedelta(seconds=outcome.seconds),
            **reason,
        )
    return _finish_failure(claim, outcome, settings)


def _lease_end(settings):
    return utcnow() + timedelta(seconds=settings.lease_seconds)


def fence(generation_id, token):
    """Only the attempt holding this lease token may write its outcome."""
    return (
        Generation.id == generation_id,
        Generation.lease_owner == token,
        Generation.status == GenerationStatus.PROCESSING,
    )


def _fenced_update(claim, **values):
    result = db.session.execute(
        update(Generation)
        .where(*fence(claim.generation.id, claim.token))
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
        delay = backoff_seconds(generation.attempts, settings)
        return return_to_pending(
            generation,
            claim.token,
            not_before=utcnow() + timedelta(seconds=delay),
            error_code=failed.code,
            error_message=failed.message,
        )
    return fail_and_refund(
        generation, claim.token, failed.code, _final_message(failed, generation.attempts)
    )


def _final_message(failed, attempts):
    """What a person reads on a failed image; a retryable error says it was given up on."""
    if not failed.retryable:
        return failed.message
    reason = failed.message.replace(RETRIED, "").strip()
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    return f"{reason} Gave up after {tries}; the credits for this image were refunded."


def return_to_pending(generation, token, *conditions, **values):
    """Put an unfinished attempt back in line (fenced on its lease, plus `conditions`).

    If its batch was cancelled meanwhile, the attempt is cancelled and refunded instead, since
    nothing will claim it again. The batch row is locked first, in the order a cancel takes it,
    so the two never interleave. False if the lease was lost.
    """
    if generation.batch_id and _lock_batch(generation.batch_id) == BatchStatus.CANCELLED:
        return _cancel_attempt(generation, token, *conditions)
    result = db.session.execute(
        update(Generation)
        .where(*fence(generation.id, token), *conditions)
        .values(
            status=GenerationStatus.PENDING, lease_owner=None, lease_expires_at=None, **values
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        db.session.rollback()
        return False
    db.session.commit()
    return True


def _lock_batch(batch_id):
    """Lock the batch row for this transaction and answer its status.

    Writing first takes the lock on both databases: SQLite's write lock (a plain SELECT would
    not, and could read a status a cancel is about to change) and PostgreSQL's row lock.
    """
    db.session.execute(update(Batch).where(Batch.id == batch_id).values(heartbeat_at=utcnow()))
    return db.session.scalar(select(Batch.status).where(Batch.id == batch_id))


def _cancel_attempt(generation, token, *conditions):
    result = db.session.execute(
        update(Generation)
        .where(*fence(generation.id, token), *conditions)
        .values(
            status=GenerationStatus.CANCELLED,
            finished_at=utcnow(),
            lease_owner=None,
            lease_expires_at=None,
            error_code="cancelled",
            error_message=CANCELLED_MESSAGE,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        db.session.rollback()
        return False
    billing.refund_generation(generation, note="cancelled")
    db.session.commit()
    return True


def fail_and_refund(generation, token, code, message):
    """Mark an in-flight generation failed and refund it, in one transaction, fenced on token.

    The batch row is locked first, as a cancel locks it before it refunds the same user: taken
    in the other order, the two could deadlock on PostgreSQL.
    """
    if generation.batch_id:
        _lock_batch(generation.batch_id)
    result = db.session.execute(
        update(Generation)
        .where(*fence(generation.id, token))
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
    db.session.commit()
    return True


def backoff_seconds(attempts, settings):
    """Exponential backoff with jitter: base·2^(n-1), capped, times a random 0.5–1."""
    exponent = max(0, attempts - 1)
    ceiling = min(settings.retry_cap_seconds, settings.retry_base_seconds * 2**exponent)
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
    """Give the batch its final status if all its generations are terminal; True if it did.

    A cancelled batch keeps its status and is finished once the images that were already
    running when it was cancelled are done.
    """
    status = final_status(status_counts(batch_id))
    if status is None:
        db.session.rollback()
        return False
    now = utcnow()
    result = db.session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status.in_(BatchStatus.ACTIVE))
        .values(status=status, finished_at=now)
    )
    if result.rowcount == 0:
        result = db.session.execute(
            update(Batch)
            .where(
                Batch.id == batch_id,
                Batch.status == BatchStatus.CANCELLED,
                Batch.finished_at.is_(None),
            )
            .values(finished_at=now)
        )
    db.session.commit()
    return result.rowcount == 1


def next_wake(batch_id):
    """When the batch's earliest backed-off generation becomes runnable (None if none waits).

    A time already past counts too: the backoff may have ended between the claim that found
    nothing and this query, and a lane that stopped then would leave that image to the reaper.
    """
    wake = db.session.scalar(
        select(func.min(Generation.not_before)).where(
            Generation.batch_id == batch_id,
            Generation.status == GenerationStatus.PENDING,
            Generation.not_before.is_not(None),
        )
    )
    db.session.rollback()
    return wake


def lane_step(batch_id, provider, storage, settings):
    """One turn of a batch's lane: claim one generation and work on it.

    With a paced engine, a lane that sees the upstream pacer full claims nothing and sleeps
    until a slot may be free, so no image is started that could not be sent.
    """
    paced = _sleep_while_full(provider.pacer)
    if paced:
        return paced
    claim = claim_for_batch(batch_id, settings)
    if claim is None:
        finalize_batch(batch_id)
        return StepResult(wake_at=next_wake(batch_id))
    outcome = run_claim(claim, provider, storage, settings)
    if isinstance(outcome, Throttled):
        return StepResult(wake_at=_after(outcome.seconds))
    poll = claim.generation.id if isinstance(outcome, Submitted) else None
    if poll is None:
        finalize_batch(batch_id)
    return StepResult(worked=True, poll_generation=poll)


def photo_step(generation_id, provider, storage, settings):
    """Work on one single-photo generation, if it is runnable."""
    paced = _sleep_while_full(provider.pacer)
    if paced:
        return paced
    claim = claim_generation(generation_id, settings)
    if claim is None:
        wake = db.session.scalar(  # as in next_wake, a time already past counts too
            select(Generation.not_before).where(
                Generation.id == generation_id, Generation.status == GenerationStatus.PENDING
            )
        )
        db.session.rollback()
        return StepResult(wake_at=wake)
    outcome = run_claim(claim, provider, storage, settings)
    if isinstance(outcome, Throttled):
        return StepResult(wake_at=_after(outcome.seconds))
    poll = claim.generation.id if isinstance(outcome, Submitted) else None
    return StepResult(worked=True, poll_generation=poll)


def _sleep_while_full(pacer):
    """None if the pacer has a slot free, or soon; else the StepResult that puts the task to
    sleep until one may be.

    "Soon" is what the queue cannot time: its scheduler ticks once a second, so a short wait
    is better spent in the worker (the engine waits for its slot right before the upstream
    call) than rounded up to the next tick.
    """
    wait = pacer.peek()
    return StepResult(wake_at=_after(wait)) if wait > SHORT_WAIT_SECONDS else None


def _after(seconds):
    """A wake-up time, spread a little so tasks sent to sleep together do not wake together."""
    return utcnow() + timedelta(seconds=seconds * random.uniform(1.0, 1.25))


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
        batch_id=generation.batch_id,
        started_at=generation.started_at,
    )
