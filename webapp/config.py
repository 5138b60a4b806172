"""Settings read from the environment, with the embedded defaults.

Layers, lowest first: these defaults, then ``instance/config.py``, then the environment
(read here), then the dict a test passes to ``create_app``.
"""

import os
import secrets


def _int(name, default):
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def _float(name, default):
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def from_environment(instance_path):
    """Return the settings as a dict, with the embedded default for anything unset."""
    secret = os.environ.get("SECRET_KEY")
    return {
        # Without SECRET_KEY, sessions and signed links only live as long as this process;
        # `make run` writes a persistent one into instance/ (see webapp.cli).
        "SECRET_KEY": secret or _instance_secret(instance_path),
        "SQLALCHEMY_DATABASE_URI": os.environ.get("DATABASE_URL")
        or "sqlite:///" + os.path.join(instance_path, "app.db"),
        "REDIS_URL": os.environ.get("REDIS_URL") or None,
        "HUEY_NAME": os.environ.get("HUEY_NAME", "batchgen"),
        "HUEY_SQLITE_PATH": os.path.join(instance_path, "huey.db"),
        "MEDIA_ROOT": os.environ.get("MEDIA_ROOT") or os.path.join(instance_path, "media"),
        "PUBLIC_BASE_URL": (os.environ.get("PUBLIC_BASE_URL") or "").rstrip("/") or None,
        "GENERATION_BACKEND": os.environ.get("GENERATION_BACKEND", "local"),
        "KIE_API_KEY": os.environ.get("KIE_API_KEY"),
        "KIE_API_BASE": os.environ.get("KIE_API_BASE", "https://api.kie.ai").rstrip("/"),
        "KIE_UPLOAD_BASE": os.environ.get(
            "KIE_UPLOAD_BASE", "https://kieai.redpandaai.co"
        ).rstrip("/"),
        "TELEGRAM_BOT_TOKEN": os.environ.get("TELEGRAM_BOT_TOKEN"),
        # Limits on what a client may send.
        "MAX_BATCH_IMAGES": _int("MAX_BATCH_IMAGES", 50),
        "MAX_IMAGE_BYTES": _int("MAX_IMAGE_BYTES", 10 * 1024 * 1024),
        "MAX_IMAGE_PIXELS": _int("MAX_IMAGE_PIXELS", 40_000_000),
        "MAX_CONTENT_LENGTH": _int("MAX_REQUEST_BYTES", 100 * 1024 * 1024),
        # Scheduling.
        "DEFAULT_CONCURRENCY": _int("DEFAULT_CONCURRENCY", 4),
        "MAX_CONCURRENCY": _int("MAX_CONCURRENCY", 8),
        "LEASE_SECONDS": _int("LEASE_SECONDS", 120),
        "MAX_ATTEMPTS": _int("MAX_ATTEMPTS", 3),
        "STALL_SECONDS": _int("STALL_SECONDS", 30),
        "PHOTO_WAIT_SECONDS": _float("PHOTO_WAIT_SECONDS", 120.0),
        # An async engine (kie.ai) that has not finished an image by then fails it, refunded.
        "POLL_TIMEOUT_SECONDS": _int("POLL_TIMEOUT_SECONDS", 900),
        # Seconds between polls of an async engine: quick at first, then slower.
        "POLL_DELAYS": (2, 2, 3, 3, 5, 5, 5, 10, 10, 15),
        "SIGNED_URL_SECONDS": _int("SIGNED_URL_SECONDS", 3600),
        "EMBEDDED_WORKERS": _int("EMBEDDED_WORKERS", 4),
        # Simulated upstream latency of the local engine, per image (for demos and tests).
        "LOCAL_ENGINE_DELAY": _float("LOCAL_ENGINE_DELAY", 0.0),
        # Sessions: the cookie name the existing client uses.
        "SESSION_COOKIE_NAME": "telegram_session",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": os.environ.get("SESSION_COOKIE_SECURE", "") == "1",
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
    }


def _instance_secret(instance_path):
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
        return _instance_secret(instance_path)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key
