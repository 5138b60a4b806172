"""Upstream callbacks: which waiting generation an upstream task belongs to."""

from sqlalchemy import or_, select, update

from ..extensions import db
from ..models import Generation, GenerationStatus, looks_like_id
from ..providers import UNCONFIRMED_PREFIX


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


def adopt_upstream_task(generation_id, attempt, provider_task_id):
    """Give the attempt its upstream task, named by a callback, when the create's answer was
    lost (or has not come yet); answers the generation id if it is waiting on that task.

    Fenced on the attempt's lease token, and only over no task or a placeholder: a callback
    for an attempt that has ended, or that knows its task already, changes nothing. Its own
    unit of work.
    """
    if not looks_like_id(generation_id):
        return None
    result = db.session.execute(
        update(Generation)
        .where(
            Generation.id == generation_id,
            Generation.lease_owner == attempt,
            Generation.status == GenerationStatus.PROCESSING,
            or_(
                Generation.provider_task_id.is_(None),
                Generation.provider_task_id.startswith(UNCONFIRMED_PREFIX),
            ),
        )
        .values(provider_task_id=provider_task_id)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    if result.rowcount == 1:
        return generation_id
    return generation_awaiting([provider_task_id])
