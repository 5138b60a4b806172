"""Images in an S3-compatible bucket (AWS S3, MinIO, R2, Garage…), with boto3.

`STORAGE_URL=s3://bucket/prefix` picks it (`init_app`); `S3_ENDPOINT_URL` names a server other
than AWS; credentials come from boto3's standard chain (AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, a profile, an instance role). Keys are the local folder's
(`inputs/<batch>/<gen>.png`), under the prefix.

- Writes are never seen half done: one PutObject is atomic, and an object bigger than
  `multipart_threshold` goes up in parts that become visible only when the upload completes
  (a failed one is aborted; `sweep_partials` aborts those a killed writer left behind).
- A missing object raises FileNotFoundError; every other failure (no connection, a timeout,
  refused credentials, a missing bucket) raises StorageUnavailable, so an outage becomes an
  image's outcome. Each call is bounded: `timeout_seconds` to connect and per read, and at
  most `max_attempts` tries.
- Links (`link_signer`) are presigned GETs whose expiry follows `sign()`'s rule, signed as of
  the start of the period, so an image keeps one link for a whole period; with
  `links="proxy"` they go through /media and the web process reads the object.
"""

import io
import mimetypes
import os
import threading
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError

from . import KEY_PATTERN, StorageUnavailable
from .presigning import presign, signing_period

LINK_STYLES = ("presigned", "proxy")
MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
# What a failing call can raise: botocore's errors, the service's answers, and the transport's.
FAILURES = (BotoCoreError, ClientError, HTTPError, OSError)
# What a presigned GET answers with, as /media does: a link lasts a period, so browsers may keep
# the image a few minutes (and a page polling every few seconds fetches it once).
CACHE_CONTROL = "private, max-age=300"
CHECK_KEY = ".check"  # the readiness probe's object, under the prefix (never a storage key)


def parse_url(url):
    """(bucket, prefix) of `s3://bucket/prefix`; the prefix ends with `/` unless empty."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"STORAGE_URL={url!r} is not s3://bucket/prefix")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


class S3Storage:
    """Objects under `prefix` in `bucket`: the interface of LocalStorage, on S3."""

    def __init__(
        self,
        bucket,
        prefix="",
        endpoint_url=None,
        region=None,
        links="presigned",
        timeout_seconds=5.0,
        max_attempts=3,
        multipart_threshold=16 * 2**20,
        part_size=8 * 2**20,
    ):
        if links not in LINK_STYLES:
            raise ValueError(f"S3_LINKS={links!r}: choose one of {', '.join(LINK_STYLES)}")
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region = region
        self.links = links
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self._lock = threading.Lock()
        self._clients = {}  # (pid, purpose) → (session, client): a forked worker makes its own
        self._link_root = None

    @classmethod
    def from_config(cls, config):
        bucket, prefix = parse_url(config["STORAGE_URL"])
        return cls(
            bucket,
            prefix,
            endpoint_url=config["S3_ENDPOINT_URL"],
            region=config["S3_REGION"],
            links=config["S3_LINKS"],
            timeout_seconds=config["S3_TIMEOUT_SECONDS"],
            max_attempts=config["S3_MAX_ATTEMPTS"],
        )

    def __repr__(self):
        return f"S3Storage(s3://{self.bucket}/{self.prefix}, endpoint={self.endpoint_url})"

    # -- the client ---------------------------------------------------------------------------

    def client(self, purpose="work"):
        """This process's boto3 client: `work` (bounded retries) or `check` (one short try)."""
        return self._session_and_client(purpose)[1]

    def _session_and_client(self, purpose="work"):
        slot = (os.getpid(), purpose)
        made = self._clients.get(slot)
        if made is None:
            with self._lock:  # a boto3 session is not thread-safe; its clients are
                made = self._clients.get(slot) or self._new_client(purpose)
                self._clients[slot] = made
        return made

    def _new_client(self, purpose):
        checking = purpose == "check"
        timeout = min(self.timeout_seconds, 2.0) if checking else self.timeout_seconds
        config = Config(
            # The `links` client only builds URLs (link_root): it signs nothing, needs no keys.
            signature_version=UNSIGNED if purpose == "links" else "s3v4",
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={
                "mode": "standard",
                "total_max_attempts": 1 if checking else self.max_attempts,
            },
            # A custom endpoint (MinIO, Garage, moto) is addressed by path: no DNS per bucket.
            s3={"addressing_style": "path" if self.endpoint_url else "virtual"},
            # Checksums only where S3 requires them: several S3-compatible servers refuse the
            # trailing checksums newer botocore sends by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session()
        client = session.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
        )
        return session, client

    def object_key(self, key):
        if not isinstance(key, str) or not KEY_PATTERN.match(key):
            raise ValueError(f"bad storage key: {key!r}")
        return self.prefix + key

    # -- the interface ------------------------------------------------------------------------

    def save(self, key, data):
        name = self.object_key(key)
        data = bytes(data)
        extra = {
            "ContentType": mimetypes.guess_type(key)[0] or "application/octet-stream",
            "CacheControl": CACHE_CONTROL,
        }
        try:
            if len(data) <= self.multipart_threshold:
                self.client().put_object(Bucket=self.bucket, Key=name, Body=data, **extra)
            else:
                self._save_in_parts(name, data, extra)
        except FAILURES as error:
            raise StorageUnavailable(f"cannot write {key}: {_reason(error)}") from error
        return key

    def _save_in_parts(self, name, data, extra):
        """A multipart upload, visible only once complete; aborted on any failure."""
        client = self.client()
        upload = client.create_multipart_upload(Bucket=self.bucket, Key=name, **extra)
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, len(data), self.part_size), start=1):
                answer = client.upload_part(
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data[start : start + self.part_size],
                )
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            client.complete_multipart_upload(
                Bucket=self.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            try:
                client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
            except FAILURES:
                pass  # the outage goes on: sweep_partials aborts it later
            raise

    def read(self, key):
        with self.open(key) as stored:
            return stored.read()

    def open(self, key):
        """The object, open for reading in pieces (the caller closes it, as send_file does)."""
        name = self.object_key(key)
        try:
            answer = self.client().get_object(Bucket=self.bucket, Key=name)
        except FAILURES as error:
            raise _missing_or_unavailable(error, key, "read") from error
        return ObjectReader(answer["Body"], key, answer.get("ContentLength"))

    def exists(self, key):
        name = self.object_key(key)
        try:
            self.client().head_object(Bucket=self.bucket, Key=name)
        except FAILURES as error:
            failure = _missing_or_unavailable(error, key, "look up")
            if isinstance(failure, FileNotFoundError):
                return False
            raise failure from error
        return True

    def delete(self, key):
        name = self.object_key(key)
        try:
            self.client().delete_object(Bucket=self.bucket, Key=name)  # a missing one is fine
        except FAILURES as error:
            raise StorageUnavailable(f"cannot delete {key}: {_reason(error)}") from error

    def check(self):
        """Raise StorageUnavailable unless an object can be written here now (readiness): one
        short try, not the work client's retries."""
        try:
            self.client("check").put_object(
                Bucket=self.bucket, Key=self.prefix + CHECK_KEY, Body=b""
            )
        except FAILURES as error:
            raise StorageUnavailable(
                f"cannot write to s3://{self.bucket}/{self.prefix}: {_reason(error)}"
            ) from error

    def sweep_partials(self, older_than_seconds=3600):
        """Abort the multipart uploads under the prefix that writers started before the cutoff
        and never finished (killed mid-write); answers how many."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        aborted = 0
        try:
            pages = self.client().get_paginator("list_multipart_uploads")
            for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < cutoff:
                        self.client().abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        aborted += 1
        except FAILURES as error:
            raise StorageUnavailable(f"cannot sweep partial uploads: {_reason(error)}") from error
        return aborted

    # -- links --------------------------------------------------------------------------------

    def link_signer(self, ttl_seconds, now=None):
        """key → a presigned GET valid from the start of this period to `sign()`'s expiry
        (between one and two periods from now); None with links="proxy" (use /media)."""
        if self.links == "proxy":
            return None
        timestamp, expires_in = signing_period(ttl_seconds, now)
        session, client = self._session_and_client()
        credentials = session.get_credentials()  # the chain the client signs with
        if credentials is None:
            raise StorageUnavailable("no S3 credentials were found to sign links with")
        frozen = credentials.get_frozen_credentials()
        root = self.link_root()
        region = client.meta.region_name

        def presigned(key):
            url = root + quote(self.object_key(key), safe="/~")
            return presign(url, frozen, region, expires_in, timestamp)

        return presigned

    def link_root(self):
        """Where presigned links point (the bucket's URL, ending in `/`), asked of botocore once:
        it knows the endpoint, the region and the addressing style."""
        if self._link_root is None:
            probe = self.client("links").generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": "x"}, ExpiresIn=60
            )
            parts = urlsplit(probe)
            self._link_root = f"{parts.scheme}://{parts.netloc}{parts.path[:-1]}"
        return self._link_root

    def link_origin(self):
        """The origin of presigned links (for the pages' Content-Security-Policy), or None."""
        if self.links == "proxy":
            return None
        parts = urlsplit(self.link_root())
        return f"{parts.scheme}://{parts.netloc}"


class ObjectReader(io.RawIOBase):
    """An object's body, read in pieces; a failure mid-read raises StorageUnavailable."""

    def __init__(self, body, key, size=None):
        self.body = body
        self.key = key
        self.size = size

    def readable(self):
        return True

    def readinto(self, buffer):
        try:
            data = self.body.read(len(buffer))
        except FAILURES as error:
            raise StorageUnavailable(f"cannot read {self.key}: {_reason(error)}") from error
        buffer[: len(data)] = data
        return len(data)

    def readall(self):
        try:
            return self.body.read()
        except FAILURES as error:
            raise StorageUnavailable(f"cannot read {self.key}: {_reason(error)}") from error

    def close(self):
        if not self.closed:
            self.body.close()
        super().close()


def _missing_or_unavailable(error, key, doing):
    if isinstance(error, ClientError) and _code(error) in MISSING_CODES:
        return FileNotFoundError(f"no stored object {key}")
    return StorageUnavailable(f"cannot {doing} {key}: {_reason(error)}")


def _code(error):
    return str(error.response.get("Error", {}).get("Code", ""))


def _reason(error):
    if isinstance(error, ClientError):
        message = error.response.get("Error", {}).get("Message", "")
        return f"{_code(error)} {message}".strip()
    return str(error) or type(error).__name__
