"""Sending the outbox: one attempt at a delivery, the schedule of the next, and the log.

At least once: a delivery is leased while it is sent (so two consumers do not send it at the
same time), and a consumer killed mid-send leaves a lease that runs out, after which the
reaper rings it again, under the same `webhook-id`. Receivers deduplicate on that id.

Outcomes: a 2xx delivers; a 410 Gone fails the delivery and disables the endpoint it came
from; anything else (a timeout, no connection, an address the guard refuses, another status,
a redirect, which is never followed) is tried again on the schedule (WEBHOOK_RETRY_SCHEDULE,
Standard Webhooks' by default), no sooner than a Retry-After asked, until it is spent.
"""

from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import or_, select, update

from .. import metrics
from ..extensions import db
from ..models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    utcnow,
)
from ..webhooks import sending
from ..webhooks.addresses import AddressRefused, check_url
from ..webhooks.signing import signed_headers
from .announcements import ring_again
from .webhook_endpoints import allow_hosts, endpoint_of, signing_secrets

# A lease lasts this many attempt timeouts (a minute by default): one that runs out means its
# sender died.
LEASE_TIMEOUTS = 4
DUE_PER_SWEEP = 500
ERROR_LENGTH = 255


@dataclass(frozen=True)
class Sent:
    """What one turn did: `next_at`, when a retry is scheduled (None: delivered or ended)."""

    delivery_id: str
    status: str
    next_at: object = None


def deliver(delivery_id, now=None):
    """One attempt at a due delivery, if nobody else holds it; None if it was not ours."""
    now = now or utcnow()
    claimed = db.session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
            or_(WebhookDelivery.next_attempt_at.is_(None), WebhookDelivery.next_attempt_at <= now),
            _unleased(now),
        )
        .values(lease_expires_at=now + timedelta(seconds=_lease_seconds()))
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    if claimed.rowcount != 1:
        return None
    delivery = db.session.get(WebhookDelivery, delivery_id, populate_existing=True)
    endpoint = endpoint_of(delivery.user_id)
    for row in (delivery, endpoint):
        if row is not None:
            db.session.expunge(row)  # kept as read, while nothing is held
    db.session.rollback()  # no transaction open while the receiver answers
    answer = _attempt(delivery, endpoint)
    return _record(delivery, endpoint, answer)


def _lease_seconds():
    return current_app.config["WEBHOOK_TIMEOUT_SECONDS"] * LEASE_TIMEOUTS


def _attempt(delivery, endpoint):
    if endpoint is None:
        return _refused("the signing secret was removed", final=True)
    if delivery.endpoint_id is not None:
        if endpoint.disabled_at is not None:
            return _refused("the endpoint is disabled (it answered 410 Gone)", final=True)
        if endpoint.url != delivery.url:
            return _refused("the endpoint was changed or removed since", final=True)
    try:
        check_url(delivery.url, allow_hosts())
    except AddressRefused as refused:
        return _refused(f"the URL {refused.message}")
    now = utcnow()
    headers = signed_headers(delivery.id, now, delivery.payload, signing_secrets(endpoint, now))
    timeout = current_app.config["WEBHOOK_TIMEOUT_SECONDS"]
    return sending.send(delivery.url, delivery.payload, headers, timeout=timeout)


def _refused(error, final=False):
    return sending.Answer(None, error, None, None, 0, final=final)


def _record(delivery, endpoint, answer):
    now = utcnow()
    db.session.add(
        WebhookAttempt(
            delivery_id=delivery.id,
            attempted_at=now,
            status_code=answer.status_code,
            error=(answer.error or "")[:ERROR_LENGTH] or None,
            response_excerpt=answer.excerpt,
            duration_ms=answer.duration_ms,
        )
    )
    values = {
        "attempts": WebhookDelivery.attempts + 1,
        "lease_expires_at": None,
        "last_status_code": answer.status_code,
        "last_error": (answer.error or "")[:ERROR_LENGTH] or None,
    }
    next_at = None
    if answer.delivered:
        values.update(status=DeliveryStatus.DELIVERED, delivered_at=now, next_attempt_at=None)
    elif answer.ends:
        values.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
        if answer.gone and delivery.endpoint_id is not None:
            db.session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == delivery.endpoint_id)
                .values(disabled_at=now, disabled_reason=f"{delivery.url} answered 410 Gone")
            )
    else:
        schedule = current_app.config["WEBHOOK_RETRY_SCHEDULE"]
        index = delivery.schedule_index + 1
        delay = sending.delay_before(index, schedule, answer.retry_after)
        if delay is None:
            values.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
        else:
            next_at = now + timedelta(seconds=delay)
            values.update(schedule_index=index, next_attempt_at=next_at)
    db.session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery.id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    status = values.get("status", DeliveryStatus.PENDING)
    metrics.webhook_attempt("retrying" if status == DeliveryStatus.PENDING else status)
    return Sent(delivery.id, status, next_at)


def _unleased(now):
    return or_(
        WebhookDelivery.lease_expires_at.is_(None), WebhookDelivery.lease_expires_at < now
    )


def due_deliveries(now):
    """Deliveries that should be on their way and are not: the reaper rings them. Finds what
    a commit's doorbell missed and what a killed sender left leased."""
    ids = db.session.scalars(
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at <= now,
            _unleased(now),
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(DUE_PER_SWEEP)
    ).all()
    db.session.rollback()
    return ids


def redeliver(delivery_id, user_id):
    """Send a delivery again now, on a fresh schedule, under the same webhook-id; False if it
    is not this user's. Commits, and rings it."""
    moved = db.session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.user_id == user_id)
        .values(
            status=DeliveryStatus.PENDING,
            schedule_index=0,
            next_attempt_at=utcnow(),
            lease_expires_at=None,
            delivered_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:
        db.session.rollback()
        return False
    ring_again([delivery_id])
    db.session.commit()
    return True


def delivery_log(user_id, batch_id=None, delivery_id=None):
    """[(delivery, [attempts, oldest first])], newest delivery first: a batch's, or one."""
    query = select(WebhookDelivery).where(WebhookDelivery.user_id == user_id)
    if batch_id is not None:
        query = query.where(WebhookDelivery.batch_id == batch_id)
    if delivery_id is not None:
        query = query.where(WebhookDelivery.id == delivery_id)
    deliveries = db.session.scalars(
        query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
    ).all()
    attempts = {delivery.id: [] for delivery in deliveries}
    if attempts:
        for attempt in db.session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(list(attempts)))
            .order_by(WebhookAttempt.id)
        ):
            attempts[attempt.delivery_id].append(attempt)
    return [(delivery, attempts[delivery.id]) for delivery in deliveries]
