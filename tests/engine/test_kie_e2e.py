"""End to end through the kie.ai engine: the HTTP API, a SQLite Huey with a consumer, the real
kie client, and a stub kie.ai on 127.0.0.1 (devtools/kie_stub) that refuses what kie would refuse,
limits creates to 20 per 10 s and calls back when a task finishes."""

import io
from urllib.parse import parse_qsl, urlsplit

import pytest
from PIL import Image
from sqlalchemy import select

from devtools.kie_stub import KieStub, busiest_window
from tests.support import (
    ApiClient,
    batch_finished,
    create_batch_id,
    create_user,
    data_url,
    fetch_result,
    free_port,
    generation_rows,
    image_bytes,
    photo_body,
    running_consumer,
    serving,
    wait_for,
)
from webapp.catalog import load_catalog
from webapp.extensions import db
from webapp.models import Generation
from webapp.providers import Done, Failed, GenerationRequest, Pending, Submitted, Throttled
from webapp.providers.kie import KieProvider

PRICE = 3  # flux-2, the kontext pro model and nano-banana at 1k, in credits
INPUT_SIZE = (64, 48)  # what tests.support.image_bytes draws
RESULT_SIZE = (128, 96)  # the stub answers the input at twice its size


def _request(model_id, mode="i2i"):
    """A request for the kie client alone (no app, no queue)."""
    model = load_catalog().get(model_id)
    return GenerationRequest(
        generation_id="gen-1",
        model=model,
        mode=mode,
        prompt="Add white background",
        negative_prompt="blurry",
        quality=model.default_quality,
        aspect_ratio="1:1" if mode == "t2i" else model.default_aspect_ratio,
        input_image=image_bytes(size=INPUT_SIZE) if mode == "i2i" else None,
        batch_id="batch_e2e",
    )


def _provider_task_ids(app, batch_id):
    """The batch's upstream task ids; a create still on its way holds only its placeholder
    (`unconfirmed:…`, written before the create leaves), which counts as none yet."""
    with app.app_context():
        ids = db.session.scalars(
            select(Generation.provider_task_id).where(Generation.batch_id == batch_id)
        ).all()
    return [None if (task or "").startswith("unconfirmed:") else task for task in ids]


def _run_batch(app, count, **fields):
    """Create a `count`-image batch as a new user and wait until it is finished."""
    client = ApiClient(app, *create_user(app))
    with running_consumer(app, workers=2):
        batch_id = create_batch_id(client, count, **fields)
        detail = wait_for(batch_finished(client, batch_id), timeout=30)
    return client, detail


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("model_id", "mode"),
    [(model.id, mode) for model in load_catalog() for mode in model.modes],
)
def test_every_catalog_model_runs_through_the_stub_in_every_mode(model_id, mode):
    with KieStub(polls_until_done=1) as stub:
        provider = KieProvider("test-key", stub.base_url, stub.base_url)
        request = _request(model_id, mode)
        submitted = provider.submit(request)
        first = provider.poll(submitted.task_id, request)
        second = provider.poll(submitted.task_id, request)
        provider.client.close()

    assert isinstance(submitted, Submitted), (submitted, stub.rejected)
    assert submitted.task_id.startswith(f"{load_catalog().get(model_id).kie.style}:")
    assert first == Pending()
    assert isinstance(second, Done)
    with Image.open(io.BytesIO(second.image)) as image:
        expected = RESULT_SIZE if mode == "i2i" else (256, 256)
        assert (image.format, image.size) == ("PNG", expected)
    assert [upload["uploadPath"] for upload in stub.uploads] == (
        ["batchgen/batch_e2e"] if mode == "i2i" else []
    )


@pytest.mark.e2e
def test_ten_image_batches_on_the_jobs_api_flux_kontext_and_4o_complete_within_kies_limit(
    kie_app,
):
    with KieStub(polls_until_done=1, rate_limit=(20, 10)) as stub:
        app = kie_app(stub)
        client = ApiClient(app, *create_user(app, credits=1000))
        with running_consumer(app, workers=4):
            batches = {
                model: create_batch_id(client, 10, model=model)
                for model in ("flux-2", "flux-kontext-pro", "gpt-4o-image")
            }
            details = {
                model: wait_for(batch_finished(client, batch_id), timeout=90)
                for model, batch_id in batches.items()
            }
        attempts = list(stub.create_attempt_times)

    for model, detail in details.items():
        assert detail["status"] == "completed", (model, detail["results"])
        for result in detail["results"]:
            assert fetch_result(app, result["imageUrl"]) == ("PNG", RESULT_SIZE)
        task_ids = _provider_task_ids(app, batches[model])
        assert len(set(task_ids)) == 10
    assert {body.get("model") for body in stub.created} == {
        "flux-2/pro-image-to-image",
        "flux-kontext-pro",
        None,  # the 4o image endpoint takes no model field
    }
    assert len(stub.created) == 30 and stub.rejected == []
    # 30 creates went out at the pace kie allows: never 20 in any 10 s, so never a 429.
    assert len(attempts) == 30
    assert busiest_window(attempts, 10) <= 20
    assert stub.counts["rate_limited"] == 0
    assert client.balance() == 1000 - 10 * (3 + 3 + 4)


@pytest.mark.e2e
def test_one_content_policy_failure_in_a_batch_is_refunded_and_the_rest_complete(kie_app):
    refusal = "Your image was flagged as sensitive by the content moderation system."
    with KieStub(polls_until_done=1, fail_tasks={4}, fail_code="400", fail_msg=refusal) as stub:
        app = kie_app(stub)
        client, detail = _run_batch(app, 10)

    assert detail["status"] == "partial"
    assert detail["refunded"] == PRICE
    failed = [result for result in detail["results"] if result["status"] == "failed"]
    assert [result["status"] for result in detail["results"]].count("success") == 9
    [result] = failed
    assert result["errorCode"] == "content_policy"
    assert result["imageUrl"] is None
    assert refusal in result["error"] and "change the prompt or the image" in result["error"]
    assert "kie" not in result["error"].lower()
    assert len(stub.created) == 10  # a refusal is final: nothing is resubmitted
    assert len(stub.result_downloads) == 9
    assert client.ledger() == [("grant", 100), ("batch_debit", -10 * PRICE), ("refund", PRICE)]
    assert client.balance() == 100 - 9 * PRICE


@pytest.mark.e2e
def test_batch_through_kie_completes_with_one_upstream_task_per_image(kie_app):
    with KieStub(polls_until_done=1) as stub:
        app = kie_app(stub)
        client, detail = _run_batch(app, 4)

        assert detail["status"] == "completed"
        assert [result["status"] for result in detail["results"]] == ["success"] * 4
        for result in detail["results"]:
            assert fetch_result(app, result["imageUrl"]) == ("PNG", RESULT_SIZE)
            assert result["imageUrl"].startswith("http://localhost/media/results/")

    rows = generation_rows(app, detail["batchId"])
    assert [row["attempts"] for row in rows] == [1, 1, 1, 1]
    assert len(stub.created) == 4
    assert {body["model"] for body in stub.created} == {"flux-2/pro-image-to-image"}
    assert all("callBackUrl" not in body for body in stub.created)  # no PUBLIC_BASE_URL
    assert sorted(upload["fileName"] for upload in stub.uploads) == sorted(
        f"{row['id']}.png" for row in rows
    )
    assert {upload["uploadPath"] for upload in stub.uploads} == {f"batchgen/{detail['batchId']}"}
    assert sorted(_provider_task_ids(app, detail["batchId"])) == sorted(
        f"jobs:{task_id}" for task_id in stub.tasks
    )
    downloads = stub.result_downloads
    assert len(downloads) == 4
    assert not any("authorization" in download["headers"] for download in downloads)
    assert client.balance() == 100 - 4 * PRICE
    assert client.ledger() == [("grant", 100), ("batch_debit", -4 * PRICE)]


@pytest.mark.e2e
def test_signed_callbacks_finish_images_that_polling_would_not_reach_for_an_hour(kie_app):
    with KieStub(
        polls_until_done=10**9,
        auto_callbacks=False,
        webhook_key="wrong-key",
        callback_form="data.task_id",
    ) as stub:
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        app = kie_app(
            stub,
            PUBLIC_BASE_URL=base_url,
            KIE_WEBHOOK_HMAC_KEY="whk-test",
            POLL_DELAYS=(3600,),
        )
        client = ApiClient(app, *create_user(app))
        with serving(app, port):
            with running_consumer(app, workers=2):
                batch_id = create_batch_id(client, 3)
                wait_for(lambda: all(_provider_task_ids(app, batch_id)), timeout=30)

                forged = stub.deliver_callbacks()
                rows_after_forged = generation_rows(app, batch_id)
                stub.webhook_key = "whk-test"
                delivered = stub.deliver_callbacks()
                detail = wait_for(batch_finished(client, batch_id), timeout=30)
                duplicates = stub.deliver_callbacks()
        downloads = len(stub.result_downloads)

    callbacks = [urlsplit(body["callBackUrl"]) for body in stub.created]
    assert {f"{url.scheme}://{url.netloc}{url.path}" for url in callbacks} == {
        f"{base_url}/api/callbacks/kie"
    }
    # Each names its attempt: the generation, the lease token, the API style, signed.
    named = [dict(parse_qsl(url.query)) for url in callbacks]
    assert {query["generation"] for query in named} == {row["id"] for row in rows_after_forged}
    assert all(query.keys() == {"generation", "attempt", "style", "sig"} for query in named)
    assert forged == [401] * 3
    assert [row["status"] for row in rows_after_forged] == ["processing"] * 3
    assert delivered == [200] * 3
    assert detail["status"] == "completed"
    assert duplicates == [200] * 3  # answered, and nothing changed
    assert downloads == 3
    assert [row["status"] for row in generation_rows(app, batch_id)] == ["success"] * 3
    assert client.ledger() == [("grant", 100), ("batch_debit", -3 * PRICE)]


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
    [upload] = stub.uploads
    assert (upload["fileName"], upload["uploadPath"]) == (
        f"{answer['generationId']}.webp",
        "batchgen/photos",
    )
    assert client.balance() == 100 - PRICE


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("misbehaviour", "outcome_type", "error_code"),
    [
        ({"rate_429": 1.0}, Throttled, "rate_limited"),
        ({"rate_limit": (0, 10)}, Throttled, "rate_limited"),
        ({"credits": 0}, Throttled, "upstream_unavailable"),
        ({"error_5xx_rate": 1.0}, Failed, "upstream_error"),
        ({"timeout_rate": 1.0, "hang_seconds": 5.0}, Failed, "upstream_timeout"),
    ],
    ids=["random-429", "over-the-limit", "out-of-credits", "5xx", "timeout"],
)
def test_stub_misbehaviour_reaches_the_real_client_as_a_wait_or_a_retryable_failure(
    misbehaviour, outcome_type, error_code
):
    with KieStub(**misbehaviour) as stub:
        provider = KieProvider("test-key", stub.base_url, stub.base_url, timeout=(1, 0.3))
        outcome = provider.submit(_request("flux-2"))
        provider.client.close()

    assert isinstance(outcome, outcome_type)
    failed = outcome.refusal if isinstance(outcome, Throttled) else outcome
    assert (failed.code, failed.retryable) == (error_code, True)
    assert stub.created == []


@pytest.mark.e2e
def test_the_stub_refuses_a_wrong_key_and_the_balance_follows_its_creates():
    with KieStub(credits=5) as stub:
        provider = KieProvider("test-key", stub.base_url, stub.base_url)
        intruder = KieProvider("wrong-key", stub.base_url, stub.base_url)
        provider.submit(_request("flux-kontext-max"))
        balance = provider.client.balance()
        refused = intruder.submit(_request("flux-kontext-max"))
        provider.client.close()
        intruder.client.close()

    assert balance == 4
    assert refused.code == "upstream_auth"
