"""Webhooks end to end on one app: a real receiver on 127.0.0.1 verifies every delivery with
`standardwebhooks`; the outbox, the schedule, 410, redirects, the log and redelivery."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.receiver import Reply, receiving
from tests.support import (
    ApiClient,
    batch_body,
    batch_finished,
    create_user,
    make_app,
    running_consumer,
    wait_for,
)
from webapp.extensions import db
from webapp.generation import webhook_endpoints
from webapp.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, utcnow

FAST = {
    "WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    "WEBHOOK_RETRY_SCHEDULE": (0, 0.3, 0.3, 0.3),
    "WEBHOOK_TIMEOUT_SECONDS": 2.0,
    "PUBLIC_BASE_URL": "http://127.0.0.1:5000",
}


@pytest.fixture
def app(tmp_path, database_url):
    return make_app(tmp_path, database_url, **FAST)


@pytest.fixture
def receiver():
    with receiving() as found:
        yield found


def endpoint_for(app, user_id, url=None, events=()):
    with app.app_context():
        outcome = webhook_endpoints.set_endpoint(user_id, url, events)
        return outcome.new_secret


def deliveries(app, **where):
    with app.app_context():
        query = select(WebhookDelivery).filter_by(**where).order_by(WebhookDelivery.created_at)
        return db.session.scalars(query).all()


def run_batch(app, api_client, count=2, **fields):
    batch = api_client.post("/api/generate/batch", json=batch_body(count, **fields)).get_json()
    with running_consumer(app):
        wait_for(batch_finished(api_client, batch["batchId"]))
    return batch


def test_a_finished_batch_is_announced_signed_to_its_callback_and_the_endpoint(
    app, api_client, user, receiver
):
    secret = endpoint_for(app, user[0], f"{receiver.url}/hooks", ["generation.succeeded"])
    assert secret.startswith("whsec_")
    batch = api_client.post(
        "/api/generate/batch", json=batch_body(2, callbackUrl=f"{receiver.url}/batch-hook")
    ).get_json()
    with running_consumer(app):
        detail = wait_for(batch_finished(api_client, batch["batchId"]))
        to_endpoint = receiver.wait_for(3, path="/hooks")
        [to_callback] = receiver.wait_for(1, path="/batch-hook")

    assert sorted(item.json["type"] for item in to_endpoint) == [
        "batch.completed",
        "generation.succeeded",
        "generation.succeeded",
    ]
    event = to_callback.verified(secret)
    assert event["type"] == "batch.completed"
    shown = event["data"]
    assert shown["batchId"] == batch["batchId"] and shown["status"] == "completed"
    # The data is the batch as the API answers it (links are signed afresh each time).
    for answer in (shown, detail):
        for result in answer["results"]:
            assert result.pop("imageUrl").startswith("http://127.0.0.1:5000/media/")
    assert shown.keys() == detail.keys()
    assert shown["results"] == detail["results"]
    for item in to_endpoint:
        assert item.verified(secret)["timestamp"].endswith("Z")
        assert item.headers["webhook-signature"].startswith("v1,")
    announced = [
        item.json["data"] for item in to_endpoint if item.json["type"] != "batch.completed"
    ]
    assert {data["generationId"] for data in announced} == {
        job["generationId"] for job in batch["jobs"]
    }
    assert all(data["status"] == "success" for data in announced)


def test_answers_500_twice_then_200_get_three_deliveries_with_one_webhook_id(
    app, api_client, user, receiver
):
    secret = endpoint_for(app, user[0], f"{receiver.url}/hooks")
    receiver.script(Reply(500, b"busy"), Reply(500, b"busy"), Reply(200))
    batch = run_batch(app, api_client)
    with running_consumer(app):
        sent = receiver.wait_for(3)
        wait_for(lambda: deliveries(app)[0].status == DeliveryStatus.DELIVERED)
    assert len({item.webhook_id for item in sent}) == 1
    assert len({item.body for item in sent}) == 1
    for item in sent:
        item.verified(secret)

    log = api_client.get(f"/api/generate/batch/{batch['batchId']}/webhooks").get_json()
    [delivery] = log["deliveries"]
    assert delivery["id"] == sent[0].webhook_id
    assert delivery["status"] == "delivered" and delivery["attempts"] == 3
    assert [attempt["statusCode"] for attempt in delivery["log"]] == [500, 500, 200]
    assert delivery["log"][0]["response"] == "busy"
    assert delivery["deliveredAt"] is not None


def test_410_disables_the_endpoint_and_nothing_more_is_sent_to_it(
    app, api_client, user, receiver
):
    endpoint_for(app, user[0], f"{receiver.url}/hooks")
    receiver.script(Reply(410, b"gone"))
    run_batch(app, api_client)
    with running_consumer(app):
        receiver.wait_for(1)
        wait_for(lambda: deliveries(app)[0].status == DeliveryStatus.FAILED)
    with app.app_context():
        endpoint = db.session.scalar(select(WebhookEndpoint))
        assert endpoint.disabled_at is not None and "410" in endpoint.disabled_reason
    run_batch(app, api_client)
    assert len(deliveries(app)) == 1
    assert len(receiver.received) == 1


def test_a_redirect_is_not_followed_and_retry_after_is_honoured(app, api_client, user, receiver):
    endpoint_for(app, user[0], f"{receiver.url}/hooks")
    receiver.script(
        Reply(302, b"", {"Location": f"{receiver.url}/elsewhere"}),
        Reply(503, b"x" * 5000, {"Retry-After": "120"}),
    )
    run_batch(app, api_client)
    with running_consumer(app):
        receiver.wait_for(2)
        wait_for(lambda: deliveries(app)[0].attempts == 2)
    [delivery] = deliveries(app)
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.next_attempt_at >= utcnow() + timedelta(seconds=110)
    assert [item.path for item in receiver.received] == ["/hooks", "/hooks"]
    log = ApiClient(app, *user).get(f"/api/generate/batch/{delivery.batch_id}/webhooks")
    first, second = log.get_json()["deliveries"][0]["log"]
    assert "redirects are not followed" in first["error"]
    assert len(second["response"]) == 1024


def test_the_schedule_ends_failed_and_redeliver_sends_the_same_message_again(
    app, api_client, user, receiver, tmp_path
):
    endpoint_for(app, user[0], f"{receiver.url}/hooks")
    receiver.script(*[Reply(500)] * 4)
    run_batch(app, api_client)
    with running_consumer(app):
        receiver.wait_for(4)
        wait_for(lambda: deliveries(app)[0].status == DeliveryStatus.FAILED)
    [delivery] = deliveries(app)
    assert delivery.attempts == 4

    other = ApiClient(app, *create_user(app, name="bob"))
    assert other.post(f"/api/webhooks/deliveries/{delivery.id}/redeliver").status_code == 404
    answer = api_client.post(f"/api/webhooks/deliveries/{delivery.id}/redeliver")
    assert answer.status_code == 202 and answer.get_json()["status"] == "pending"
    with running_consumer(app):
        sent = receiver.wait_for(5)
        wait_for(lambda: deliveries(app)[0].status == DeliveryStatus.DELIVERED)
    assert {item.webhook_id for item in sent} == {delivery.id}


def test_a_pending_delivery_is_not_sent_once_the_endpoint_is_changed(
    app, api_client, user, receiver
):
    endpoint_for(app, user[0], f"{receiver.url}/hooks")
    receiver.script(Reply(500))
    run_batch(app, api_client)
    with running_consumer(app):
        receiver.wait_for(1)
        wait_for(lambda: deliveries(app)[0].attempts == 1)
        endpoint_for(app, user[0], f"{receiver.url}/new-hooks")
        wait_for(lambda: deliveries(app)[0].status == DeliveryStatus.FAILED)
    assert deliveries(app)[0].last_error == "the endpoint was changed or removed since"
    assert [item.path for item in receiver.received] == ["/hooks"]


def test_a_rotated_secret_signs_beside_the_new_one(app, api_client, user, receiver):
    old = endpoint_for(app, user[0], f"{receiver.url}/hooks")
    with app.app_context():
        new = webhook_endpoints.rotate_secret(user[0])
    assert new != old and new.startswith("whsec_")
    run_batch(app, api_client)
    with running_consumer(app):
        [item] = receiver.wait_for(1)
    assert len(item.headers["webhook-signature"].split(" ")) == 2
    item.verified(old, new)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.2/hook",
        "http://[::1]/hook",
        "http://0.0.0.0/hook",
        "ftp://127.0.0.1/hook",
        "http://localhost/hook",  # a name that resolves to loopback
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "not a url",
    ],
)
def test_a_callback_url_into_our_own_network_is_refused_and_nothing_is_charged(
    app, api_client, user, url
):
    endpoint_for(app, user[0])
    answer = api_client.post("/api/generate/batch", json=batch_body(2, callbackUrl=url))
    assert answer.status_code == 400, answer.get_json()
    assert answer.get_json()["field"] == "callbackUrl"
    assert api_client.balance() == 100


def test_a_callback_url_needs_a_signing_secret_first(app, api_client, receiver):
    answer = api_client.post(
        "/api/generate/batch", json=batch_body(2, callbackUrl=f"{receiver.url}/hook")
    )
    assert answer.status_code == 400
    assert "signing secret" in answer.get_json()["error"]
    assert api_client.balance() == 100


def test_the_guard_runs_again_at_delivery_time(app, api_client, user, receiver):
    endpoint_for(app, user[0], f"{receiver.url}/hooks")
    app.config["WEBHOOK_ALLOW_HOSTS"] = ""  # as if the name now resolved to our network
    run_batch(app, api_client)
    with running_consumer(app):
        wait_for(lambda: deliveries(app)[0].attempts >= 1)
    [delivery] = deliveries(app)
    assert "private or reserved address" in delivery.last_error
    assert receiver.received == []


def test_another_users_batch_log_is_not_found(app, api_client, user):
    batch = api_client.post("/api/generate/batch", json=batch_body(1)).get_json()
    other = ApiClient(app, *create_user(app, name="bob"))
    answer = other.get(f"/api/generate/batch/{batch['batchId']}/webhooks")
    assert answer.status_code == 404
    assert api_client.get(f"/api/generate/batch/{batch['batchId']}/webhooks").get_json() == {
        "batchId": batch["batchId"],
        "deliveries": [],
    }
