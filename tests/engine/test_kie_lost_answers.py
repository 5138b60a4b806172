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
        # Each lost answer spends an attempt of its image, and on a busy machine one image can
        # meet several of them in a row: with more attempts than lost answers, none gives up.
        app = kie_app(
            stub,
            MAX_CONCURRENCY=8,
            RETRY_BASE_SECONDS=0.05,
            RETRY_CAP_SECONDS=0.1,
            MAX_ATTEMPTS=len(LOST) + 1,
        )
        client = ApiClient(app, *create_user(app, credits=1000))
        with running_consumer(app, workers=4):
            batch_id = create_batch_id(client, IMAGES, concurrency=8)
            detail = wait_for(batch_finished(client, batch_id), timeout=60)
        lost, created = stub.counts["lost_answer"], len(stub.created)

    assert lost == len(LOST)
    failed = [(r["errorCode"], r["error"], r["attempts"]) for r in detail["results"] if r["error"]]
    assert detail["status"] == "completed", failed
    assert created == IMAGES + lost  # every lost answer cost one more upstream task


def _callback(app, query, task_id="kie-task-1"):
    return app.test_client().post(
        "/api/callbacks/kie", query_string=query, json={"code": 200, "data": {"taskId": task_id}}
    )


def _task_of(app, generation_id):
    from webapp.extensions import db
    from webapp.models import Generation

    with app.app_context():
        return db.session.get(Generation, generation_id).provider_task_id


def test_a_callback_before_the_creates_answer_names_the_task_and_is_not_overwritten(kie_app):
    from tests.support import claim_next_image
    from webapp.generation import claims, outcomes
    from webapp.providers import Submitted
    from webapp.providers.kie.callbacks import attempt_query
    from webapp.storage import get_storage

    with KieStub() as stub:
        app = kie_app(stub, PUBLIC_BASE_URL="https://img.example.com")
        client = ApiClient(app, *create_user(app))
        batch_id = create_batch_id(client, 1)
        claim = claim_next_image(app, batch_id)  # the create is on its way: no task id yet
        generation_id, secret = claim.generation.id, app.config["SECRET_KEY"]

        forged = _callback(app, attempt_query("not-our-key", generation_id, claim.token, "jobs"))
        stale = _callback(app, attempt_query(secret, generation_id, "an-older-lease", "jobs"))
        assert _task_of(app, generation_id) is None
        answer = _callback(app, attempt_query(secret, generation_id, claim.token, "jobs"))
        named = _task_of(app, generation_id)
        with app.app_context():  # then the create's answer is lost after all
            overwritten = outcomes.record_outcome(
                claim,
                Submitted("unconfirmed:jobs", confirmed=False),
                get_storage(),
                claims.Settings.from_config(app.config),
            )

    assert forged.get_json()["polling"] is False
    assert stale.get_json()["polling"] is False
    assert answer.status_code == 200 and answer.get_json()["polling"] is True
    assert named == "jobs:kie-task-1"
    assert overwritten is False
    assert _task_of(app, generation_id) == "jobs:kie-task-1"
