"""Pause and resume: a paused batch starts no image (told from the rows' started times), the ones
running finish, a resume goes on to the end; cancel still refunds a paused batch's waiting
images exactly once; a paused batch whose last images end is finished; the reaper recovers a
paused batch's expired leases but rings no lane for it."""

import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from tasks import get_queue
from tests.support import (
    ApiClient,
    batch_finished,
    claim_next_image,
    create_batch_id,
    create_user,
    drain,
    finish_claim,
    generation_rows,
    make_app,
    running_consumer,
    wait_for,
)
from webapp.extensions import db
from webapp.models import Batch, Generation, utcnow

PRICE = 3  # flux-2 at 1k


def _pause(client, batch_id):
    return client.post(f"/api/generate/batch/{batch_id}/pause")


def _resume(client, batch_id):
    return client.post(f"/api/generate/batch/{batch_id}/resume")


def _statuses(app, batch_id):
    return [row["status"] for row in generation_rows(app, batch_id)]


def _refunds(client):
    return [amount for kind, amount in client.ledger() if kind == "refund"]


def _batch_status(client, batch_id):
    return client.get(f"/api/generate/batch/{batch_id}").get_json()["status"]


@pytest.mark.e2e
def test_a_paused_batch_starts_nothing_until_resumed_and_then_runs_to_the_end(
    tmp_path, database_url
):
    app = make_app(tmp_path, database_url, HUEY_MEMORY=False, LOCAL_ENGINE_DELAY=0.3)
    client = ApiClient(app, *create_user(app))
    batch_id = create_batch_id(client, 12, concurrency=2)

    with running_consumer(app, workers=2):
        wait_for(lambda: _statuses(app, batch_id).count("success") >= 2, timeout=60)
        paused = _pause(client, batch_id)
        # Every claim that saw the batch active committed before the pause did: after this
        # moment, no image of the batch may start until the resume below.
        pause_answered = utcnow()
        answer = paused.get_json()
        assert paused.status_code == 200, answer
        assert answer["status"] == "paused"
        assert answer["pausedAt"] is not None
        assert answer["isComplete"] is False
        assert 0 <= answer["stillRunning"] <= 2

        # The images running at the pause finish; then nothing moves, while the lanes (two
        # workers, 0.3 s an image) would have started several images had the batch run on.
        wait_for(lambda: "processing" not in _statuses(app, batch_id), timeout=30)
        held = generation_rows(app, batch_id)
        time.sleep(2.0)
        assert generation_rows(app, batch_id) == held
        assert _batch_status(client, batch_id) == "paused"
        # What ran finished (none failed, none was put back); what waits never started.
        waiting = [row for row in held if row["status"] == "pending"]
        assert waiting, "the batch ran out before it was paused; nothing shows the pause"
        assert all(row["started_at"] is None for row in waiting)
        assert sum(row["status"] == "success" for row in held) == 12 - len(waiting)

        resume_asked = utcnow()
        resumed = _resume(client, batch_id).get_json()
        assert resumed["status"] == "running"
        assert resumed["pausedAt"] is None
        detail = wait_for(batch_finished(client, batch_id), timeout=90)

    rows = generation_rows(app, batch_id)
    assert detail["status"] == "completed"
    assert [row["status"] for row in rows] == ["success"] * 12
    assert all(row["attempts"] == 1 for row in rows)
    quiet = [r for r in rows if pause_answered <= r["started_at"] < resume_asked]
    assert quiet == [], "an image started while the batch was paused"
    # The waiting images all started after the resume.
    waiting_ids = {row["id"] for row in waiting}
    assert all(r["started_at"] >= resume_asked for r in rows if r["id"] in waiting_ids)
    assert client.balance() == 100 - 12 * PRICE
    assert _refunds(client) == []


def test_cancelling_a_paused_batch_refunds_its_waiting_images_exactly_once(app, api_client):
    batch_id = create_batch_id(api_client, 5, concurrency=2)
    get_queue(app).huey.flush()
    running = claim_next_image(app, batch_id)
    assert _pause(api_client, batch_id).get_json()["stillRunning"] == 1

    first = api_client.post(f"/api/generate/batch/{batch_id}/cancel").get_json()
    second = api_client.post(f"/api/generate/batch/{batch_id}/cancel").get_json()

    assert (first["cancelled"], first["refundedNow"], first["stillRunning"]) == (4, 12, 1)
    assert first["status"] == "cancelled"
    assert first["pausedAt"] is None
    assert first["finishedAt"] is None  # one image is still at the engine
    assert (second["cancelled"], second["refundedNow"]) == (0, 0)
    assert second["message"].startswith("The batch was already cancelled.")
    finish_claim(app, running)
    detail = api_client.get(f"/api/generate/batch/{batch_id}").get_json()
    assert detail["status"] == "cancelled"
    assert detail["finishedAt"] is not None
    assert detail["refunded"] == 12
    assert _statuses(app, batch_id) == ["success"] + ["cancelled"] * 4
    assert _refunds(api_client) == [PRICE] * 4
    assert api_client.balance() == 100 - PRICE
    # A resume of the cancelled batch is refused and rings nothing.
    refused = _resume(api_client, batch_id)
    assert refused.status_code == 409
    assert refused.get_json()["batchStatus"] == "cancelled"
    assert get_queue(app).huey.pending_count() == 0


def test_a_paused_batch_whose_last_images_end_is_finished(app, api_client):
    batch_id = create_batch_id(api_client, 2, concurrency=2)
    get_queue(app).huey.flush()
    claims = [claim_next_image(app, batch_id), claim_next_image(app, batch_id)]
    answer = _pause(api_client, batch_id).get_json()
    assert (answer["status"], answer["stillRunning"]) == ("paused", 2)
    assert answer["message"] == (
        "Paused. 0 images will wait until you resume it. "
        "2 images already running will finish and are charged."
    )

    for claim in claims:
        finish_claim(app, claim)

    detail = api_client.get(f"/api/generate/batch/{batch_id}").get_json()
    assert detail["status"] == "completed"
    assert detail["isComplete"] is True
    assert detail["finishedAt"] is not None
    assert detail["pausedAt"] is None
    assert api_client.balance() == 100 - 2 * PRICE


def test_the_reaper_recovers_a_paused_batchs_leases_but_rings_no_lane(tmp_path, database_url):
    app = make_app(tmp_path, database_url, STALL_SECONDS=1)
    client = ApiClient(app, *create_user(app))
    batch_id = create_batch_id(client, 3, concurrency=2)
    queue = get_queue(app)
    queue.huey.flush()
    lost = claim_next_image(app, batch_id)  # its worker dies: the lease will run out
    _pause(client, batch_id)
    long_ago = utcnow() - timedelta(minutes=10)
    with app.app_context():
        db.session.execute(
            update(Generation)
            .where(Generation.id == lost.generation.id)
            .values(lease_expires_at=long_ago)
        )
        db.session.execute(update(Batch).where(Batch.id == batch_id).values(heartbeat_at=long_ago))
        db.session.commit()

    report = queue.reap()

    assert report.requeued == [lost.generation.id]
    assert report.lanes == {}
    assert report.finalized == []
    assert queue.huey.pending_count() == 0
    assert _statuses(app, batch_id) == ["pending"] * 3
    assert _batch_status(client, batch_id) == "paused"
    # Reaped again later: still nothing to ring, nothing un-paused.
    assert queue.reap().lanes == {}
    assert _batch_status(client, batch_id) == "paused"

    resumed = _resume(client, batch_id).get_json()
    assert resumed["status"] == "running"  # an image of it had started before the pause
    assert queue.huey.pending_count() == 2  # a lane per free slot
    drain(app)
    assert _statuses(app, batch_id) == ["success"] * 3
    assert _batch_status(client, batch_id) == "completed"
    assert client.balance() == 100 - 3 * PRICE


def test_a_batch_paused_before_it_started_resumes_queued(app, api_client):
    batch_id = create_batch_id(api_client, 3, concurrency=1)
    queue = get_queue(app)
    queue.huey.flush()  # the lanes rung at creation are lost: the resume rings its own

    paused = _pause(api_client, batch_id).get_json()
    drain(app)  # a lane rung now claims nothing, and stops
    assert _statuses(app, batch_id) == ["pending"] * 3
    assert paused["startedAt"] is None

    resumed = _resume(api_client, batch_id).get_json()
    assert resumed["status"] == "queued"
    assert resumed["message"] == "Resumed: 3 images will start as slots free."
    assert queue.huey.pending_count() == 1  # concurrency 1: one lane
    drain(app)
    assert _statuses(app, batch_id) == ["success"] * 3
    assert _batch_status(api_client, batch_id) == "completed"


def test_a_lane_of_a_paused_batch_stops_rather_than_waking_for_a_backoff(app, api_client):
    batch_id = create_batch_id(api_client, 2, concurrency=1)
    queue = get_queue(app)
    queue.huey.flush()
    soon = utcnow() + timedelta(seconds=30)
    with app.app_context():
        db.session.execute(
            update(Generation).where(Generation.batch_id == batch_id).values(not_before=soon)
        )
        db.session.commit()
    _pause(api_client, batch_id)

    queue.run_lane(batch_id)
    drain(app)

    assert queue.huey.pending_count() == 0
    assert queue.huey.scheduled_count() == 0  # no wake-up scheduled for the backoff
