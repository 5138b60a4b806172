"""Places in the queue: how many images start before a waiting one, under the shares.

The share model (the claims grant the upstream's slots by it when the pace binds): the next
slot goes to the active user (one with a waiting image in a queued or running batch; a canary
batch not yet approved counts only its canary images) with the fewest images started within the
pacer's window, ties to the user whose oldest waiting batch is oldest, then the lower user id;
within a user, to their batch with the fewest images in flight, ties to the oldest batch; within
a batch, by position. generation/shares.py orders the claims by the same rules.

Counted, not simulated. A user picked whenever their count of starts is the lowest starts one
image per level of that count, so before a user's image whose turn comes at level `c`, another
user whose count stands at `s` starts `c − s` images (one more if they win the tie), and never
more than they have waiting. The same holds for a user's batches, by images in flight. Two
grouped queries make a `Queue` for any number of images: the waiting and running images of every
active batch, and the starts of each user within the window.
"""

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import case, func, or_, select

from ..extensions import db
from ..models import Batch, BatchStatus, Generation, GenerationStatus
from ..pacing import window_seconds


@dataclass(frozen=True)
class Waiting:
    """One active batch in the queue: its waiting images and the ones in flight."""

    batch_id: str
    user_id: int
    created_at: object
    pending: int
    in_flight: int

    def tie(self):
        """Within its user, at equal images in flight: the oldest first."""
        return (self.created_at, self.batch_id)


@dataclass(frozen=True)
class Ahead:
    """The images that start before a waiting one: of its batch, of the user's other batches,
    and of other users."""

    batch: int = 0
    yours: int = 0
    others: int = 0

    @property
    def total(self):
        return self.batch + self.yours + self.others


@dataclass
class Queue:
    batches: dict = field(default_factory=dict)  # batch id → Waiting, active batches only
    starts: dict = field(default_factory=dict)  # user id → images started within the window

    def users(self):
        """{user id: [Waiting]} of the users with an image waiting."""
        found = {}
        for waiting in self.batches.values():
            if waiting.pending:
                found.setdefault(waiting.user_id, []).append(waiting)
        return found

    def ahead(self, batch_id, rank):
        """What starts before the batch's waiting image of this rank (0 for its first).

        A batch that is not in the running (held, or finished) has only its own images ahead.
        """
        this = self.batches.get(batch_id)
        if this is None or rank >= this.pending:
            return Ahead(batch=rank)
        users = self.users()
        mine = users[this.user_id]
        yours = sum(
            min(other.pending, max(0, rank + this.in_flight - other.in_flight
                                   + (other.tie() < this.tie())))
            for other in mine
            if other.batch_id != batch_id
        )
        level = self.starts.get(this.user_id, 0) + rank + yours
        tie = self._user_tie(this.user_id, mine)
        others = 0
        for user_id, theirs in users.items():
            if user_id == this.user_id:
                continue
            start = self.starts.get(user_id, 0)
            wins_tie = self._user_tie(user_id, theirs) < tie
            waiting = sum(batch.pending for batch in theirs)
            others += min(waiting, max(0, level - start + wins_tie))
        return Ahead(batch=rank, yours=yours, others=others)

    @staticmethod
    def _user_tie(user_id, batches):
        """At equal starts: the user whose oldest waiting batch is oldest, then the lower id."""
        return (min(batch.created_at for batch in batches), user_id)


def queue_now(now, period, engine=None):
    """The queue as the database has it now: two grouped queries.

    `period` is UPSTREAM_RATE_PERIOD (the pacer's window, with its margin, counts the starts);
    `engine` limits the starts counted to that engine's images (None: every engine's).
    """
    # A canary batch not yet approved may start only its first `canary` images (claims.py).
    allowed = or_(
        Batch.canary.is_(None), Batch.approved_at.is_not(None), Generation.position < Batch.canary
    )
    pending = func.sum(
        case(((Generation.status == GenerationStatus.PENDING) & allowed, 1), else_=0)
    )
    in_flight = func.sum(case((Generation.status == GenerationStatus.PROCESSING, 1), else_=0))
    rows = db.session.execute(
        select(Batch.id, Batch.user_id, Batch.created_at, pending, in_flight)
        .join(Generation, Generation.batch_id == Batch.id)
        .where(
            Batch.status.in_(BatchStatus.ACTIVE),
            Generation.status.in_((GenerationStatus.PENDING, GenerationStatus.PROCESSING)),
        )
        .group_by(Batch.id, Batch.user_id, Batch.created_at)
    )
    queue = Queue(
        batches={
            batch_id: Waiting(batch_id, user_id, created_at, int(waiting), int(flying))
            for batch_id, user_id, created_at, waiting, flying in rows
        }
    )
    if queue.batches:
        since = now - timedelta(seconds=window_seconds(period))
        started = select(Generation.user_id, func.count()).where(
            Generation.started_at >= since, Generation.status != GenerationStatus.PENDING
        )
        if engine is not None:
            started = started.where(Generation.provider == engine)
        queue.starts = dict(db.session.execute(started.group_by(Generation.user_id)).all())
    return queue
