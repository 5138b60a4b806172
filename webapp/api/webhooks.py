"""The webhook delivery log of a batch, and redelivery (see docs/webhooks.md)."""

from flask import abort, jsonify
from flask_login import current_user, login_required

from ..errors import json_error
from ..generation import deliveries
from ..generation.ownership import owned_batch
from ..generation.presenters import timestamp
from ..models import looks_like_id


@login_required
def batch_deliveries(batch_id):
    """Every delivery announcing this batch or its images, newest first, with its attempts."""
    if owned_batch(batch_id, current_user.id) is None:
        abort(json_error(f"Batch not found: {batch_id}", 404))
    log = deliveries.delivery_log(current_user.id, batch_id=batch_id)
    return jsonify(
        batchId=batch_id, deliveries=[delivery_json(row, attempts) for row, attempts in log]
    )


@login_required
def redeliver(delivery_id):
    """Send a delivery again now, under the same webhook-id, on a fresh schedule."""
    if not looks_like_id(delivery_id) or not deliveries.redeliver(delivery_id, current_user.id):
        abort(json_error(f"Delivery not found: {delivery_id}", 404))
    [(row, attempts)] = deliveries.delivery_log(current_user.id, delivery_id=delivery_id)
    return jsonify(delivery_json(row, attempts)), 202


def delivery_json(delivery, attempts):
    return {
        "id": delivery.id,
        "eventType": delivery.event_type,
        "url": delivery.url,
        "status": delivery.status,
        "batchId": delivery.batch_id,
        "generationId": delivery.generation_id,
        "attempts": delivery.attempts,
        "lastStatusCode": delivery.last_status_code,
        "lastError": delivery.last_error,
        "createdAt": timestamp(delivery.created_at),
        "nextAttemptAt": timestamp(delivery.next_attempt_at),
        "deliveredAt": timestamp(delivery.delivered_at),
        "log": [
            {
                "attemptedAt": timestamp(attempt.attempted_at),
                "statusCode": attempt.status_code,
                "error": attempt.error,
                "durationMs": attempt.duration_ms,
                "response": attempt.response_excerpt,
            }
            for attempt in attempts
        ],
    }
