"""Fair shares: which batch a lane's turn serves, so that active users share the upstream's
pace equally rather than per lane (a user with three batches, or a batch with a high
concurrency, would otherwise take several shares).

A lane is rung for a batch, but its turn serves whichever batch the share model says is next:
it is work-conserving, so a lane of a user who had their share claims for the user who had the
least instead of sleeping, and no user's batch waits behind another user's whole batch. The
model, counted from the database alone so that every consumer agrees:

1. the user: among those with a claimable image (pending and past its backoff, in a queued or
   running batch with a free slot, allowed by its canary) and fewer than USER_MAX_CONCURRENCY
   images in flight over all their batches, the one with the fewest images started within
   the pacer's window (`generations.started_at`, single photos too, since they take the same
   pace; an image put back in line since, such as one the pacer turned away, is not counted;
   generation/places.py counts the same way); ties: the user whose oldest claimable image
   (its batch's creation) is oldest, then the lower user id;
2. within the user, their batch with the fewest images in flight; ties: the oldest batch;
3. within the batch, by position (`claims.claim_for_batch`).

Turns are picked one at a time (a transaction-scoped lock, held until the claim commits), so
lanes woken together by the same free slots do not all read the same counts and pick the same
user. The claim stays the fence: `claim_for_batch` checks the batch's status, its concurrency
and the user's cap again inside its compare-and-set UPDATE, under the batch row's and the user
row's locks, so nothing is claimed twice or over a bound.

What it costs: the lock and one query per turn, on the active batches only
(`ix_batches_status`), each counted through an index (`ix_generations_batch_status` for the
batch's own images, `ix_generations_user_status_started`, migration 0007, for the user's in
flight and started).
"""

from datetime import timedelta

from sqlalchemy import exists, false, func, or_, select, update
from sqlalchemy.orm import aliased

from ..extensions import db
from ..models import Batch, BatchStatus, Generation, GenerationStatus, utcnow
from .claims import claim_for_batch, runnable

# How many picks one turn makes before it gives up: one, unless a cancel or a pause of the
# batch picked came between the pick and the claim (the next pick passes that batch over).
TRIES = 3
# Statuses of an image that was started and not put back in line.
STARTED = tuple(status for status in GenerationStatus.ALL if status != GenerationStatus.PENDING)

# Made once, as in claims.py: a new alias per query would copy every column again.
_waiting = aliased(Generation, name="waiting")
_batch_flight = aliased(Generation, name="batch_flight")
_user_flight = aliased(Generation, name="user_flight")
_started = aliased(Generation, name="started")


def _count(table, *where):
    return select(func.count()).select_from(table).where(*where).correlate(Batch).scalar_subquery()


def _claimable_image(now):
    """The batch has an image a claim could take now (claims.claim_for_batch's candidate,
    with its canary rule: until approved, only the first `canary` positions)."""
    return (
        exists()
        .where(
            _waiting.batch_id == Batch.id,
            runnable(_waiting, now),
            or_(
                Batch.canary.is_(None),
                Batch.approved_at.is_not(None),
                _waiting.position < Batch.canary,
            ),
        )
        .correlate(Batch)
    )


def _batches(now, since):
    """Each active batch with a claimable image: (id, user_id, created_at, concurrency, its
    images in flight, its user's images in flight, its user's images started since `since`)."""
    in_flight = _count(
        _batch_flight,
        _batch_flight.batch_id == Batch.id,
        _batch_flight.status == GenerationStatus.PROCESSING,
    )
    user_in_flight = _count(
        _user_flight,
        _user_flight.user_id == Batch.user_id,
        _user_flight.status == GenerationStatus.PROCESSING,
        _user_flight.batch_id.is_not(None),
    )
    user_started = _count(
        _started,
        _started.user_id == Batch.user_id,
        _started.status.in_(STARTED),
        _started.started_at >= since,
    )
    rows = db.session.execute(
        select(
            Batch.id,
            Batch.user_id,
            Batch.created_at,
            Batch.concurrency,
            in_flight,
            user_in_flight,
            user_started,
        ).where(Batch.status.in_(BatchStatus.ACTIVE), _claimable_image(now))
    ).all()
    return rows


def claim_next(settings, token=None):
    """Claim the image the share model says is next, under `token`; None if there is none.

    Turns are picked one at a time (_lock_turns, until the claim commits): lanes that all
    woke to the same free slots would otherwise read the same counts and all pick the same
    user. The claim itself is claims.claim_for_batch, the fence; should it find nothing (a
    cancel or a pause came first), the next pick is made afresh without that batch, so a batch
    that the order and the claim were to judge differently could never stop every turn.
    """
    refused = set()
    for _ in range(TRIES):
        _lock_turns()
        order = [batch_id for batch_id in _order(settings, utcnow()) if batch_id not in refused]
        if not order:
            db.session.rollback()
            return None
        claim = claim_for_batch(order[0], settings, token)
        if claim is not None:
            return claim
        refused.add(order[0])
    return None


def _lock_turns():
    """Make this transaction the only one picking a turn until it ends: PostgreSQL's advisory
    lock of this schema (taken before any row lock, and by nothing that holds one), SQLite's
    write lock (an UPDATE takes it even when it changes nothing)."""
    if db.session.get_bind().dialect.name == "postgresql":
        key = func.hashtext(func.concat("batchgen turns ", func.current_schema()))
        db.session.execute(select(func.pg_advisory_xact_lock(key)))
    else:
        db.session.execute(
            update(Batch)
            .where(false())
            .values(id=Batch.id)
            .execution_options(synchronize_session=False)
        )


def turn_order(settings, now=None):
    """The ids of the batches a lane's turn would claim in, best first (the share model); a
    read, ended before it answers."""
    order = _order(settings, now or utcnow())
    db.session.rollback()
    return order


def _order(settings, now):
    since = now - timedelta(seconds=settings.share_window_seconds)
    cap = settings.user_max_concurrency
    users = {}  # user id → [started in the window, oldest open batch, its open batches]
    for row in _batches(now, since):
        batch_id, user_id, created_at, concurrency, in_flight, user_in_flight, started = row
        if in_flight >= concurrency or (cap and user_in_flight >= cap):
            continue  # no free slot: a claim there would find nothing
        user = users.setdefault(user_id, [started, created_at, []])
        user[1] = min(user[1], created_at)
        user[2].append((in_flight, created_at, batch_id))
    order = sorted(users, key=lambda user_id: (*users[user_id][:2], user_id))
    return [batch_id for user_id in order for *_, batch_id in sorted(users[user_id][2])]
