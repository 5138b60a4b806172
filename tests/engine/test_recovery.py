"""Crash recovery, with real processes on Redis: a consumer killed with kill -9, a queue
emptied under a running batch, a crash between commit and enqueue, a SIGTERM mid-image, and
duplicate deliveries. Each delays work and loses none of it; nothing is charged twice."""

import re
import signal
from collections import Counter

import pytest
import redis
from sqlalchemy import select

from tasks import get_queue
from tests.consumers import ConsumerProcess, queue_name
from tests.support import (
    ApiClient,
    batch_finished,
    create_batch_id,
    create_user,
    drain,
    generation_rows,
    make_app,
    media_files,
    photo_body,
    running_consumer,
    wait_for,
)
from webapp.extensions import db
from webapp.models import LedgerEntry

PRICE = 3  # flux-2 at 1k
START = 100

# A consumer whose images take about a second each, whose leases run out 4 s after a crash,
# and whose reaper looks every second.
CRASH_SETTINGS = {
    "LOCAL_ENGINE_DELAY": 1.0,
    "LEASE_SECONDS": 4,
    "STALL_SECONDS": 2,
    "REAP_SECONDS": 1,
}

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


@pytest.fixture
def redis_app(tmp_path, database_url, redis_url):
    """The web side: an app on a real Redis queue (the consumers run in other processes)."""
    return make_app(
        tmp_path, database_url, HUEY_MEMORY=False, REDIS_URL=redis_url, HUEY_NAME=queue_name()
    )


def _statuses(app, batch_id):
    return Counter(row["status"] for row in generation_rows(app, batch_id))


def _assert_settled_exactly_once(app, client, batch_id):
    """Every image terminal, each result stored once, and the money exactly right."""
    rows = generation_rows(app, batch_id)
    successes = sum(row["status"] == "success" for row in rows)
    assert all(row["status"] in ("success", "failed", "cancelled") for row in rows), rows
    results = [path for path in media_files(app) if f"/results/{batch_id}/" in path]
    assert len(results) == successes
    with app.app_context():
        refunds = db.session.scalars(
            select(LedgerEntry.generation_id).where(
                LedgerEntry.batch_id == batch_id, LedgerEntry.kind == "refund"
            )
        ).all()
    unsuccessful = {row["id"] for row in rows if row["status"] != "success"}
    assert sorted(refunds) == sorted(unsuccessful)
    assert client.balance() == START - PRICE * successes
    return rows


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_a_consumer_killed_with_kill_9_mid_batch_loses_nothing(
    redis_app, tmp_path, worker_type
):
    client = ApiClient(redis_app, *create_user(redis_app, credits=START))
    consumer = ConsumerProcess(redis_app, tmp_path / "consumer.log", **CRASH_SETTINGS)
    with consumer:
        consumer.start(worker_type, workers=4)
        batch_id = create_batch_id(client, 12, concurrency=4)
        at_kill = wait_for(
            lambda: (counts := _statuses(redis_app, batch_id))["success"] >= 2
            and counts["processing"] >= 1
            and counts,
            timeout=60,
        )
        consumer.kill_9()
        interrupted = {
            row["id"] for row in generation_rows(redis_app, batch_id)
            if row["status"] == "processing"
        }

        consumer.start(worker_type, workers=4)
        detail = wait_for(batch_finished(client, batch_id), timeout=90)

    rows = _assert_settled_exactly_once(redis_app, client, batch_id)
    assert detail["status"] == "completed"
    assert at_kill["processing"] >= 1
    assert interrupted
    # Only images the kill interrupted ran again. Some may still have finished in their first
    # attempt: a commit under way when the process died can still land (PostgreSQL finishes a
    # COMMIT it received; SQLite's WAL recovery finds a commit frame that was fully written).
    ran_again = {row["id"] for row in rows if row["attempts"] == 2}
    assert ran_again <= interrupted
    assert all(row["attempts"] in (1, 2) for row in rows), rows
    assert client.ledger() == [("grant", START), ("batch_debit", -12 * PRICE)]


def test_a_queue_emptied_mid_batch_is_recovered_by_the_reaper(redis_app, redis_url, tmp_path):
    client = ApiClient(redis_app, *create_user(redis_app, credits=START))
    consumer = ConsumerProcess(redis_app, tmp_path / "consumer.log", **CRASH_SETTINGS)
    with consumer:
        consumer.start("thread", workers=4)
        batch_id = create_batch_id(client, 12, concurrency=4)
        wait_for(lambda: _statuses(redis_app, batch_id)["success"] >= 2, timeout=60)
        # The consumer stops, its lanes ring themselves again, and then Redis loses everything
        # (a restart without AOF; FLUSHDB on the test database rather than the whole server).
        consumer.stop(signal.SIGINT)
        redis.Redis.from_url(redis_url).flushdb()
        assert _statuses(redis_app, batch_id)["pending"] >= 1

        consumer.start("thread", workers=4)
        detail = wait_for(batch_finished(client, batch_id), timeout=90)

    assert detail["status"] == "completed"
    _assert_settled_exactly_once(redis_app, client, batch_id)
    assert "reaper: " in consumer.log() and "rang" in consumer.log()


def test_a_batch_whose_enqueue_failed_after_commit_is_started_by_the_reaper(
    tmp_path, database_url, redis_url
):
    # The web process commits the batch, then cannot reach Redis to ring its lanes.
    web = make_app(
        tmp_path,
        database_url,
        HUEY_MEMORY=False,
        REDIS_URL="redis://127.0.0.1:1/0",
        HUEY_NAME=queue_name(),
    )
    client = ApiClient(web, *create_user(web, credits=START))
    batch_id = create_batch_id(client, 3, concurrency=3)
    assert client.balance() == START - 3 * PRICE  # charged: the rows exist

    worker = make_app(
        tmp_path / "worker",
        database_url,
        HUEY_MEMORY=False,
        REDIS_URL=redis_url,
        HUEY_NAME=queue_name(),
        STALL_SECONDS=1,
        REAP_SECONDS=1,
        MEDIA_ROOT=web.config["MEDIA_ROOT"],
    )
    with running_consumer(worker, workers=2, periodic=True):
        detail = wait_for(batch_finished(client, batch_id), timeout=60)

    assert detail["status"] == "completed"
    _assert_settled_exactly_once(web, client, batch_id)


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_sigterm_hands_interrupted_images_back_at_once(redis_app, tmp_path, worker_type):
    client = ApiClient(redis_app, *create_user(redis_app, credits=START))
    # Leases far longer than the test: only the shutdown handling can free these images.
    slow = {**CRASH_SETTINGS, "LOCAL_ENGINE_DELAY": 30, "LEASE_SECONDS": 600}
    consumer = ConsumerProcess(redis_app, tmp_path / "consumer.log", **slow)
    with consumer:
        consumer.start(worker_type, workers=2, periodic=False)
        batch_id = create_batch_id(client, 2, concurrency=2)
        wait_for(lambda: _statuses(redis_app, batch_id)["processing"] == 2, timeout=30)

        consumer.stop(signal.SIGTERM)

        rows = generation_rows(redis_app, batch_id)
        assert [(row["status"], row["attempts"]) for row in rows] == [("pending", 0)] * 2
        handed_back = re.findall(r"handed back (\d+) interrupted", consumer.log())
        assert sum(map(int, handed_back)) == 2  # one per worker process, or both at once

        faster = ConsumerProcess(
            redis_app, tmp_path / "consumer.log", **{**slow, "LOCAL_ENGINE_DELAY": 0}
        )
        with faster:
            faster.start(worker_type, workers=2, periodic=False)
            detail = wait_for(batch_finished(client, batch_id), timeout=30)

    assert detail["status"] == "completed"
    assert [row["attempts"] for row in generation_rows(redis_app, batch_id)] == [1, 1]
    _assert_settled_exactly_once(redis_app, client, batch_id)


@pytest.mark.parametrize("task", ["run_photo", "poll_generation"])
def test_a_duplicate_photo_task_claims_nothing_and_changes_nothing(tmp_path, task):
    app = make_app(tmp_path)
    client = ApiClient(app, *create_user(app))
    generation_id = client.post("/api/generate/photo", json=photo_body()).get_json()["generationId"]
    drain(app)
    before = client.get(f"/api/generate/batch?jobIds={generation_id}").get_json()
    ledger = client.ledger()

    for _ in range(2):
        getattr(get_queue(app), task)(generation_id)
    drain(app)

    assert client.get(f"/api/generate/batch?jobIds={generation_id}").get_json() == before
    assert before["results"][0]["status"] == "success"
    assert client.ledger() == ledger


def test_an_image_interrupted_between_its_claim_and_its_snapshot_is_handed_back_too(
    app, api_client, monkeypatch
):
    """A process worker told to stop may be interrupted right after its claim committed and
    before it holds the claim: the lease token was remembered first, so it is found."""
    from tests.support import create_batch_id, generation_rows
    from webapp.generation import claims, steps
    from webapp.providers import get_provider
    from webapp.storage import get_storage

    batch_id = create_batch_id(api_client, 1)
    get_queue(app).huey.flush()

    def interrupted(token, where):
        raise KeyboardInterrupt  # the worker's stop signal, just after the claim's COMMIT

    monkeypatch.setattr(claims, "_snapshot", interrupted)
    settings = claims.Settings.from_config(app.config)
    with app.app_context():
        with pytest.raises(KeyboardInterrupt):
            steps.lane_step(batch_id, get_provider(), get_storage(), settings)
        [claimed] = generation_rows(app, batch_id)
        assert (claimed["status"], claimed["attempts"]) == ("processing", 1)

        released = steps.release_held_claims()

    [row] = generation_rows(app, batch_id)
    assert released == [row["id"]]
    assert (row["status"], row["attempts"]) == ("pending", 0)
