"""The webhooks page (/account/webhooks): the endpoint, the events it wants, the signing
secret (shown once when made or rotated), recent deliveries; and redelivering one."""

from flask import abort, flash, render_template, request, url_for
from flask_login import current_user, login_required

from ..generation import deliveries, webhook_endpoints
from ..models import looks_like_id
from . import bp
from .htmx import see_other

RECENT_DELIVERIES = 20


@bp.get("/account/webhooks")
@login_required
def webhooks():
    return _webhooks_page()


def _webhooks_page(new_secret=None, error=None, status=200):
    endpoint = webhook_endpoints.endpoint_of(current_user.id)
    recent = deliveries.delivery_log(current_user.id)[:RECENT_DELIVERIES]
    html = render_template(
        "account/webhooks.html",
        endpoint=endpoint,
        optional_events=webhook_endpoints.OPTIONAL_EVENTS,
        rotation_hours=webhook_endpoints.ROTATION_HOURS,
        deliveries=recent,
        new_secret=new_secret,
        error=error,
        url_value=request.form.get("url") if error else (endpoint.url if endpoint else ""),
    )
    return html, status


@bp.post("/account/webhooks")
@login_required
def set_webhook():
    """Set (or clear, with an empty URL) the endpoint and its events; a new secret shows once."""
    url = (request.form.get("url") or "").strip() or None
    try:
        outcome = webhook_endpoints.set_endpoint(
            current_user.id, url, request.form.getlist("events")
        )
    except webhook_endpoints.EndpointRefused as refused:
        return _webhooks_page(error=refused.message, status=422)
    if outcome.new_secret is None:
        flash("Saved." if url else "Saved: no default endpoint; callbackUrl batches still sign.")
        return see_other(url_for("web.webhooks"))
    return _webhooks_page(new_secret=outcome.new_secret)


@bp.post("/account/webhooks/rotate")
@login_required
def rotate_webhook_secret():
    return _webhooks_page(new_secret=webhook_endpoints.rotate_secret(current_user.id))


@bp.post("/webhooks/deliveries/<delivery_id>/redeliver")
@login_required
def redeliver(delivery_id):
    """Send a delivery again; back to the page it was asked from (its batch, or webhooks)."""
    if not looks_like_id(delivery_id) or not deliveries.redeliver(delivery_id, current_user.id):
        abort(404)
    flash("Sent again: the log below shows the new attempt in a moment.")
    batch_id = request.form.get("batch_id")
    if batch_id and looks_like_id(batch_id):
        return see_other(url_for("web.show", batch_id=batch_id) + "#webhooks")
    return see_other(url_for("web.webhooks"))
