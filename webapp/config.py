"""Settings: the embedded defaults, and the environment variables that override them.

Layers, lowest first: `defaults()`, then `instance/config.py`, then `from_environment()`, then
the dict a test passes to `create_app`. Unset means the embedded default.
"""

import os
import secrets


def _url(value):
    return value.rstrip("/") or None


def _flag(value):
    return value == "1"


# Setting name → (environment variable, how to read it). Settings absent here are code-only.
ENVIRONMENT = {
    "SECRET_KEY": ("SECRET_KEY", str),
    "SQLALCHEMY_DATABASE_URI": ("DATABASE_URL", str),
    "REDIS_URL": ("REDIS_URL", str),
    "HUEY_NAME": ("HUEY_NAME", str),
    "MEDIA_ROOT": ("MEDIA_ROOT", str),
    "STORAGE_URL": ("STORAGE_URL", str),
    "S3_ENDPOINT_URL": ("S3_ENDPOINT_URL", _url),
    "S3_REGION": ("S3_REGION", str),
    "S3_LINKS": ("S3_LINKS", str),
    "S3_TIMEOUT_SECONDS": ("S3_TIMEOUT_SECONDS", float),
    "S3_MAX_ATTEMPTS": ("S3_MAX_ATTEMPTS", int),
    "PUBLIC_BASE_URL": ("PUBLIC_BASE_URL", _url),
    "GENERATION_BACKEND": ("GENERATION_BACKEND", str),
    "KIE_API_KEY": ("KIE_API_KEY", str),
    "KIE_API_BASE": ("KIE_API_BASE", _url),
    "KIE_UPLOAD_BASE": ("KIE_UPLOAD_BASE", _url),
    "KIE_WEBHOOK_HMAC_KEY": ("KIE_WEBHOOK_HMAC_KEY", str),
    "TELEGRAM_BOT_TOKEN": ("TELEGRAM_BOT_TOKEN", str),
    "TELEGRAM_BOT_NAME": ("TELEGRAM_BOT_NAME", str),
    "MAX_BATCH_IMAGES": ("MAX_BATCH_IMAGES", int),
    "MAX_IMAGE_BYTES": ("MAX_IMAGE_BYTES", int),
    "MAX_IMAGE_PIXELS": ("MAX_IMAGE_PIXELS", int),
    "MAX_CONTENT_LENGTH": ("MAX_REQUEST_BYTES", int),
    "DEFAULT_CONCURRENCY": ("DEFAULT_CONCURRENCY", int),
    "MAX_CONCURRENCY": ("MAX_CONCURRENCY", int),
    "LEASE_SECONDS": ("LEASE_SECONDS", int),
    "MAX_ATTEMPTS": ("MAX_ATTEMPTS", int),
    "STALL_SECONDS": ("STALL_SECONDS", int),
    "UPSTREAM_RATE_LIMIT": ("UPSTREAM_RATE_LIMIT", int),
    "UPSTREAM_RATE_PERIOD": ("UPSTREAM_RATE_PERIOD", int),
    "REAP_SECONDS": ("REAP_SECONDS", int),
    "RETRY_BASE_SECONDS": ("RETRY_BASE_SECONDS", float),
    "RETRY_CAP_SECONDS": ("RETRY_CAP_SECONDS", float),
    "KIE_TIMEOUT_SECONDS": ("KIE_TIMEOUT_SECONDS", float),
    "KIE_CONFIRM_GRACE_SECONDS": ("KIE_CONFIRM_GRACE_SECONDS", float),
    "PHOTO_WAIT_SECONDS": ("PHOTO_WAIT_SECONDS", float),
    "POLL_TIMEOUT_SECONDS": ("POLL_TIMEOUT_SECONDS", int),
    "SIGNED_URL_SECONDS": ("SIGNED_URL_SECONDS", int),
    "ETAG_ESTIMATE_SECONDS": ("ETAG_ESTIMATE_SECONDS", float),
    "EVENTS_KEEPALIVE_SECONDS": ("EVENTS_KEEPALIVE_SECONDS", float),
    "EVENTS_COALESCE_SECONDS": ("EVENTS_COALESCE_SECONDS", float),
    "EVENTS_CHECK_SECONDS": ("EVENTS_CHECK_SECONDS", float),
    "EMBEDDED_WORKERS": ("EMBEDDED_WORKERS", int),
    "LOCAL_ENGINE_DELAY": ("LOCAL_ENGINE_DELAY", float),
    "SESSION_COOKIE_SECURE": ("SESSION_COOKIE_SECURE", _flag),
    "RATE_LIMITS_ENABLED": ("RATE_LIMITS_ENABLED", _flag),
    "CREATE_RATE_LIMIT": ("CREATE_RATE_LIMIT", str),
    "STATUS_RATE_LIMIT": ("STATUS_RATE_LIMIT", str),
    "TOKEN_CACHE_SECONDS": ("TOKEN_CACHE_SECONDS", float),
    "SIGN_IN_RATE_LIMIT": ("SIGN_IN_RATE_LIMIT", str),
    "CALLBACK_RATE_LIMIT": ("CALLBACK_RATE_LIMIT", str),
    "USER_MAX_PENDING_IMAGES": ("USER_MAX_PENDING_IMAGES", int),
    "USER_MAX_CONCURRENCY": ("USER_MAX_CONCURRENCY", int),
    "CANARY_APPROVAL_HOURS": ("CANARY_APPROVAL_HOURS", float),
    "WEBHOOK_ALLOW_HOSTS": ("WEBHOOK_ALLOW_HOSTS", str),
    "WEBHOOK_TIMEOUT_SECONDS": ("WEBHOOK_TIMEOUT_SECONDS", float),
    "RESULT_RETENTION_DAYS": ("RESULT_RETENTION_DAYS", float),
    "INPUT_RETENTION_HOURS": ("INPUT_RETENTION_HOURS", float),
    "LOG_FORMAT": ("LOG_FORMAT", str.lower),
    "LOG_LEVEL": ("LOG_LEVEL", str.upper),
    "PROXY_HOPS": ("PROXY_HOPS", int),
    "READY_TIMEOUT_SECONDS": ("READY_TIMEOUT_SECONDS", float),
    "METRICS_TOKEN": ("METRICS_TOKEN", str),
    "METRICS_PORT": ("METRICS_PORT", int),
    "METRICS_HOST": ("METRICS_HOST", str),
}


def defaults(instance_path):
    """The embedded default: everything on this machine, under instance/."""
    return {
        "SECRET_KEY": None,  # create_app falls back to instance/secret_key
        "SQLALCHEMY_DATABASE_URI": "sqlite:///" + os.path.join(instance_path, "app.db"),
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
        "REDIS_URL": None,
        "HUEY_NAME": "batchgen",
        "HUEY_SQLITE_PATH": os.path.join(instance_path, "huey.db"),
        "MEDIA_ROOT": os.path.join(instance_path, "media"),
        # Where images live (webapp/storage): unset or file:// is MEDIA_ROOT; s3://bucket/prefix
        # a bucket, on S3_ENDPOINT_URL when not AWS (MinIO, R2, Garage), with the credentials of
        # boto3's chain (AWS_ACCESS_KEY_ID…) and S3_REGION (else boto3's, else us-east-1).
        "STORAGE_URL": None,
        "S3_ENDPOINT_URL": None,
        "S3_REGION": None,
        # Image links on S3: presigned GETs straight from the bucket, or "proxy": through /media.
        "S3_LINKS": "presigned",
        # Each S3 call: the connect and per-read timeout, and the tries (so an outage fails fast).
        "S3_TIMEOUT_SECONDS": 5.0,
        "S3_MAX_ATTEMPTS": 3,
        "PUBLIC_BASE_URL": None,
        "GENERATION_BACKEND": "local",
        "KIE_API_KEY": None,
        "KIE_API_BASE": "https://api.kie.ai",
        "KIE_UPLOAD_BASE": "https://kieai.redpandaai.co",
        # kie's webhook HMAC key (its settings page): callbacks must then be signed with it.
        "KIE_WEBHOOK_HMAC_KEY": None,
        # Read timeout of one call to kie.ai (the connect timeout is 5 s).
        "KIE_TIMEOUT_SECONDS": 30.0,
        # A create whose answer was lost waits this long for kie's callback to name its task
        # before the image is created again (only with callbacks, i.e. PUBLIC_BASE_URL).
        "KIE_CONFIRM_GRACE_SECONDS": 120.0,
        "TELEGRAM_BOT_TOKEN": None,
        # The bot's username (without @), which Telegram's Login Widget needs on the login page.
        "TELEGRAM_BOT_NAME": None,
        # Limits on what a client may send.
        "MAX_BATCH_IMAGES": 50,
        "MAX_IMAGE_BYTES": 10 * 1024 * 1024,
        "MAX_IMAGE_PIXELS": 40_000_000,
        "MAX_CONTENT_LENGTH": 100 * 1024 * 1024,
        # Scheduling.
        "DEFAULT_CONCURRENCY": 4,
        "MAX_CONCURRENCY": 8,
        "LEASE_SECONDS": 120,
        "MAX_ATTEMPTS": 3,
        "STALL_SECONDS": 30,
        # New upstream (kie.ai) generations allowed in any window of PERIOD seconds, shared by
        # every consumer; a limit of 0 turns pacing off.
        "UPSTREAM_RATE_LIMIT": 20,
        "UPSTREAM_RATE_PERIOD": 10,
        # How often the reaper looks for stalled work (the consumer's periodic check).
        "REAP_SECONDS": 15,
        # Retryable failures wait base·2^(attempt-1) seconds, capped, times a random 0.5–1.
        "RETRY_BASE_SECONDS": 2.0,
        "RETRY_CAP_SECONDS": 300.0,
        "PHOTO_WAIT_SECONDS": 120.0,
        # An async engine (kie.ai) that has not finished an image by then fails it, refunded.
        "POLL_TIMEOUT_SECONDS": 900,
        # Seconds between polls of an async engine, kie.ai's suggested cadence (the last one
        # repeats until POLL_TIMEOUT_SECONDS).
        "POLL_DELAYS": (
            *(2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3),  # every 2–3 s for the first 30 s
            *(5, 5, 10, 10, 10, 10, 10, 10, 10, 10),  # then 5–10 s until 2 minutes
            *(15, 20, 30),  # then 15–30 s
        ),
        "SIGNED_URL_SECONDS": 3600,
        # A status answer's ETag (generation/etags.py) of a queued or running batch changes at
        # least this often: its eta and its images' places move with the clock, unversioned.
        "ETAG_ESTIMATE_SECONDS": 10.0,
        # The event streams (api/events.py): a comment this often keeps an idle stream open
        # through proxies; a batch is read at most once per COALESCE (so at most one event per
        # image per that time); without Redis's notices, versions are compared every CHECK.
        "EVENTS_KEEPALIVE_SECONDS": 15.0,
        "EVENTS_COALESCE_SECONDS": 0.5,
        "EVENTS_CHECK_SECONDS": 0.5,
        "EMBEDDED_WORKERS": 4,
        # Simulated upstream latency of the local engine, per image (for demos and tests).
        "LOCAL_ENGINE_DELAY": 0.0,
        # Abuse limits (webapp/limits.py), in Flask-Limiter's notation; RATE_LIMITS_ENABLED=0
        # turns them off. The status limit leaves room for a few tabs polling every 2 s.
        "RATE_LIMITS_ENABLED": True,
        "CREATE_RATE_LIMIT": "30 per minute",
        "STATUS_RATE_LIMIT": "20 per second",
        # How long a web process keeps a Bearer token's user without looking it up again: a token
        # revoked elsewhere stops working within this bound (webapp/auth/token_cache.py); 0 = off.
        "TOKEN_CACHE_SECONDS": 5.0,
        "SIGN_IN_RATE_LIMIT": "10 per minute",
        "CALLBACK_RATE_LIMIT": "600 per minute",
        # Images one user may have waiting or running at once, over all their batches.
        "USER_MAX_PENDING_IMAGES": 500,
        # Images of one user's batches in flight at once, over all of them (0: no cap); the
        # upstream's pace is shared between users (generation/shares.py).
        "USER_MAX_CONCURRENCY": 8,
        # A canary batch (its first images tried) neither approved nor rejected within this
        # is rejected by the reaper, its other images refunded (generation/canary.py).
        "CANARY_APPROVAL_HOURS": 24.0,
        # Webhooks (docs/webhooks.md): hosts a webhook URL may name although they resolve to
        # a private or loopback address (comma-separated, as written in the URL; none by
        # default), each attempt's timeout, and the delays of Standard Webhooks' schedule.
        "WEBHOOK_ALLOW_HOSTS": "",
        "WEBHOOK_TIMEOUT_SECONDS": 15.0,
        "WEBHOOK_RETRY_SCHEDULE": (0, 5, 300, 1800, 7200, 18000, 36000, 36000),
        # How long a settled batch keeps its results, and its inputs (generation/retention.py).
        "RESULT_RETENTION_DAYS": 30.0,
        "INPUT_RETENTION_HOURS": 24.0,
        # Logs (webapp/logs.py): "text" leaves them as they always were; "json" writes one JSON
        # object per line to stderr, with the request, user, batch and generation ids, at
        # LOG_LEVEL and above.
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "INFO",
        # Reverse proxies in front (deploy/: nginx, 1): the client's address (the sign-in
        # limits) and scheme are read from that many X-Forwarded-For / -Proto hops. 0: none.
        "PROXY_HOPS": 0,
        # /readyz and `flask check` (webapp/health.py): how long each part (database, queue,
        # storage) may take to answer before it counts as down; the state metrics read through
        # the same timed connections.
        "READY_TIMEOUT_SECONDS": 2.0,
        # /metrics (webapp/metrics/): when set, a scrape must send `Authorization: Bearer <it>`
        # (the consumers' METRICS_PORT too). A consumer serves its own metrics on METRICS_PORT
        # (unset: none), on METRICS_HOST's interfaces.
        "METRICS_TOKEN": None,
        "METRICS_PORT": None,
        "METRICS_HOST": "0.0.0.0",
        # Sessions: the cookie name the existing client uses.
        "SESSION_COOKIE_NAME": "telegram_session",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": False,  # True whenever PUBLIC_BASE_URL is https
        # A form's CSRF token lives as long as the session: a batch page left open for hours
        # must still be able to cancel.
        "WTF_CSRF_TIME_LIMIT": None,
    }


def from_environment(environ=None):
    """The settings whose environment variables are set (and not empty)."""
    environ = os.environ if environ is None else environ
    found = {}
    for setting, (variable, parse) in ENVIRONMENT.items():
        value = environ.get(variable, "")
        if value != "":
            try:
                found[setting] = parse(value)
            except ValueError:
                raise ValueError(f"{variable}={value!r} is not valid") from None
    return found


def instance_secret(instance_path):
    """Read (or create once) instance/secret_key, so a restart keeps sessions and links valid."""
    path = os.path.join(instance_path, "secret_key")
    try:
        with open(path) as handle:
            return handle.read().strip()
    except FileNotFoundError:
        pass
    os.makedirs(instance_path, exist_ok=True)
    key = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process (web or consumer) won the race
        return instance_secret(instance_path)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key
