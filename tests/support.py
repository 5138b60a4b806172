"""Helpers the tests share: apps on temporary files, users, real images, the queue."""

import base64
import contextlib
import io
import os
import socket
import threading
import time

from PIL import Image
from sqlalchemy import select

from tests.contract import ContractClient
from webapp import billing, create_app
from webapp.auth import create_token
from webapp.extensions import db
from webapp.models import LedgerEntry, User

IN_CI = os.environ.get("CI") == "true"
# Database 15 of the local Redis (TEST_REDIS_DB moves it); with pytest-xdist, each worker takes
# its own database below it (gw0 → 15, gw1 → 14, …), so one worker's FLUSHDB never empties
# another's queue.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:])
_REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "15")) - _WORKER
REDIS_URL = os.environ.get("TEST_REDIS_URL", f"redis://127.0.0.1:6379/{_REDIS_DB}")


def app_config(tmp_path, **overrides):
    """Settings for an app whose files all live under tmp_path."""
    config = {
        "TESTING": True,
        "SECRET_KEY": "test-secret",
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'app.db'}",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "HUEY_SQLITE_PATH": str(tmp_path / "huey.db"),
        "HUEY_MEMORY": True,
        "REDIS_URL": None,
        "PHOTO_WAIT_SECONDS": 0,
        "STALL_SECONDS": 30,
        # Counted only by the tests of the limits (tests/api/test_limits.py), which turn them on.
        "RATE_LIMITS_ENABLED": False,
    }
    config.update(overrides)
    return config


# Every app a test builds; conftest checks their ledgers after each test.
CREATED_APPS = []


def make_app(tmp_path, database_url=None, create_tables=True, **overrides):
    """An app whose files live under tmp_path, on `database_url` (default: a SQLite file there),
    with its tables made by create_all (tests that exercise the migrations say create_tables=False).
    """
    if database_url:
        overrides["SQLALCHEMY_DATABASE_URI"] = database_url
    app = create_app(app_config(tmp_path, **overrides), instance_path=str(tmp_path))
    # Every answer of a documented /api/ route is checked against the contract (tests/contract.py).
    app.test_client_class = ContractClient
    if create_tables:
        with app.app_context():
            db.create_all()
    CREATED_APPS.append(app)
    return app


def retire_apps():
    """Check the ledger of every app built so far, then close all their database connections.

    Runs before a test's PostgreSQL schema is dropped (DROP SCHEMA waits for open connections),
    and again after every test for the apps on SQLite.
    """
    apps = list(CREATED_APPS)
    CREATED_APPS.clear()
    try:
        for built in apps:
            assert_ledger_balanced(built)
    finally:
        for built in apps:
            with built.app_context():
                db.engine.dispose()


def assert_ledger_balanced(app):
    """credits == sum(ledger) for every user, and nobody is below zero."""
    with app.app_context():
        assert billing.ledger_mismatches() == []
        lowest = db.session.scalar(select(db.func.min(User.credits)))
        assert lowest is None or lowest >= 0


def create_user(app, name="alice", credits=100):
    """A user with `credits` granted through the ledger; answers (user_id, token)."""
    with app.app_context():
        user = User(name=name)
        db.session.add(user)
        db.session.flush()
        if credits:
            billing.grant(user.id, credits)
        token = create_token(user.id)
        db.session.commit()
        return user.id, token


class ApiClient:
    """A test client that sends a user's Bearer token."""

    def __init__(self, app, user_id, token):
        self.app = app
        self.user_id = user_id
        self.token = token
        self.http = app.test_client()

    def _headers(self, headers):
        return {"Authorization": f"Bearer {self.token}", **(headers or {})}

    def get(self, url, headers=None, **kwargs):
        return self.http.get(url, headers=self._headers(headers), **kwargs)

    def post(self, url, headers=None, **kwargs):
        return self.http.post(url, headers=self._headers(headers), **kwargs)

    def balance(self):
        with self.app.app_context():
            return billing.balance(self.user_id)

    def ledger(self):
        with self.app.app_context():
            return [
                (entry.kind, entry.amount)
                for entry in db.session.scalars(
                    select(LedgerEntry)
                    .where(LedgerEntry.user_id == self.user_id)
                    .order_by(LedgerEntry.id)
                )
            ]


def image_bytes(fmt="PNG", size=(64, 48), color=(200, 30, 30), background=(190, 190, 190)):
    """A real image: a coloured disc on a plain background."""
    from PIL import ImageDraw

    image = Image.new("RGB", size, background)
    width, height = size
    ImageDraw.Draw(image).ellipse(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=color
    )
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def data_url(raw, kind="png"):
    return f"data:image/{kind};base64," + base64.b64encode(raw).decode()


def png_data_url(**kwargs):
    return data_url(image_bytes("PNG", **kwargs))


def batch_body(count=2, **fields):
    body = {
        "prompt": "Add white background",
        "model": "flux-2",
        "images": [{"id": f"img-{i}", "data": png_data_url()} for i in range(count)],
    }
    body.update(fields)
    return body


def create_batch(client, count=2, **fields):
    """POST a batch of `count` real images (batch_body) as `client`; answers the created batch's
    JSON, after checking it was accepted."""
    response = client.post("/api/generate/batch", json=batch_body(count, **fields))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def create_batch_id(client, count=2, **fields):
    """create_batch, answering the new batch's id."""
    return create_batch(client, count, **fields)["batchId"]


def create_batch_jobs(client, count=2, **fields):
    """create_batch, answering the new batch's id and its generation ids, in upload order."""
    created = create_batch(client, count, **fields)
    return created["batchId"], [job["generationId"] for job in created["jobs"]]


def photo_body(**fields):
    """A POST /api/generate/photo body as the existing client sends it (a JPEG to edit)."""
    body = {
        "model": "flux-2",
        "prompt": "Make it grayscale",
        "mode": "i2i",
        "referenceImage": data_url(image_bytes("JPEG"), "jpeg"),
        "quality": "1k",
        "aspectRatio": "1:1",
    }
    body.update(fields)
    return body


def drain(app, limit=1000):
    """Run every task waiting in the app's in-memory queue, as a consumer would."""
    from tasks import get_queue

    huey = get_queue(app).huey
    executed = 0
    while executed < limit:
        task = huey.dequeue()
        if task is None:
            return executed
        huey.execute(task)
        executed += 1
    raise AssertionError("the queue did not drain")


def media_files(app):
    root = app.config["MEDIA_ROOT"]
    found = []
    for folder, _, files in os.walk(root):
        found.extend(os.path.join(folder, name) for name in files)
    return found


def free_port():
    """A port of 127.0.0.1 nobody listens on, so the app can be told its public URL first."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(app, port):
    """The app on a real HTTP port of 127.0.0.1, where the stub's callbacks reach it."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def service_available(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False

@contextlib.contextmanager
def running_consumer(app, workers=2, periodic=False):
    """A real Huey consumer (thread workers) on the app's queue, for the length of the block;
    with `periodic`, its scheduler also runs the reaper every REAP_SECONDS."""
    from tasks import EmbeddedConsumer, get_queue

    consumer = EmbeddedConsumer(
        get_queue(app).huey,
        workers=workers,
        worker_type="thread",
        periodic=periodic,
        initial_delay=0.05,
        max_delay=0.2,
        check_worker_health=False,
    )
    consumer.start()
    try:
        yield consumer
    finally:
        consumer.stop(graceful=True)


def read_sse(lines, stop_after=None):
    """Server-sent events from an open stream's lines (`response.iter_lines(decode_unicode=True)`),
    comments skipped: each event's fields (`event`, `id`, `data`), until the stream ends or
    `stop_after` came. The lines stay open: a caller may read on from where this stopped."""
    events, fields = [], {}
    for line in lines:
        if line == "":
            if "event" in fields:
                events.append(fields)
                if stop_after and len(events) >= stop_after:
                    break
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value
    return events


def wait_for(predicate, timeout=30.0, interval=0.1):
    """Poll `predicate` until it answers something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate.__name__}")


def batch_finished(client, batch_id):
    """A predicate for wait_for: the batch's detail once it is terminal."""

    def finished():
        detail = client.get(f"/api/generate/batch/{batch_id}").get_json()
        return detail if detail["isComplete"] and detail["finishedAt"] else None

    return finished


def generation_rows(app, batch_id):
    """The batch's generations as plain dicts, in position order."""
    from webapp.models import Generation

    with app.app_context():
        rows = db.session.scalars(
            select(Generation).where(Generation.batch_id == batch_id).order_by(Generation.position)
        ).all()
        return [
            {
                "id": row.id,
                "status": row.status,
                "attempts": row.attempts,
                "started_at": row.started_at,
                "finished_at": row.finished_at,
                "error_code": row.error_code,
            }
            for row in rows
        ]


def max_overlap(rows):
    """The most generations that were processing at the same instant."""
    events = []
    for row in rows:
        events.append((row["started_at"], 1))
        events.append((row["finished_at"], -1))
    current = peak = 0
    for _, step in sorted(events, key=lambda event: (event[0], event[1])):
        current += step
        peak = max(peak, current)
    return peak


def csrf_token_from(html):
    """The CSRF token a rendered form carries."""
    import re

    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def signed_in_browser(app, token):
    """A test client with a session, signed in through the login form as a person would."""
    http = app.test_client()
    page = http.get("/login").get_data(as_text=True)
    response = http.post("/login", data={"token": token, "csrf_token": csrf_token_from(page)})
    assert response.status_code == 303, response.get_data(as_text=True)
    return http


def fetch_result(app, image_url):
    """(format, size) of an image fetched through its signed link, as a client without a cookie."""
    from urllib.parse import urlsplit

    url = urlsplit(image_url)
    with app.test_client().get(f"{url.path}?{url.query}") as response:
        assert response.status_code == 200, response.status
        with Image.open(io.BytesIO(response.data)) as image:
            image.load()
            return image.format, image.size


def work_next_image(app, batch_id, outcome=None):
    """A worker claims the batch's next image and records `outcome` for it (a providers.Failed,
    say), or, when None, what the local engine really makes of it. Answers the claim."""
    from webapp.generation import claims, outcomes, progress
    from webapp.storage import get_storage

    claim = claim_next_image(app, batch_id)
    if outcome is None:
        finish_claim(app, claim)
        return claim
    settings = claims.Settings.from_config(app.config)
    with app.app_context():
        outcomes.record_outcome(claim, outcome, get_storage(), settings)
        progress.finalize_batch(batch_id)
    return claim


def finish_claim(app, claim):
    """The worker holding `claim` gets the local engine's answer and records it."""
    from webapp.generation import claims, progress, steps
    from webapp.providers import get_provider
    from webapp.storage import get_storage

    with app.app_context():
        settings = claims.Settings.from_config(app.config)
        steps.run_claim(claim, get_provider(), get_storage(), settings)
        progress.finalize_batch(claim.generation.batch_id)


def claim_next_image(app, batch_id):
    """A worker claims the batch's next image and keeps it `processing` (at the engine)."""
    from webapp.generation import claims

    with app.app_context():
        claim = claims.claim_for_batch(batch_id, claims.Settings.from_config(app.config))
        assert claim is not None, "no image of the batch could be claimed"
        return claim


HTMX = {"HX-Request": "true"}
