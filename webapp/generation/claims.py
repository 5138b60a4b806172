"""Claims: one compare-and-set UPDATE moves a pending generation to processing under a lease.

The lease token is the fence: every later write about that attempt says
`WHERE lease_owner = :token`, so a worker whose lease expired and was taken over can never
overwrite the newer attempt, and a duplicate task finds nothing to claim.
"""

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.orm import aliased

from ..extensions import db
from ..models import Batch, BatchStatus, Generation, GenerationStatus, User, utcnow
from ..pacing import window_seconds


@dataclass(frozen=True)
class Settings:
    lease_seconds: int
    max_attempts: int
    poll_timeout_seconds: int = 900
    retry_base_seconds: float = 2.0
    retry_cap_seconds: float = 300.0
    # A user's batch images in flight at once, over all their batches (0: no cap).
    user_max_concurrency: int = 0
    # The fair share counts each user's images started within the pacer's window (shares.py).
    share_window_seconds: float = window_seconds(10)

    @classmethod
    def from_config(cls, config):
        return cls(
            lease_seconds=config["LEASE_SECONDS"],
            max_attempts=config["MAX_ATTEMPTS"],
            poll_timeout_seconds=config["POLL_TIMEOUT_SECONDS"],
            retry_base_seconds=config["RETRY_BASE_SECONDS"],
            retry_cap_seconds=config["RETRY_CAP_SECONDS"],
            user_max_concurrency=config["USER_MAX_CONCURRENCY"],
            share_window_seconds=window_seconds(config["UPSTREAM_RATE_PERIOD"]),
        )


@dataclass(frozen=True)
class Claim:
    """One attempt at a generation, owned by whoever holds `token`."""

    generation: Generation  # detached snapshot taken at claim time
    token: str


def _lease(token, now, settings):
    return {
        "status": GenerationStatus.PROCESSING,
        "lease_owner": token,
        "lease_expires_at": now + timedelta(seconds=settings.lease_seconds),
        "attempts": Generation.attempts + 1,
        "started_at": now,
        "not_before": None,
        # A new attempt has no upstream task yet; the reaper must not poll an old one for it.
        "provider_task_id": None,
    }


def runnable(table, now):
    """Pending and past its backoff."""
    return (table.status == GenerationStatus.PENDING) & or_(
        table.not_before.is_(None), table.not_before <= now
    )


# Made once: a new alias per claim copies every column of the table again, which cost over a
# third of a generation's CPU in the consumer. Statements built on these hit the SQL cache.
_candidate = aliased(Generation, name="candidate")
_in_flight = aliased(Generation, name="in_flight")
_user_in_flight = aliased(Generation, name="user_in_flight")


def new_token():
    """A new lease token: the attempt's name in every fenced write."""
    return uuid.uuid4().hex


def claim_for_batch(batch_id, settings, token=None):
    """Claim the batch's next runnable generation if fewer than `concurrency` are in flight
    (and fewer than USER_MAX_CONCURRENCY of its user's batch images), under `token` (a new
    one if not given). Which batch a lane claims in is the fair share's (shares.py)."""
    now = utcnow()
    token = token or new_token()
    # On PostgreSQL the row lock serialises claims of one batch; SQLite's write lock does it there.
    batch = db.session.execute(
        select(Batch.concurrency, Batch.status, Batch.canary, Batch.approved_at, Batch.user_id)
        .where(Batch.id == batch_id)
        .with_for_update()
    ).first()
    if batch is None or batch.status not in BatchStatus.ACTIVE:
        db.session.rollback()
        return None
    next_id = (
        select(_candidate.id)
        .where(_candidate.batch_id == batch_id, runnable(_candidate, now), *_canary_only(batch))
        .order_by(_candidate.position)
        .limit(1)
        .scalar_subquery()
    )
    processing = (
        select(func.count())
        .select_from(_in_flight)
        .where(_in_flight.batch_id == batch_id, _in_flight.status == GenerationStatus.PROCESSING)
        .scalar_subquery()
    )
    under_user_cap = _under_user_cap(batch.user_id, settings)  # locks the user's row
    result = db.session.execute(
        update(Generation)
        .where(
            Generation.id == next_id,
            Generation.status == GenerationStatus.PENDING,
            processing < batch.concurrency,
            *under_user_cap,
        )
        .values(**_lease(token, now, settings))
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        db.session.rollback()
        return None
    db.session.execute(
        update(Batch)
        .where(Batch.id == batch_id)
        .values(
            status=case(
                (Batch.status == BatchStatus.QUEUED, BatchStatus.RUNNING), else_=Batch.status
            ),
            started_at=func.coalesce(Batch.started_at, now),
            heartbeat_at=now,
        )
    )
    db.session.commit()
    return _snapshot(token, Generation.batch_id == batch_id)


def _under_user_cap(user_id, settings):
    """The condition that keeps the user's batch images in flight under USER_MAX_CONCURRENCY,
    taken with the user's row locked for the rest of the claim (none without a cap).

    Claims in the user's other batches hold other batch rows, so on PostgreSQL the user's row
    is locked too (FOR NO KEY UPDATE: a debit waits, new rows referencing the user do not):
    each claim's count then sees the one before it committed. The order stays batch row, then
    the user's row, then generations; nothing that locks the user's row first waits for a row
    of an active batch. SQLite's write lock serialises every claim anyway.
    """
    cap = settings.user_max_concurrency
    if not cap:
        return ()
    db.session.execute(select(User.id).where(User.id == user_id).with_for_update(key_share=True))
    user_processing = (
        select(func.count())
        .select_from(_user_in_flight)
        .where(
            _user_in_flight.user_id == user_id,
            _user_in_flight.status == GenerationStatus.PROCESSING,
            _user_in_flight.batch_id.is_not(None),
        )
        .scalar_subquery()
    )
    return (user_processing < cap,)


def _canary_only(batch):
    """Until a canary batch is approved, only its first `canary` images may be claimed."""
    if batch.canary and batch.approved_at is None:
        return (_candidate.position < batch.canary,)
    return ()


def claim_generation(generation_id, settings, token=None):
    """Claim one generation by id (single photos have no batch to pick from)."""
    now = utcnow()
    token = token or new_token()
    result = db.session.execute(
        update(Generation)
        .where(Generation.id == generation_id, runnable(Generation, now))
        .values(**_lease(token, now, settings))
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        db.session.rollback()
        return None
    db.session.commit()
    return _snapshot(token, Generation.id == generation_id)


def _snapshot(token, where):
    """The claimed row. `where` (its batch, or its id) lets the database find it through an
    index: lease_owner has none, and alone it would read every generation ever made."""
    generation = db.session.scalar(select(Generation).where(where, Generation.lease_owner == token))
    # End the read transaction: nothing may stay open while the engine works.
    db.session.close()
    return Claim(generation, token)
