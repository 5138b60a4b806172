"""A real S3-compatible server for the tests: moto's server mode on 127.0.0.1, a process of its
own, or the server TEST_S3_URL names (`s3://bucket/prefix`, with TEST_S3_ENDPOINT_URL and the
usual AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), e.g. a MinIO.

Every test gets a prefix of its own in one bucket, so tests never see each other's objects.
An app or a consumer process is pointed at it by settings alone (`settings(prefix)`), as ops
would point them at MinIO or AWS.
"""

import os
import secrets
import socket
import subprocess
import sys
import time

import boto3
from botocore.config import Config

TEST_S3_URL = os.environ.get("TEST_S3_URL")
TEST_S3_ENDPOINT_URL = os.environ.get("TEST_S3_ENDPOINT_URL")
# moto accepts any keys; they are set only when the tests start moto themselves.
MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class MotoServer:
    """`python -m moto.server` on a free port of 127.0.0.1; stop() and start() again at will
    (an outage), on the same port. Its objects live in its memory: a restart empties it."""

    def __init__(self, log_path=os.devnull):
        self.port = _free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process = None

    def start(self, timeout=30):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not _answers(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"moto's server exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto's server did not listen on {self.port} in {timeout}s")
            time.sleep(0.1)
        return self

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


def admin_client(endpoint_url):
    """A plain boto3 client, for setting up and looking behind the storage's back."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=5,
            read_timeout=10,
            retries={"total_max_attempts": 2},
        ),
    )


class S3Place:
    """One bucket on one server; `new_prefix()` gives each test its own corner of it."""

    def __init__(self, endpoint_url, bucket, prefix=""):
        self.endpoint_url = endpoint_url
        self.bucket = bucket
        self.prefix = prefix
        self.client = admin_client(endpoint_url)

    def new_prefix(self):
        return f"{self.prefix}t-{secrets.token_hex(6)}/"

    def url(self, prefix):
        return f"s3://{self.bucket}/{prefix}"

    def settings(self, prefix, **extra):
        """The app settings that put its images under `prefix`."""
        return {"STORAGE_URL": self.url(prefix), "S3_ENDPOINT_URL": self.endpoint_url, **extra}

    def environment(self, prefix):
        """The same, as a consumer process's environment variables."""
        return {"STORAGE_URL": self.url(prefix), "S3_ENDPOINT_URL": self.endpoint_url or ""}

    def keys(self, prefix):
        """Every object under `prefix`, without the prefix, sorted."""
        found = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            found.extend(item["Key"][len(prefix) :] for item in page.get("Contents", []))
        return sorted(found)

    def uploads(self, prefix):
        """The multipart uploads begun under `prefix` and not yet completed or aborted."""
        answer = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        return answer.get("Uploads", [])


def place_from_environment():
    """The S3Place TEST_S3_URL names, or None."""
    if not TEST_S3_URL:
        return None
    from webapp.storage.s3 import parse_url

    bucket, prefix = parse_url(TEST_S3_URL)
    return S3Place(TEST_S3_ENDPOINT_URL, bucket, prefix)
