"""kie.ai's callbacks: which task one names, and whether its signature holds. Pure.

kie POSTs to our callBackUrl when a task succeeds or fails, may deliver the same one twice, and
retries a few times when we do not answer 2xx. Sources disagree on where the task id sits, so
all three forms named in docs/kie.md are read. When the kie account has a webhook
HMAC key, each callback carries `X-Webhook-Timestamp` (Unix seconds) and `X-Webhook-Signature`,
base64(HMAC-SHA256(key, taskId + "." + timestamp)). It covers the task id and the time, not the
body, so we bound the timestamp's age ourselves and never take a result from the body.

Each attempt's callBackUrl also names the attempt (generation, lease token, API style), signed
with our SECRET_KEY: a create whose answer was lost still gets its task id from the callback,
and only a URL we made can name an attempt.
"""

import base64
import hashlib
import hmac

CALLBACK_PATH = "/api/callbacks/kie"
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
SIGNATURE_HEADER = "X-Webhook-Signature"
# A signed callback older (or further in the future) than this is refused as a replay.
MAX_SIGNATURE_AGE_SECONDS = 300


def callback_task_id(payload):
    """The kie task id a callback names: `data.taskId`, `data.task_id` or a top-level `taskId`
    (None if it names none)."""
    if not isinstance(payload, dict):
        return None
    data = payload.get("data")
    candidates = [data.get("taskId"), data.get("task_id")] if isinstance(data, dict) else []
    candidates.append(payload.get("taskId"))
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return None


def signature_is_valid(key, task_id, timestamp, signature, now):
    """Whether a callback's signature was made with our key for this task, recently."""
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(now - sent_at) > MAX_SIGNATURE_AGE_SECONDS:
        return False
    digest = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    expected = base64.b64encode(digest)
    return hmac.compare_digest(expected, (signature or "").encode())


ATTEMPT_FIELDS = ("generation", "attempt", "style")


def attempt_query(secret, generation_id, attempt, style):
    """The query that makes a callBackUrl name its attempt, signed with `secret`."""
    values = {"generation": generation_id, "attempt": attempt, "style": style}
    return {**values, "sig": _attempt_signature(secret, generation_id, attempt, style)}


def attempt_named(secret, args):
    """(generation id, lease token, style) a callback's query names and we signed, or None."""
    values = [args.get(field) for field in ATTEMPT_FIELDS]
    signature = args.get("sig")
    if not all(isinstance(value, str) and value for value in values):
        return None
    if not isinstance(signature, str) or not signature.isascii():
        return None
    expected = _attempt_signature(secret, *values)
    return tuple(values) if hmac.compare_digest(expected, signature) else None


def _attempt_signature(secret, generation_id, attempt, style):
    message = f"kie-callback\n{generation_id}\n{attempt}\n{style}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
