"""Nothing announced is lost: a consumer killed with kill -9 after the commit that wrote a
delivery, while the receiver has the request but has not answered, and a queue emptied
before the delivery was rung. Real `huey_consumer` processes on Redis; a real receiver."""

import threading

import pytest
from sqlalchemy import select

from tests.consumers import ConsumerProcess, queue_name
from tests.receiver import Reply, receiving
from tests.support import (
    ApiClient,
    batch_finished,
    create_batch_id,
    create_user,
    make_app,
    running_consumer,
    wait_for,
)
from webapp.extensions import db
from webapp.generation import webhook_endpoints
from webapp.models import DeliveryStatus, WebhookDelivery

# Each attempt times out after 1 s, so a lease runs out 4 s after its sender died; the reaper
# looks every second.
SETTINGS = {
    "WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    "WEBHOOK_TIMEOUT_SECONDS": 1,
    "REAP_SECONDS": 1,
    "STALL_SECONDS": 2,
    "LEASE_SECONDS": 4,
}

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


@pytest.fixture
def redis_app(tmp_path, database_url, redis_url):
    return make_app(
        tmp_path,
        database_url,
        HUEY_MEMORY=False,
        REDIS_URL=redis_url,
        HUEY_NAME=queue_name(),
        WEBHOOK_ALLOW_HOSTS="127.0.0.1",
    )


def _the_delivery(app):
    with app.app_context():
        return db.session.scalars(select(WebhookDelivery)).one()


def _client_with_endpoint(app, url):
    user_id, token = create_user(app)
    with app.app_context():
        secret = webhook_endpoints.set_endpoint(user_id, url).new_secret
    return ApiClient(app, user_id, token), secret


def test_a_consumer_killed_mid_delivery_still_delivers_under_the_same_id(redis_app, tmp_path):
    with receiving() as receiver:
        client, secret = _client_with_endpoint(redis_app, f"{receiver.url}/hooks")
        held = threading.Event()
        receiver.script(Reply(200, hold=held))
        consumer = ConsumerProcess(redis_app, tmp_path / "consumer.log", **SETTINGS)
        with consumer:
            consumer.start("thread", workers=2)
            batch_id = create_batch_id(client, 2)
            [first] = receiver.wait_for(1, timeout=60)
            consumer.kill_9()  # the delivery is committed and in flight, its answer unread
            held.set()
            assert _the_delivery(redis_app).status == DeliveryStatus.PENDING

            consumer.start("thread", workers=2)
            sent = receiver.wait_for(2, timeout=60)
            wait_for(lambda: _the_delivery(redis_app).status == DeliveryStatus.DELIVERED)
        assert wait_for(batch_finished(client, batch_id))["status"] == "completed"

    assert {item.webhook_id for item in sent} == {first.webhook_id}
    assert sent[1].body == first.body
    assert sent[1].verified(secret)["type"] == "batch.completed"


def test_a_delivery_whose_ring_failed_after_commit_is_sent_by_the_reaper(
    tmp_path, database_url, redis_url
):
    # The web process cancels a batch (nothing was running, so it is finished at once and
    # announced in the cancel's commit), then cannot reach Redis to ring the delivery.
    web = make_app(
        tmp_path,
        database_url,
        HUEY_MEMORY=False,
        REDIS_URL="redis://127.0.0.1:1/0",
        HUEY_NAME=queue_name(),
        WEBHOOK_ALLOW_HOSTS="127.0.0.1",
    )
    with receiving() as receiver:
        client, secret = _client_with_endpoint(web, f"{receiver.url}/hooks")
        batch_id = create_batch_id(client, 2)
        assert client.post(f"/api/generate/batch/{batch_id}/cancel").status_code == 200
        assert _the_delivery(web).status == DeliveryStatus.PENDING

        worker = make_app(
            tmp_path / "worker",
            database_url,
            HUEY_MEMORY=False,
            REDIS_URL=redis_url,
            HUEY_NAME=queue_name(),
            REAP_SECONDS=1,
            WEBHOOK_ALLOW_HOSTS="127.0.0.1",
        )
        with running_consumer(worker, workers=2, periodic=True):
            [sent] = receiver.wait_for(1, timeout=60)
            wait_for(lambda: _the_delivery(web).status == DeliveryStatus.DELIVERED)

    event = sent.verified(secret)
    assert event["type"] == "batch.cancelled"
    assert event["data"]["batchId"] == batch_id and event["data"]["refunded"] == 6
    assert [result["status"] for result in event["data"]["results"]] == ["cancelled"] * 2
    assert client.balance() == 100
