"""How far a batch has got: counts by status, the one query that makes them, and the batch's
final status once every image is terminal.

`tallies` is the only GROUP BY over a batch's generations: the steps, the cancel, the reaper and
the history page all count through it.
"""

import time
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import func, select, update

from ..extensions import db
from ..models import Batch, BatchStatus, Generation, GenerationStatus, utcnow

# How often a request waiting for a photo looks at its row again.
WAIT_INTERVAL_SECONDS = 0.2
IDS_PER_QUERY = 500


class Tally(NamedTuple):
    """The images of one batch in one status, and what they cost."""

    images: int
    credits: int


@dataclass(frozen=True)
class Progress:
    total: int
    pending: int
    processing: int
    success: int
    failed: int
    cancelled: int

    @classmethod
    def of(cls, generations):
        return cls.from_counts(Counter(generation.status for generation in generations))

    @classmethod
    def from_counts(cls, counts):
        """From {status: images}; missing statuses count 0."""
        return cls(
            total=sum(counts.get(status, 0) for status in GenerationStatus.ALL),
            pending=counts.get(GenerationStatus.PENDING, 0),
            processing=counts.get(GenerationStatus.PROCESSING, 0),
            success=counts.get(GenerationStatus.SUCCESS, 0),
            failed=counts.get(GenerationStatus.FAILED, 0),
            cancelled=counts.get(GenerationStatus.CANCELLED, 0),
        )

    @classmethod
    def from_tallies(cls, tallies):
        """From {status: Tally}, as `tallies` answers them for one batch."""
        return cls.from_counts({status: tally.images for status, tally in tallies.items()})

    @property
    def finished(self):
        return self.success + self.failed + self.cancelled

    @property
    def is_complete(self):
        return self.finished == self.total

    @property
    def percent(self):
        return round(100 * self.finished / self.total) if self.total else 100

    @property
    def remaining(self):
        return self.pending + self.processing

    @property
    def final_status(self):
        """The batch status once every generation is terminal, or None while some are not."""
        if self.remaining:
            return None
        if self.success == self.total:
            return BatchStatus.COMPLETED
        return BatchStatus.PARTIAL if self.success else BatchStatus.FAILED


def tallies(batch_ids):
    """{batch id: {status: Tally}} for these batches; a batch without generations is absent.

    Asked in chunks, so the reaper's list of every active batch stays within the bound
    parameters a statement may carry (SQLite's limit)."""
    batch_ids = list(batch_ids)
    found = {}
    for start in range(0, len(batch_ids), IDS_PER_QUERY):
        rows = db.session.execute(
            select(
                Generation.batch_id,
                Generation.status,
                func.count(),
                func.coalesce(func.sum(Generation.cost), 0),
            )
            .where(Generation.batch_id.in_(batch_ids[start : start + IDS_PER_QUERY]))
            .group_by(Generation.batch_id, Generation.status)
        )
        for batch_id, status, images, credits in rows:
            found.setdefault(batch_id, {})[status] = Tally(images, credits)
    return found


def progress_of(batch_ids):
    """{batch id: Progress} for these batches (every one of them, zeros when it has no rows)."""
    found = tallies(batch_ids)
    return {batch_id: Progress.from_tallies(found.get(batch_id, {})) for batch_id in batch_ids}


def finalize_batch(batch_id):
    """Give the batch its final status if all its generations are terminal; True if it did.

    A held batch (paused, or awaiting approval) is finished too when its last images end: a
    batch paused while every image left was already running. A cancelled batch keeps its status
    and is finished once the images that were already running when it was cancelled are done.
    Its own unit of work: it commits.
    """
    status = progress_of([batch_id])[batch_id].final_status
    if status is None:
        # Imported here, as the announcement below: a canary whose images are all done makes
        # the batch wait for its owner's decision, in this unit of work.
        from .canary import hold_if_tried

        if hold_if_tried(batch_id):
            db.session.commit()
        else:
            db.session.rollback()
        return False
    now = utcnow()
    result = db.session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status.in_(BatchStatus.UNFINISHED))
        .values(status=status, finished_at=now, paused_at=None)
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
    if result.rowcount == 1:
        # Imported here: an announcement shows the batch through presenters, which use Progress.
        from .announcements import announce_batch_end

        announce_batch_end(batch_id)
    db.session.commit()
    return result.rowcount == 1


def wait_until_finished(generation_id, timeout):
    """The generation once it is terminal, or as it is after `timeout` seconds.

    Each look is its own read, ended before the next sleep: nothing is held while waiting (on
    SQLite, not even a read lock).
    """
    deadline = time.monotonic() + timeout
    while True:
        generation = db.session.get(Generation, generation_id, populate_existing=True)
        if generation.is_finished or time.monotonic() >= deadline:
            return generation
        db.session.rollback()
        time.sleep(WAIT_INTERVAL_SECONDS)
