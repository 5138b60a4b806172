"""Try a few first (issue 16, item 1): a canary batch runs its first `canary` images and waits in
awaiting_approval; approve runs the rest, reject (or no answer in CANARY_APPROVAL_HOURS) cancels
and refunds the rest, each exactly once. The batch is charged once, at creation."""

import json
import threading
from datetime import timedelta
from pathlib import Path

import jsonschema
import pytest
import yaml
from sqlalchemy import select

from tasks import get_queue
from tests.browser.test_accessibility import fail_inputs_of_width
from tests.support import (
    ApiClient,
    batch_body,
    batch_finished,
    create_batch_id,
    create_user,
    data_url,
    drain,
    generation_rows,
    image_bytes,
    make_app,
    running_consumer,
    wait_for,
)
from webapp.extensions import db
from webapp.generation import reaper, webhook_endpoints
from webapp.models import Batch, LedgerEntry, WebhookDelivery, utcnow
from webapp.providers import Failed
from webapp.storage import get_storage

OPENAPI = Path(__file__).resolve().parents[2] / "webapp" / "api" / "openapi.yaml"
PRICE = 3  # flux-2 at 1k
FAILING_WIDTH = 71  # an input this wide makes the local engine fail (permanently)


def _detail(client, batch_id):
    return client.get(f"/api/generate/batch/{batch_id}").get_json()


def _awaiting(client, batch_id):
    def awaiting():
        detail = _detail(client, batch_id)
        return detail if detail["status"] == "awaiting_approval" else None

    return awaiting


def _refund_notes(app, user_id):
    with app.app_context():
        return [
            (entry.amount, entry.note)
            for entry in db.session.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.user_id == user_id, LedgerEntry.kind == "refund")
                .order_by(LedgerEntry.id)
            )
        ]


@pytest.mark.parametrize(
    ("canary", "images", "words"),
    [
        (0, 3, "from 1 to 5"),
        (6, 8, "from 1 to 5"),
        (-1, 3, "from 1 to 5"),
        (3, 3, "fewer than the batch's images (3)"),
        (2, 1, "fewer than the batch's images (1)"),
        ("2", 3, "whole number"),
        (1.5, 3, "whole number"),
        (True, 3, "whole number"),
        ([1], 3, "whole number"),
    ],
)
def test_a_wrong_canary_is_a_400_naming_it_and_charges_nothing(api_client, canary, images, words):
    response = api_client.post("/api/generate/batch", json=batch_body(images, canary=canary))

    assert response.status_code == 400
    assert response.get_json()["field"] == "canary"
    assert words in response.get_json()["error"]
    assert api_client.balance() == 100
    assert api_client.ledger() == [("grant", 100)]


def test_a_canary_batch_is_charged_once_and_claims_only_its_canary_before_approval(
    app, api_client
):
    created = api_client.post("/api/generate/batch", json=batch_body(5, canary=2)).get_json()
    assert created["canary"] == 2
    assert created["message"].startswith("Queued 5 images: the first 2 run")

    drain(app)

    detail = _detail(api_client, created["batchId"])
    assert detail["status"] == "awaiting_approval"
    assert detail["isComplete"] is False
    assert detail["canary"] == 2 and detail["approvedAt"] is None
    assert detail["awaitingSince"] is not None
    hours = app.config["CANARY_APPROVAL_HOURS"]
    with app.app_context():
        batch = db.session.get(Batch, created["batchId"])
        assert detail["approveBy"] == (
            (batch.awaiting_since + timedelta(hours=hours)).isoformat(timespec="milliseconds")
            + "Z"
        )
    rows = generation_rows(app, created["batchId"])
    assert [row["status"] for row in rows] == ["success"] * 2 + ["pending"] * 3
    assert [row["started_at"] is None for row in rows] == [False] * 2 + [True] * 3
    assert api_client.ledger() == [("grant", 100), ("batch_debit", -5 * PRICE)]


def test_approve_runs_the_rest_with_real_consumers_and_approving_twice_is_harmless(
    tmp_path, database_url
):
    app = make_app(tmp_path, database_url, HUEY_MEMORY=False)
    client = ApiClient(app, *create_user(app))
    with running_consumer(app, workers=3):
        batch_id = create_batch_id(client, 5, canary=2, concurrency=4)
        waiting = wait_for(_awaiting(client, batch_id), timeout=60)
        assert waiting["summary"]["completed"] == 2 and waiting["summary"]["pending"] == 3
        time_held = utcnow()
        assert [row["started_at"] for row in generation_rows(app, batch_id)][2:] == [None] * 3

        response = client.post(f"/api/generate/batch/{batch_id}/approve")

        assert response.status_code == 200
        answer = response.get_json()
        assert answer["status"] == "running"
        assert answer["released"] == 3
        assert answer["approvedAt"] is not None
        assert answer["message"] == "Approved: the other 3 images run now."
        detail = wait_for(batch_finished(client, batch_id), timeout=60)

    assert detail["status"] == "completed"
    rows = generation_rows(app, batch_id)
    assert all(row["started_at"] >= time_held for row in rows[2:])  # none started before
    assert client.ledger() == [("grant", 100), ("batch_debit", -5 * PRICE)]

    again = client.post(f"/api/generate/batch/{batch_id}/approve")
    assert again.status_code == 200
    assert again.get_json()["released"] == 0
    assert again.get_json()["message"] == "The batch was already approved."
    assert again.get_json()["status"] == "completed"
    assert client.ledger() == [("grant", 100), ("batch_debit", -5 * PRICE)]
    assert client.balance() == 100 - 5 * PRICE


def test_reject_refunds_the_rest_exactly_once_and_the_canary_stays_charged(app, api_client):
    batch_id = create_batch_id(api_client, 5, canary=2)
    drain(app)

    response = api_client.post(f"/api/generate/batch/{batch_id}/reject")

    assert response.status_code == 200
    answer = response.get_json()
    assert answer["status"] == "cancelled"
    assert (answer["cancelled"], answer["refundedNow"], answer["stillRunning"]) == (3, 9, 0)
    assert answer["refunded"] == 9
    assert answer["finishedAt"] is not None
    assert answer["isComplete"] is True
    assert [r["status"] for r in answer["results"]] == ["success"] * 2 + ["cancelled"] * 3
    assert api_client.balance() == 100 - 2 * PRICE
    assert _refund_notes(app, api_client.user_id) == [(PRICE, "canary rejected")] * 3

    again = api_client.post(f"/api/generate/batch/{batch_id}/reject")
    assert again.status_code == 200
    assert (again.get_json()["cancelled"], again.get_json()["refundedNow"]) == (0, 0)
    approve = api_client.post(f"/api/generate/batch/{batch_id}/approve")
    assert approve.status_code == 409
    assert approve.get_json()["batchStatus"] == "cancelled"
    drain(app)
    assert api_client.balance() == 100 - 2 * PRICE
    assert len(_refund_notes(app, api_client.user_id)) == 3


@pytest.fixture
def failing_engine(monkeypatch):
    """The local engine, refusing for good an image FAILING_WIDTH pixels wide."""
    failure = Failed("invalid_input", "The image could not be used.")
    fail_inputs_of_width(monkeypatch, FAILING_WIDTH, failure)


def test_a_failing_canary_image_is_refunded_and_the_batch_still_waits(
    tmp_path, database_url, failing_engine
):
    app = make_app(tmp_path, database_url, HUEY_MEMORY=False)
    client = ApiClient(app, *create_user(app))
    body = batch_body(4, canary=2)
    body["images"][0]["data"] = data_url(image_bytes("PNG", size=(FAILING_WIDTH, 40)))
    with running_consumer(app, workers=2):
        batch_id = client.post("/api/generate/batch", json=body).get_json()["batchId"]
        waiting = wait_for(_awaiting(client, batch_id), timeout=60)

    assert [r["status"] for r in waiting["results"]] == ["failed", "success", "pending", "pending"]
    assert waiting["results"][0]["refunded"] == PRICE
    assert waiting["refunded"] == PRICE
    assert client.balance() == 100 - 4 * PRICE + PRICE

    rejected = client.post(f"/api/generate/batch/{batch_id}/reject").get_json()
    assert (rejected["cancelled"], rejected["refundedNow"]) == (2, 2 * PRICE)
    assert client.balance() == 100 - PRICE  # only the canary image that was made is paid for
    assert client.ledger() == [
        ("grant", 100),
        ("batch_debit", -4 * PRICE),
        ("refund", PRICE),
        ("refund", PRICE),
        ("refund", PRICE),
    ]


def test_the_reaper_rejects_an_unanswered_canary_once_even_with_two_reapers(app, api_client):
    batch_id = create_batch_id(api_client, 4, canary=1)
    drain(app)
    settings = get_queue(app).settings
    soon = utcnow() + timedelta(hours=app.config["CANARY_APPROVAL_HOURS"] - 1)
    with app.app_context():
        report = reaper.reap(settings, 30, get_storage(), now=soon)
    assert report.rejected == []
    assert _detail(api_client, batch_id)["status"] == "awaiting_approval"

    later = utcnow() + timedelta(hours=app.config["CANARY_APPROVAL_HOURS"], minutes=1)
    reports = []
    barrier = threading.Barrier(2)

    def reap():
        with app.app_context():
            barrier.wait()
            reports.append(reaper.reap(settings, 30, get_storage(), now=later))

    threads = [threading.Thread(target=reap) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(len(report.rejected) for report in reports) == [0, 1]
    detail = _detail(api_client, batch_id)
    assert detail["status"] == "cancelled"
    assert detail["refunded"] == 3 * PRICE
    assert api_client.balance() == 100 - PRICE
    assert _refund_notes(app, api_client.user_id) == [(PRICE, "canary not approved in time")] * 3
    with app.app_context():
        assert reaper.reap(settings, 30, get_storage(), now=later).rejected == []
    assert api_client.balance() == 100 - PRICE


def test_awaiting_approval_is_announced_through_the_webhook_outbox(app, api_client):
    app.config["WEBHOOK_ALLOW_HOSTS"] = "127.0.0.1"
    with app.app_context():
        webhook_endpoints.set_endpoint(api_client.user_id, "http://127.0.0.1:9/hook")
    batch_id = create_batch_id(api_client, 3, canary=1)
    get_queue(app).huey.flush()
    with app.app_context():
        from webapp.generation.steps import lane_step
        from webapp.providers import get_provider

        for _ in range(3):  # a lane's turns, without sending the deliveries they ring
            lane_step(batch_id, get_provider(), get_storage(), get_queue(app).settings)
        deliveries = db.session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.batch_id == batch_id)
        ).all()

    assert [delivery.event_type for delivery in deliveries] == ["batch.awaiting_approval"]
    body = json.loads(deliveries[0].payload)
    assert body["type"] == "batch.awaiting_approval"
    assert body["data"]["status"] == "awaiting_approval"
    assert body["data"]["summary"]["completed"] == 1 and body["data"]["summary"]["pending"] == 2
    document = yaml.safe_load(OPENAPI.read_text())
    event = jsonschema.Draft202012Validator({**document, "$ref": "#/components/schemas/BatchEvent"})
    assert [error.message for error in event.iter_errors(body)] == []


def test_only_the_owner_may_decide_and_only_once_it_awaits(app, api_client):
    batch_id = create_batch_id(api_client, 3, canary=1)
    plain_id = create_batch_id(api_client, 2)
    get_queue(app).huey.flush()  # nothing runs yet: the canary is still to be made

    early = api_client.post(f"/api/generate/batch/{batch_id}/approve")
    assert early.status_code == 409
    assert early.get_json()["batchStatus"] == "queued"
    assert "still being made" in early.get_json()["error"]
    early = api_client.post(f"/api/generate/batch/{batch_id}/reject")
    assert early.status_code == 409 and "still being made" in early.get_json()["error"]
    plain = api_client.post(f"/api/generate/batch/{plain_id}/approve")
    assert plain.status_code == 409 and "no canary" in plain.get_json()["error"]

    get_queue(app).start_batch(batch_id, 1, 3)
    drain(app)
    bob = ApiClient(app, *create_user(app, "bob"))
    for action in ("approve", "reject"):
        answer = bob.post(f"/api/generate/batch/{batch_id}/{action}")
        assert answer.status_code == 404
        assert answer.get_json()["error"] == f"Batch not found: {batch_id}"
    assert _detail(api_client, batch_id)["status"] == "awaiting_approval"
    assert api_client.balance() == 100 - 5 * PRICE


def test_approve_and_reject_are_limited_at_the_pace_of_creates(tmp_path, database_url):
    app = make_app(
        tmp_path, database_url, RATE_LIMITS_ENABLED=True, CREATE_RATE_LIMIT="3 per minute"
    )
    client = ApiClient(app, *create_user(app))
    batch_id = create_batch_id(client, 3, canary=1)
    drain(app)

    approvals = [client.post(f"/api/generate/batch/{batch_id}/approve") for _ in range(4)]
    rejects = [client.post(f"/api/generate/batch/{batch_id}/reject") for _ in range(4)]

    assert [answer.status_code for answer in approvals] == [200, 200, 200, 429]
    assert [answer.status_code for answer in rejects] == [409, 409, 409, 429]  # approved
    for answer in (approvals[3], rejects[3]):
        assert answer.get_json()["error"].startswith("Too many requests")
        assert int(answer.headers["Retry-After"]) > 0
