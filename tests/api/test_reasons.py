"""Every entry of `results` says why the image is where it is: its attempts, what it was
charged and refunded, and a `reason` (a code, words for people, and what the code adds), each
produced by driving the engine: the local one, and kie.ai mocked with `responses`."""

import re
import time
from datetime import timedelta

import pytest
import responses
from sqlalchemy import event, select

from tests.support import (
    ApiClient,
    claim_next_image,
    create_batch_id,
    create_batch_jobs,
    create_user,
    drain,
    finish_claim,
    make_app,
    photo_body,
    work_next_image,
)
from tests.unit.kie_mocks import API, CREATE, KEY, UPLOAD, UPLOAD_URL, add_upload
from webapp.extensions import db
from webapp.generation import claims, reaper, steps
from webapp.models import Generation, utcnow
from webapp.providers import Throttled, get_provider
from webapp.storage import get_storage

PRICE = 3  # flux-2 at 1k
# What a person reads names no engine and no operator's setting.
JARGON = re.compile(r"kie|upstream|lease|KIE_|429|throttl|pacer", re.IGNORECASE)


def results(client, batch_id):
    response = client.get(f"/api/generate/batch/{batch_id}")
    assert response.status_code == 200
    return response.get_json()["results"]


def row_of(app, generation_id):
    with app.app_context():
        row = db.session.get(Generation, generation_id)
        db.session.expunge(row)
        return row


def iso(value):
    return value.isoformat(timespec="milliseconds") + "Z"


def assert_for_people(result):
    reason = result["reason"]
    assert reason["message"] and not JARGON.search(reason["message"]), reason


def test_waiting_images_know_their_place_in_the_queue(app, api_client):
    """The user's two batches share their turns (places.py): the older first, then by images
    in flight."""
    batch_id, job_ids = create_batch_jobs(api_client, 3, concurrency=1)
    other_id = create_batch_id(api_client, 2)

    before = results(api_client, batch_id)
    other_before = results(api_client, other_id)
    claim_next_image(app, batch_id)
    after = results(api_client, batch_id)

    assert [r["reason"]["code"] for r in before] == ["queued"] * 3
    places = [(r["reason"]["place"], r["reason"]["ahead"]) for r in before]
    assert places == [(1, 0), (3, 2), (5, 4)]
    assert [r["reason"]["place"] for r in other_before] == [2, 4]
    assert [(r["attempts"], r["charged"], r["refunded"]) for r in before] == [(0, PRICE, 0)] * 3
    assert before[0]["reason"]["message"].startswith("Next in line")
    assert "4 images are ahead of it (all yours)" in before[2]["reason"]["message"]
    assert [r["reason"]["code"] for r in after] == ["submitted", "queued", "queued"]
    # Its first image is in flight now: the other batch's next one goes first.
    assert [r["reason"].get("place") for r in after] == [None, 2, 4]
    assert after[0]["attempts"] == 1
    assert [r["reason"]["place"] for r in results(api_client, other_id)] == [1, 3]
    for result in before + after + other_before:
        assert_for_people(result)


def count_queries(app, url, client):
    """The statements the database ran for one GET."""
    statements = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert client.get(url).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    return len(statements)


def test_the_places_and_the_eta_cost_a_few_queries_whatever_the_images(app, api_client):
    """The places: each image's rank in its batch and the queue (two grouped queries); the eta
    adds the batch (the status route only), the model's median and the images in flight. None
    of them when nothing is queued; as many for 8 images as for 3."""
    finished_id, finished_jobs = create_batch_jobs(api_client, 3)
    drain(app)
    queued_id, queued_jobs = create_batch_jobs(api_client, 3)
    claim_next_image(app, queued_id)
    more_id, more_jobs = create_batch_jobs(api_client, 8)
    claim_next_image(app, more_id)

    def status_url(jobs):
        return f"/api/generate/batch?jobIds={','.join(jobs)}"

    finished = count_queries(app, status_url(finished_jobs), api_client)
    queued = count_queries(app, status_url(queued_jobs), api_client)
    more = count_queries(app, status_url(more_jobs), api_client)
    mixed = count_queries(app, status_url(finished_jobs + queued_jobs), api_client)

    # Places: ranks, the queue's batches, the users' starts; the eta: batch, median, in flight.
    assert queued == more == finished + 6
    assert mixed == finished + 3  # of no one batch: no eta
    finished_detail = count_queries(app, f"/api/generate/batch/{finished_id}", api_client)
    assert count_queries(app, f"/api/generate/batch/{queued_id}", api_client) == (
        count_queries(app, f"/api/generate/batch/{more_id}", api_client)
    ) == finished_detail + 3  # the detail has its batch, its images in flight and every image
    # of the batch already: the ranks are counted from them (reasons.images_ahead, whole)


def test_a_finished_image_is_done_and_charged(app, api_client):
    batch_id = create_batch_id(api_client, 1)
    claim = claim_next_image(app, batch_id)
    submitted = results(api_client, batch_id)[0]
    finish_claim(app, claim)
    done = results(api_client, batch_id)[0]

    assert submitted["reason"] == {"code": "submitted", "message": "The image is being made."}
    assert done["status"] == "success" and done["imageUrl"]
    assert done["reason"] == {"code": "done", "message": "The image is ready."}
    assert (done["attempts"], done["charged"], done["refunded"]) == (1, PRICE, 0)


def test_a_cancelled_image_is_refunded_and_a_running_one_still_charged(app, api_client):
    batch_id = create_batch_id(api_client, 2, concurrency=1)
    running = claim_next_image(app, batch_id)

    answer = api_client.post(f"/api/generate/batch/{batch_id}/cancel").get_json()
    finish_claim(app, running)
    later = results(api_client, batch_id)

    cancelled = answer["results"][1]
    assert cancelled["reason"]["code"] == "cancelled" and cancelled["status"] == "cancelled"
    assert (cancelled["attempts"], cancelled["charged"], cancelled["refunded"]) == (0, PRICE, PRICE)
    assert answer["results"][0]["reason"]["code"] == "submitted"
    assert [r["reason"]["code"] for r in later] == ["done", "cancelled"]
    assert sum(r["refunded"] for r in later) == answer["refunded"] == PRICE
    assert api_client.balance() == 100 - PRICE
    assert_for_people(cancelled)


def test_a_photo_waiting_for_its_turn_is_first_in_line(app, api_client):
    response = api_client.post("/api/generate/photo", json=photo_body())
    assert response.status_code == 202
    waiting = response.get_json()
    drain(app)
    done = api_client.get(f"/api/generate/batch?jobIds={waiting['generationId']}").get_json()

    assert waiting["reason"]["code"] == "queued"
    assert (waiting["reason"]["place"], waiting["reason"]["ahead"]) == (1, 0)
    assert (waiting["attempts"], waiting["charged"], waiting["refunded"]) == (0, PRICE, 0)
    assert done["results"][0]["reason"]["code"] == "done"


def test_a_turn_the_pacer_refused_waits_without_counting(app, api_client):
    batch_id, job_ids = create_batch_jobs(api_client, 2, concurrency=1)
    work_next_image(app, batch_id, Throttled(30))

    first, second = results(api_client, batch_id)
    row = row_of(app, job_ids[0])

    assert first["status"] == "pending" and first["attempts"] == 0
    assert first["reason"] == {
        "code": "waiting_for_upstream_slot",
        "message": first["reason"]["message"],
        "nextTryAt": iso(row.not_before),
    }
    assert row.not_before > utcnow() + timedelta(seconds=25)
    assert (second["reason"]["code"], second["reason"]["ahead"]) == ("queued", 1)
    assert_for_people(first)


def test_an_image_whose_worker_vanished_is_retried_when_the_reaper_finds_it(app, api_client):
    batch_id, job_ids = create_batch_jobs(api_client, 1)
    claim_next_image(app, batch_id)
    settings = claims.Settings.from_config(app.config)
    later = utcnow() + timedelta(seconds=settings.lease_seconds + 1)
    with app.app_context():
        report = reaper.reap(settings, app.config["STALL_SECONDS"], get_storage(), now=later)
    assert report.requeued == job_ids

    result = results(api_client, batch_id)[0]

    assert result["attempts"] == 1
    assert result["reason"] == {
        "code": "retrying",
        "message": result["reason"]["message"],
        "attempt": 2,
        "maxAttempts": app.config["MAX_ATTEMPTS"],
        "lastErrorCode": None,
        "nextTryAt": None,
    }
    assert "attempt 2 of 3" in result["reason"]["message"]


# kie.ai, mocked: the create's answers decide each reason.


@pytest.fixture
def kie(tmp_path, database_url):
    """(app, client, mock): an app on the kie engine whose HTTP calls go to `responses`."""
    app = make_app(
        tmp_path,
        database_url,
        GENERATION_BACKEND="kie",
        KIE_API_KEY=KEY,
        KIE_API_BASE=API,
        KIE_UPLOAD_BASE=UPLOAD,
        UPSTREAM_RATE_LIMIT=0,  # unpaced: the mocked answers alone decide
        RETRY_BASE_SECONDS=0.01,
        RETRY_CAP_SECONDS=0.02,
    )
    client = ApiClient(app, *create_user(app))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        add_upload(mock)
        yield app, client, mock


def lane_step(app, batch_id):
    with app.app_context():
        settings = claims.Settings.from_config(app.config)
        return steps.lane_step(batch_id, get_provider(), get_storage(), settings)


def answer_create(mock, *answers):
    """The creates answer these, in turn (the last again for any later one)."""
    mock.remove(responses.POST, CREATE)
    for answer in answers:
        mock.post(CREATE, **answer)


RATE_LIMITED = {"status": 429, "body": "Too Many Requests"}
SERVER_ERROR = {"json": {"code": 500, "msg": "Internal error"}}
NO_CREDITS = {"json": {"code": 402, "msg": "Your balance is insufficient"}}


@pytest.mark.parametrize("answer", [RATE_LIMITED, NO_CREDITS], ids=["429", "account-empty"])
def test_a_create_the_upstream_refused_for_now_waits_for_a_slot(kie, answer):
    app, client, mock = kie
    batch_id, job_ids = create_batch_jobs(client, 1)
    answer_create(mock, answer)

    lane_step(app, batch_id)
    result = results(client, batch_id)[0]
    row = row_of(app, job_ids[0])

    assert (result["status"], result["attempts"], result["errorCode"]) == ("pending", 0, None)
    assert result["reason"]["code"] == "waiting_for_upstream_slot"
    assert result["reason"]["nextTryAt"] == iso(row.not_before)
    assert row.not_before > utcnow()
    assert (result["charged"], result["refunded"]) == (PRICE, 0)
    assert_for_people(result)


def test_a_failed_attempt_is_retried_then_given_up_and_refunded(kie):
    app, client, mock = kie
    batch_id, job_ids = create_batch_jobs(client, 1)
    answer_create(mock, SERVER_ERROR)
    max_attempts = app.config["MAX_ATTEMPTS"]

    seen = []
    for _ in range(max_attempts):
        wait_until_runnable(app, job_ids[0])
        assert lane_step(app, batch_id).worked
        seen.append(results(client, batch_id)[0])
    retrying, gave_up = seen[0], seen[-1]

    row = row_of(app, job_ids[0])
    assert retrying["status"] == "pending" and retrying["attempts"] == 1
    assert {k: v for k, v in retrying["reason"].items() if k not in ("message", "nextTryAt")} == {
        "code": "retrying",
        "attempt": 2,
        "maxAttempts": max_attempts,
        "lastErrorCode": "upstream_error",
    }
    assert retrying["reason"]["nextTryAt"].endswith("Z")
    assert [r["reason"]["attempt"] for r in seen[:-1]] == list(range(2, max_attempts + 1))
    assert gave_up["status"] == "failed" and gave_up["attempts"] == max_attempts == row.attempts
    assert gave_up["reason"] == {
        "code": "failed",
        "message": gave_up["reason"]["message"],
        "errorCode": "upstream_error",
    }
    assert "problem on our side" in gave_up["reason"]["message"]
    assert (gave_up["charged"], gave_up["refunded"]) == (PRICE, PRICE)
    assert client.balance() == 100
    for result in seen:
        assert_for_people(result)


def wait_until_runnable(app, generation_id):
    """Sleep out the image's backoff (a few hundredths of a second here)."""
    with app.app_context():
        not_before = db.session.scalar(
            select(Generation.not_before).where(Generation.id == generation_id)
        )
    if not_before is not None:
        time.sleep(max((not_before - utcnow()).total_seconds(), 0) + 0.01)


def test_a_rate_limit_after_a_failed_attempt_is_a_wait_for_a_slot(kie):
    app, client, mock = kie
    batch_id, job_ids = create_batch_jobs(client, 1)
    answer_create(mock, SERVER_ERROR)
    lane_step(app, batch_id)
    wait_until_runnable(app, job_ids[0])
    answer_create(mock, RATE_LIMITED)

    lane_step(app, batch_id)
    result = results(client, batch_id)[0]

    assert result["attempts"] == 1  # the 429 spent none
    assert result["reason"]["code"] == "waiting_for_upstream_slot"
    assert result["reason"]["nextTryAt"] == iso(row_of(app, job_ids[0]).not_before)


def test_a_refusal_under_the_content_policy_fails_at_once_in_plain_words(kie):
    app, client, mock = kie
    batch_id = create_batch_id(client, 1)
    answer_create(mock, {"json": {"code": 400, "msg": "NSFW content detected"}})

    lane_step(app, batch_id)
    result = results(client, batch_id)[0]

    assert (result["status"], result["attempts"]) == ("failed", 1)
    assert result["reason"]["code"] == "failed"
    assert result["reason"]["errorCode"] == result["errorCode"] == "content_policy"
    assert "content policy" in result["reason"]["message"]
    assert "content policy" in result["error"] and "kie" not in result["error"].lower()
    assert (result["charged"], result["refunded"]) == (PRICE, PRICE)
    assert_for_people(result)
    assert UPLOAD_URL in {call.request.url for call in mock.calls}


def test_ranks_counted_from_a_whole_batch_equal_the_ranks_read(app, api_client):
    """The batch page and the detail count each queued image's rank from the batch's images
    they hold; the status route, which may list some of them, reads it: both agree, with a
    success, an image at the engine and a retry waiting among them."""
    from webapp.generation import reasons
    from webapp.providers import Failed

    batch_id = create_batch_id(api_client, 7, concurrency=1)
    finish_claim(app, claim_next_image(app, batch_id))
    work_next_image(app, batch_id, Failed("upstream_error", "Try again.", True))  # a retry
    claim_next_image(app, batch_id)  # at the engine
    with app.app_context():
        generations = db.session.scalars(
            select(Generation).where(Generation.batch_id == batch_id).order_by(Generation.position)
        ).all()
        queue = reasons.default_queue()
        counted = reasons.images_ahead(generations, lambda: queue, whole=True)
        read = reasons.images_ahead(generations, lambda: queue)
        db.session.rollback()

    assert len(counted) == 4  # the four never tried; the retry waits, but is not "queued"
    assert counted == read
