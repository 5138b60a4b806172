"""End to end through the kie.ai engine: the HTTP API, a SQLite Huey with a consumer, the real
kie client, and a stub kie.ai on 127.0.0.1 (tests/kie_stub.py)."""

import io

import pytest
from PIL import Image
from sqlalchemy import select

from tests.kie_stub import KieStub
from tests.support import (
    ApiClient,
    batch_body,
    batch_finished,
    create_user,
    data_url,
    fetch_result,
    generation_rows,
    image_bytes,
    make_app,
    photo_body,
    running_consumer,
    wait_for,
)
from webapp.catalog import load_catalog
from webapp.extensions import db
from webapp.models import Generation
from webapp.providers import Failed, GenerationRequest, Pending, Submitted
from webapp.providers.kie import KieProvider

PRICE = 3  # flux-2 and nano-banana at 1k, in credits
INPUT_SIZE = (64, 48)  # what tests.support.image_bytes draws
RESULT_SIZE = (128, 96)  # the stub answers the input at twice its size


@pytest.fixture
def kie_app(tmp_path, database_url):
    """Build an app on the kie engine, pointed at a stub (conftest checks its ledger)."""

    def build(stub, **overrides):
        config = {
            "GENERATION_BACKEND": "kie",
            "KIE_API_KEY": "test-key",
            "KIE_API_BASE": stub.base_url,
            "KIE_UPLOAD_BASE": stub.base_url,
            "HUEY_MEMORY": False,
            "POLL_DELAYS": (0.2,),
            **overrides,
        }
        return make_app(tmp_path, database_url, **config)

    return build




def _edit_request(model_id):
    """An image-to-image request for the kie client alone (no app, no queue)."""
    model = load_catalog().get(model_id)
    return GenerationRequest(
        generation_id="gen-1",
        model=model,
        mode="i2i",
        prompt="Add white background",
        negative_prompt=None,
        quality=model.default_quality,
        aspect_ratio=model.default_aspect_ratio,
        input_image=image_bytes(size=INPUT_SIZE),
    )


def _provider_task_ids(app, batch_id):
    with app.app_context():
        return db.session.scalars(
            select(Generation.provider_task_id).where(Generation.batch_id == batch_id)
        ).all()


def _run_batch(app, count):
    """Create a `count`-image batch as a new user and wait until it is finished."""
    client = ApiClient(app, *create_user(app))
    with running_consumer(app, workers=2):
        created = client.post("/api/generate/batch", json=batch_body(count)).get_json()
        detail = wait_for(batch_finished(client, created["batchId"]), timeout=30)
    return client, detail


@pytest.mark.e2e
def test_batch_through_kie_completes_with_one_upstream_task_per_image(kie_app):
    with KieStub(polls_until_done=1) as stub:
        app = kie_app(stub)
        client, detail = _run_batch(app, 4)

        assert detail["status"] == "completed"
        assert [result["status"] for result in detail["results"]] == ["success"] * 4
        for result in detail["results"]:
            assert fetch_result(app, result["imageUrl"]) == ("PNG", RESULT_SIZE)

    rows = generation_rows(app, detail["batchId"])
    assert [row["attempts"] for row in rows] == [1, 1, 1, 1]
    assert len(stub.created) == 4
    assert {body["model"] for body in stub.created} == {"flux-2/pro-image-to-image"}
    assert sorted(upload["fileName"] for upload in stub.uploads) == sorted(
        f"{row['id']}.png" for row in rows
    )
    assert sorted(_provider_task_ids(app, detail["batchId"])) == sorted(
        f"jobs:{task_id}" for task_id in stub.tasks
    )
    downloads = stub.result_downloads
    assert len(downloads) == 4
    assert not any("authorization" in download["headers"] for download in downloads)
    assert client.balance() == 100 - 4 * PRICE
    assert client.ledger() == [("grant", 100), ("batch_debit", -4 * PRICE)]


@pytest.mark.e2e
def test_content_policy_failure_fails_every_image_and_refunds_each_once(kie_app):
    refusal = "Your image was flagged as sensitive by the content moderation system."
    with KieStub(fail_rate=1.0, polls_until_done=0, fail_code="400", fail_msg=refusal) as stub:
        app = kie_app(stub)
        client, detail = _run_batch(app, 3)

    assert detail["status"] == "failed"
    assert detail["refunded"] == 3 * PRICE
    for result in detail["results"]:
        assert result["status"] == "failed"
        assert result["errorCode"] == "content_policy"
        assert result["imageUrl"] is None
        assert "content policy" in result["error"]
        assert refusal in result["error"]
        assert "Change the prompt or the image" in result["error"]
    assert len(stub.created) == 3  # a refusal is final: nothing is resubmitted
    assert stub.result_downloads == []
    assert client.balance() == 100
    assert (
        client.ledger() == [("grant", 100), ("batch_debit", -3 * PRICE)] + [("refund", PRICE)] * 3
    )


@pytest.mark.e2e
def test_generation_kie_never_finishes_fails_at_the_poll_deadline_and_is_refunded(kie_app):
    with KieStub(polls_until_done=10**9) as stub:
        app = kie_app(stub, POLL_TIMEOUT_SECONDS=1)
        client, detail = _run_batch(app, 1)

    assert detail["status"] == "failed"
    [result] = detail["results"]
    assert result["status"] == "failed"
    assert result["errorCode"] == "upstream_timeout"
    assert result["error"] == (
        "The image engine did not finish this image within 1 second. Your credits were refunded."
    )
    assert len(stub.created) == 1
    assert client.balance() == 100
    assert client.ledger() == [("grant", 100), ("batch_debit", -PRICE), ("refund", PRICE)]


@pytest.mark.e2e
def test_photo_through_kie_answers_200_with_the_finished_image(kie_app):
    with KieStub(polls_until_done=0) as stub:
        app = kie_app(stub, PHOTO_WAIT_SECONDS=30)
        client = ApiClient(app, *create_user(app))
        body = photo_body(
            model="nano-banana",
            referenceImage=data_url(image_bytes("WEBP", size=INPUT_SIZE), "webp"),
        )
        with running_consumer(app, workers=2):
            response = client.post("/api/generate/photo", json=body)

        assert response.status_code == 200
        answer = response.get_json()
        assert answer["status"] == "success"
        assert answer["error"] is None
        assert answer["cost"] == PRICE
        assert fetch_result(app, answer["imageUrl"]) == ("PNG", RESULT_SIZE)

    [created] = stub.created
    assert created["model"] == "google/nano-banana-edit"
    assert created["input"]["image_urls"][0].startswith(f"{stub.base_url}/files/")
    assert [upload["fileName"] for upload in stub.uploads] == [f"{answer['generationId']}.webp"]
    assert client.balance() == 100 - PRICE


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("misbehaviour", "error_code"),
    [
        ({"rate_429": 1.0}, "rate_limited"),
        ({"error_5xx_rate": 1.0}, "upstream_error"),
        ({"timeout_rate": 1.0, "hang_seconds": 5.0}, "upstream_timeout"),
    ],
)
def test_stub_misbehaviour_reaches_the_real_client_as_a_retryable_failure(misbehaviour, error_code):
    with KieStub(**misbehaviour) as stub:
        provider = KieProvider("test-key", stub.base_url, stub.base_url, timeout=(1, 0.3))
        outcome = provider.submit(_edit_request("flux-2"))
        provider.session.close()

    assert isinstance(outcome, Failed)
    assert (outcome.code, outcome.retryable) == (error_code, True)
    assert stub.created == []


@pytest.mark.e2e
def test_stub_runs_a_kontext_task_and_refuses_a_wrong_key():
    with KieStub(polls_until_done=1) as stub:
        provider = KieProvider("test-key", stub.base_url, stub.base_url)
        intruder = KieProvider("wrong-key", stub.base_url, stub.base_url)
        request = _edit_request("flux-kontext-pro")
        submitted = provider.submit(request)
        first = provider.poll(submitted.task_id, request)
        second = provider.poll(submitted.task_id, request)
        refused = intruder.submit(request)
        provider.session.close()
        intruder.session.close()

    assert isinstance(submitted, Submitted) and submitted.task_id.startswith("kontext:")
    assert stub.created[0]["inputImage"].startswith(f"{stub.base_url}/files/")
    assert first == Pending()
    with Image.open(io.BytesIO(second.image)) as image:
        assert (image.format, image.size) == ("PNG", RESULT_SIZE)
    assert refused.code == "upstream_auth"
