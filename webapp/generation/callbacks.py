"""Upstream callbacks: which waiting generation an upstream task belongs to."""

from sqlalchemy import select

from ..extensions import db
from ..models import Generation, GenerationStatus


def generation_awaiting(provider_task_ids):
    """The id of the generation still waiting on one of these upstream tasks, or None (the task
    is unknown, or its generation finished or was resubmitted since)."""
    # Filtering on status first lets the (status, lease) index narrow it to the few in flight.
    generation_id = db.session.scalar(
        select(Generation.id)
        .where(
            Generation.status == GenerationStatus.PROCESSING,
            Generation.provider_task_id.in_(provider_task_ids),
        )
        .limit(1)
    )
    db.session.rollback()
    return generation_id
