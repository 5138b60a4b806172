"""POST /api/callbacks/kie: a kie callback only makes us poll now. It is verified when a webhook
key is set, accepts the task id in all three forms, and a duplicate changes nothing. kie.ai
itself is mocked with `responses`."""

import base64
import hashlib
import hmac
import time

import pytest

from tasks import get_queue
from tests.support import ApiClient, batch_body, create_user, drain, generation_rows, make_app
from tests.unit.kie_mocks import (
    API,
    KEY,
    RECORD,
    RESULT_URL,
    UPLOAD,
    add_created,
    add_record,
    add_result,
)
from tests.unit.kie_mocks import add_upload as add_kie_upload
from webapp.providers.kie.callbacks import callback_task_id

CALLBACK = "/api/callbacks/kie"
WEBHOOK_KEY = "whk-test"
PRICE = 3  # flux-2 at 1k


@pytest.fixture
def submitted(tmp_path, database_url, kie_mock):
    """An app on the kie engine with one batch image submitted as kie task "task-1" (its
    scheduled polls not yet due); answers (app, client, batch id)."""

    def build(**overrides):
        app = make_app(
            tmp_path,
            database_url,
            GENERATION_BACKEND="kie",
            KIE_API_KEY=KEY,
            KIE_API_BASE=API,
            KIE_UPLOAD_BASE=UPLOAD,
            **overrides,
        )
        client = ApiClient(app, *create_user(app))
        add_kie_upload(kie_mock)
        add_created(kie_mock, task_id="task-1")
        batch_id = client.post("/api/generate/batch", json=batch_body(1)).get_json()["batchId"]
        drain(app)
        [row] = generation_rows(app, batch_id)
        assert row["status"] == "processing"
        return app, client, batch_id

    return build


def sign(task_id, timestamp, key=WEBHOOK_KEY):
    digest = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    signature = base64.b64encode(digest).decode()
    return {"X-Webhook-Timestamp": str(timestamp), "X-Webhook-Signature": signature}


def finished_record():
    return {"taskId": "task-1", "state": "success", "resultJson": {"resultUrls": [RESULT_URL]}}


def queued(app):
    return get_queue(app).huey.pending_count()


@pytest.mark.parametrize(
    "body",
    [
        {"code": 200, "data": {"taskId": "task-1", "state": "success"}},
        {"code": 200, "data": {"task_id": "task-1", "state": "success"}},
        {"code": 200, "taskId": "task-1", "data": {"state": "success"}},
    ],
    ids=["data.taskId", "data.task_id", "taskId"],
)
def test_a_callback_polls_the_waiting_image_at_once_and_it_completes(submitted, kie_mock, body):
    app, client, batch_id = submitted()
    add_record(kie_mock, finished_record())
    add_result(kie_mock)

    # Neither a token nor a CSRF token: kie.ai calls it.
    response = app.test_client().post(CALLBACK, json=body)

    assert response.status_code == 200
    assert response.get_json() == {"received": True, "taskId": "task-1", "polling": True}
    drain(app)
    [row] = generation_rows(app, batch_id)
    assert (row["status"], row["attempts"]) == ("success", 1)
    assert client.get(f"/api/generate/batch/{batch_id}").get_json()["status"] == "completed"
    assert client.balance() == 100 - PRICE


def test_a_duplicate_callback_changes_nothing(submitted, kie_mock):
    app, client, batch_id = submitted()
    add_record(kie_mock, finished_record())
    add_result(kie_mock)
    http = app.test_client()
    http.post(CALLBACK, json={"data": {"taskId": "task-1"}})
    drain(app)
    calls_before = len(kie_mock.calls)

    again = http.post(CALLBACK, json={"data": {"taskId": "task-1"}})

    assert again.status_code == 200
    assert again.get_json()["polling"] is False
    assert queued(app) == 0
    assert len(kie_mock.calls) == calls_before  # kie was not asked again
    assert [row["status"] for row in generation_rows(app, batch_id)] == ["success"]
    assert client.ledger() == [("grant", 100), ("batch_debit", -PRICE)]


def test_the_callback_body_is_never_taken_for_the_result(submitted, kie_mock):
    app, _, batch_id = submitted()
    # The callback claims success with a URL; kie's own record says it is still generating.
    add_record(kie_mock, {"taskId": "task-1", "state": "generating"})
    body = {"data": {"taskId": "task-1", "state": "success", "resultJson": {"resultUrls": ["x"]}}}
    scheduled_before = len(get_queue(app).huey.scheduled())

    assert app.test_client().post(CALLBACK, json=body).get_json()["polling"] is True
    drain(app)

    assert [row["status"] for row in generation_rows(app, batch_id)] == ["processing"]
    assert [call.request.url.split("?")[0] for call in kie_mock.calls[-1:]] == [RECORD]
    # The poll the callback rang did not start a second chain beside the scheduled one.
    assert len(get_queue(app).huey.scheduled()) == scheduled_before


def test_a_callback_for_an_unknown_task_answers_200_and_polls_nothing(submitted):
    app, _, batch_id = submitted()

    response = app.test_client().post(CALLBACK, json={"data": {"taskId": "someone-elses"}})

    assert response.status_code == 200
    assert response.get_json()["polling"] is False
    assert queued(app) == 0
    assert [row["status"] for row in generation_rows(app, batch_id)] == ["processing"]


@pytest.mark.parametrize("body", [{"code": 200, "data": {}}, {"data": None}, [], "task-1"])
def test_a_callback_that_names_no_task_is_a_json_400(submitted, body):
    app, _, _ = submitted()

    response = app.test_client().post(CALLBACK, json=body)

    assert response.status_code == 400
    assert "task" in response.get_json()["error"]


def test_a_validly_signed_callback_is_accepted_when_a_webhook_key_is_set(submitted, kie_mock):
    app, _, batch_id = submitted(KIE_WEBHOOK_HMAC_KEY=WEBHOOK_KEY)
    add_record(kie_mock, finished_record())
    add_result(kie_mock)

    response = app.test_client().post(
        CALLBACK, json={"data": {"taskId": "task-1"}}, headers=sign("task-1", int(time.time()))
    )

    assert response.status_code == 200 and response.get_json()["polling"] is True
    drain(app)
    assert [row["status"] for row in generation_rows(app, batch_id)] == ["success"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        sign("task-1", int(time.time()), key="another-key"),
        sign("another-task", int(time.time())),
        sign("task-1", int(time.time()) - 3600),
        {"X-Webhook-Timestamp": "soon", "X-Webhook-Signature": "x"},
    ],
    ids=["unsigned", "wrong-key", "other-task", "replayed-an-hour-later", "garbage"],
)
def test_a_badly_signed_callback_is_a_json_401_and_polls_nothing(submitted, headers):
    app, _, batch_id = submitted(KIE_WEBHOOK_HMAC_KEY=WEBHOOK_KEY)

    body = {"data": {"taskId": "task-1"}}
    response = app.test_client().post(CALLBACK, json=body, headers=headers)

    assert response.status_code == 401
    assert "signature" in response.get_json()["error"]
    assert queued(app) == 0
    assert [row["status"] for row in generation_rows(app, batch_id)] == ["processing"]


def test_the_task_id_is_read_in_the_order_kie_api_md_names_the_forms():
    assert callback_task_id({"data": {"taskId": " a ", "task_id": "b"}, "taskId": "c"}) == "a"
    assert callback_task_id({"data": {"task_id": "b"}, "taskId": "c"}) == "b"
    assert callback_task_id({"data": "x", "taskId": "c"}) == "c"
    assert callback_task_id({"data": {"taskId": 42}}) is None
