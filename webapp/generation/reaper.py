"""The reaper: finds work that should be moving and is not, says what to re-ring, and sweeps.

The queue is only a doorbell: a task popped by a consumer that is then killed, a queue emptied
by a Redis restart, or a crash between commit and enqueue all leave rows that nobody rings for.
The reaper looks only at the database, so it recovers all of them the same way. It also runs
the sweeps that keep the house clean: half-written files of killed writers, and expired
Idempotency-Keys. Every sweep fills its own part of the report; the queue rings what it lists.

Adding a sweep: a function that does one job in its own unit of work, called from `reap`, with
a field of its own in ReapReport (see docs/architecture.md).
"""

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select, update

from ..extensions import db
from ..models import Batch, BatchStatus, Generation, GenerationStatus, utcnow
from ..storage import StorageUnavailable
from .canary import expire_unanswered, hold_tried_batches
from .claims import runnable
from .deliveries import due_deliveries
from .idempotency_keys import purge_expired
from .outcomes import fail_and_refund, fence, return_to_pending
from .progress import finalize_batch, progress_of
from .retention import sweep as sweep_retention

log = logging.getLogger(__name__)


@dataclass
class ReapReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    polls: list[str] = field(default_factory=list)
    finalized: list[str] = field(default_factory=list)
    lanes: dict[str, int] = field(default_factory=dict)  # batch id → lanes to start
    photos: list[str] = field(default_factory=list)
    partials: int = 0  # half-written files of killed writers, swept from storage
    expired_keys: int = 0  # Idempotency-Keys past their 24 hours, deleted
    webhooks: list[str] = field(default_factory=list)  # deliveries due that nobody rang
    expired_inputs: int = 0  # input files past INPUT_RETENTION_HOURS, deleted
    expired_results: int = 0  # result files past RESULT_RETENTION_DAYS, deleted
    held: list[str] = field(default_factory=list)  # canary batches now awaiting approval
    rejected: list[str] = field(default_factory=list)  # not approved in time: rest refunded

    def summary(self):
        return (
            f"requeued {len(self.requeued)}, failed {len(self.failed)}, "
            f"polling {len(self.polls)}, finalized {len(self.finalized)}, "
            f"rang {sum(self.lanes.values())} lane(s) of {len(self.lanes)} batch(es) "
            f"and {len(self.photos)} photo(s); swept {self.partials} partial file(s) and "
            f"{self.expired_keys} expired idempotency key(s), {self.expired_inputs} input(s) "
            f"and {self.expired_results} result(s) past retention; rang {len(self.webhooks)} "
            f"webhook delivery(ies); {len(self.held)} canary batch(es) now await approval, "
            f"{len(self.rejected)} rejected unanswered"
        )


def reap(settings, stall_seconds, storage, now=None):
    """Recover expired leases, finish settled batches, list what needs ringing, and sweep."""
    now = now or utcnow()
    report = ReapReport()
    freed = _recover_expired_leases(settings, now, report)
    report.held = hold_tried_batches(now)
    report.rejected = expire_unanswered(now)
    stale = now - timedelta(seconds=stall_seconds)
    _restart_stalled_batches(stale, now, freed, report)
    report.photos = _stalled_photos(stale)
    report.expired_keys = purge_expired(now)
    try:  # the storage's sweeps wait out its outage; the recovery above and the rings go on
        report.partials = storage.sweep_partials()
        report.expired_inputs, report.expired_results = sweep_retention(storage, now)
    except StorageUnavailable as error:
        log.warning("reaper: the storage's sweeps wait for the next run: %s", error)
    report.webhooks = due_deliveries(now)
    return report


def _stalled_photos(stale):
    """Single photos waiting since before `stale` that nobody works on."""
    photos = list(
        db.session.scalars(
            select(Generation.id).where(
                Generation.batch_id.is_(None),
                Generation.status == GenerationStatus.PENDING,
                func.coalesce(Generation.not_before, Generation.created_at) < stale,
            )
        )
    )
    db.session.rollback()
    return photos


def _recover_expired_leases(settings, now, report):
    """Requeue, fail or keep polling every generation whose lease ran out; answers the batch
    ids that got a slot back."""
    freed = set()
    expired = db.session.scalars(
        select(Generation).where(
            Generation.status == GenerationStatus.PROCESSING,
            Generation.lease_expires_at < now,
        )
    ).all()
    # Detach them as read: a rollback would expire them, and a reload could pick up the token
    # of a newer attempt that must not be touched. Every write below is fenced on this token.
    db.session.close()
    for generation in expired:
        token = generation.lease_owner
        if generation.provider_task_id:
            # Already paid for upstream: keep polling it rather than submitting it again. A
            # placeholder (a create that may have left, its answer never stored) is polled too:
            # the provider waits its grace for the callback to name the task (docs/kie.md).
            lease_end = now + timedelta(seconds=settings.lease_seconds)
            db.session.execute(
                update(Generation)
                .where(*fence(generation.id, token))
                .values(lease_expires_at=lease_end)
            )
            db.session.commit()
            report.polls.append(generation.id)
        elif generation.attempts >= settings.max_attempts:
            message = (
                f"The image was not finished after {generation.attempts} attempts "
                "(the worker processing it stopped). Your credits were refunded."
            )
            if fail_and_refund(generation, token, "lease_expired", message):
                report.failed.append(generation.id)
                freed.add(generation.batch_id)
        elif return_to_pending(generation, token):
            report.requeued.append(generation.id)
            freed.add(generation.batch_id)
    return freed


def _restart_stalled_batches(stale, now, freed, report):
    """Finish settled batches; ring lanes for those with runnable rows that nobody works on."""
    # Unfinished batches, and cancelled ones still waiting for their running images to finish.
    # A held batch (paused, awaiting approval) is only finished here once its images ended:
    # no lane is rung for it (runnable_counts counts in ACTIVE batches alone).
    unfinished = Batch.status.in_(BatchStatus.UNFINISHED) | (
        (Batch.status == BatchStatus.CANCELLED) & Batch.finished_at.is_(None)
    )
    active = db.session.execute(
        select(Batch.id, Batch.concurrency, Batch.heartbeat_at).where(unfinished)
    ).all()
    if not active:
        db.session.rollback()
        return
    progress = progress_of([batch_id for batch_id, _, _ in active])
    runnable_counts = dict(
        db.session.execute(
            select(Generation.batch_id, func.count())
            .join(Batch, Batch.id == Generation.batch_id)
            .where(Batch.status.in_(BatchStatus.ACTIVE), runnable(Generation, now))
            .group_by(Generation.batch_id)
        ).all()
    )
    db.session.rollback()
    for batch_id, concurrency, heartbeat_at in active:
        if progress[batch_id].final_status is not None:
            if finalize_batch(batch_id):
                report.finalized.append(batch_id)
        elif runnable_counts.get(batch_id) and (heartbeat_at < stale or batch_id in freed):
            in_flight = progress[batch_id].processing
            waiting = runnable_counts[batch_id]
            report.lanes[batch_id] = max(1, min(concurrency - in_flight, waiting))
