"""A queued image's place counts other users' images as the fair shares interleave them, and
the claims then start the images in exactly that order; a batch's `eta` comes from its model's
recent latencies and is null when nothing is known, while paused, and once finished. Every
answer here is checked against the contract (tests/contract.py)."""

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update

from tests.support import (
    ApiClient,
    claim_next_image,
    create_batch_jobs,
    create_user,
    drain,
    finish_claim,
    make_app,
)
from webapp.extensions import db
from webapp.generation import claims, shares
from webapp.models import Batch, Generation, utcnow


def reasons_of(client, batch_id):
    answer = client.get(f"/api/generate/batch/{batch_id}")
    assert answer.status_code == 200
    return [result["reason"] for result in answer.get_json()["results"]]


def places_of(client, batch_id):
    return [reason.get("place") for reason in reasons_of(client, batch_id)]


@pytest.fixture
def bob(app):
    return ApiClient(app, *create_user(app, "bob"))


def test_two_users_queued_images_interleave_and_the_claims_follow_the_places(
    app, api_client, bob
):
    alice_batch, alice_jobs = create_batch_jobs(api_client, 3, concurrency=8)
    bob_batch, bob_jobs = create_batch_jobs(bob, 2, concurrency=8)

    alice_reasons = reasons_of(api_client, alice_batch)
    bob_reasons = reasons_of(bob, bob_batch)
    # Neither has started anything: round robin, the older batch's user first.
    assert [r["place"] for r in alice_reasons] == [1, 3, 5]
    assert [r["place"] for r in bob_reasons] == [2, 4]
    assert [r["ahead"] for r in bob_reasons] == [1, 3]
    assert bob_reasons[0]["message"] == (
        "Waiting for its turn: 1 image is ahead of it (other people's)."
    )
    assert "4 images are ahead of it (yours and other people's)" in alice_reasons[2]["message"]

    # The share model's claims (shares.claim_next, as a lane's turn makes them) start the
    # images in the order of their places, none finishing meanwhile.
    place = {job: p for job, p in zip(alice_jobs + bob_jobs, [1, 3, 5, 2, 4], strict=True)}
    started = []
    with app.app_context():
        settings = claims.Settings.from_config(app.config)
        while (claim := shares.claim_next(settings)) is not None:
            started.append(claim.generation.id)
    assert [place[job] for job in started] == [1, 2, 3, 4, 5]


def test_a_user_who_started_images_lately_lets_the_other_go_first(app, api_client, bob):
    alice_batch, _ = create_batch_jobs(api_client, 3, concurrency=8)
    bob_batch, _ = create_batch_jobs(bob, 2, concurrency=8)
    claim_next_image(app, alice_batch)  # alice has one image started within the window

    # Bob has started none: his first goes next, then they take turns (b0, a1, b1, a2).
    assert places_of(bob, bob_batch) == [1, 3]
    assert places_of(api_client, alice_batch) == [None, 2, 4]


def test_a_paused_batchs_images_count_only_their_own(app, api_client, bob):
    alice_batch, _ = create_batch_jobs(api_client, 3, concurrency=8)
    bob_batch, _ = create_batch_jobs(bob, 2, concurrency=8)
    assert bob.post(f"/api/generate/batch/{bob_batch}/pause").status_code == 200

    assert places_of(api_client, alice_batch) == [1, 2, 3]
    # Held, in no queue: no place (their reason says batch_paused, tests/api/test_held_reasons.py).
    assert places_of(bob, bob_batch) == [None, None]
    assert reasons_of(api_client, alice_batch)[2]["message"] == (
        "Waiting for its turn: 2 images of this batch are ahead of it."
    )


def iso_time(text):
    return datetime.fromisoformat(text.rstrip("Z"))


def set_durations(app, batch_id, seconds):
    """Make every finished image of the batch have taken `seconds` (claim to result)."""
    with app.app_context():
        now = utcnow()
        for generation in db.session.scalars(
            select(Generation).where(Generation.batch_id == batch_id)
        ):
            generation.started_at = now - timedelta(seconds=60 + seconds)
            generation.finished_at = now - timedelta(seconds=60)
        db.session.commit()


def test_the_eta_is_null_until_the_model_is_known_then_counts_the_batch_slots(app, api_client):
    first, _ = create_batch_jobs(api_client, 1)
    detail = api_client.get(f"/api/generate/batch/{first}").get_json()
    assert detail["eta"] is None  # no image of the model has succeeded yet

    drain(app)
    set_durations(app, first, 10)  # its one image took 10 s
    batch_id, jobs = create_batch_jobs(api_client, 5, concurrency=2)
    claim = claim_next_image(app, batch_id)

    before = utcnow()
    detail = api_client.get(f"/api/generate/batch/{batch_id}").get_json()
    poll = api_client.get(f"/api/generate/batch?jobIds={','.join(jobs)}").get_json()
    listed = api_client.get("/api/batches").get_json()["batches"]

    # One image in flight (10 s left), 4 waiting at 2 at a time: the free slot runs 2 of them
    # (0-10, 10-20), the other slot 2 after the running one (10-20, 20-30): 30 s.
    assert detail["eta"]["seconds"] == 30
    at = iso_time(detail["eta"]["at"])
    assert before + timedelta(seconds=29) <= at <= utcnow() + timedelta(seconds=31)
    assert poll["eta"]["seconds"] == 30
    assert [entry["eta"] for entry in listed if entry["batchId"] == first] == [None]
    assert [entry["eta"]["seconds"] for entry in listed if entry["batchId"] == batch_id] == [30]

    finish_claim(app, claim)
    drain(app)
    finished = api_client.get(f"/api/generate/batch/{batch_id}").get_json()
    assert finished["isComplete"] and finished["status"] == "completed"
    assert finished["eta"] is None
    assert api_client.get(f"/api/generate/batch?jobIds={','.join(jobs)}").get_json()["eta"] is None


def test_a_paused_batch_has_no_eta_and_gets_it_back_when_resumed(app, api_client):
    first, _ = create_batch_jobs(api_client, 1)
    drain(app)
    set_durations(app, first, 4)
    batch_id, _ = create_batch_jobs(api_client, 3, concurrency=1)

    paused = api_client.post(f"/api/generate/batch/{batch_id}/pause").get_json()
    resumed = api_client.post(f"/api/generate/batch/{batch_id}/resume").get_json()

    assert paused["status"] == "paused" and paused["eta"] is None
    assert resumed["eta"]["seconds"] == 12  # 3 images, one at a time, 4 s each


def test_on_a_paced_engine_the_eta_waits_for_the_pacers_window(tmp_path, database_url):
    app = make_app(
        tmp_path,
        database_url,
        GENERATION_BACKEND="kie",
        KIE_API_KEY="test-key",
        UPSTREAM_RATE_LIMIT=2,
        UPSTREAM_RATE_PERIOD=10,  # a window of 10.25 s with the pacer's margin
    )
    client = ApiClient(app, *create_user(app))
    earlier, _ = create_batch_jobs(client, 2)
    with app.app_context():  # both its images started 5 s ago and took 4 s: the window is full
        now = utcnow()
        db.session.execute(
            update(Generation)
            .where(Generation.batch_id == earlier)
            .values(
                status="success",
                started_at=now - timedelta(seconds=5),
                finished_at=now - timedelta(seconds=1),
            )
        )
        db.session.execute(
            update(Batch).where(Batch.id == earlier).values(status="completed", finished_at=now)
        )
        db.session.commit()
    batch_id, _ = create_batch_jobs(client, 2, concurrency=2)

    detail = client.get(f"/api/generate/batch/{batch_id}").get_json()

    # Two slots, 4 s each, but no create before the window's two slots leave it (10.25 − 5 s):
    # both start then, and end 4 s later. Unpaced it would be 4 s.
    assert detail["eta"]["seconds"] == 9
