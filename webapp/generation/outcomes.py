"""Record what happened to a claimed attempt: success, submitted, back in line, or failed.

Every write is fenced on the attempt's lease token, so a worker whose lease was taken over can
never overwrite a newer attempt. Failures are refunded in the transaction that marks them
failed; anything that goes back to pending goes through `return_to_pending`, which cancels and
refunds instead when the batch was cancelled meanwhile. Locks are taken batch row first, in the
order a cancel takes them.
"""

import logging
import random
from datetime import timedelta

from sqlalchemy import or_, select, update

from .. import billing
from ..extensions import db
from ..models import Batch, BatchStatus, Generation, GenerationStatus, utcnow
from ..providers import RETRIED, UNCONFIRMED_PREFIX, Done, Failed, Submitted, Throttled
from ..storage import StorageUnavailable
from ..words import count_of
from .announcements import announce_generation_end

log = logging.getLogger(__name__)

CANCELLED_MESSAGE = "Cancelled before it started; its credits were refunded."


def storage_failure(action):
    """The retryable Failed for a storage that could not `action` ("read the input image")."""
    return Failed(
        "storage_unavailable",
        f"Our image storage could not {action} (a problem on our side, not with your image). "
        f"{RETRIED}",
        True,
    )


def record_outcome(claim, outcome, storage, settings):
    """Write an attempt's outcome, fenced on its lease; False if the lease was lost.

    Raises StorageUnavailable, having written nothing, when a finished image cannot be stored:
    the caller decides whether the attempt is retried or the upstream asked again.
    """
    if isinstance(outcome, Done):
        return _finish_success(claim, outcome, storage)
    if isinstance(outcome, Submitted):
        # A placeholder never overwrites the task a callback named meanwhile.
        unnamed = () if outcome.confirmed else (no_task_named(),)
        return fenced_update(
            claim, *unnamed, provider_task_id=outcome.task_id, lease_expires_at=lease_end(settings)
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


def no_task_named():
    """The attempt knows no upstream task: none, or only a placeholder (UNCONFIRMED_PREFIX)."""
    return or_(
        Generation.provider_task_id.is_(None),
        Generation.provider_task_id.startswith(UNCONFIRMED_PREFIX),
    )


def create_marker(claim, settings):
    """The attempt's `before_create` (GenerationRequest): stores the provider's placeholder
    task id right before a create leaves, and renews the lease, fenced on it, in its own unit
    of work. From then on the attempt may be paid for upstream: the reaper keeps it (polled,
    which waits the provider's grace for the callback to name the task) rather than putting it
    back in line, and a stopping worker keeps it too. False if the lease was lost."""

    def before_create(placeholder):
        return fenced_update(
            claim,
            Generation.provider_task_id.is_(None),
            provider_task_id=placeholder,
            lease_expires_at=lease_end(settings),
        )

    return before_create


def lease_end(settings):
    return utcnow() + timedelta(seconds=settings.lease_seconds)


def fence(generation_id, token):
    """Only the attempt holding this lease token may write its outcome."""
    return (
        Generation.id == generation_id,
        Generation.lease_owner == token,
        Generation.status == GenerationStatus.PROCESSING,
    )


def fenced_update(claim, *conditions, **values):
    result = db.session.execute(
        update(Generation)
        .where(*fence(claim.generation.id, claim.token), *conditions)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        db.session.rollback()
        log.warning("lease on %s was lost (or its task named first); outcome dropped",
                    claim.generation.id)
        return False
    _touch_batch(claim.generation.batch_id)
    if values.get("status") in GenerationStatus.TERMINAL:
        generation = claim.generation
        announce_generation_end(generation.id, generation.user_id, values["status"])
    db.session.commit()
    return True


def _touch_batch(batch_id):
    if batch_id:
        db.session.execute(update(Batch).where(Batch.id == batch_id).values(heartbeat_at=utcnow()))


def _finish_success(claim, outcome, storage):
    generation = claim.generation
    folder = generation.batch_id or "photos"
    key = f"results/{folder}/{generation.id}.{outcome.extension}"
    try:
        storage.save(key, outcome.image)
    except StorageUnavailable:
        log.warning("storing the result of %s failed", generation.id, exc_info=True)
        raise
    return fenced_update(
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
    tries = count_of(attempts, "attempt")
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
    return _end_and_refund(
        generation,
        token,
        conditions,
        "cancelled",
        status=GenerationStatus.CANCELLED,
        lease_owner=None,
        error_code="cancelled",
        error_message=CANCELLED_MESSAGE,
    )


def fail_and_refund(generation, token, code, message):
    """Mark an in-flight generation failed and refund it, in one transaction, fenced on token.

    The batch row is locked first, as a cancel locks it before it refunds the same user: taken
    in the other order, the two could deadlock on PostgreSQL.
    """
    if generation.batch_id:
        _lock_batch(generation.batch_id)
    return _end_and_refund(
        generation,
        token,
        (),
        code,
        status=GenerationStatus.FAILED,
        error_code=code,
        error_message=message,
    )


def _end_and_refund(generation, token, conditions, note, **values):
    """End an attempt in a refunded state (failed or cancelled), fenced on its lease plus
    `conditions`, and refund it in the same transaction; False if the lease was lost."""
    result = db.session.execute(
        update(Generation)
        .where(*fence(generation.id, token), *conditions)
        .values(finished_at=utcnow(), lease_expires_at=None, **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        db.session.rollback()
        return False
    billing.refund_generation(generation, note=note)
    announce_generation_end(generation.id, generation.user_id, values["status"])
    db.session.commit()
    return True


def backoff_seconds(attempts, settings):
    """Exponential backoff with jitter: base·2^(n-1), capped, times a random 0.5–1."""
    exponent = max(0, attempts - 1)
    ceiling = min(settings.retry_cap_seconds, settings.retry_base_seconds * 2**exponent)
    return ceiling * random.uniform(0.5, 1.0)
