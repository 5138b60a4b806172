"""Idempotency-Key on POST /api/generate/batch and /photo: a retry replays, never pays twice."""

import hashlib
import json
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from tasks import get_queue
from tests.support import (
    ApiClient,
    batch_body,
    create_user,
    drain,
    make_app,
    media_files,
    photo_body,
    wait_for,
)
from webapp import billing
from webapp.api import idempotency
from webapp.extensions import db
from webapp.generation.idempotency_keys import purge_expired
from webapp.models import Batch, Generation, IdempotencyKey, utcnow

BATCH = "/api/generate/batch"
PHOTO = "/api/generate/photo"
REPLAYED = "Idempotent-Replayed"


def _post(client, url, body, key):
    """POST `body` as exact JSON bytes (the fingerprint is of the bytes) under `key`."""
    return client.post(
        url,
        data=json.dumps(body),
        content_type="application/json",
        headers={"Idempotency-Key": key},
    )


def _count(app, model):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def _key_row(app, key):
    with app.app_context():
        row = db.session.scalar(select(IdempotencyKey).where(IdempotencyKey.key == key))
        return None if row is None else {
            column.name: getattr(row, column.name) for column in IdempotencyKey.__table__.columns
        }


def _set_key(app, key, **values):
    """Change a key row behind the API's back: to age it, or to stage a crash."""
    with app.app_context():
        db.session.execute(
            update(IdempotencyKey).where(IdempotencyKey.key == key).values(**values)
        )
        db.session.commit()


def _stage_crash_after_commit(app, key, lock_age):
    """The row as a process leaves it when it dies after the create's commit, before answering."""
    _set_key(
        app, key, response_status=None, response_body=None, locked_at=utcnow() - lock_age
    )


def test_batch_retry_replays_the_first_answer_and_charges_once(app, api_client):
    body = batch_body(2)

    first = _post(api_client, BATCH, body, "order-1")
    again = _post(api_client, BATCH, body, "order-1")

    assert first.status_code == again.status_code == 200
    assert REPLAYED not in first.headers
    assert again.headers[REPLAYED] == "true"
    assert again.get_json() == first.get_json()
    assert api_client.balance() == 94
    assert api_client.ledger() == [("grant", 100), ("batch_debit", -6)]
    assert _count(app, Batch) == 1
    assert len(media_files(app)) == 2
    assert get_queue(app).huey.pending_count() == 2  # the replay rang nothing


def test_a_body_spooled_to_disk_is_fingerprinted_and_created_alike(
    app, api_client, monkeypatch
):
    monkeypatch.setattr(idempotency, "SPOOL_IN_MEMORY", 1)  # every body goes to a file
    body = batch_body(2)

    first = _post(api_client, BATCH, body, "big-order")
    again = _post(api_client, BATCH, body, "big-order")
    other = _post(api_client, BATCH, batch_body(3), "big-order")

    assert first.status_code == again.status_code == 200
    assert again.headers[REPLAYED] == "true"
    assert other.status_code == 422
    assert api_client.ledger() == [("grant", 100), ("batch_debit", -6)]
    assert len(media_files(app)) == 2


def test_photo_retry_replays_the_first_answer_and_charges_once(app, api_client):
    first = _post(api_client, PHOTO, photo_body(), "photo-1")
    drain(app)  # the image finishes; the replay still answers what the first request did
    again = _post(api_client, PHOTO, photo_body(), "photo-1")

    assert first.status_code == again.status_code == 202
    assert again.headers[REPLAYED] == "true"
    assert again.get_json() == first.get_json()
    assert again.get_json()["status"] == "pending"
    assert api_client.ledger() == [("grant", 100), ("photo_debit", -3)]
    assert _count(app, Generation) == 1


def test_without_the_header_every_request_runs(api_client):
    first = api_client.post(BATCH, json=batch_body(1))
    second = api_client.post(BATCH, json=batch_body(1))

    assert first.get_json()["batchId"] != second.get_json()["batchId"]
    assert REPLAYED not in second.headers
    assert api_client.balance() == 94


def test_same_key_with_another_body_is_422_and_charges_nothing(app, api_client):
    _post(api_client, BATCH, batch_body(2), "order-1")

    response = _post(api_client, BATCH, batch_body(3), "order-1")

    assert response.status_code == 422
    assert "different request" in response.get_json()["error"]
    assert api_client.ledger() == [("grant", 100), ("batch_debit", -6)]
    assert _count(app, Batch) == 1


def test_same_key_on_the_other_endpoint_is_422(app, api_client):
    _post(api_client, BATCH, batch_body(1), "shared")

    response = _post(api_client, PHOTO, photo_body(), "shared")

    assert response.status_code == 422
    assert "different request (POST /api/generate/batch)" in response.get_json()["error"]
    assert api_client.ledger() == [("grant", 100), ("batch_debit", -3)]
    assert _count(app, Generation) == 1


def test_a_retry_while_the_first_request_runs_is_409(tmp_path, database_url):
    app = make_app(tmp_path, database_url, PHOTO_WAIT_SECONDS=30)
    client = ApiClient(app, *create_user(app))
    first = {}

    def send_first():
        own_client = ApiClient(app, client.user_id, client.token)
        first["response"] = _post(own_client, PHOTO, photo_body(), "slow")

    thread = threading.Thread(target=send_first)
    thread.start()
    # The first request has committed its photo and now waits for the image.
    wait_for(lambda: (_key_row(app, "slow") or {}).get("generation_id"))
    during = _post(client, PHOTO, photo_body(), "slow")
    drain(app)  # the image is done: the first request answers
    thread.join()
    after = _post(client, PHOTO, photo_body(), "slow")

    assert during.status_code == 409
    assert "in progress" in during.get_json()["error"]
    assert first["response"].status_code == 200
    assert first["response"].get_json()["status"] == "success"
    assert after.status_code == 200 and after.get_json() == first["response"].get_json()
    assert client.ledger() == [("grant", 100), ("photo_debit", -3)]


def test_simultaneous_first_requests_run_once(app, user):
    user_id, token = user
    body = batch_body(2)
    responses = []
    barrier = threading.Barrier(8)

    def submit():
        client = ApiClient(app, user_id, token)
        barrier.wait()
        responses.append(_post(client, BATCH, body, "race"))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    ran = [r for r in responses if r.status_code == 200 and REPLAYED not in r.headers]
    others = [r for r in responses if r not in ran]
    assert len(ran) == 1
    for response in others:  # still in flight (409) or already answered (a replay)
        assert response.status_code == 409 or response.get_json() == ran[0].get_json()
    assert ApiClient(app, user_id, token).ledger() == [("grant", 100), ("batch_debit", -6)]
    assert _count(app, Batch) == 1
    assert len(media_files(app)) == 2


def test_a_key_older_than_24_hours_is_as_if_never_seen(app, api_client):
    body = batch_body(1)
    first = _post(api_client, BATCH, body, "old")
    _set_key(app, "old", created_at=utcnow() - timedelta(hours=24, minutes=1))

    renewed = _post(api_client, BATCH, body, "old")
    replay = _post(api_client, BATCH, body, "old")

    assert renewed.status_code == 200 and REPLAYED not in renewed.headers
    assert renewed.get_json()["batchId"] != first.get_json()["batchId"]
    assert replay.get_json() == renewed.get_json()
    assert api_client.ledger() == [("grant", 100), ("batch_debit", -3), ("batch_debit", -3)]


def test_purge_expired_deletes_only_keys_older_than_24_hours(app, api_client):
    _post(api_client, BATCH, batch_body(1), "old")
    _post(api_client, BATCH, batch_body(1), "new")
    _set_key(app, "old", created_at=utcnow() - timedelta(hours=25))

    with app.app_context():
        assert purge_expired() == 1
        assert purge_expired() == 0

    assert _key_row(app, "old") is None
    assert _post(api_client, BATCH, batch_body(1), "new").headers[REPLAYED] == "true"
    with app.app_context():
        assert purge_expired(now=utcnow() + timedelta(hours=25)) == 1


def test_the_reaper_purges_expired_keys(app, api_client):
    _post(api_client, BATCH, batch_body(1), "old")
    _set_key(app, "old", created_at=utcnow() - timedelta(hours=25))

    report = get_queue(app).reap()

    assert report.expired_keys == 1
    assert _key_row(app, "old") is None


def test_a_402_is_replayed_even_after_the_user_got_credits(app):
    client = ApiClient(app, *create_user(app, "dan", credits=2))
    declined = _post(client, PHOTO, photo_body(), "photo-dan")
    with app.app_context():
        billing.grant(client.user_id, 10)
        db.session.commit()

    replay = _post(client, PHOTO, photo_body(), "photo-dan")
    fresh = _post(client, PHOTO, photo_body(), "photo-dan-2")

    assert declined.status_code == replay.status_code == 402
    assert replay.headers[REPLAYED] == "true"
    assert replay.get_json() == {"error": "Insufficient credits", "required": 3, "available": 2}
    assert fresh.status_code == 202
    assert client.balance() == 9


def test_a_rejected_request_frees_its_key_for_the_corrected_one(app, api_client):
    rejected = _post(api_client, BATCH, batch_body(1, prompt=""), "fix-me")
    corrected = _post(api_client, BATCH, batch_body(1), "fix-me")

    assert rejected.status_code == 400
    assert corrected.status_code == 200 and REPLAYED not in corrected.headers
    assert api_client.ledger() == [("grant", 100), ("batch_debit", -3)]


def test_a_body_over_the_limit_frees_its_key(tmp_path, database_url):
    app = make_app(tmp_path, database_url, MAX_CONTENT_LENGTH=20_000)
    client = ApiClient(app, *create_user(app))
    huge = batch_body(1, prompt="x" * 30_000)

    rejected = _post(client, BATCH, huge, "big")
    corrected = _post(client, BATCH, batch_body(1), "big")

    assert rejected.status_code == 413 and rejected.is_json
    assert corrected.status_code == 200
    assert client.balance() == 97


def test_keys_belong_to_one_user(app, api_client):
    bob = ApiClient(app, *create_user(app, "bob"))

    mine = _post(api_client, BATCH, batch_body(1), "same-key")
    his = _post(bob, BATCH, batch_body(1), "same-key")

    assert mine.status_code == his.status_code == 200
    assert REPLAYED not in his.headers
    assert mine.get_json()["batchId"] != his.get_json()["batchId"]
    assert api_client.balance() == bob.balance() == 97


@pytest.mark.parametrize("key", ["", "k" * 256, "clé", "tab\there", "del\x7f"])
def test_an_invalid_key_is_400_and_nothing_runs(app, api_client, key):
    response = _post(api_client, BATCH, batch_body(1), key)

    assert response.status_code == 400
    assert response.get_json()["field"] == "Idempotency-Key"
    assert api_client.balance() == 100
    assert _count(app, IdempotencyKey) == 0


def test_the_longest_valid_key_is_accepted(api_client):
    response = _post(api_client, BATCH, batch_body(1), "k" * 255)

    assert response.status_code == 200


def test_a_crash_after_the_batch_commit_is_answered_from_the_batch(app, api_client):
    body = batch_body(2)
    first = _post(api_client, BATCH, body, "crash")
    _stage_crash_after_commit(app, "crash", lock_age=timedelta(seconds=5))

    while_locked = _post(api_client, BATCH, body, "crash")
    _stage_crash_after_commit(app, "crash", lock_age=timedelta(minutes=10))
    rebuilt = _post(api_client, BATCH, body, "crash")
    replay = _post(api_client, BATCH, body, "crash")

    assert while_locked.status_code == 409
    assert rebuilt.status_code == 200 and rebuilt.headers[REPLAYED] == "true"
    assert rebuilt.get_json() == first.get_json()
    assert replay.get_json() == first.get_json()
    assert api_client.ledger() == [("grant", 100), ("batch_debit", -6)]
    assert _count(app, Batch) == 1


def test_a_crash_after_the_photo_commit_is_answered_from_the_photo(app, api_client):
    first = _post(api_client, PHOTO, photo_body(), "crash")
    drain(app)
    _stage_crash_after_commit(app, "crash", lock_age=timedelta(minutes=10))

    rebuilt = _post(api_client, PHOTO, photo_body(), "crash")

    assert rebuilt.status_code == 200 and rebuilt.headers[REPLAYED] == "true"
    assert rebuilt.get_json()["generationId"] == first.get_json()["generationId"]
    assert rebuilt.get_json()["status"] == "success"
    assert api_client.ledger() == [("grant", 100), ("photo_debit", -3)]
    assert _count(app, Generation) == 1


def test_a_crash_before_the_commit_lets_the_retry_run(app, api_client):
    body = batch_body(1)
    raw = json.dumps(body).encode()
    with app.app_context():
        db.session.add(
            IdempotencyKey(
                user_id=api_client.user_id,
                key="died-early",
                endpoint=f"POST {BATCH}",
                request_sha256=hashlib.sha256(raw).hexdigest(),
                lock_token="dead-process",
                locked_at=utcnow() - timedelta(minutes=10),
            )
        )
        db.session.commit()

    response = _post(api_client, BATCH, body, "died-early")

    assert response.status_code == 200 and REPLAYED not in response.headers
    assert _key_row(app, "died-early")["batch_id"] == response.get_json()["batchId"]
    assert api_client.ledger() == [("grant", 100), ("batch_debit", -3)]


def test_a_failure_after_the_commit_keeps_the_key_and_the_retry_pays_nothing(
    app, api_client, monkeypatch
):
    def queue_down(*args):
        raise RuntimeError("queue down")

    monkeypatch.setattr(get_queue(app), "start_batch", queue_down)
    body = batch_body(1)

    failed = _post(api_client, BATCH, body, "flaky")
    retry = _post(api_client, BATCH, body, "flaky")

    assert failed.status_code == 500
    assert retry.status_code == 200 and retry.headers[REPLAYED] == "true"
    assert retry.get_json()["batchId"] == _key_row(app, "flaky")["batch_id"]
    assert api_client.ledger() == [("grant", 100), ("batch_debit", -3)]


def test_a_request_taken_over_after_its_lock_went_stale_creates_nothing(
    app, api_client, monkeypatch
):
    storage = app.extensions["batchgen.storage"]
    save = storage.save
    in_save, resume = threading.Event(), threading.Event()

    def slow_first_save(key, data):
        if not in_save.is_set():
            in_save.set()
            resume.wait(30)
        return save(key, data)

    monkeypatch.setattr(storage, "save", slow_first_save)
    body = batch_body(1)
    first = {}

    def send_first():
        client = ApiClient(app, api_client.user_id, api_client.token)
        first["response"] = _post(client, BATCH, body, "stuck")

    thread = threading.Thread(target=send_first)
    thread.start()
    in_save.wait(30)  # the first request owns the key and has not committed
    _set_key(app, "stuck", locked_at=utcnow() - timedelta(minutes=10))
    second = _post(api_client, BATCH, body, "stuck")
    resume.set()
    thread.join()

    assert second.status_code == 200 and REPLAYED not in second.headers
    assert first["response"].status_code == 409
    assert api_client.ledger() == [("grant", 100), ("batch_debit", -3)]
    assert _count(app, Batch) == 1
    assert len(media_files(app)) == 1  # the first request kept no file
