"""Standard Webhooks signatures (the `standardwebhooks` package): secrets `whsec_…`, headers
`webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64>`, one signature per
secret that signs (both, while a rotated secret is still honoured)."""

import base64
import secrets

from standardwebhooks import Webhook

SECRET_BYTES = 32


def new_secret():
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signed_headers(message_id, timestamp, body, signing_secrets):
    """The headers of one attempt: `timestamp` a UTC datetime, `body` the exact text sent."""
    signatures = [
        Webhook(secret).sign(msg_id=message_id, timestamp=timestamp, data=body)
        for secret in signing_secrets
    ]
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": " ".join(signatures),
    }
