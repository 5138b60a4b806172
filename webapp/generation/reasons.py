"""Why an image is where it is: the `reason` of each entry of `results`, in words for people
(no engine's name, no operator's terms) and a code for programs.

Told from the row alone, as the steps leave it (outcomes.py), and its batch's hold:

    pending in a paused batch            batch_paused: nothing starts until it is resumed
    pending, held for the canary         awaiting_approval: a canary batch not yet approved
                                         starts only its first `canary` images (claims.py); the
                                         others wait for the owner's decision (canary.py)
    pending, never tried, no wait        queued: its place in the queue, under the shares:
                                         the images that start before it, its batch's, the
                                         user's other batches' and other users' (places.py)
    pending, held back by the upstream   waiting_for_upstream_slot: a throttle (a 429, the
                                         shared pacer full, the engine's account empty) puts it
                                         back with `not_before` and its attempt uncounted, so a
                                         wait with no counted attempt is one; so is a wait whose
                                         last refusal was a rate limit
    pending after a counted attempt      retrying: the next attempt's number, and when
    processing                           submitted
    success, cancelled, failed           done, cancelled, failed (+ errorCode)
"""

import bisect

from flask import current_app
from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import aliased

from ..extensions import db
from ..models import Batch, BatchStatus, Generation, GenerationStatus, utcnow
from ..words import count_of
from . import places

QUEUED = "queued"
WAITING_FOR_UPSTREAM = "waiting_for_upstream_slot"
RETRYING = "retrying"
SUBMITTED = "submitted"
DONE = "done"
CANCELLED = "cancelled"
FAILED = "failed"
# A pending image its batch holds back: no claim takes it until its owner acts (pausing.py,
# canary.py), so it has no place in the queue and no next try.
BATCH_PAUSED = "batch_paused"
AWAITING_APPROVAL = "awaiting_approval"
# The error code a rate limit leaves on a waiting image, as a throttle or as a counted attempt.
RATE_LIMITED = "rate_limited"

REFUNDED = "its credits were refunded"
# What a failed image's reason says, by its error code; anything else is FAILED_ON_OUR_SIDE.
FAILED_BECAUSE = {
    "content_policy": "The prompt or the image was refused under the image service's content "
    f"policy; {REFUNDED}. A different prompt or image may work.",
    "invalid_input": "The image or its settings could not be used for this model; "
    f"{REFUNDED}. Check the prompt, the aspect ratio and the image.",
    "input_missing": f"The uploaded image could no longer be found; {REFUNDED}.",
    "generation_failed": f"The image service could not make this image; {REFUNDED}. "
    "A different prompt or image may work.",
    "upstream_timeout": f"The image took too long to make and was given up; {REFUNDED}.",
}
FAILED_ON_OUR_SIDE = (
    "The image could not be made because of a problem on our side, not with your request; "
    f"{REFUNDED}."
)

# The hold as a column of a generation's row (presenters.RESULT_COLUMNS), read by a correlated
# subquery of its batch, so it stays right inside a query that joins batches too (live.py): 0
# while the batch is paused, the batch's canary while the image waits for the canary's approval,
# null when it is not held. Asked only of a pending row (the CASE around it), and one subquery,
# not two: each costs a lookup of the batch per row of every poll.
_held = aliased(Batch, name="held")
_HELD_BY_BATCH = (
    select(
        case(
            (_held.status == BatchStatus.PAUSED, 0),
            (
                or_(
                    _held.status == BatchStatus.AWAITING_APPROVAL,
                    and_(
                        _held.canary.is_not(None),
                        _held.approved_at.is_(None),
                        Generation.position >= _held.canary,
                    ),
                ),
                func.coalesce(_held.canary, 1),
            ),
        )
    )
    .where(_held.id == Generation.batch_id)
    .correlate(Generation)
    .scalar_subquery()
)
HELD = case((Generation.status == GenerationStatus.PENDING, _HELD_BY_BATCH)).label("held")


def held_of(batch, position):
    """What HELD answers for a pending image, from its loaded batch and its position in it."""
    if batch is None:
        return None
    if batch.status == BatchStatus.PAUSED:
        return 0
    unapproved = batch.canary is not None and batch.approved_at is None
    if batch.status == BatchStatus.AWAITING_APPROVAL or (unapproved and position >= batch.canary):
        return batch.canary or 1
    return None


def _held_by(generation):
    """HELD of a Generation (from its batch) or of a row that has it."""
    if isinstance(generation, Generation):
        return held_of(generation.batch, generation.position)
    return generation.held


def _hold(generation):
    """(the hold's code or None, the batch's canary when it is the canary's hold)."""
    held = _held_by(generation)
    if held is None:
        return None, None
    return (BATCH_PAUSED, None) if held == 0 else (AWAITING_APPROVAL, held)


def kind_of(generation):
    """The reason's code for a generation (or a row of RESULT_COLUMNS: its status, attempts,
    not_before, error_code and its batch's hold). A hold comes before any other wait: a held
    image is not tried again at its nextTryAt."""
    status = generation.status
    if status == GenerationStatus.PENDING:
        hold = _hold(generation)[0]
        if hold is not None:
            return hold
        if generation.not_before is not None and (
            generation.attempts == 0 or generation.error_code == RATE_LIMITED
        ):
            return WAITING_FOR_UPSTREAM
        return QUEUED if generation.attempts == 0 else RETRYING
    return {
        GenerationStatus.PROCESSING: SUBMITTED,
        GenerationStatus.SUCCESS: DONE,
        GenerationStatus.CANCELLED: CANCELLED,
    }.get(status, FAILED)


def images_ahead(generations, queue=None, whole=False):
    """{generation id: places.Ahead} for the queued ones: what starts before each under the
    shares (places.py), its batch's images and others'. Each image's rank in its batch (its
    batch's pending images before it) is one query, or, with `whole` (`generations` holds every
    image of its batch: the batch page, the batch's detail), counted from them; then the queue
    (places.queue_now); none when no batch image is queued (a single photo waits behind
    nothing). `queue`: a callable answering the places.Queue, when the caller shares one
    between the places and the eta."""
    queued = [g for g in generations if kind_of(g) == QUEUED]
    ahead = {g.id: places.Ahead() for g in queued if g.batch_id is None}
    asked = [g for g in queued if g.batch_id is not None]
    if asked:
        snapshot = (queue or default_queue)()
        ranks = _ranks_of(generations, asked) if whole else _ranks_read(asked)
        for generation_id, batch_id, rank in ranks:
            ahead[generation_id] = snapshot.ahead(batch_id, rank)
    return ahead


def _ranks_of(generations, asked):
    """(id, batch id, rank) of each asked image, counted from all of its batch's images."""
    waiting = {}
    for generation in generations:
        if generation.status == GenerationStatus.PENDING:
            waiting.setdefault(generation.batch_id, []).append(generation.position)
    for positions in waiting.values():
        positions.sort()
    return [
        (g.id, g.batch_id, bisect.bisect_left(waiting[g.batch_id], g.position)) for g in asked
    ]


def _ranks_read(asked):
    """(id, batch id, rank) of each asked image, read: one query, whatever their number."""
    waiting = aliased(Generation, name="waiting")
    before = (
        select(func.count())
        .select_from(waiting)
        .where(
            waiting.batch_id == Generation.batch_id,
            waiting.status == GenerationStatus.PENDING,
            waiting.position < Generation.position,
        )
        .correlate(Generation)
        .scalar_subquery()
    )
    return db.session.execute(
        select(Generation.id, Generation.batch_id, before).where(
            Generation.id.in_([g.id for g in asked])
        )
    ).all()


def default_queue():
    """The queue now, its starts counted over UPSTREAM_RATE_PERIOD (the pacer's window)."""
    return places.queue_now(utcnow(), current_app.config["UPSTREAM_RATE_PERIOD"])


def place_words(before):
    """A queued image's message, from its places.Ahead."""
    count = before.total
    if not count:
        return "Next in line: it starts as soon as there is room."
    verb = "is" if count == 1 else "are"
    if not before.yours and not before.others:
        return f"Waiting for its turn: {count_of(count, 'image')} of this batch {verb} ahead of it."
    if not before.others:
        whose = "all yours"
    elif not before.batch and not before.yours:
        whose = "other people's"
    else:
        whose = "yours and other people's"
    return f"Waiting for its turn: {count_of(count, 'image')} {verb} ahead of it ({whose})."


def approval_words(canary):
    """An image held for the canary's decision (the batch page's card says the same)."""
    first = f"the first {count_of(canary, 'image')}" if canary and canary > 1 else "the first image"
    return (
        f"Waits for your approval of {first}: approve the batch to run it, or stop it here "
        "and its credits are refunded."
    )


def reason(generation, max_attempts, ahead, timestamp):
    """The `reason` of one entry: {code, message} and what its code adds. `ahead` is
    images_ahead's answer; `timestamp` formats a time as the answers do."""
    code = kind_of(generation)
    if code == QUEUED:
        before = ahead.get(generation.id) or places.Ahead()
        total = before.total
        return {"code": code, "message": place_words(before), "place": total + 1, "ahead": total}
    if code == WAITING_FOR_UPSTREAM:
        return {
            "code": code,
            "message": "The image service is taking no new images for a moment; this one is "
            "sent as soon as it has room. Waiting uses up none of its attempts.",
            "nextTryAt": timestamp(generation.not_before),
        }
    if code == RETRYING:
        attempt = generation.attempts + 1
        return {
            "code": code,
            "message": f"The last attempt did not succeed, so it is tried again "
            f"automatically: attempt {attempt} of {max_attempts}.",
            "attempt": attempt,
            "maxAttempts": max_attempts,
            "lastErrorCode": generation.error_code,
            "nextTryAt": timestamp(generation.not_before),
        }
    if code == BATCH_PAUSED:
        return {"code": code, "message": "Waits: the batch is paused; resume it to go on."}
    if code == AWAITING_APPROVAL:
        return {"code": code, "message": approval_words(_hold(generation)[1])}
    if code == SUBMITTED:
        return {"code": code, "message": "The image is being made."}
    if code == DONE:
        return {"code": code, "message": "The image is ready."}
    if code == CANCELLED:
        return {
            "code": code,
            "message": f"The batch was cancelled before this image was made; {REFUNDED}.",
        }
    return {
        "code": code,
        "message": FAILED_BECAUSE.get(generation.error_code, FAILED_ON_OUR_SIDE),
        "errorCode": generation.error_code,
    }
