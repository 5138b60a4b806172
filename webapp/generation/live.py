"""What the event streams read: a batch and its images changed since a version, in one
statement (api/event_hub.py keeps the answer per web process and fans it out).

One statement, so one snapshot of the database on SQLite and PostgreSQL alike: the batch's
version it answers is at least every image's version in it, so "everything up to this version"
is exactly what was read, and the next read asks for what came after it.
"""

from dataclasses import dataclass

from sqlalchemy import and_, select

from ..extensions import db
from ..models import Batch, BatchStatus, Generation
from . import presenters, reasons

BATCH_COLUMNS = (
    Batch.version.label("batch_version"),
    Batch.status.label("batch_status"),
    Batch.finished_at.label("batch_finished_at"),
)
IMAGE_COLUMNS = (*presenters.RESULT_COLUMNS, Generation.position, Generation.version)


@dataclass(frozen=True)
class Changes:
    version: int
    status: str
    finished: bool  # terminal, and every image ended (a cancel's running ones too)
    images: list  # rows of IMAGE_COLUMNS changed since the version asked, by position


def changed_since(batch_id, version):
    """The batch now and its images whose version is above `version` (0: all of them)."""
    changed = and_(Generation.batch_id == Batch.id, Generation.version > version)
    rows = db.session.execute(
        select(*BATCH_COLUMNS, *IMAGE_COLUMNS)
        .select_from(Batch)
        .outerjoin(Generation, changed)
        .where(Batch.id == batch_id)
        .order_by(Generation.position)
    ).all()
    if not rows:
        return None
    first = rows[0]
    status = first.batch_status
    finished = status in BatchStatus.TERMINAL and first.batch_finished_at is not None
    images = [row for row in rows if row.id is not None]
    return Changes(first.batch_version, status, finished, images)


def versions_of(batch_ids):
    """{batch id: version} of these batches (the timer's check, and an ANY notice's)."""
    if not batch_ids:
        return {}
    return dict(
        db.session.execute(select(Batch.id, Batch.version).where(Batch.id.in_(batch_ids))).all()
    )


def places_of(images):
    """reasons.images_ahead of the images of one snapshot: their places, read once per change
    rather than once per viewer."""
    return reasons.images_ahead(images)


def batch_of(batch_id):
    """The `batch` event's data: the batch's own fields, as its detail answers them."""
    batch = db.session.get(Batch, batch_id)
    return presenters.batch_fields(batch, eta=None)
