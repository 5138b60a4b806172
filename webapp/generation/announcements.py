"""Webhooks announce what happened: the outbox.

A state change that is announced writes its deliveries (one WebhookDelivery per URL) in its
own unit of work, before that unit commits, so nothing announced can be lost: a process that
dies after the commit leaves rows the reaper finds (generation/deliveries.py sends them). The
body is written once, with the data exactly as the API answers it at that moment, and every
attempt sends those same bytes under the same `webhook-id`.

Once the unit commits, the new deliveries are rung on the doorbell the queue set
(`set_doorbell`); a rollback forgets them with the rows.
"""

import json
import logging

from flask import current_app, has_app_context, has_request_context
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from ..extensions import db
from ..models import (
    Batch,
    BatchStatus,
    Generation,
    GenerationStatus,
    WebhookDelivery,
    new_delivery_id,
    utcnow,
)
from . import presenters
from .webhook_endpoints import endpoint_of

log = logging.getLogger(__name__)

BATCH_EVENT = {
    BatchStatus.COMPLETED: "batch.completed",
    BatchStatus.PARTIAL: "batch.partial",
    BatchStatus.FAILED: "batch.failed",
    BatchStatus.CANCELLED: "batch.cancelled",
}
AWAITING_APPROVAL_EVENT = "batch.awaiting_approval"
GENERATION_EVENT = {
    GenerationStatus.SUCCESS: "generation.succeeded",
    GenerationStatus.FAILED: "generation.failed",
}
_WRITTEN = "batchgen.deliveries_written"
_DOORBELL = "batchgen.webhook_doorbell"


def set_doorbell(app, ring):
    """`ring(delivery_ids)` is called after each commit that wrote deliveries."""
    app.extensions[_DOORBELL] = ring


def announce_batch_end(batch_id):
    """In the caller's unit of work, once the batch is finished: batch.completed, .partial,
    .failed or .cancelled, to the batch's callbackUrl and the user's endpoint."""
    batch = db.session.get(Batch, batch_id, populate_existing=True)
    event_type = BATCH_EVENT.get(batch.status)
    if event_type is not None:
        _announce_batch(batch, event_type)


def announce_awaiting_approval(batch_id):
    """In the caller's unit of work, once a canary batch's first images are done and it waits
    for its owner's decision (generation/canary.py): batch.awaiting_approval, to the same
    targets as the batch's end."""
    _announce_batch(
        db.session.get(Batch, batch_id, populate_existing=True), AWAITING_APPROVAL_EVENT
    )


def _announce_batch(batch, event_type):
    targets = _targets(batch.user_id, batch.callback_url, event_type)
    if targets:
        # Read afresh: the change being announced wrote them with Core UPDATEs, which leave
        # rows this session loaded earlier (a cancel's waiting images) as they were.
        generations = db.session.scalars(
            select(Generation)
            .where(Generation.batch_id == batch.id)
            .order_by(Generation.position)
            .execution_options(populate_existing=True)
        ).all()
        data = _with_links(lambda: presenters.batch_detail(batch, generations))
        _write(targets, event_type, data, user_id=batch.user_id, batch_id=batch.id)


def announce_generation_end(generation_id, user_id, status):
    """In the caller's unit of work, once a generation succeeded or failed: to the user's
    endpoint if it asked for generation events (asked first: most ask for none)."""
    event_type = GENERATION_EVENT.get(status)
    targets = _targets(user_id, None, event_type) if event_type else []
    if targets:
        generation = db.session.get(Generation, generation_id, populate_existing=True)
        data = _with_links(lambda: presenters.generation_result(generation))
        _write(
            targets,
            event_type,
            data,
            user_id=generation.user_id,
            batch_id=generation.batch_id,
            generation_id=generation.id,
        )


def ring_again(delivery_ids):
    """Ring these deliveries once the caller's unit of work commits (a redelivery)."""
    db.session.info.setdefault(_WRITTEN, []).extend(delivery_ids)


def _targets(user_id, callback_url, event_type):
    """[(url, endpoint id)] that this event goes to. The batch's callbackUrl gets its batch's
    events; the user's endpoint gets those and the generation events it asked for."""
    endpoint = endpoint_of(user_id)
    targets = []
    if callback_url and event_type.startswith("batch."):
        targets.append((callback_url, None))
    if endpoint is not None and endpoint.url and endpoint.disabled_at is None:
        if event_type.startswith("batch.") or event_type in endpoint.events:
            if endpoint.url != callback_url:
                targets.append((endpoint.url, endpoint.id))
    return targets


def _write(targets, event_type, data, **about):
    now = utcnow()
    stamp = now.isoformat(timespec="milliseconds") + "Z"
    body = json.dumps(
        {"type": event_type, "timestamp": stamp, "data": data}, separators=(",", ":")
    )
    written = []
    for url, endpoint_id in targets:
        delivery = WebhookDelivery(
            id=new_delivery_id(),
            endpoint_id=endpoint_id,
            event_type=event_type,
            url=url,
            payload=body,
            next_attempt_at=now,
            created_at=now,
            **about,
        )
        db.session.add(delivery)
        written.append(delivery.id)
    db.session.info.setdefault(_WRITTEN, []).extend(written)


def _with_links(present):
    """Run a presenter where it can sign links: outside a request (a consumer), in one made
    for PUBLIC_BASE_URL, so a webhook's imageUrl is absolute like the API's."""
    if has_request_context():
        return present()
    base = current_app.config["PUBLIC_BASE_URL"] or "http://localhost"
    with current_app.test_request_context(base_url=base):
        return present()


@event.listens_for(Session, "after_commit")
def _ring_written(session):
    written = session.info.pop(_WRITTEN, None)
    if not written or not has_app_context():
        return
    ring = current_app.extensions.get(_DOORBELL)
    if ring is None:
        return
    try:
        ring(written)
    except Exception:
        log.exception("could not ring %d webhook delivery(ies); the reaper will", len(written))


@event.listens_for(Session, "after_rollback")
def _forget_written(session):
    session.info.pop(_WRITTEN, None)
