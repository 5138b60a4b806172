"""Retention: how long files are kept once their batch (or single photo) has settled.

Results are kept RESULT_RETENTION_DAYS (30 by default), inputs INPUT_RETENTION_HOURS (24).
The reaper deletes the files and notes when (`result_deleted_at`, `input_deleted_at`); the
rows stay, and so does every ledger row: money is never deleted. A link to a deleted result
answers 410 Gone, and the batch's answer says when its results expire (`expiresAt`).
"""

from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import and_, or_, select, update

from ..extensions import db
from ..models import Batch, Generation, GenerationStatus, utcnow

PER_SWEEP = 500  # files per kind per reaper run; the next run takes the rest


@dataclass(frozen=True)
class Kept:
    result_days: float
    input_hours: float

    @classmethod
    def from_config(cls, config=None):
        config = config or current_app.config
        return cls(config["RESULT_RETENTION_DAYS"], config["INPUT_RETENTION_HOURS"])

    def results_expire(self, settled_at):
        """When the results of something settled at `settled_at` are deleted (None: not yet
        settled, so not counting)."""
        return settled_at + timedelta(days=self.result_days) if settled_at else None


def expires_at(batch):
    return Kept.from_config().results_expire(batch.finished_at)


def sweep(storage, now=None, kept=None):
    """Delete the inputs and results whose time is up; (inputs, results) deleted. Each file
    goes before its row says so: a failure leaves the row to be swept again."""
    now = now or utcnow()
    kept = kept or Kept.from_config()
    inputs = _sweep(
        storage,
        Generation.input_key,
        Generation.input_deleted_at,
        now - timedelta(hours=kept.input_hours),
        now,
    )
    results = _sweep(
        storage,
        Generation.result_key,
        Generation.result_deleted_at,
        now - timedelta(days=kept.result_days),
        now,
    )
    return inputs, results


def _sweep(storage, key_column, deleted_column, settled_before, now):
    rows = db.session.execute(
        select(Generation.id, key_column)
        .outerjoin(Batch, Batch.id == Generation.batch_id)
        .where(
            key_column.is_not(None),
            deleted_column.is_(None),
            Generation.status.in_(GenerationStatus.TERMINAL),
            or_(
                and_(Generation.batch_id.is_(None), Generation.finished_at < settled_before),
                Batch.finished_at < settled_before,
            ),
        )
        .limit(PER_SWEEP)
    ).all()
    db.session.rollback()
    for _, key in rows:
        storage.delete(key)
    if rows:
        db.session.execute(
            update(Generation)
            .where(Generation.id.in_([row_id for row_id, _ in rows]))
            .values({deleted_column: now})
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
    return len(rows)
