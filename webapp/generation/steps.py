"""The steps the queue's tasks take: a lane's turn, a single photo, a poll of an async engine.

Each step claims work (claims.py), asks the provider (the image engine), and records what
happened (outcomes.py); then it says in a StepResult what the queue should ring next. A batch
gets its final status (progress.py) once every generation is terminal.
"""

import logging
import random
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from .. import logs
from ..catalog import load_catalog
from ..extensions import db
from ..models import Batch, BatchStatus, Generation, GenerationStatus, utcnow
from ..providers import (
    RETRIED,
    Failed,
    GenerationRequest,
    Pending,
    Submitted,
    Throttled,
)
from ..storage import StorageUnavailable
from ..words import count_of
from .claims import Claim, claim_generation, new_token
from .outcomes import (
    create_marker,
    fail_and_refund,
    fenced_update,
    lease_end,
    record_outcome,
    return_to_pending,
    storage_failure,
)
from .progress import finalize_batch
from .shares import claim_next

log = logging.getLogger(__name__)

SHORT_WAIT_SECONDS = 2.0
SCHEDULER_TICK_SECONDS = 1.0  # Huey's consumer checks its schedule once a second


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
    with _holding(claim), logs.bound(batch_id=generation.batch_id, generation_id=generation.id):
        try:
            input_image = storage.read(generation.input_key) if generation.input_key else None
        except FileNotFoundError:
            outcome = Failed("input_missing", "The input image is missing from storage.")
        except OSError as error:
            log.warning("reading the input of %s failed: %s", generation.id, error)
            outcome = storage_failure("read the input image")
        else:
            try:
                mark = create_marker(claim, settings)  # stores that a create may have left
                outcome = provider.submit(_request_for(generation, input_image, claim.token, mark))
            except Exception:
                log.exception("engine failed on %s", generation.id)
                message = f"The image engine failed unexpectedly. {RETRIED}"
                outcome = Failed("engine_error", message, True)
        outcome = _bound_upstream_wait(outcome, generation, settings)
        try:
            record_outcome(claim, outcome, storage, settings)
        except StorageUnavailable:
            # Made here and lost: the attempt is retried with backoff, or fails and is refunded.
            outcome = storage_failure("store the finished image")
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


# The attempts this process is working on, so a consumer that is told to stop can hand them
# back at once instead of leaving them to expire: lease token → the Claim, or, while the claim
# is being made, where its row is. The token is remembered before the claim's UPDATE, so an
# interrupt between its commit and the snapshot read after it still finds the image.
_held = {}
_held_lock = threading.Lock()


def _claim(claim_function, key, where, settings):
    """Make a claim under a lease token remembered first; None if nothing was claimed."""
    token = new_token()
    with _held_lock:
        _held[token] = where
    try:
        claim = claim_function(key, settings, token)
    except KeyboardInterrupt:
        raise  # a process worker told to stop: the token stays for release_held_claims
    except BaseException:
        _forget(token)
        raise
    if claim is None:
        _forget(token)
    return claim


@contextmanager
def _holding(claim):
    with _held_lock:
        _held[claim.token] = claim
    try:
        yield
    except KeyboardInterrupt:
        raise  # a process worker told to stop: it stays held for release_held_claims
    except BaseException:
        _forget(claim.token)
        raise
    _forget(claim.token)


def _forget(token):
    with _held_lock:
        _held.pop(token, None)


def release_held_claims():
    """Give back every attempt this process holds, uncounted: the worker is stopping mid-way.

    An attempt that reached an async engine, or whose create may have (its placeholder is
    stored), keeps its lease: it is polled, never submitted again. Answers the released ids.
    """
    with _held_lock:
        held = list(_held.items())
        _held.clear()
    released = []
    for token, entry in held:
        generation = entry.generation if isinstance(entry, Claim) else _claimed_row(token, entry)
        if generation is not None and return_to_pending(
            generation,
            token,
            Generation.provider_task_id.is_(None),
            attempts=Generation.attempts - 1,
        ):
            released.append(generation.id)
    return released


def _claimed_row(token, where):
    """The row a claim in the making took under `token`, detached (None if it took none)."""
    generation = db.session.scalar(select(Generation).where(where, Generation.lease_owner == token))
    db.session.close()
    return generation


def next_wake(batch_id=None):
    """When the batch's earliest backed-off generation becomes runnable (None if none waits);
    without a batch, the earliest of every active batch's (a lane serves them all: shares.py).

    A time already past counts too: the backoff may have ended between the claim that found
    nothing and this query, and a lane that stopped then would leave that image to the reaper.
    None for a held batch (paused, awaiting approval): its lanes stop, and a resume or an
    approval rings them again, so none wakes to claim nothing over and over.
    """
    wake = db.session.scalar(
        select(func.min(Generation.not_before))
        .join(Batch, Batch.id == Generation.batch_id)
        .where(
            Batch.status.in_(BatchStatus.ACTIVE),
            *(() if batch_id is None else (Generation.batch_id == batch_id,)),
            Generation.status == GenerationStatus.PENDING,
            Generation.not_before.is_not(None),
        )
    )
    db.session.rollback()
    return wake


def lane_step(batch_id, provider, storage, settings):
    """One turn of a lane rung for `batch_id`: claim one generation and work on it.

    The turn serves the batch the fair share says is next (shares.py), whichever user's it is,
    so a lane of a user who had their share works for the one who had least. With a paced
    engine, a lane that sees the upstream pacer full claims nothing and sleeps until a slot
    may be free, so no image is started that could not be sent. A lane that finds nothing to
    claim anywhere sleeps until the earliest backoff of any active batch ends, or stops.
    """
    paced = _sleep_while_full(provider.pacer)
    if paced:
        return paced
    claim = _claim_fair_share(settings)
    if claim is None:
        finalize_batch(batch_id)
        return StepResult(wake_at=next_wake())
    outcome = run_claim(claim, provider, storage, settings)
    if isinstance(outcome, Throttled):
        return StepResult(wake_at=_after(outcome.seconds))
    poll = claim.generation.id if isinstance(outcome, Submitted) else None
    if poll is None:
        finalize_batch(claim.generation.batch_id)
    return StepResult(worked=True, poll_generation=poll)


def _claim_fair_share(settings):
    """Claim the image the share model says is next (None if there is none); its row is
    found among those processing if the worker is interrupted mid-claim."""
    processing = Generation.status == GenerationStatus.PROCESSING
    return _claim(_claim_next, None, processing, settings)


def _claim_next(_, settings, token):
    return claim_next(settings, token)


def photo_step(generation_id, provider, storage, settings):
    """Work on one single-photo generation, if it is runnable."""
    paced = _sleep_while_full(provider.pacer)
    if paced:
        return paced
    claim = _claim(claim_generation, generation_id, Generation.id == generation_id, settings)
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
    sleep until just before one may be.

    "Soon" is what the queue cannot time: its scheduler ticks once a second, so a task woken
    at t runs up to a tick later. The lane is woken one to two ticks before the slot frees and
    waits the rest in the engine, which takes its slot right before the upstream call: a
    freed slot is used when it frees, not at the next tick after it. The spread keeps lanes
    sent to sleep together from all being enqueued at once.
    """
    wait = pacer.peek()
    if wait <= SHORT_WAIT_SECONDS:
        return None
    early = random.uniform(SCHEDULER_TICK_SECONDS, SHORT_WAIT_SECONDS)
    return StepResult(wake_at=utcnow() + timedelta(seconds=wait - early))


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
        request = _request_for(generation, attempt=claim.token)
        outcome = provider.poll(generation.provider_task_id, request)
    except Exception:
        # The task is paid for upstream: keep asking (until the deadline), never resubmit.
        log.exception("polling %s failed", generation.id)
        outcome = Pending()
    waited = (utcnow() - generation.started_at).total_seconds()
    if isinstance(outcome, Pending):
        if waited <= settings.poll_timeout_seconds:
            fenced_update(claim, lease_expires_at=lease_end(settings))
            return StepResult(poll_generation=generation.id)
        message = (
            "The image engine did not finish this image within "
            f"{_duration(settings.poll_timeout_seconds)}. Your credits were refunded."
        )
        fail_and_refund(generation, claim.token, "upstream_timeout", message)
    else:
        try:
            record_outcome(claim, outcome, storage, settings)
        except StorageUnavailable:
            # The result waits upstream, paid for: fetch it again at the next poll, never
            # resubmit; past the deadline, the image fails and is refunded.
            if waited <= settings.poll_timeout_seconds:
                fenced_update(claim, lease_expires_at=lease_end(settings))
                return StepResult(poll_generation=generation.id)
            message = (
                "Our image storage could not store the finished image (a problem on our side, "
                "not with your image). Your credits were refunded."
            )
            fail_and_refund(generation, claim.token, "storage_unavailable", message)
    if generation.batch_id:
        finalize_batch(generation.batch_id)
    return StepResult(ring_batch=generation.batch_id)


def _duration(seconds):
    if seconds < 120:
        return count_of(seconds, "second")
    return f"{seconds // 60} minutes"


def _request_for(generation, input_image=None, attempt=None, before_create=None):
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
        attempt=attempt,
        before_create=before_create,
    )
