"""kie.ai's callbacks: which task one names, and whether its signature holds. Pure.

kie POSTs to our callBackUrl when a task succeeds or fails, may deliver the same one twice, and
retries a few times when we do not answer 2xx. Sources disagree on where the task id sits, so
all three forms named in docs/kie.md are read. When the kie account has a webhook
HMAC key, each callback carries `X-Webhook-Timestamp` (Unix seconds) and `X-Webhook-Signature`,
base64(HMAC-SHA256(key, taskId + "." + timestamp)). It covers the task id and the time, not the
body, so we bound the timestamp's age ourselves and never take a result from the body.
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
