"""Lost create answers end to end: the stub kie.ai accepts a fifth of the creates and drops the
connection before answering. With callbacks, each image is still one upstream task: the
callback names the task of the attempt whose answer was lost."""

import pytest

from devtools.kie_stub import KieStub
from tests.support import (
    ApiClient,
    batch_finished,
    create_batch_id,
    create_user,
    free_port,
    running_consumer,
    serving,
    wait_for,
)

IMAGES = 20
LOST = (2, 5, 9, 14)  # the accepted creates whose answers the stub drops: a fifth

pytestmark = pytest.mark.e2e


def test_with_callbacks_every_image_is_one_upstream_task_though_a_fifth_of_answers_are_lost(
    kie_app,
):
    with KieStub(latency=0.5, polls_until_done=10**9, lost_answers=LOST) as stub:
        port = free_port()
        app = kie_app(
            stub, PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", POLL_DELAYS=(0.5,), MAX_CONCURRENCY=8
        )
        client = ApiClient(app, *create_user(app, credits=1000))
        with serving(app, port), running_consumer(app, workers=4):
            batch_id = create_batch_id(client, IMAGES, concurrency=8)
            detail = wait_for(batch_finished(client, batch_id), timeout=60)
        lost, created = stub.counts["lost_answer"], len(stub.created)

    assert lost == len(LOST)
    assert detail["status"] == "completed"
    assert created == IMAGES  # 1.00 upstream task per image
    assert client.ledger() == [("grant", 1000), ("batch_debit", -IMAGES * 3)]


def test_without_callbacks_a_lost_answer_is_created_again(kie_app):
    """No PUBLIC_BASE_URL, so nothing can name a lost task: the image is created again, and
    the lost task is paid for upstream. This is what callbacks save."""
    with KieStub(latency=0.2, polls_until_done=1, lost_answers=LOST) as stub:
        app = kie_app(stub, MAX_CONCURRENCY=8, RETRY_BASE_SECONDS=0.05, RETRY_CAP_SECONDS=0.1)
        client = ApiClient(app, *create_user(app, credits=1000))
        with running_consumer(app, workers=4):
            batch_id = create_batch_id(client, IMAGES, concurrency=8)
            detail = wait_for(batch_finished(client, batch_id), timeout=60)
        lost, created = stub.counts["lost_answer"], len(stub.created)

    assert lost == len(LOST)
    assert detail["status"] == "completed"
    assert created == IMAGES + lost  # every lost answer cost one more upstream task
