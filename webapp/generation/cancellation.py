"""Cancel a batch: images not started are cancelled and refunded; running ones finish.

An image already at the engine has been paid for upstream, so it is left to finish and is
charged like any other. Cancelling twice changes nothing the second time.
"""

from dataclasses import dataclass

from sqlalchemy import select, update

from .. import billing
from ..extensions import db
from ..models import Batch, BatchStatus, Generation, GenerationStatus, utcnow
from ..words import count_of
from .announcements import announce_batch_end
from .outcomes import CANCELLED_MESSAGE
from .progress import Tally, tallies

NONE = Tally(0, 0)


class NothingToCancel(Exception):
    """The batch finished before it could be cancelled."""

    def __init__(self, status):
        super().__init__(f"the batch is already {status}")
        self.status = status


@dataclass(frozen=True)
class CancelOutcome:
    cancelled: int  # images this cancel stopped (0 when repeated)
    refunded: int  # credits this cancel gave back (0 when repeated)
    still_running: int  # images already at the engine: they finish and are charged
    repeated: bool = False  # the batch was cancelled before this call

    @property
    def message(self):
        if self.repeated:
            parts = ["The batch was already cancelled."]
        elif self.cancelled:
            images = count_of(self.cancelled, "image")
            parts = [f"Cancelled {images} not started; {self.refunded}⭐ refunded."]
        else:
            parts = ["Cancelled; no image was waiting to start."]
        if self.still_running:
            verbs = "are" if self.still_running != 1 else "is"
            running = count_of(self.still_running, "image")
            parts.append(f"{running} already running will finish and {verbs} charged.")
        return " ".join(parts)

    @property
    def preview(self):
        """What cancelling would do, said before it is done (from preview_cancel)."""
        if self.cancelled:
            images = count_of(self.cancelled, "image")
            refund = f"{images} not started will be refunded {self.refunded}⭐"
        else:
            refund = "No image is waiting to start, so nothing will be refunded"
        if not self.still_running:
            return f"{refund}."
        verb = "will finish and be charged"
        return f"{refund}; {self.still_running} already running {verb}."


def preview_cancel(batch_id):
    """What a cancel would do now, without doing it (for asking a person first)."""
    counts = _tallies(batch_id)
    db.session.rollback()
    pending = counts.get(GenerationStatus.PENDING, NONE)
    return CancelOutcome(
        cancelled=pending.images,
        refunded=pending.credits,
        still_running=_running(counts),
    )


def cancel_batch(batch_id, statuses=BatchStatus.UNFINISHED, note="cancelled"):
    """Cancel the batch and refund its waiting images in one transaction.

    Raises NothingToCancel if the batch already finished on its own, or is in none of
    `statuses`: by default any unfinished batch, held ones (paused, awaiting approval) too; a
    canary's reject stops only a batch awaiting approval, with its own ledger `note`. The batch
    row is written first: that takes the lock a lane's claim or requeue also takes first, so no
    image can start, or come back to waiting, halfway through a cancel.
    """
    now = utcnow()
    moved = db.session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status.in_(statuses))
        .values(status=BatchStatus.CANCELLED, paused_at=None)
    )
    if moved.rowcount != 1:
        status = db.session.scalar(select(Batch.status).where(Batch.id == batch_id))
        running = _running(_tallies(batch_id))
        db.session.rollback()
        if status != BatchStatus.CANCELLED:
            raise NothingToCancel(status)
        return CancelOutcome(cancelled=0, refunded=0, still_running=running, repeated=True)
    waiting = db.session.scalars(
        select(Generation).where(
            Generation.batch_id == batch_id, Generation.status == GenerationStatus.PENDING
        )
    ).all()
    db.session.execute(
        update(Generation)
        .where(Generation.batch_id == batch_id, Generation.status == GenerationStatus.PENDING)
        .values(
            status=GenerationStatus.CANCELLED,
            finished_at=now,
            error_code="cancelled",
            error_message=CANCELLED_MESSAGE,
        )
        .execution_options(synchronize_session=False)
    )
    for generation in waiting:
        billing.refund_generation(generation, note=note)
    running = _running(_tallies(batch_id))
    if not running:
        db.session.execute(update(Batch).where(Batch.id == batch_id).values(finished_at=now))
        announce_batch_end(batch_id)
    db.session.commit()
    return CancelOutcome(
        cancelled=len(waiting),
        refunded=sum(generation.cost for generation in waiting),
        still_running=running,
    )


def _tallies(batch_id):
    return tallies([batch_id]).get(batch_id, {})


def _running(counts):
    return counts.get(GenerationStatus.PROCESSING, NONE).images
