"""Submission cost: what taking one 70 MB batch costs the web server, next to the bare floor.

50 PNGs of 1 MiB go to gunicorn as ops run it, with no consumer: the batch only has to be
checked, stored and charged. gunicorn's access log times the server, this process times the
floor (parse, decode, write) on the same bytes, /proc gives the worker's peak RSS; then a body of
exactly MAX_REQUEST_BYTES and one a byte longer show where the server draws the line.

    .venv/bin/python -m bench submission
"""

import base64
import io
import json
import random
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import requests
from PIL import Image
from sqlalchemy import func, select

from .harness import Deployment, Result, Section, wait_until

IMAGES = 50
MIB = 1024 * 1024
ROUNDS = 3
TIME_TARGET = "≤ 2"
MEMORY_TARGET = "≤ 3"
ACCESS_LOG_FORMAT = "%(m)s %(U)s %(s)s %(D)s"
DATA_URL_PREFIX = "data:image/png;base64,"
# The JSON around the images (prompt, model, ids, punctuation) is well under this.
JSON_OVERHEAD = 16 * 1024
METHOD = (
    f"A batch of {IMAGES} PNGs of random pixels, 1 MiB each (about 70 MB of JSON), is posted "
    "to gunicorn with one gthread worker, SQLite and the Redis queue; no consumer runs, since "
    "the batch only has to be checked, stored and charged. The server's time is what gunicorn "
    "logs for the request, from its headers to the last byte of the answer, so receiving the "
    "body is in it. The floor, timed in the benchmark process on the very same bytes, is what "
    "any server has to do: parse the JSON, base64-decode each image strictly and write it to a "
    "file (without fsync, as the app stores its inputs). Floor and server take turns, "
    f"{ROUNDS} times each after one small warm-up batch, and the best of each is compared. "
    "The worker's peak RSS (VmHWM, reset before each request) is divided by the body's size, "
    "for the worst request. Last, a batch body of exactly MAX_REQUEST_BYTES and the same body "
    "with one more byte show the largest body the server accepts and how it refuses the next."
)
# What this benchmark led to in the app, with the figures measured before and after.
CHANGES = [
    "- Changed after profiling: `request.get_json()` kept the raw body cached while "
    "`json.loads` made its text and then the parsed strings: three bodies at once, and glibc "
    "kept what each gthread thread had freed, so a worker grew by about a body per thread "
    "that had taken a batch (309 MB, 4.4× the body, for the first request; 319 MB by the "
    "third). The API now parses the JSON as it streams in (ijson, on yajl's C parser), and "
    "drops each base64 string once it is decoded; the `Idempotency-Key` check hashes the body "
    "into a temporary file instead of caching it. The peak is now about one body over the "
    "worker's ~100 MB, and stays there request after request; the time went from 1.7–1.9× the "
    "floor to 1.15–1.4×.",
]


def noise_png(size, seed):
    """A valid PNG of random pixels, a little over `size` bytes: noise does not compress,
    so it is stored as it is (compress_level=0), which is also the quickest to make."""
    side = int((size / 3) ** 0.5)
    pixels = random.Random(seed).randbytes(side * side * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def batch_body(pictures, length=None):
    """The batch request's bytes as a client sends them; padded with spaces to `length`."""
    images = [
        {"id": f"photo-{index}", "data": DATA_URL_PREFIX + base64.b64encode(raw).decode()}
        for index, raw in enumerate(pictures)
    ]
    body = json.dumps(
        {"prompt": "Add white background", "model": "flux-2", "images": images},
        separators=(",", ":"),
    ).encode()
    if length is not None:
        assert len(body) <= length, f"{len(body)} bytes do not fit in {length}"
        body += b" " * (length - len(body))
    return body


def pictures_filling(limit):
    """IMAGES pictures as large as a batch body of at most `limit` bytes lets them be."""
    characters = (limit - JSON_OVERHEAD) // IMAGES - len(DATA_URL_PREFIX)
    # Base64 takes 4 characters per 3 bytes; a PNG comes out a few KB over the size asked.
    size = characters * 3 // 4 - 8 * 1024
    return [noise_png(size, seed) for seed in range(IMAGES, 2 * IMAGES)]


def floor_seconds(body, folder):
    """The bare floor: parse the body, base64-decode every image strictly, write the files."""
    folder.mkdir(parents=True)
    started = time.perf_counter()
    payload = json.loads(body)
    for index, image in enumerate(payload["images"]):
        encoded = image["data"].partition(",")[2]
        (folder / f"{index}.png").write_bytes(base64.b64decode(encoded, validate=True))
    elapsed = time.perf_counter() - started
    shutil.rmtree(folder)
    return elapsed


class Worker:
    """The memory of gunicorn's one worker process (the master's child), from /proc."""

    def __init__(self, master_pid):
        children = []
        for task in Path(f"/proc/{master_pid}/task").iterdir():
            children += (task / "children").read_text().split()
        assert len(children) == 1, f"expected one gunicorn worker, found {children}"
        self.pid = int(children[0])

    def _status_bytes(self, field):
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
        raise LookupError(field)

    def rss(self):
        return self._status_bytes("VmRSS")

    def peak(self):
        return self._status_bytes("VmHWM")

    def reset_peak(self):
        """Start the peak (VmHWM) again from the present RSS."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")


@dataclass
class Posted:
    """One request: the answer, the server's seconds, the worker's RSS before and its peak."""

    response: requests.Response
    seconds: float
    before: int
    peak: int


class Server:
    """A deployment's gunicorn, seen by a client and through its access log and /proc."""

    def __init__(self, deployment):
        self.deployment = deployment
        self.log = deployment.workdir / "access.log"
        self.base_url, master = deployment.web(
            workers=1,
            extra=("--access-logfile", str(self.log), "--access-logformat", ACCESS_LOG_FORMAT),
        )
        self.worker = Worker(master.pid)
        _, token = deployment.user()
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"
        # A new connection per request: gunicorn drops idle ones after 2 s, and a floor or the
        # next body's pictures can take longer than that to make.
        self.http.headers["Connection"] = "close"

    def logged(self):
        """The access log's lines, one per answered request in ACCESS_LOG_FORMAT."""
        return self.log.read_text().splitlines() if self.log.exists() else []

    def post_batch(self, body, headers=None):
        """POST the body as a batch; answers what the client and the server saw."""
        seen = len(self.logged())
        self.worker.reset_peak()
        before = self.worker.rss()
        response = self.http.post(
            f"{self.base_url}/api/generate/batch",
            data=body,
            headers={"Content-Type": "application/json", **(headers or {})},
            timeout=600,
        )
        line = wait_until(lambda: self.logged()[seen:], 30, what="the access log")[0]
        return Posted(response, int(line.split()[-1]) / 1e6, before, self.worker.peak())

    def account(self):
        """What a refused request must leave alone: credits, batches and stored inputs."""
        from webapp.extensions import db
        from webapp.models import Batch

        credits = self.http.get(f"{self.base_url}/api/me", timeout=60).json()["credits"]
        with self.deployment.app.app_context():
            batches = db.session.scalar(select(func.count()).select_from(Batch))
        inputs = Path(self.deployment.env["MEDIA_ROOT"], "inputs")
        files = sum(1 for path in inputs.rglob("*") if path.is_file())
        return credits, batches, files


def accepted(posted):
    response = posted.response
    assert response.status_code == 200, f"{response.status_code}: {response.text[:300]}"
    return posted


def measure_rounds(server, pictures, body, floor_folder=None):
    """A small warm-up batch, then ROUNDS of the body, each after a floor when a folder is
    given; answers [(floor seconds or None, Posted)]."""
    accepted(server.post_batch(batch_body(pictures[:1])))
    rounds = []
    for number in range(ROUNDS):
        floor = floor_seconds(body, floor_folder / f"{number}") if floor_folder else None
        rounds.append((floor, accepted(server.post_batch(body))))
    return rounds


def probe_limit(server, limit):
    """A batch body of exactly `limit` bytes, then one a byte longer: what each got, and
    whether the refused one left the account alone."""
    pictures = pictures_filling(limit)
    largest = batch_body(pictures, limit)
    taken = accepted(server.post_batch(largest))
    before = server.account()
    refused = server.post_batch(largest + b" ")
    return {
        "size": len(largest),
        "image": sum(map(len, pictures)) / IMAGES,
        "taken": taken,
        "refused": refused,
        "left_alone": server.account() == before,
    }


def run(workdir):
    workdir = Path(workdir)
    pictures = [noise_png(MIB, seed) for seed in range(IMAGES)]
    body = batch_body(pictures)
    with Deployment(workdir / "documented", database="sqlite", queue="redis") as deployment:
        server = Server(deployment)
        rounds = measure_rounds(server, pictures, body, floor_folder=workdir / "floor")
        keyed = accepted(server.post_batch(body, {"Idempotency-Key": str(uuid.uuid4())}))
        limit = deployment.app.config["MAX_CONTENT_LENGTH"]
        edge = probe_limit(server, limit)
    posts = [posted for _, posted in rounds]
    floor = min(seconds for seconds, _ in rounds)
    served = min(posted.seconds for posted in posts)
    worst = max(posts, key=lambda posted: posted.peak)
    size = len(body)
    section = Section("Submission cost", METHOD)
    section.results += [
        Result(
            "submission",
            "server time / floor",
            served / floor,
            TIME_TARGET,
            f"best of {ROUNDS}: the server {served:.2f} s (all: {seconds_list(posts)}), the "
            f"floor {floor:.2f} s (all: "
            + ", ".join(f"{seconds:.2f}" for seconds, _ in rounds)
            + f" s), for {mb(size)} of JSON",
        ),
        Result(
            "submission",
            "worker peak RSS / body size",
            worst.peak / size,
            MEMORY_TARGET,
            f"the worst request took the worker from {mb(worst.before)} to {mb(worst.peak)}, "
            f"for a body of {mb(size)} (RSS before → peak: {memory_list(posts)})",
        ),
        Result(
            "submission",
            "largest accepted batch body / MAX_REQUEST_BYTES",
            edge["size"] / limit,
            "",
            f"{edge['size']:,} bytes ({IMAGES} images of {edge['image'] / MIB:.2f} MiB) "
            f"accepted; {edge['size'] + 1:,} bytes refused with "
            f"{edge['refused'].response.status_code}",
        ),
    ]
    section.notes += notes(posts, keyed, edge, size) + CHANGES
    return section


def notes(posts, keyed, edge, size):
    """The findings around the figures, as markdown lines."""
    lines = []
    kept = posts[-1].before - posts[0].before
    growth = max(posted.peak for posted in posts[1:]) - posts[0].peak
    if kept > size / 4:
        if growth <= 1_000_000:
            reuse = "the later requests reused it: their peaks are no higher than the first's."
        elif growth < size / 4:
            reuse = f"the later requests reused most of it: their peaks are {mb(growth)} higher."
        else:
            reuse = f"the later requests' peaks grew by {mb(growth)}."
        lines.append(
            f"- The worker kept {mb(kept)} between requests (glibc holds on to freed memory in "
            f"its malloc arenas for reuse); {reuse}"
        )
    lines.append(
        f"- With an `Idempotency-Key` (the body is hashed as it streams into a temporary "
        f"file): {keyed.seconds:.2f} s, {mb(keyed.before)} → {mb(keyed.peak)} "
        f"({keyed.peak / size:.2f}× the body)."
    )
    taken, refused = edge["taken"], edge["refused"]
    lines.append(
        f"- The largest batch body accepted is MAX_REQUEST_BYTES, {edge['size']:,} bytes: "
        f"{taken.seconds:.2f} s, {mb(taken.before)} → {mb(taken.peak)} "
        f"({taken.peak / edge['size']:.2f}× the body)."
    )
    answer = refused.response
    lines.append(
        f"- One byte more is refused in {refused.seconds:.2f} s, before the body is read, with "
        f"`{answer.status_code} {answer.text.strip()}`; "
        + (
            "the balance, the batches and the stored inputs are unchanged."
            if edge["left_alone"]
            else "**the balance, the batches or the stored inputs changed.**"
        )
    )
    return lines


def mb(size):
    return f"{size / 1e6:.0f} MB"


def seconds_list(posts):
    return ", ".join(f"{posted.seconds:.2f}" for posted in posts) + " s"


def memory_list(posts):
    return ", ".join(f"{mb(posted.before)} → {mb(posted.peak)}" for posted in posts)
