"""A pending image its batch holds back says so: `batch_paused` in a paused batch,
`awaiting_approval` past the canary of a batch not yet approved; no place in a queue it is not
in, and the queue's reason again once the hold ends. Alike in the batch's detail (ORM rows), the
status poll (the Core read, presenters.RESULT_COLUMNS), the batch page and the event stream
(generation/live.py's join)."""

import json
import re

import pytest
import requests
from sqlalchemy import update

from tests.support import (
    ApiClient,
    create_batch_jobs,
    create_user,
    drain,
    free_port,
    make_app,
    read_sse,
    serving,
    signed_in_browser,
    wait_for,
    work_next_image,
)
from webapp.api.event_hub import hub_of
from webapp.extensions import db
from webapp.generation import reasons
from webapp.models import Generation, utcnow
from webapp.providers import Failed

PRICE = 3  # flux-2 at 1k
PAUSED_WORDS = "Waits: the batch is paused; resume it to go on."


def detail(client, batch_id):
    answer = client.get(f"/api/generate/batch/{batch_id}")
    assert answer.status_code == 200
    return answer.get_json()


def codes(results):
    return [result["reason"]["code"] for result in results]


def polled(client, job_ids):
    answer = client.get("/api/generate/batch?jobIds=" + ",".join(job_ids))
    assert answer.status_code == 200
    return answer.get_json()["results"]


def assert_poll_agrees(client, batch_id, job_ids):
    """The Core read (hold by correlated subquery) answers as the detail (hold from the ORM
    batch) does."""
    assert [r["reason"] for r in polled(client, job_ids)] == [
        r["reason"] for r in detail(client, batch_id)["results"]
    ]


def test_a_paused_batchs_pending_images_say_paused_until_it_is_resumed(app, api_client):
    batch_id, job_ids = create_batch_jobs(api_client, 3, concurrency=1)
    work_next_image(app, batch_id)  # the first is done; the other two wait

    assert api_client.post(f"/api/generate/batch/{batch_id}/pause").status_code == 200
    results = detail(api_client, batch_id)["results"]

    assert codes(results) == ["done", "batch_paused", "batch_paused"]
    assert results[1]["reason"] == {"code": "batch_paused", "message": PAUSED_WORDS}
    assert_poll_agrees(api_client, batch_id, job_ids)

    assert api_client.post(f"/api/generate/batch/{batch_id}/resume").status_code == 200
    resumed = detail(api_client, batch_id)["results"]
    assert codes(resumed) == ["done", "queued", "queued"]
    assert [r["reason"].get("place") for r in resumed] == [None, 1, 2]
    assert_poll_agrees(api_client, batch_id, job_ids)
    drain(app)
    assert detail(api_client, batch_id)["status"] == "completed"
    assert api_client.balance() == 100 - 3 * PRICE


def test_a_paused_image_that_would_retry_says_paused_not_when_it_retries(app, api_client):
    """A paused batch claims nothing, so a retry's nextTryAt would be untrue."""
    batch_id, job_ids = create_batch_jobs(api_client, 2, concurrency=1)
    with app.app_context():
        db.session.execute(
            update(Generation)
            .where(Generation.id == job_ids[0])
            .values(attempts=1, error_code="generation_failed", not_before=utcnow())
        )
        db.session.commit()
    assert codes(detail(api_client, batch_id)["results"]) == ["retrying", "queued"]

    api_client.post(f"/api/generate/batch/{batch_id}/pause")

    assert codes(detail(api_client, batch_id)["results"]) == ["batch_paused", "batch_paused"]
    assert_poll_agrees(api_client, batch_id, job_ids)


def test_images_past_the_canary_await_approval_then_queue_once_approved(app, api_client):
    batch_id, job_ids = create_batch_jobs(api_client, 4, canary=2, concurrency=1)

    before = detail(api_client, batch_id)["results"]
    assert codes(before) == ["queued", "queued", "awaiting_approval", "awaiting_approval"]
    # The canary's images are the only ones in line: the held ones are behind nothing.
    assert [r["reason"].get("place") for r in before] == [1, 2, None, None]
    held = before[2]["reason"]
    assert set(held) == {"code", "message"}
    assert held["message"].startswith("Waits for your approval of the first 2 images")
    assert_poll_agrees(api_client, batch_id, job_ids)

    drain(app)  # the canary runs; the batch waits
    waiting = detail(api_client, batch_id)
    assert waiting["status"] == "awaiting_approval"
    assert codes(waiting["results"]) == ["done", "done", "awaiting_approval", "awaiting_approval"]
    assert_poll_agrees(api_client, batch_id, job_ids)

    assert api_client.post(f"/api/generate/batch/{batch_id}/approve").status_code == 200
    approved = detail(api_client, batch_id)["results"]
    assert codes(approved) == ["done", "done", "queued", "queued"]
    assert [r["reason"].get("place") for r in approved] == [None, None, 1, 2]
    drain(app)
    assert codes(detail(api_client, batch_id)["results"]) == ["done"] * 4
    assert api_client.balance() == 100 - 4 * PRICE


def test_a_rejected_canary_leaves_terminal_reasons_and_a_failed_canary_image_its_own(
    app, api_client
):
    batch_id, job_ids = create_batch_jobs(api_client, 3, canary=2, concurrency=1)
    work_next_image(app, batch_id)
    work_next_image(app, batch_id, Failed("generation_failed", "no image", retryable=False))
    drain(app)
    waiting = detail(api_client, batch_id)
    assert waiting["status"] == "awaiting_approval"
    assert codes(waiting["results"]) == ["done", "failed", "awaiting_approval"]
    assert waiting["results"][2]["reason"]["message"].startswith(
        "Waits for your approval of the first 2 images"
    )

    assert api_client.post(f"/api/generate/batch/{batch_id}/reject").status_code == 200

    rejected = detail(api_client, batch_id)["results"]
    assert codes(rejected) == ["done", "failed", "cancelled"]
    assert [r["refunded"] for r in rejected] == [0, PRICE, PRICE]
    assert_poll_agrees(api_client, batch_id, job_ids)
    assert api_client.balance() == 100 - PRICE


def test_a_canary_of_one_and_a_paused_canary_batch(app, api_client):
    """One canary image is "the first image"; a pause comes before the canary's hold."""
    batch_id, job_ids = create_batch_jobs(api_client, 3, canary=1, concurrency=1)
    message = detail(api_client, batch_id)["results"][1]["reason"]["message"]
    assert message.startswith("Waits for your approval of the first image:")

    api_client.post(f"/api/generate/batch/{batch_id}/pause")

    assert codes(detail(api_client, batch_id)["results"]) == ["batch_paused"] * 3
    assert_poll_agrees(api_client, batch_id, job_ids)


def test_the_batch_page_gives_a_held_image_no_place_in_the_queue(app, api_client):
    batch_id, _ = create_batch_jobs(api_client, 3, concurrency=1)
    browser = signed_in_browser(app, api_client.token)
    page = browser.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert re.findall(r'data-place="(\d+)"', page) == ["1", "2", "3"]

    api_client.post(f"/api/generate/batch/{batch_id}/pause")

    paused = browser.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert "data-place" not in paused and "in the queue" not in paused
    assert paused.count(PAUSED_WORDS) == 3


def read_events(lines, count):
    """The next `count` events of an open stream's lines, as (name, data)."""
    return [(fields["event"], json.loads(fields["data"])) for fields in read_sse(lines, count)]


@pytest.mark.parametrize("held", ["paused", "canary"])
def test_the_event_stream_tells_the_hold_as_the_detail_does(tmp_path, database_url, held):
    """The stream's rows come from a query that joins the batch (live.changed_since); the hold's
    subquery is its own, correlated to the image alone."""
    # A short keep-alive: the stream left behind notices its reader is gone, and leaves.
    app = make_app(tmp_path, database_url, EVENTS_KEEPALIVE_SECONDS=0.2)
    alice = ApiClient(app, *create_user(app))
    fields = {"canary": 1} if held == "canary" else {}
    batch_id, _ = create_batch_jobs(alice, 3, concurrency=1, **fields)
    if held == "paused":
        alice.post(f"/api/generate/batch/{batch_id}/pause")
    expected = detail(alice, batch_id)["results"]
    port = free_port()
    with serving(app, port):
        response = requests.get(
            f"http://127.0.0.1:{port}/api/generate/batch/{batch_id}/events",
            headers={"Authorization": f"Bearer {alice.token}"},
            stream=True,
            timeout=30,
        )
        assert response.status_code == 200
        events = read_events(response.iter_lines(decode_unicode=True), 4)
        response.close()
        # No watch left: the hub reads nothing more (before the test's schema is dropped).
        assert wait_for(lambda: not hub_of(app).watches, timeout=10)

    assert [name for name, _ in events] == ["generation"] * 3 + ["summary"]
    streamed = [data["reason"] for _, data in events[:3]]
    assert streamed == [result["reason"] for result in expected]
    wanted = {"paused": ["batch_paused"] * 3, "canary": ["queued"] + ["awaiting_approval"] * 2}
    assert [reason["code"] for reason in streamed] == wanted[held]


def test_an_open_stream_sends_the_waiting_images_again_when_their_batch_is_paused(
    tmp_path, database_url
):
    """A pause gives the waiting images the batch's new version (webapp/versions.py), so a
    stream opened before it sends each of them again, with the hold's reason, and then the
    summary; the resume sends them again as queued."""
    app = make_app(tmp_path, database_url, EVENTS_KEEPALIVE_SECONDS=0.2)
    alice = ApiClient(app, *create_user(app))
    batch_id, _ = create_batch_jobs(alice, 3, concurrency=1)
    port = free_port()
    with serving(app, port):
        response = requests.get(
            f"http://127.0.0.1:{port}/api/generate/batch/{batch_id}/events",
            headers={"Authorization": f"Bearer {alice.token}"},
            stream=True,
            timeout=30,
        )
        assert response.status_code == 200
        lines = response.iter_lines(decode_unicode=True)
        first = read_events(lines, 4)  # the three images and the summary, before the pause
        alice.post(f"/api/generate/batch/{batch_id}/pause")
        paused = read_events(lines, 4)
        alice.post(f"/api/generate/batch/{batch_id}/resume")
        resumed = read_events(lines, 4)
        response.close()
        assert wait_for(lambda: not hub_of(app).watches, timeout=10)

    for events, code in ((first, "queued"), (paused, "batch_paused"), (resumed, "queued")):
        assert [name for name, _ in events] == ["generation"] * 3 + ["summary"]
        assert [data["reason"]["code"] for _, data in events[:3]] == [code] * 3


def test_the_hold_of_a_row_matches_the_hold_of_its_batch(app, api_client):
    """reasons.HELD (SQL, the poll's and the stream's rows) and reasons.held_of (Python, the
    ORM's) agree, state by state: 0 paused, the canary past it before approval, else null."""
    from sqlalchemy import select

    from webapp.models import Batch

    batch_id, _ = create_batch_jobs(api_client, 3, canary=2, concurrency=1)
    states = [
        ({"status": "queued"}, [None, None, 2]),
        ({"status": "paused"}, [0, 0, 0]),
        ({"status": "running"}, [None, None, 2]),
        ({"status": "awaiting_approval"}, [2, 2, 2]),
        ({"status": "running", "approved_at": utcnow()}, [None, None, None]),
        ({"status": "running", "canary": None, "approved_at": None}, [None, None, None]),
        ({"status": "paused"}, [0, 0, 0]),
    ]
    with app.app_context():
        for values, expected in states:
            db.session.execute(update(Batch).where(Batch.id == batch_id).values(**values))
            db.session.commit()
            rows = db.session.execute(
                select(Generation.position, reasons.HELD)
                .where(Generation.batch_id == batch_id)
                .order_by(Generation.position)
            ).all()
            batch = db.session.get(Batch, batch_id)
            assert [row.held for row in rows] == expected, values
            assert [reasons.held_of(batch, row.position) for row in rows] == expected, values
            db.session.expire_all()
