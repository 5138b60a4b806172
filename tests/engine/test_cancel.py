"""Cancel: waiting images are cancelled and refunded at once, running ones finish and are
charged, a finished batch cannot be cancelled, and cancelling twice changes nothing."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from tasks import get_queue
from tests.support import (
    ApiClient,
    batch_finished,
    create_batch_id,
    create_user,
    drain,
    generation_rows,
    make_app,
    running_consumer,
    wait_for,
)
from webapp.extensions import db
from webapp.generation import claims, outcomes, progress, steps
from webapp.generation.cancellation import CancelOutcome
from webapp.models import Generation, utcnow
from webapp.providers import Failed, get_provider
from webapp.storage import get_storage

PRICE = 3  # flux-2 at 1k


def _cancel(client, batch_id):
    return client.post(f"/api/generate/batch/{batch_id}/cancel")


def _statuses(app, batch_id):
    return [row["status"] for row in generation_rows(app, batch_id)]


def _refunds(client):
    return [amount for kind, amount in client.ledger() if kind == "refund"]


def _claim(app, batch_id):
    """A lane claims the batch's next image, as a worker does before calling the provider."""
    with app.app_context():
        return claims.claim_for_batch(batch_id, claims.Settings.from_config(app.config))


def _finish(app, claim, outcome=None):
    """The worker holding `claim` gets its answer from the engine and records it."""
    settings = claims.Settings.from_config(app.config)
    with app.app_context():
        if outcome is None:
            return steps.run_claim(claim, get_provider(), get_storage(), settings)
        outcomes.record_outcome(claim, outcome, get_storage(), settings)
        progress.finalize_batch(claim.generation.batch_id)


def test_cancel_before_start_refunds_every_image(app, api_client):
    batch_id = create_batch_id(api_client, 5)

    response = _cancel(api_client, batch_id)

    assert response.status_code == 200
    answer = response.get_json()
    assert answer["status"] == "cancelled"
    assert (answer["cancelled"], answer["refundedNow"], answer["stillRunning"]) == (5, 15, 0)
    assert answer["refunded"] == 15
    assert answer["summary"]["cancelled"] == 5
    assert answer["finishedAt"] is not None
    assert answer["isComplete"] is True
    assert "Cancelled 5 images not started; 15⭐ refunded." == answer["message"]
    assert api_client.balance() == 100
    assert _refunds(api_client) == [PRICE] * 5
    drain(app)  # the lanes rung at creation find nothing to do
    assert _statuses(app, batch_id) == ["cancelled"] * 5
    assert api_client.balance() == 100


def test_cancel_mid_run_lets_running_images_finish_and_charges_them(app, api_client):
    batch_id = create_batch_id(api_client, 5, concurrency=2)
    get_queue(app).huey.flush()
    running = [_claim(app, batch_id), _claim(app, batch_id)]

    answer = _cancel(api_client, batch_id).get_json()

    assert (answer["cancelled"], answer["refundedNow"], answer["stillRunning"]) == (3, 9, 2)
    assert answer["message"] == (
        "Cancelled 3 images not started; 9⭐ refunded. "
        "2 images already running will finish and are charged."
    )
    assert answer["status"] == "cancelled"
    assert answer["finishedAt"] is None  # two are still running
    for claim in running:
        _finish(app, claim)
        with app.app_context():
            progress.finalize_batch(batch_id)
    detail = api_client.get(f"/api/generate/batch/{batch_id}").get_json()
    assert detail["status"] == "cancelled"
    assert detail["finishedAt"] is not None
    assert _statuses(app, batch_id) == ["success"] * 2 + ["cancelled"] * 3
    assert api_client.balance() == 100 - 2 * PRICE
    assert detail["refunded"] == 9


def test_cancelling_twice_changes_nothing_the_second_time(app, api_client):
    batch_id = create_batch_id(api_client, 3)
    first = _cancel(api_client, batch_id).get_json()
    ledger = api_client.ledger()

    second = _cancel(api_client, batch_id)

    assert second.status_code == 200
    answer = second.get_json()
    assert (answer["cancelled"], answer["refundedNow"], answer["stillRunning"]) == (0, 0, 0)
    assert answer["status"] == "cancelled"
    assert answer["refunded"] == first["refunded"] == 9
    assert answer["message"] == "The batch was already cancelled."
    assert api_client.ledger() == ledger
    assert api_client.balance() == 100


def test_cancelling_a_finished_batch_answers_409(app, api_client):
    batch_id = create_batch_id(api_client, 2)
    drain(app)
    ledger = api_client.ledger()

    response = _cancel(api_client, batch_id)

    assert response.status_code == 409
    assert response.get_json() == {
        "error": "The batch is already completed; there is nothing to cancel.",
        "batchStatus": "completed",
    }
    assert api_client.ledger() == ledger
    assert _statuses(app, batch_id) == ["success", "success"]


def test_cancel_is_only_for_the_owner(app, api_client):
    batch_id = create_batch_id(api_client, 2)
    stranger = ApiClient(app, *create_user(app, "mallory"))

    assert _cancel(stranger, batch_id).status_code == 404
    assert _cancel(stranger, "batch_0_missing").get_json() == {
        "error": "Batch not found: batch_0_missing"
    }
    assert app.test_client().post(f"/api/generate/batch/{batch_id}/cancel").status_code == 401
    missing_id = api_client.post("/api/generate/batch//cancel")
    assert (missing_id.status_code, missing_id.is_json) == (404, True)
    assert _statuses(app, batch_id) == ["pending", "pending"]


def test_an_image_failing_retryably_after_a_cancel_is_refunded_not_requeued(app, api_client):
    batch_id = create_batch_id(api_client, 3, concurrency=1)
    get_queue(app).huey.flush()
    claim = _claim(app, batch_id)
    _cancel(api_client, batch_id)

    _finish(app, claim, Failed("upstream_error", "The image service had a server error.", True))

    assert _statuses(app, batch_id) == ["cancelled"] * 3
    assert _refunds(api_client) == [PRICE] * 3
    assert api_client.get(f"/api/generate/batch/{batch_id}").get_json()["finishedAt"]


def test_an_abandoned_image_of_a_cancelled_batch_is_refunded_by_the_reaper(app, api_client):
    batch_id = create_batch_id(api_client, 2, concurrency=1)
    get_queue(app).huey.flush()
    _claim(app, batch_id)  # its worker dies
    _cancel(api_client, batch_id)
    with app.app_context():
        db.session.execute(
            update(Generation)
            .where(Generation.batch_id == batch_id, Generation.status == "processing")
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()

    report = get_queue(app).reap()

    assert report.finalized == [batch_id]
    assert _statuses(app, batch_id) == ["cancelled", "cancelled"]
    assert api_client.balance() == 100


@pytest.mark.e2e
def test_cancel_while_a_consumer_works_refunds_exactly_what_did_not_run(tmp_path):
    app = make_app(tmp_path, HUEY_MEMORY=False, LOCAL_ENGINE_DELAY=0.3)
    client = ApiClient(app, *create_user(app))
    batch_id = create_batch_id(client, 10, concurrency=2)

    with running_consumer(app, workers=2):
        wait_for(lambda: _statuses(app, batch_id).count("success") >= 2, timeout=30)
        answer = _cancel(client, batch_id).get_json()
        detail = wait_for(batch_finished(client, batch_id), timeout=30)

    statuses = _statuses(app, batch_id)
    successes = statuses.count("success")
    assert statuses.count("cancelled") == answer["cancelled"] >= 1
    assert successes + answer["cancelled"] == 10
    assert detail["status"] == "cancelled"
    assert detail["refunded"] == answer["refundedNow"] == PRICE * answer["cancelled"]
    assert client.balance() == 100 - PRICE * successes


@pytest.mark.parametrize("round_number", range(3))
def test_a_cancel_racing_failures_of_running_images_refunds_each_image_once(
    app, api_client, round_number
):
    batch_id = create_batch_id(api_client, 12, concurrency=8)
    get_queue(app).huey.flush()
    running = [_claim(app, batch_id) for _ in range(8)]
    barrier = threading.Barrier(len(running) + 1)
    errors = []

    def fail(claim):
        barrier.wait()
        try:
            with app.app_context():
                outcomes.fail_and_refund(claim.generation, claim.token, "upstream_error", "Failed.")
        except Exception as error:  # a deadlock would surface here
            errors.append(error)

    def cancel():
        barrier.wait()
        response = _cancel(api_client, batch_id)
        if response.status_code != 200:
            errors.append(response.get_json())

    threads = [threading.Thread(target=fail, args=(claim,)) for claim in running]
    threads.append(threading.Thread(target=cancel))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(_statuses(app, batch_id)) == ["cancelled"] * 4 + ["failed"] * 8
    assert sorted(_refunds(api_client)) == [PRICE] * 12
    assert api_client.balance() == 100


def test_the_cancel_message_counts_in_words():
    one_running = CancelOutcome(cancelled=1, refunded=3, still_running=1)
    nothing_waiting = CancelOutcome(cancelled=0, refunded=0, still_running=2)

    assert one_running.message == (
        "Cancelled 1 image not started; 3⭐ refunded. "
        "1 image already running will finish and is charged."
    )
    assert nothing_waiting.message == (
        "Cancelled; no image was waiting to start. "
        "2 images already running will finish and are charged."
    )
