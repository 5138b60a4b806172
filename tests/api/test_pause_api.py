"""The pause and resume routes: only the owner's batch (404 otherwise), 409 saying why for a
batch they do not apply to, a repeat is a harmless 200, the answers show `paused`, and they are
limited at the pace of creates."""

import pytest
from sqlalchemy import update

from tests.support import ApiClient, batch_body, create_batch_id, create_user, drain, make_app
from webapp.extensions import db
from webapp.models import Batch, BatchStatus


def _pause(client, batch_id):
    return client.post(f"/api/generate/batch/{batch_id}/pause")


def _resume(client, batch_id):
    return client.post(f"/api/generate/batch/{batch_id}/resume")


def _set_status(app, batch_id, status):
    with app.app_context():
        db.session.execute(update(Batch).where(Batch.id == batch_id).values(status=status))
        db.session.commit()


def test_a_paused_batch_says_paused_everywhere_and_is_not_complete(app, api_client):
    created = api_client.post("/api/generate/batch", json=batch_body(2)).get_json()
    batch_id = created["batchId"]
    job_ids = ",".join(job["generationId"] for job in created["jobs"])

    answer = _pause(api_client, batch_id)

    assert answer.status_code == 200
    paused = answer.get_json()
    assert (paused["status"], paused["stillRunning"]) == ("paused", 0)
    assert paused["pausedAt"].endswith("Z")
    assert paused["message"] == "Paused. 2 images will wait until you resume it."
    detail = api_client.get(f"/api/generate/batch/{batch_id}").get_json()
    assert (detail["status"], detail["isComplete"]) == ("paused", False)
    assert detail["pausedAt"] == paused["pausedAt"]
    polled = api_client.get(f"/api/generate/batch?jobIds={job_ids}").get_json()
    assert polled["isComplete"] is False
    listed = api_client.get("/api/batches?status=paused").get_json()["batches"]
    assert [(item["batchId"], item["status"]) for item in listed] == [(batch_id, "paused")]
    drain(app)  # the lanes rung at creation claim nothing in a paused batch
    assert api_client.get(f"/api/generate/batch/{batch_id}").get_json()["summary"]["pending"] == 2
    assert api_client.balance() == 94  # a pause moves no money


def test_pausing_twice_is_a_harmless_200_and_so_is_resuming_a_running_batch(app, api_client):
    batch_id = create_batch_id(api_client, 2)
    first = _pause(api_client, batch_id).get_json()

    again = _pause(api_client, batch_id)

    assert again.status_code == 200
    assert again.get_json()["message"].startswith("The batch was already paused.")
    assert again.get_json()["pausedAt"] == first["pausedAt"]  # the first pause's moment stays
    assert _resume(api_client, batch_id).get_json()["status"] == "queued"
    repeated = _resume(api_client, batch_id)
    assert repeated.status_code == 200
    assert repeated.get_json()["message"] == "The batch is not paused: it is already queued."
    drain(app)
    assert api_client.get(f"/api/generate/batch/{batch_id}").get_json()["status"] == "completed"


@pytest.mark.parametrize("route", ["pause", "resume"])
def test_a_finished_batch_cannot_be_paused_or_resumed(app, api_client, route):
    batch_id = create_batch_id(api_client, 1)
    drain(app)

    answer = api_client.post(f"/api/generate/batch/{batch_id}/{route}")

    assert answer.status_code == 409
    assert answer.get_json() == {
        "error": f"The batch is already completed; there is nothing to {route}.",
        "batchStatus": "completed",
    }


@pytest.mark.parametrize("route", ["pause", "resume"])
def test_a_batch_awaiting_approval_is_approved_or_rejected_not_paused(app, api_client, route):
    batch_id = create_batch_id(api_client, 2)
    _set_status(app, batch_id, BatchStatus.AWAITING_APPROVAL)

    answer = api_client.post(f"/api/generate/batch/{batch_id}/{route}")

    assert answer.status_code == 409
    body = answer.get_json()
    assert body["batchStatus"] == "awaiting_approval"
    assert "approve or reject it" in body["error"]
    with app.app_context():
        assert db.session.get(Batch, batch_id).status == BatchStatus.AWAITING_APPROVAL


@pytest.mark.parametrize("route", ["pause", "resume"])
def test_only_the_owner_may_pause_or_resume(app, api_client, route):
    batch_id = create_batch_id(api_client, 2)
    if route == "resume":
        _pause(api_client, batch_id)
    mallory = ApiClient(app, *create_user(app, "mallory"))

    theirs = mallory.post(f"/api/generate/batch/{batch_id}/{route}")
    unknown = api_client.post(f"/api/generate/batch/batch_nope/{route}")
    hostile = api_client.post(f"/api/generate/batch/{'x' * 80}/{route}")

    assert theirs.status_code == unknown.status_code == hostile.status_code == 404
    assert theirs.get_json() == {"error": f"Batch not found: {batch_id}"}
    expected = "paused" if route == "resume" else "queued"
    assert api_client.get(f"/api/generate/batch/{batch_id}").get_json()["status"] == expected


def test_pause_and_resume_need_a_sign_in(app, api_client):
    batch_id = create_batch_id(api_client, 1)
    anonymous = app.test_client()
    for route in ("pause", "resume"):
        answer = anonymous.post(f"/api/generate/batch/{batch_id}/{route}")
        assert answer.status_code == 401
        assert answer.is_json


def test_pause_and_resume_are_limited_at_the_pace_of_creates(tmp_path, database_url):
    app = make_app(
        tmp_path, database_url, RATE_LIMITS_ENABLED=True, CREATE_RATE_LIMIT="3 per minute"
    )
    client = ApiClient(app, *create_user(app))
    batch_id = create_batch_id(client, 1)

    pauses = [_pause(client, batch_id) for _ in range(4)]
    resumes = [_resume(client, batch_id) for _ in range(4)]

    # Each route counts on its own, per user, as every create route does.
    for answers in (pauses, resumes):
        assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
        assert answers[3].get_json()["error"].startswith("Too many requests")
        assert int(answers[3].headers["Retry-After"]) > 0
