"""Where input and result images live: a local folder (the default) or an S3-compatible
bucket (`STORAGE_URL=s3://…`, storage/s3.py), addressed by keys, with signed links.

Keys look like `inputs/<batch>/<gen>.png` and `results/<batch>/<gen>.png`. Links handed to
clients are absolute, signed with SECRET_KEY and expire, so they work in an <img> tag and for
clients without a cookie (on S3, presigned GETs with the same expiry, unless S3_LINKS=proxy).
"""

import functools
import hashlib
import hmac
import os
import re
import tempfile
import time
from urllib.parse import urlsplit

from flask import current_app

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*\.[a-z0-9]{2,5}$")


class StorageUnavailable(OSError):
    """The storage could not read or write (a full disk, a read-only folder, an outage): not a
    missing file, which stays FileNotFoundError. Every storage raises it for such failures."""


class LocalStorage:
    """Files under one root folder; writes are atomic (temp file + rename).

    Temp files live in one folder of their own (`.partial/`, on the same file system, so the
    rename stays atomic): a writer killed mid-write leaves its part there, where
    `sweep_partials` finds it without walking every image.
    """

    PARTIAL_FOLDER = ".partial"

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.partials = os.path.join(self.root, self.PARTIAL_FOLDER)

    def path(self, key):
        if not KEY_PATTERN.match(key):
            raise ValueError(f"bad storage key: {key!r}")
        return os.path.join(self.root, *key.split("/"))

    def save(self, key, data):
        path = self.path(key)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.makedirs(self.partials, exist_ok=True)
            fd, tmp_path = tempfile.mkstemp(dir=self.partials, prefix="part-")
        except OSError as error:
            raise StorageUnavailable(f"cannot write {key}: {error}") from error
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp_path, path)
        except BaseException as error:
            os.unlink(tmp_path)
            if isinstance(error, OSError):
                raise StorageUnavailable(f"cannot write {key}: {error}") from error
            raise
        return key

    def sweep_partials(self, older_than_seconds=3600):
        """Delete parts that writers killed mid-write left behind; answers how many."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        try:
            entries = list(os.scandir(self.partials))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass  # another sweeper, or the writer's own rename, got there first
        return removed

    def read(self, key):
        try:
            with open(self.path(key), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise
        except OSError as error:
            raise StorageUnavailable(f"cannot read {key}: {error}") from error

    def open(self, key):
        """The stored file, open for reading (the caller closes it, as send_file does)."""
        try:
            return open(self.path(key), "rb")  # handed on: its reader closes it
        except FileNotFoundError:
            raise
        except OSError as error:
            raise StorageUnavailable(f"cannot read {key}: {error}") from error

    def exists(self, key):
        return os.path.exists(self.path(key))

    def check(self):
        """Raise StorageUnavailable unless a file can be written here now (readiness)."""
        try:
            os.makedirs(self.partials, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.partials, prefix="check-")
            os.close(fd)
            os.unlink(probe)
        except OSError as error:
            raise StorageUnavailable(f"cannot write to {self.root}: {error}") from error

    def link_signer(self, ttl_seconds):
        """Links to this folder go through /media (storage/views.py)."""
        return None

    def link_origin(self):
        return None

    def delete(self, key):
        try:
            os.unlink(self.path(key))
        except (FileNotFoundError, NotADirectoryError):
            pass  # not there (a path through a file cannot be either)
        except OSError as error:
            raise StorageUnavailable(f"cannot delete {key}: {error}") from error


def get_storage():
    """The storage of the current app."""
    return current_app.extensions["batchgen.storage"]


def create_storage(config):
    """The storage STORAGE_URL names: unset, or `file://` (MEDIA_ROOT) or `file:///folder`,
    the local folder; `s3://bucket/prefix`, a bucket (S3_ENDPOINT_URL, S3_LINKS…)."""
    url = config.get("STORAGE_URL") or "file://"
    parts = urlsplit(url)
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return LocalStorage(parts.path or config["MEDIA_ROOT"])
    if parts.scheme == "s3":
        from .s3 import S3Storage  # boto3 is imported only by those who use it

        return S3Storage.from_config(config)
    raise ValueError(f"STORAGE_URL={url!r}: use s3://bucket/prefix, or file:///folder")


def init_app(app):
    app.extensions["batchgen.storage"] = create_storage(app.config)
    from .views import bp

    app.register_blueprint(bp)


@functools.lru_cache(maxsize=8192)
def _signature(secret, key, expires):
    """Memoised: a link keeps its expiry for a whole period (see sign), so a page or a client
    polling a batch asks for the same signatures again and again."""
    message = f"{key}\n{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(key, secret, ttl_seconds, now=None):
    """Query parameters that grant access to `key` for between `ttl_seconds` and twice that.

    The expiry is rounded up to a whole number of periods, so the same image gets the same link
    for a while: a page that re-renders every few seconds lets the browser cache its images.
    """
    now = int(now or time.time())
    expires = (now // ttl_seconds + 2) * ttl_seconds
    return {"expires": expires, "signature": _signature(secret, key, expires)}


def verify(key, expires, signature, secret, now=None):
    """True when the signature matches and has not expired."""
    try:
        expires = int(expires)
    except (TypeError, ValueError):
        return False
    if expires < (now or time.time()):
        return False
    if not isinstance(signature, str) or not signature.isascii():
        return False  # compare_digest takes ASCII text only; no signature of ours is anything else
    return hmac.compare_digest(_signature(secret, key, expires), signature)
