"""Whose batch is it: the one query every view asks before it shows or changes a batch."""

from sqlalchemy import select

from ..extensions import db
from ..models import Batch, looks_like_id


def owned_batch(batch_id, user_id):
    """The user's batch with this id, or None: anyone else's is as unknown as one that never
    existed, and so is an id that is not one of ours."""
    if not looks_like_id(batch_id):
        return None
    return db.session.scalar(select(Batch).where(Batch.id == batch_id, Batch.user_id == user_id))
