"""Presigned S3 links that stay the same for a while, like the /media links of `sign()`.

botocore presigns as of the clock's now, so a link would change every second and a page
polling a batch would make the browser fetch its images again each time. Here a link is signed
as of the start of the current period (SIGNED_URL_SECONDS) and lives two periods: from now it
is valid between one and two periods, the expiry `sign()` gives, and it is the same link all
period long. The signature itself is botocore's SigV4 query signing.
"""

import functools
import time
from datetime import UTC, datetime

from botocore.auth import SIGV4_TIMESTAMP, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest

MAX_PRESIGNED_SECONDS = 7 * 24 * 3600  # SigV4 presigned links live at most a week


def signing_period(ttl_seconds, now=None):
    """(X-Amz-Date, X-Amz-Expires) of the links made now: the period's start, two periods."""
    now = int(now or time.time())
    start = now // ttl_seconds * ttl_seconds
    expires_in = min(2 * ttl_seconds, MAX_PRESIGNED_SECONDS)
    return datetime.fromtimestamp(start, UTC).strftime(SIGV4_TIMESTAMP), expires_in


@functools.lru_cache(maxsize=8192)
def presign(url, credentials, region, expires_in, timestamp):
    """botocore's own SigV4 query signing, as of `timestamp` rather than the clock's now.
    Memoised: a page or client polling a batch asks for the same links all period long."""
    request = AWSRequest(method="GET", url=url)
    signer = S3SigV4QueryAuth(credentials, "s3", region, expires=expires_in)
    request.context["timestamp"] = timestamp
    signer._modify_request_before_signing(request)
    canonical = signer.canonical_request(request)
    signature = signer.signature(signer.string_to_sign(request, canonical), request)
    signer._inject_signature_to_request(request, signature)
    return request.url
