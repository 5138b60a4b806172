"""The queue's Redis down under the web: a route that rings the queue answers 503 with
Retry-After (an outage, never a 500), and what it committed before ringing stays.

Found by the chaos run (tests/engine/test_chaos.py): while its Redis restarted, kie's callbacks
were answered 500 "unhandled error"."""

from sqlalchemy import select

from tests.support import ApiClient, claim_next_image, create_batch_id, create_user, free_port
from tests.support import make_app as build_app
from webapp.extensions import db
from webapp.generation import claims, outcomes
from webapp.models import Generation
from webapp.providers import Submitted
from webapp.providers.kie.callbacks import attempt_query
from webapp.storage import get_storage

CALLBACK = "/api/callbacks/kie"


def _app(tmp_path, database_url):
    """A kie app whose queue is a Redis that nobody serves (a free port of 127.0.0.1)."""
    return build_app(
        tmp_path,
        database_url,
        GENERATION_BACKEND="kie",
        KIE_API_KEY="test-key",
        KIE_API_BASE="https://api.kie.test",
        KIE_UPLOAD_BASE="https://upload.kie.test",
        PUBLIC_BASE_URL="https://img.example.com",
        HUEY_MEMORY=False,
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )


def _task_of(app, generation_id):
    with app.app_context():
        task = db.session.scalar(
            select(Generation.provider_task_id).where(Generation.id == generation_id)
        )
        db.session.rollback()
        return task


def _callback(app, task_id, query=None):
    return app.test_client().post(
        CALLBACK, query_string=query or {}, json={"code": 200, "data": {"taskId": task_id}}
    )


def test_a_callback_while_the_queue_is_down_is_a_503_and_keeps_the_task_it_named(
    tmp_path, database_url
):
    app = _app(tmp_path, database_url)
    client = ApiClient(app, *create_user(app))
    batch_id = create_batch_id(client, 1)  # committed; the reaper would start it
    claim = claim_next_image(app, batch_id)  # its create is on its way, its answer to be lost
    generation_id = claim.generation.id
    query = attempt_query(app.config["SECRET_KEY"], generation_id, claim.token, "jobs")

    answer = _callback(app, "kie-task-1", query)

    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert "queue cannot be reached" in answer.get_json()["error"]
    assert _task_of(app, generation_id) == "jobs:kie-task-1"  # kie's retry finds it waiting


def test_a_callback_for_a_submitted_image_while_the_queue_is_down_is_a_503(
    tmp_path, database_url
):
    app = _app(tmp_path, database_url)
    client = ApiClient(app, *create_user(app))
    batch_id = create_batch_id(client, 1)
    claim = claim_next_image(app, batch_id)
    with app.app_context():
        settings = claims.Settings.from_config(app.config)
        assert outcomes.record_outcome(claim, Submitted("jobs:kie-task-2"), get_storage(), settings)

    answer = _callback(app, "kie-task-2")
    unknown = _callback(app, "not-ours")  # rings nothing, so the queue does not matter

    assert answer.status_code == 503
    assert answer.get_json()["error"].startswith("The service is briefly unavailable")
    assert unknown.status_code == 200 and unknown.get_json()["polling"] is False
