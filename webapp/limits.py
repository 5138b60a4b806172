"""Abuse limits: how often one user may create or poll, one address may try to sign in or
call back, with Flask-Limiter (on Redis when REDIS_URL is set, so every web process counts
together; in the process's memory otherwise).

Each app gets a Limiter of its own, and the limits are put on its view functions by endpoint,
from the settings: tests build many apps in one process, and none may count another's requests.
An answer over a limit is 429 (JSON for the API, with `error` and `Retry-After`).

Only a 429 carries the limit's headers (`Retry-After`, `X-RateLimit-*`: `over_limit_headers`).
Flask-Limiter would put them on every answer, which costs two Redis round trips (the window's
count, then its expiry) after the one that counts the request: a status poll paid three.
"""

import logging
import time

from flask import current_app, request
from flask_limiter import Limiter
from flask_login import current_user

# Endpoint → (the setting that holds its limit, whom it counts).
log = logging.getLogger(__name__)

BY_USER, BY_ADDRESS = "user", "address"
LIMITS = {
    "api.create_batch_job": ("CREATE_RATE_LIMIT", BY_USER),
    "api.generate_photo": ("CREATE_RATE_LIMIT", BY_USER),
    "web.create": ("CREATE_RATE_LIMIT", BY_USER),
    "web.retry": ("CREATE_RATE_LIMIT", BY_USER),
    "api.batch_status": ("STATUS_RATE_LIMIT", BY_USER),
    "api.batch_detail": ("STATUS_RATE_LIMIT", BY_USER),
    "web.show": ("STATUS_RATE_LIMIT", BY_USER),
    "api.list_batches": ("STATUS_RATE_LIMIT", BY_USER),
    "api.list_ledger": ("STATUS_RATE_LIMIT", BY_USER),
    "api.batch_deliveries": ("STATUS_RATE_LIMIT", BY_USER),
    # Opening a stream (and each reconnect) counts as a poll; its events then cost nothing here.
    "api.batch_events": ("STATUS_RATE_LIMIT", BY_USER),
    # A redelivery sends a request out: limited at the pace of creates, so we flood no one.
    "api.redeliver": ("CREATE_RATE_LIMIT", BY_USER),
    "web.redeliver": ("CREATE_RATE_LIMIT", BY_USER),
    # A resume rings lanes: pausing and resuming in a loop is limited at the pace of creates.
    "api.pause_batch_job": ("CREATE_RATE_LIMIT", BY_USER),
    "api.resume_batch_job": ("CREATE_RATE_LIMIT", BY_USER),
    "web.pause": ("CREATE_RATE_LIMIT", BY_USER),
    "web.resume": ("CREATE_RATE_LIMIT", BY_USER),
    # An approval rings lanes, a reject refunds: at the pace of creates too.
    "api.approve_batch_job": ("CREATE_RATE_LIMIT", BY_USER),
    "api.reject_batch_job": ("CREATE_RATE_LIMIT", BY_USER),
    "web.approve": ("CREATE_RATE_LIMIT", BY_USER),
    "web.reject": ("CREATE_RATE_LIMIT", BY_USER),
    "auth.login": ("SIGN_IN_RATE_LIMIT", BY_ADDRESS),
    "auth.telegram": ("SIGN_IN_RATE_LIMIT", BY_ADDRESS),
    "auth.telegram_mini_app": ("SIGN_IN_RATE_LIMIT", BY_ADDRESS),
    "auth.login_link": ("SIGN_IN_RATE_LIMIT", BY_ADDRESS),
    "api.kie_callback": ("CALLBACK_RATE_LIMIT", BY_ADDRESS),
}
# Sign-in pages are counted when they are posted to, not when they are shown.
POST_ONLY = {"auth.login", "auth.login_link"}


def _address():
    return request.remote_addr or "unknown"


def _user_or_address():
    """The signed-in user (by id), else the address: limits follow the account, not the IP."""
    if current_user.is_authenticated:
        return f"user:{current_user.id}"
    return f"address:{_address()}"


def init_app(app):
    config = app.config
    limiter = Limiter(
        key_func=_address,
        app=app,
        storage_uri=config["REDIS_URL"] or "memory://",
        key_prefix=f"{config['HUEY_NAME']}:limits",
        headers_enabled=False,  # a 429's own: over_limit_headers
        enabled=config["RATE_LIMITS_ENABLED"],
        # A Redis that does not answer must not take the site down with it.
        swallow_errors=True,
    )
    for endpoint, (setting, counted_by) in LIMITS.items():
        view = app.view_functions[endpoint]
        limit = limiter.limit(
            config[setting],
            key_func=_user_or_address if counted_by == BY_USER else _address,
            methods=["POST"] if endpoint in POST_ONLY else None,
            scope=setting,
        )
        app.view_functions[endpoint] = limit(view)
    app.extensions["batchgen.limiter"] = limiter


def over_limit_headers():
    """The headers of a 429: when the window that refused the request resets (`Retry-After`,
    in seconds, at least 1) and the limit (`X-RateLimit-Limit`, `-Remaining`, `-Reset`)."""
    limiter = current_app.extensions.get("batchgen.limiter")
    refused = limiter.current_limit if limiter is not None else None
    if refused is None:
        return {"Retry-After": "1"}
    try:
        reset_at = refused.reset_at
    except Exception as error:  # the limits' Redis went away since it counted the request
        log.warning("could not read the rate limit's window: %s", error)
        return {"Retry-After": "1"}
    return {
        "Retry-After": str(max(1, int(reset_at - time.time()))),
        "X-RateLimit-Limit": str(refused.limit.amount),
        "X-RateLimit-Remaining": str(refused.remaining),
        "X-RateLimit-Reset": str(reset_at),
    }
