"""Lanes, leases and the reaper, on the real database with a real consumer where it matters."""

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from tasks import get_queue
from tests.support import (
    ApiClient,
    batch_finished,
    create_batch_id,
    create_user,
    drain,
    generation_rows,
    make_app,
    max_overlap,
    media_files,
    running_consumer,
    wait_for,
)
from webapp.extensions import db
from webapp.generation import claims, outcomes, steps
from webapp.models import Batch, Generation, utcnow
from webapp.providers import Done


def _settings(app):
    return claims.Settings.from_config(app.config)


@pytest.fixture
def slow_app(tmp_path, database_url):
    """An app whose queue is a real SqliteHuey and whose engine takes 0.15 s per image."""
    return make_app(tmp_path, database_url, HUEY_MEMORY=False, LOCAL_ENGINE_DELAY=0.15)


@pytest.mark.e2e
@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_bound_holds_in_the_database(slow_app, concurrency):
    client = ApiClient(slow_app, *create_user(slow_app))
    batch_id = create_batch_id(client, 8, concurrency=concurrency)

    with running_consumer(slow_app, workers=4):
        detail = wait_for(batch_finished(client, batch_id), timeout=60)

    rows = generation_rows(slow_app, batch_id)
    assert detail["status"] == "completed"
    assert [row["attempts"] for row in rows] == [1] * 8
    assert max_overlap(rows) <= concurrency
    if concurrency == 1:
        starts = [row["started_at"] for row in rows]
        assert starts == sorted(starts)  # sequential, in upload order
    else:
        assert max_overlap(rows) >= 2  # and it really ran in parallel
    assert client.balance() == 100 - 24


def test_a_duplicate_lane_delivery_claims_nothing_and_changes_nothing(app, api_client):
    batch_id = create_batch_id(api_client, 2)
    drain(app)
    before = generation_rows(app, batch_id)
    ledger_before = api_client.ledger()

    for _ in range(3):
        get_queue(app).run_lane(batch_id)
    drain(app)

    assert generation_rows(app, batch_id) == before
    assert api_client.ledger() == ledger_before


def test_extra_lanes_never_process_a_generation_twice(app, api_client):
    batch_id = create_batch_id(api_client, 4, concurrency=2)
    for _ in range(6):
        get_queue(app).run_lane(batch_id)

    drain(app)

    assert [row["attempts"] for row in generation_rows(app, batch_id)] == [1, 1, 1, 1]


def _expire_leases(app, batch_id):
    with app.app_context():
        db.session.execute(
            update(Generation)
            .where(Generation.batch_id == batch_id, Generation.status == "processing")
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(heartbeat_at=utcnow() - timedelta(hours=1))
        )
        db.session.commit()


def _claim_and_abandon(app, batch_id):
    """A worker claims a generation and dies before finishing it."""
    with app.app_context():
        return claims.claim_for_batch(batch_id, _settings(app))


def test_reaper_returns_an_abandoned_generation_and_the_batch_completes(app, api_client):
    batch_id = create_batch_id(api_client, 2, concurrency=1)
    get_queue(app).huey.flush()  # the doorbells are lost with the dead worker
    claim = _claim_and_abandon(app, batch_id)
    _expire_leases(app, batch_id)

    report = get_queue(app).reap()
    drain(app)

    assert report.requeued == [claim.generation.id]
    assert report.lanes == {batch_id: 1}
    rows = generation_rows(app, batch_id)
    assert [row["status"] for row in rows] == ["success", "success"]
    assert rows[0]["attempts"] == 2
    assert api_client.balance() == 94


def test_a_late_worker_cannot_overwrite_the_newer_attempt(app, api_client):
    batch_id = create_batch_id(api_client, 1)
    get_queue(app).huey.flush()
    stale = _claim_and_abandon(app, batch_id)
    _expire_leases(app, batch_id)
    get_queue(app).reap()
    drain(app)

    with app.app_context():
        from webapp.storage import get_storage

        recorded = outcomes.record_outcome(stale, Done(b"late"), get_storage(), _settings(app))

    assert recorded is False
    assert [row["status"] for row in generation_rows(app, batch_id)] == ["success"]


def test_spent_attempts_fail_and_refund_exactly_once(tmp_path, database_url):
    app = make_app(tmp_path, database_url, MAX_ATTEMPTS=1)
    client = ApiClient(app, *create_user(app))
    batch_id = create_batch_id(client, 2, concurrency=1)
    get_queue(app).huey.flush()
    claim = _claim_and_abandon(app, batch_id)
    _expire_leases(app, batch_id)

    first = get_queue(app).reap()
    second = get_queue(app).reap()
    drain(app)

    assert first.failed == [claim.generation.id]
    assert second.failed == []
    detail = client.get(f"/api/generate/batch/{batch_id}").get_json()
    assert detail["status"] == "partial"
    assert detail["refunded"] == 3
    failed = detail["results"][0]
    assert failed["status"] == "failed" and failed["errorCode"] == "lease_expired"
    assert "refunded" in failed["error"]
    assert client.balance() == 100 - 6 + 3
    assert client.ledger() == [("grant", 100), ("batch_debit", -6), ("refund", 3)]


def test_a_batch_whose_doorbell_was_lost_is_started_by_the_reaper(app, api_client):
    batch_id = create_batch_id(api_client, 3)
    get_queue(app).huey.flush()  # crash between commit and enqueue, or a Redis restart
    _expire_leases(app, batch_id)

    report = get_queue(app).reap()
    drain(app)

    assert report.lanes == {batch_id: 3}
    assert api_client.get(f"/api/generate/batch/{batch_id}").get_json()["status"] == "completed"


def test_a_recent_batch_is_left_to_its_lanes(app, api_client):
    batch_id = create_batch_id(api_client, 2)

    report = get_queue(app).reap()

    assert batch_id not in report.lanes


def test_unreadable_input_fails_that_image_and_refunds_it(app, api_client):
    batch_id = create_batch_id(api_client, 2, concurrency=1)
    first_input = sorted(path for path in media_files(app) if "/inputs/" in path)
    with app.app_context():
        key = db.session.scalar(
            select(Generation.input_key)
            .where(Generation.batch_id == batch_id)
            .order_by(Generation.position)
        )
    with open(f"{app.config['MEDIA_ROOT']}/{key}", "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n but then garbage")
    assert first_input

    drain(app)

    detail = api_client.get(f"/api/generate/batch/{batch_id}").get_json()
    assert detail["status"] == "partial"
    assert [r["status"] for r in detail["results"]] == ["failed", "success"]
    assert detail["results"][0]["errorCode"] == "invalid_input"
    assert detail["refunded"] == 3
    assert api_client.balance() == 97


def test_all_images_failing_makes_a_failed_batch_fully_refunded(app, api_client):
    batch_id = create_batch_id(api_client, 2)
    for path in media_files(app):
        with open(path, "wb") as handle:
            handle.write(b"not an image")

    drain(app)

    detail = api_client.get(f"/api/generate/batch/{batch_id}").get_json()
    assert detail["status"] == "failed"
    assert detail["refunded"] == 6
    assert api_client.balance() == 100


def test_a_lane_finding_nothing_wakes_for_a_backoff_even_one_that_just_ended(app, api_client):
    batch_id = create_batch_id(api_client, 1)
    get_queue(app).huey.flush()
    just_ended = utcnow() - timedelta(milliseconds=5)
    with app.app_context():
        db.session.execute(
            update(Generation).where(Generation.batch_id == batch_id).values(not_before=just_ended)
        )
        db.session.commit()
        assert steps.next_wake(batch_id) == just_ended  # not None: the lane must not stop


def test_a_sleeping_lane_is_scheduled_to_the_microsecond_in_utc(app, api_client):
    batch_id = create_batch_id(api_client, 1)
    queue = get_queue(app)
    queue.huey.flush()
    wake = utcnow() + timedelta(seconds=3, microseconds=654321)

    queue.follow_up(steps.StepResult(wake_at=wake), queue.run_lane, (batch_id,))

    [scheduled] = queue.huey.pending()  # the worker that dequeues it parks it until its eta
    assert scheduled.eta == wake


def test_consumers_that_all_run_periodic_tasks_take_turns_at_the_reaper(tmp_path, database_url):
    app = make_app(tmp_path, database_url, REAP_SECONDS=60)
    other_consumer = make_app(tmp_path / "other", database_url, REAP_SECONDS=60)

    with app.app_context():  # as the consumer runs it
        first = get_queue(app).reap_periodically.call_local()
    with other_consumer.app_context():
        second = get_queue(other_consumer).reap_periodically.call_local()

    assert first is not None  # it reaped
    assert second is None  # its turn comes in the next interval
