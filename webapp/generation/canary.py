"""Try a few first: a canary batch runs its first `canary` images, then waits for its owner.

    created        charged once for every image, as any batch (creation.py)
    running        only positions < canary may be claimed until `approved_at` (claims.py)
    canary done    every canary image terminal → awaiting_approval, `awaiting_since` set, in the
                   unit of work that finished the last one (progress.finalize_batch), with
                   batch.awaiting_approval announced; a failed canary image is refunded as any
                   failure, and the batch still waits
    approve        `approved_at` set, running again, its lanes rung: the rest run
    reject         the rest cancelled and refunded at once, through cancellation.cancel_batch
                   (the canary images stay charged)
    no answer      after CANARY_APPROVAL_HOURS the reaper rejects it (`expire_unanswered`)

Approving twice, and rejecting twice, are harmless: the second answers the batch as it is.
"""

from dataclasses import dataclass, replace
from datetime import timedelta

from flask import current_app
from sqlalchemy import exists, func, select, update

from ..extensions import db
from ..models import Batch, BatchStatus, Generation, GenerationStatus, utcnow
from ..words import count_of
from .announcements import announce_awaiting_approval
from .cancellation import NothingToCancel, cancel_batch
from .validation import ValidationError

MAX_CANARY = 5
REJECTED_NOTE = "canary rejected"
EXPIRED_NOTE = "canary not approved in time"


class NotAwaitingApproval(Exception):
    """The batch is not waiting for its owner's decision; `message` says why."""

    def __init__(self, message, status):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Approval:
    repeated: bool  # the batch was approved before this call
    images: int  # the images this approval let run (0 when repeated)

    @property
    def message(self):
        if self.repeated:
            return "The batch was already approved."
        return f"Approved: the other {count_of(self.images, 'image')} run now."


def parse_canary(value, images):
    """The optional `canary`: a whole number from 1 to MAX_CANARY, fewer than the batch's
    images; None when absent. ValidationError (field "canary") otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(
            f"canary must be a whole number from 1 to {MAX_CANARY}: how many images to try first",
            "canary",
        )
    if not 1 <= value <= MAX_CANARY:
        raise ValidationError(f"canary must be from 1 to {MAX_CANARY}; it is {value}", "canary")
    if value >= images:
        raise ValidationError(
            f"canary must be fewer than the batch's images ({images}): the rest wait for your "
            "approval",
            "canary",
        )
    return value


def with_canary(spec, value):
    """The BatchSpec with its checked `canary` (the API body's field, or the upload form's)."""
    return replace(spec, canary=parse_canary(value, len(spec.images)))


def deadline(batch, hours):
    """When a batch awaiting approval is rejected for want of an answer (None if not waiting)."""
    if batch.status != BatchStatus.AWAITING_APPROVAL or batch.awaiting_since is None:
        return None
    return batch.awaiting_since + timedelta(hours=hours)


def hold_if_tried(batch_id, now=None):
    """Inside the caller's unit of work: move a running canary batch whose canary images are
    all terminal to awaiting_approval, and announce it; True if this call did.

    A read by primary key first, so a batch without a canary costs no write. Then one
    compare-and-set UPDATE: of two units that both finish a canary image, the one that sees
    them all terminal moves the batch, once.
    """
    batch = db.session.execute(
        select(Batch.status, Batch.canary, Batch.approved_at).where(Batch.id == batch_id)
    ).first()
    if batch is None or not batch.canary or batch.approved_at is not None:
        return False
    if batch.status not in BatchStatus.ACTIVE:
        return False
    moved = db.session.execute(
        update(Batch)
        .where(Batch.id == batch_id, *_ready_to_hold())
        .values(status=BatchStatus.AWAITING_APPROVAL, awaiting_since=now or utcnow())
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:
        return False
    announce_awaiting_approval(batch_id)
    return True


def _ready_to_hold():
    """A running canary batch, not approved, none of whose canary images is unfinished."""
    unfinished_canary = exists().where(
        Generation.batch_id == Batch.id,
        Generation.position < Batch.canary,
        Generation.status.not_in(GenerationStatus.TERMINAL),
    )
    return (
        Batch.status.in_(BatchStatus.ACTIVE),
        Batch.canary.is_not(None),
        Batch.approved_at.is_(None),
        ~unfinished_canary,
    )


def approve(batch_id, doorbell):
    """Let the rest of the batch run: approved_at set, running again, its lanes rung after the
    commit. Raises NotAwaitingApproval unless it awaits approval (or was approved already:
    then it answers `repeated`). Its own unit of work."""
    now = utcnow()
    moved = db.session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status == BatchStatus.AWAITING_APPROVAL)
        .values(status=BatchStatus.RUNNING, approved_at=now, heartbeat_at=now)
    )
    if moved.rowcount != 1:
        batch = db.session.execute(
            select(Batch.status, Batch.canary, Batch.approved_at).where(Batch.id == batch_id)
        ).one()
        db.session.rollback()
        if batch.approved_at is not None:
            return Approval(repeated=True, images=0)
        raise NotAwaitingApproval(_not_waiting(batch.status, batch.canary), batch.status)
    concurrency = db.session.scalar(select(Batch.concurrency).where(Batch.id == batch_id))
    pending = db.session.scalar(
        select(func.count()).where(
            Generation.batch_id == batch_id, Generation.status == GenerationStatus.PENDING
        )
    )
    db.session.commit()
    doorbell.start_batch(batch_id, concurrency, pending)
    return Approval(repeated=False, images=pending)


def reject(batch_id, note=REJECTED_NOTE):
    """Stop a batch awaiting approval: the rest cancelled and refunded at once, each exactly
    once (cancellation.cancel_batch, from awaiting_approval only); the canary images stay
    charged. A batch already stopped this way answers `repeated` and refunds nothing.
    Raises NotAwaitingApproval otherwise. Its own unit of work (the cancel's)."""
    batch = db.session.execute(
        select(Batch.status, Batch.canary, Batch.approved_at).where(Batch.id == batch_id)
    ).one()
    db.session.rollback()
    if batch.canary is None or batch.approved_at is not None:
        why = _not_waiting(batch.status, batch.canary, batch.approved_at)
        raise NotAwaitingApproval(why, batch.status)
    try:
        return cancel_batch(batch_id, (BatchStatus.AWAITING_APPROVAL,), note=note)
    except NothingToCancel as refused:
        status = refused.status
        raise NotAwaitingApproval(_not_waiting(status, batch.canary), status) from None


def expire_unanswered(now=None, hours=None):
    """The reaper's sweep: reject every batch awaiting approval for more than `hours`
    (CANARY_APPROVAL_HOURS), each in its own unit of work; answers the ids this call rejected.
    Two reapers at once reject each batch once: the cancel's compare-and-set on the batch row
    lets one through."""
    now = now or utcnow()
    if hours is None:
        hours = current_app.config["CANARY_APPROVAL_HOURS"]
    overdue = list(
        db.session.scalars(
            select(Batch.id).where(
                Batch.status == BatchStatus.AWAITING_APPROVAL,
                Batch.awaiting_since < now - timedelta(hours=hours),
            )
        )
    )
    db.session.rollback()
    rejected = []
    for batch_id in overdue:
        try:
            outcome = reject(batch_id, note=EXPIRED_NOTE)
        except NotAwaitingApproval:
            continue  # approved or cancelled meanwhile
        if not outcome.repeated:
            rejected.append(batch_id)
    return rejected


def hold_tried_batches(now=None):
    """The reaper's sweep: hold any running canary batch whose canary images all ended
    without a lane seeing it (a lease that expired into a failure); answers their ids."""
    now = now or utcnow()
    ready = list(db.session.scalars(select(Batch.id).where(*_ready_to_hold())))
    db.session.rollback()
    held = []
    for batch_id in ready:
        if hold_if_tried(batch_id, now):
            db.session.commit()
            held.append(batch_id)
        else:
            db.session.rollback()
    return held


def _not_waiting(status, canary, approved_at=None):
    """Why a batch in `status` cannot be approved or rejected now."""
    if canary is None:
        return "This batch has no canary images: it was never going to wait for approval."
    if approved_at is not None:
        return "This batch was approved already: its other images run (cancel it to stop them)."
    if status in BatchStatus.ACTIVE:
        return (
            "The batch's first images are still being made: approve or reject once they are "
            "done (its status is then awaiting_approval)."
        )
    if status == BatchStatus.PAUSED:
        return "The batch is paused: resume it first."
    return f"The batch is already {status}: there is nothing to approve or reject."
