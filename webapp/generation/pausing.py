"""Pause and resume a batch: a paused batch starts no new image; the ones already running finish.

Pausing changes only the batch's status (`claims.claim_for_batch` claims in ACTIVE batches
alone), so no money moves: the waiting images stay pending and paid for, a cancel still refunds
them (cancellation.py), and when the last running image of a paused batch ends the batch is
finished like any other (progress.finalize_batch). The reaper leaves a paused batch alone: it
rings no lane for it, though it still recovers its images' expired leases.

Resuming puts the batch back where it was, running if an image had started and queued if not,
and rings the lanes its free slots allow through the doorbell, after the commit. Both are
harmless to repeat: pausing a paused batch, or resuming one that runs, changes nothing and says
so. Neither applies to a finished batch, nor to one awaiting approval of its canary (approve or
reject it): those raise NotPausable / NotResumable.
"""

from dataclasses import dataclass

from sqlalchemy import case, select, update

from ..extensions import db
from ..models import Batch, BatchStatus, utcnow
from ..words import count_of
from .progress import progress_of


class NotPausable(Exception):
    """The batch cannot be paused (or resumed) from its status; `message` says why."""

    def __init__(self, status, action="pause"):
        if status == BatchStatus.AWAITING_APPROVAL:
            why = "awaiting approval of its first images: approve or reject it instead"
        else:
            why = f"already {status}"
        super().__init__(f"The batch is {why}; there is nothing to {action}.")
        self.status = status
        self.message = str(self)


class NotResumable(NotPausable):
    def __init__(self, status):
        super().__init__(status, "resume")


@dataclass(frozen=True)
class PauseOutcome:
    still_running: int  # images already at the engine: they finish and are charged
    waiting: int  # images that will not start until the batch is resumed
    repeated: bool = False  # the batch was paused before this call

    @property
    def message(self):
        first = "The batch was already paused." if self.repeated else "Paused."
        parts = [first, f"{count_of(self.waiting, 'image')} will wait until you resume it."]
        if self.still_running:
            verbs = "are" if self.still_running != 1 else "is"
            running = count_of(self.still_running, "image")
            parts.append(f"{running} already running will finish and {verbs} charged.")
        return " ".join(parts)


@dataclass(frozen=True)
class ResumeOutcome:
    waiting: int  # images still to start
    lanes: int  # lanes this resume rang
    repeated: bool = False  # the batch was not paused: nothing changed
    status: str | None = None  # its status then (queued or running)

    @property
    def message(self):
        if self.repeated:
            return f"The batch is not paused: it is already {self.status}."
        if not self.waiting:
            return "Resumed; no image was waiting to start."
        return f"Resumed: {count_of(self.waiting, 'image')} will start as slots free."


def pause_batch(batch_id):
    """Pause the batch: from now on its lanes claim nothing. Its own unit of work.

    The batch row is written first, the lock a claim also takes first: a claim either ran
    before the pause (its image runs and finishes) or sees the batch paused and claims nothing.
    """
    moved = db.session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status.in_(BatchStatus.ACTIVE))
        .values(status=BatchStatus.PAUSED, paused_at=utcnow())
    )
    progress = progress_of([batch_id])[batch_id]
    if moved.rowcount == 1:
        db.session.commit()
        return PauseOutcome(still_running=progress.processing, waiting=progress.pending)
    status = _status(batch_id)
    db.session.rollback()
    if status != BatchStatus.PAUSED:
        raise NotPausable(status)
    return PauseOutcome(progress.processing, progress.pending, repeated=True)


def resume_batch(batch_id, doorbell):
    """Resume a paused batch and ring as many lanes as it has free slots (after the commit).

    Back to running if an image of it had started, else to queued. The heartbeat is renewed, so
    the reaper does not take the batch for stalled before its lanes have claimed.
    """
    now = utcnow()
    moved = db.session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status == BatchStatus.PAUSED)
        .values(
            status=case(
                (Batch.started_at.is_(None), BatchStatus.QUEUED), else_=BatchStatus.RUNNING
            ),
            paused_at=None,
            heartbeat_at=now,
        )
    )
    progress = progress_of([batch_id])[batch_id]
    if moved.rowcount != 1:
        status = _status(batch_id)
        db.session.rollback()
        if status not in BatchStatus.ACTIVE:
            raise NotResumable(status)
        return ResumeOutcome(progress.pending, lanes=0, repeated=True, status=status)
    concurrency = db.session.scalar(select(Batch.concurrency).where(Batch.id == batch_id))
    db.session.commit()
    free = max(concurrency - progress.processing, 0)
    lanes = min(free, progress.pending)
    if lanes:
        doorbell.start_batch(batch_id, free, progress.pending)
    return ResumeOutcome(waiting=progress.pending, lanes=lanes)


def _status(batch_id):
    return db.session.scalar(select(Batch.status).where(Batch.id == batch_id))

