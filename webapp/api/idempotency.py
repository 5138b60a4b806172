"""`Idempotency-Key` on the POST routes: a retry gets its first answer, not a second charge.

Stripe's semantics. The first request with a key takes it: an INSERT under UNIQUE(user_id, key),
committed on its own before any work, so of two simultaneous first requests exactly one runs.
Then the same key, on the same endpoint with the same body, replays the stored answer (with
`Idempotent-Replayed: true`); with another endpoint or body it is 422; while the first request is
still running it is 409. Only the answers of requests that ran are kept: accepted (2xx) and
refused for credits (402). A validation error or an unexpected failure releases the key, so the
client can fix the request and send it again under the same key. Keys live 24 hours; the
reaper deletes them after that (webapp.generation.idempotency_keys).

The request's fingerprint is its endpoint plus the SHA-256 of its raw body: a retry must resend
the very same bytes (the same JSON serialised in another key order is a different request).

Crash safety: the create's own transaction (rows and debit) also puts the batch or generation id
on the key row. A request that died after that commit but before its answer was stored leaves a
row with a resource and no answer: once its lock is stale, a retry gets the answer rebuilt from
the resource and pays nothing. A stale row with no resource is taken over and runs as new. Every
write of the owner is fenced on its lock token, so a request that was taken over cannot create
anything any more: its create rolls back, debit included.
"""

import functools
import hashlib
import re
import secrets
import tempfile
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app, jsonify, request
from flask_login import current_user
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import json_error
from ..extensions import db
from ..generation import presenters
from ..generation.idempotency_keys import KEY_LIFETIME
from ..models import Batch, Generation, IdempotencyKey, utcnow

HEADER = "Idempotency-Key"
KEY_PATTERN = re.compile(r"[\x20-\x7e]{1,255}")
# A lock must outlive the longest live request, a photo that waits PHOTO_WAIT_SECONDS after its
# commit; the margin covers validating, storing the inputs and committing before that wait. Were
# a live request taken over anyway, its fenced writes would make it give way, not pay twice.
LOCK_MARGIN = timedelta(minutes=1)
# The body is hashed as it arrives and kept for the route in a file, in memory up to this size.
SPOOL_IN_MEMORY = 1024 * 1024
READ_CHUNK = 64 * 1024
# Stale rows, expired rows and released keys can each move under us: a few rounds settle it.
ROUNDS = 3

IN_FLIGHT = "A request with this Idempotency-Key is still in progress; retry it later."
OTHER_REQUEST = (
    "This Idempotency-Key was already used with a different request ({}); "
    "send a new key for a new request."
)


class KeyTakenOver(Exception):
    """Another request with the same key took it over: this one must create nothing."""


@dataclass(frozen=True)
class KeyLock:
    """The key row this request owns, and the token that proves it still does."""

    row_id: int
    token: str


def idempotent(view):
    """Give a POST route the Idempotency-Key semantics; the view gets `record_resource`.

    The view passes `record_resource` to the create, which calls it inside its transaction
    (None without the header: the route then behaves exactly as without this decorator).
    """

    @functools.wraps(view)
    def run(**kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return view(record_resource=None, **kwargs)
        if not KEY_PATTERN.fullmatch(key):
            return json_error(
                f"{HEADER} must be 1 to 255 printable ASCII characters", 400, field=HEADER
            )
        endpoint = f"{request.method} {request.path}"
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as body:
            fingerprint = _spool_body(body)
            outcome = _take(current_user.id, key, endpoint, fingerprint)
            if not isinstance(outcome, KeyLock):
                return outcome
            return _run_owned(view, outcome, kwargs)

    return run


def _spool_body(body):
    """Hash the raw body as it streams into `body`, which then stands in for the request's
    stream; answers the SHA-256. The route reads the same bytes from there, so a batch of
    ~70 MB is not held in memory by both this check and the route's parse."""
    digest = hashlib.sha256()
    for chunk in iter(functools.partial(request.stream.read, READ_CHUNK), b""):
        digest.update(chunk)
        body.write(chunk)
    body.seek(0)
    request.stream = body
    return digest.hexdigest()


def _take(user_id, key, endpoint, fingerprint):
    """Own the key (a KeyLock), or answer what this request gets instead of running."""
    for _ in range(ROUNDS):
        lock = _insert(user_id, key, endpoint, fingerprint)
        if lock:
            return lock
        row = _read(user_id, key)
        if row is None:  # released or purged meanwhile: take it afresh
            continue
        outcome = _decide(row, endpoint, fingerprint)
        if outcome is not None:
            return outcome
    return json_error(IN_FLIGHT, 409)


def _decide(row, endpoint, fingerprint):
    """What a request gets from a key that is already taken; None to look again."""
    now = utcnow()
    if row.created_at < now - KEY_LIFETIME:
        return _renew(row, endpoint, fingerprint, now)
    if row.endpoint != endpoint:
        return json_error(OTHER_REQUEST.format(row.endpoint), 422)
    if row.request_sha256 != fingerprint:
        return json_error(OTHER_REQUEST.format("another body"), 422)
    if row.response_status is not None:
        return _replay(row.response_status, row.response_body)
    lock_lifetime = timedelta(seconds=current_app.config["PHOTO_WAIT_SECONDS"]) + LOCK_MARGIN
    if row.locked_at is not None and row.locked_at > now - lock_lifetime:
        return json_error(IN_FLIGHT, 409)
    if row.batch_id or row.generation_id:
        return _answer_from_resource(row)
    return _take_over(row, now)


def _read(user_id, key):
    """The user's row for the key, detached as read (every later write is compared to it)."""
    row = db.session.scalar(
        select(IdempotencyKey).where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
    )
    if row is not None:
        db.session.expunge(row)
    db.session.rollback()  # hold no transaction while deciding
    return row


def _insert(user_id, key, endpoint, fingerprint):
    """Take a key nobody holds, committed at once; None if the user already has it."""
    token = secrets.token_hex(16)
    row = IdempotencyKey(
        user_id=user_id,
        key=key,
        endpoint=endpoint,
        request_sha256=fingerprint,
        lock_token=token,
        locked_at=utcnow(),
    )
    db.session.add(row)
    try:
        db.session.flush()
        row_id = row.id
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return None
    return KeyLock(row_id, token)


def _renew(row, endpoint, fingerprint, now):
    """An expired key is as if never seen: reset its row for this request."""
    token = secrets.token_hex(16)
    renewed = _update_committed(
        (IdempotencyKey.id == row.id, IdempotencyKey.created_at < now - KEY_LIFETIME),
        endpoint=endpoint,
        request_sha256=fingerprint,
        lock_token=token,
        locked_at=now,
        batch_id=None,
        generation_id=None,
        response_status=None,
        response_body=None,
        created_at=now,
    )
    return KeyLock(row.id, token) if renewed else None


def _take_over(row, now):
    """A stale lock with nothing created: this request runs in its place."""
    token = secrets.token_hex(16)
    taken = _update_committed(
        _unanswered(row)
        + (IdempotencyKey.batch_id.is_(None), IdempotencyKey.generation_id.is_(None)),
        lock_token=token,
        locked_at=now,
    )
    return KeyLock(row.id, token) if taken else None


def _answer_from_resource(row):
    """Its request created and paid for a resource, then died: answer from that resource."""
    if row.batch_id:
        batch = db.session.get(Batch, row.batch_id)
        response = jsonify(presenters.batch_created(batch, list(batch.generations)))
    else:
        generation = db.session.get(Generation, row.generation_id)
        response = jsonify(presenters.photo_result(generation))
        response.status_code = 200 if generation.is_finished else 202
    stored = _update_committed(
        _unanswered(row),
        lock_token=secrets.token_hex(16),  # fences out the old owner, should it still be alive
        response_status=response.status_code,
        response_body=response.get_data(as_text=True),
    )
    return _replay(response.status_code, response.get_data(as_text=True)) if stored else None


def _run_owned(view, lock, kwargs):
    """Run the view under the key, then keep its answer or release the key."""
    try:
        answer = view(record_resource=functools.partial(_record_resource, lock), **kwargs)
    except KeyTakenOver:
        return json_error(IN_FLIGHT, 409)
    except Exception as error:  # answered as the route would: 400, 402, 500…
        answer = current_app.handle_user_exception(error)
    response = current_app.make_response(answer)
    if 200 <= response.status_code < 300 or response.status_code == 402:
        _update_committed(
            _owned(lock),
            response_status=response.status_code,
            response_body=response.get_data(as_text=True),
        )
    else:
        _release(lock)
    return response


def _record_resource(lock, **resource):
    """Put the new batch or generation id on the key, inside the create's transaction."""
    result = db.session.execute(update(IdempotencyKey).where(*_owned(lock)).values(**resource))
    if result.rowcount != 1:
        raise KeyTakenOver()


def _release(lock):
    """Free the key for a corrected retry; one whose resource exists is unlocked instead, so
    that a retry gets the answer rebuilt from it at once rather than a second charge."""
    db.session.rollback()
    db.session.execute(
        delete(IdempotencyKey).where(
            *_owned(lock),
            IdempotencyKey.batch_id.is_(None),
            IdempotencyKey.generation_id.is_(None),
        )
    )
    db.session.execute(update(IdempotencyKey).where(*_owned(lock)).values(locked_at=None))
    db.session.commit()


def _replay(status, body):
    response = current_app.response_class(body, status=status, mimetype="application/json")
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _owned(lock):
    return (IdempotencyKey.id == lock.row_id, IdempotencyKey.lock_token == lock.token)


def _unanswered(row):
    """Still the row as it was read: the same owner, and no answer yet."""
    return (
        IdempotencyKey.id == row.id,
        IdempotencyKey.lock_token == row.lock_token,
        IdempotencyKey.response_status.is_(None),
    )


def _update_committed(conditions, **values):
    """One compare-and-set UPDATE of a key row, committed; answers whether it matched."""
    result = db.session.execute(update(IdempotencyKey).where(*conditions).values(**values))
    db.session.commit()
    return result.rowcount == 1
