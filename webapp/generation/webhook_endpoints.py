"""A user's webhook endpoint and signing secret: set, rotate (both secrets sign for a while),
and which secrets sign now. A new secret is answered once, to be shown once."""

from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from ..extensions import db
from ..models import WebhookEndpoint, utcnow
from ..webhooks.addresses import AddressRefused, allowed_hosts, check_url
from ..webhooks.signing import new_secret

# Sent to an endpoint only if it asks; batch.* events always are.
OPTIONAL_EVENTS = ("generation.succeeded", "generation.failed")
BATCH_EVENTS = (
    "batch.completed",
    "batch.partial",
    "batch.failed",
    "batch.cancelled",
    "batch.awaiting_approval",
)
# How long a rotated-out secret still signs, so receivers can switch without missing one.
ROTATION_HOURS = 24


class EndpointRefused(ValueError):
    def __init__(self, message, field):
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class SetOutcome:
    endpoint: WebhookEndpoint
    new_secret: str | None  # only when this call made the secret: show it once


def allow_hosts():
    return allowed_hosts(current_app.config["WEBHOOK_ALLOW_HOSTS"])


def check_webhook_url(url, field="url"):
    """EndpointRefused unless webhooks may be sent to `url` (webhooks/addresses.py)."""
    try:
        check_url(url, allow_hosts())
    except AddressRefused as refused:
        raise EndpointRefused(f"{field} {refused.message}", field) from None


def check_callback_url(user_id, url):
    """A batch's callbackUrl may be used: its address is public (or allowed), and the user
    has a signing secret to sign its deliveries with."""
    if endpoint_of(user_id) is None:  # asked first: no name is resolved for nothing
        raise EndpointRefused(
            "callbackUrl needs a webhook signing secret first: make one on /account/webhooks "
            "(or `flask --app app webhooks rotate-secret NAME`), then verify deliveries with it",
            "callbackUrl",
        )
    check_webhook_url(url, "callbackUrl")


def parse_events(events):
    """The optional event types asked for; EndpointRefused names any unknown one."""
    events = [event.strip() for event in events or () if event and event.strip()]
    unknown = sorted(set(events) - set(OPTIONAL_EVENTS) - set(BATCH_EVENTS))
    if unknown:
        raise EndpointRefused(
            f"Unknown event type(s): {', '.join(unknown)}; choose from "
            f"{', '.join(OPTIONAL_EVENTS)} (batch events are always sent)",
            "events",
        )
    return [event for event in OPTIONAL_EVENTS if event in events]


def endpoint_of(user_id):
    return db.session.scalar(select(WebhookEndpoint).where(WebhookEndpoint.user_id == user_id))


def set_endpoint(user_id, url, events=()):
    """Set the user's endpoint (url None: a signing secret for callbackUrl only) and the
    optional events it wants; enables it again if a 410 had disabled it. Commits."""
    if url:
        check_webhook_url(url)
    wanted = parse_events(events)
    endpoint = endpoint_of(user_id)
    secret = None
    if endpoint is None:
        secret = new_secret()
        endpoint = WebhookEndpoint(user_id=user_id, secret=secret)
        db.session.add(endpoint)
    endpoint.url = url or None
    endpoint.events = wanted
    endpoint.disabled_at = None
    endpoint.disabled_reason = None
    db.session.commit()
    return SetOutcome(endpoint, secret)


def rotate_secret(user_id):
    """A new signing secret (made if there was none); the old one signs too for
    ROTATION_HOURS. Commits; answers the new secret, to be shown once."""
    endpoint = endpoint_of(user_id)
    secret = new_secret()
    if endpoint is None:
        db.session.add(WebhookEndpoint(user_id=user_id, secret=secret, events=[]))
    else:
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_expires_at = utcnow() + timedelta(hours=ROTATION_HOURS)
        endpoint.secret = secret
    db.session.commit()
    return secret


def remove_endpoint_url(user_id):
    """Stop the default endpoint (the secret stays, for callbackUrl). Commits."""
    endpoint = endpoint_of(user_id)
    if endpoint is not None:
        endpoint.url = None
        db.session.commit()


def signing_secrets(endpoint, now=None):
    """The secrets that sign a delivery now: the current one, and a rotated-out one until its
    time is up."""
    now = now or utcnow()
    found = [endpoint.secret]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires and expires > now:
        found.append(endpoint.previous_secret)
    return found
