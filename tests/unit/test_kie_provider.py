"""Submitting to kie.ai: uploads, the create body of every model in every API style, and what
each refusal becomes, against `responses` mocks that follow docs/kie.md."""

import base64
import logging

import pytest
import requests

from tests.unit.kie_mocks import (
    API,
    CREATE,
    GPT4O,
    INPUT_URL,
    KEY,
    KONTEXT,
    PNG,
    UPLOAD,
    UPLOAD_URL,
    add_created,
    add_upload,
    image_bytes,
    make_request,
    sent_json,
)
from webapp.catalog import load_catalog
from webapp.providers import Failed, Submitted, Throttled, create_provider
from webapp.providers.kie import KieProvider
from webapp.providers.kie.payloads import STYLES

CALLBACK = "https://img.example.com/api/callbacks/kie"


def jobs(model, **fields):
    return CREATE, {"model": model, "input": {"prompt": "white background", **fields}}


# Every catalog model, image-to-image at its default quality and ratio: the endpoint and the
# body kie-api.md asks for (every required field, defaults included).
EXPECTED_BODIES = {
    "flux-2": jobs(
        "flux-2/pro-image-to-image", input_urls=[INPUT_URL], aspect_ratio="auto", resolution="1K"
    ),
    "flux-kontext-pro": (
        KONTEXT,
        {
            "prompt": "white background",
            "model": "flux-kontext-pro",
            "inputImage": INPUT_URL,
            "aspectRatio": "1:1",
            "outputFormat": "png",
        },
    ),
    "flux-kontext-max": (
        KONTEXT,
        {
            "prompt": "white background",
            "model": "flux-kontext-max",
            "inputImage": INPUT_URL,
            "aspectRatio": "1:1",
            "outputFormat": "png",
        },
    ),
    "nano-banana": jobs(
        "google/nano-banana-edit",
        image_urls=[INPUT_URL],
        aspect_ratio="auto",
        output_format="png",
    ),
    "nano-banana-pro": jobs(
        "nano-banana-pro",
        image_input=[INPUT_URL],
        aspect_ratio="auto",
        resolution="1K",
        output_format="png",
    ),
    "seedream-4.5": jobs(
        "seedream/4.5-edit", image_urls=[INPUT_URL], aspect_ratio="1:1", quality="basic"
    ),
    "gpt-image-1.5": jobs(
        "gpt-image/1.5-image-to-image", input_urls=[INPUT_URL], aspect_ratio="1:1", quality="medium"
    ),
    "qwen-image-edit": jobs(
        "qwen/image-edit", image_url=INPUT_URL, image_size="square_hd", output_format="png"
    ),
    "gpt-4o-image": (
        GPT4O,
        {"prompt": "white background", "filesUrl": [INPUT_URL], "size": "1:1", "nVariants": 1},
    ),
}
STYLE_OF_ENDPOINT = {CREATE: "jobs", KONTEXT: "kontext", GPT4O: "gpt4o"}


def test_every_catalog_model_has_its_expected_body():
    assert set(EXPECTED_BODIES) == {model.id for model in load_catalog()}


@pytest.mark.parametrize("model_id", sorted(EXPECTED_BODIES))
def test_each_model_uploads_its_input_then_creates_the_task_kie_asks_for(
    kie_mock, provider, model_id
):
    endpoint, body = EXPECTED_BODIES[model_id]
    add_upload(kie_mock)
    add_created(kie_mock, endpoint, "t-1")

    outcome = provider.submit(make_request(model_id))

    assert outcome == Submitted(f"{STYLE_OF_ENDPOINT[endpoint]}:t-1")
    upload, create = kie_mock.calls
    assert upload.request.url == UPLOAD_URL
    assert sent_json(create) == body
    for call in kie_mock.calls:
        assert call.request.headers["Authorization"] == f"Bearer {KEY}"
        assert call.request.headers["User-Agent"] == "batchgen/0.1"


def test_the_upload_is_base64_in_a_folder_per_batch_named_for_the_generation(kie_mock, provider):
    add_upload(kie_mock)
    add_created(kie_mock)

    provider.submit(make_request("flux-2", batch_id="batch_1_ab"))

    assert sent_json(kie_mock.calls[0]) == {
        "base64Data": "data:image/png;base64," + base64.b64encode(PNG).decode(),
        "uploadPath": "batchgen/batch_1_ab",
        "fileName": "gen-1.png",
    }


def test_a_single_photo_is_uploaded_to_the_photos_folder(kie_mock, provider):
    add_upload(kie_mock)
    add_created(kie_mock)

    provider.submit(make_request("flux-2"))

    assert sent_json(kie_mock.calls[0])["uploadPath"] == "batchgen/photos"


def test_quality_and_ratio_are_translated_to_the_upstream_values(kie_mock, provider):
    add_upload(kie_mock)
    add_created(kie_mock)

    provider.submit(make_request("seedream-4.5", quality="4k", aspect_ratio="3:4"))
    provider_body = sent_json(kie_mock.calls[1])["input"]

    assert (provider_body["quality"], provider_body["aspect_ratio"]) == ("high", "3:4")


def test_qwen_gets_the_negative_prompt_and_a_mapped_image_size(kie_mock, provider):
    add_upload(kie_mock)
    add_created(kie_mock)

    request = make_request("qwen-image-edit", aspect_ratio="16:9", negative_prompt="blurry")
    assert provider.submit(request) == Submitted("jobs:task-1")

    sent = sent_json(kie_mock.calls[1])["input"]
    assert (sent["image_size"], sent["negative_prompt"]) == ("landscape_16_9", "blurry")


@pytest.mark.parametrize("model_id", ["flux-2", "flux-kontext-pro", "gpt-4o-image", "seedream-4.5"])
def test_a_negative_prompt_is_not_sent_to_models_that_take_none(kie_mock, provider, model_id):
    endpoint, _ = EXPECTED_BODIES[model_id]
    add_upload(kie_mock)
    add_created(kie_mock, endpoint)

    provider.submit(make_request(model_id, negative_prompt="blurry"))

    assert "blurry" not in kie_mock.calls[1].request.body.decode()


def test_qwen_without_a_negative_prompt_sends_none(kie_mock, provider):
    add_upload(kie_mock)
    add_created(kie_mock)

    provider.submit(make_request("qwen-image-edit"))

    assert "negative_prompt" not in sent_json(kie_mock.calls[1])["input"]


@pytest.mark.parametrize(
    ("model_id", "endpoint", "body"),
    [
        (
            "nano-banana-pro",
            CREATE,
            {
                "model": "nano-banana-pro",
                "input": {
                    "prompt": "white background",
                    "aspect_ratio": "1:1",
                    "resolution": "4K",
                    "output_format": "png",
                },
            },
        ),
        (
            "flux-kontext-pro",
            KONTEXT,
            {
                "prompt": "white background",
                "model": "flux-kontext-pro",
                "aspectRatio": "1:1",
                "outputFormat": "png",
            },
        ),
        (
            "gpt-4o-image",
            GPT4O,
            {"prompt": "white background", "size": "1:1", "nVariants": 1},
        ),
    ],
)
def test_text_to_image_creates_the_task_without_an_upload(
    kie_mock, provider, model_id, endpoint, body
):
    add_created(kie_mock, endpoint)
    quality = "4k" if model_id == "nano-banana-pro" else None

    outcome = provider.submit(make_request(model_id, "t2i", quality=quality, aspect_ratio="1:1"))

    assert isinstance(outcome, Submitted)
    [create] = kie_mock.calls
    assert sent_json(create) == body


def test_text_to_image_uses_the_models_text_to_image_twin(kie_mock, provider):
    add_created(kie_mock)

    provider.submit(make_request("flux-2", "t2i", aspect_ratio="16:9"))

    assert sent_json(kie_mock.calls[0])["model"] == "flux-2/pro-text-to-image"


@pytest.mark.parametrize(
    ("model_id", "endpoint"),
    [("flux-2", CREATE), ("flux-kontext-max", KONTEXT), ("gpt-4o-image", GPT4O)],
)
def test_callback_url_is_registered_in_every_style(kie_mock, model_id, endpoint):
    provider = KieProvider(KEY, API, UPLOAD, callback_url=CALLBACK)
    add_upload(kie_mock)
    add_created(kie_mock, endpoint)

    provider.submit(make_request(model_id))

    body = sent_json(kie_mock.calls[1])
    assert body["callBackUrl"] == CALLBACK
    assert "callBackUrl" not in body.get("input", {})


def test_no_callback_url_is_sent_without_a_public_base_url(kie_mock, provider):
    add_upload(kie_mock)
    add_created(kie_mock)

    provider.submit(make_request("flux-2"))

    assert "callBackUrl" not in sent_json(kie_mock.calls[1])


def test_jpeg_input_is_uploaded_with_its_own_mime_type_and_extension(kie_mock, provider):
    add_upload(kie_mock)
    add_created(kie_mock)

    provider.submit(make_request("flux-2", input_image=image_bytes("JPEG")))

    upload = sent_json(kie_mock.calls[0])
    assert upload["base64Data"].startswith("data:image/jpeg;base64,")
    assert upload["fileName"] == "gen-1.jpg"


def test_unreadable_input_image_fails_without_calling_kie(kie_mock, provider):
    outcome = provider.submit(make_request("flux-2", input_image=b"not an image"))

    assert (outcome.code, outcome.retryable) == ("invalid_input", False)
    assert len(kie_mock.calls) == 0


@pytest.mark.parametrize(
    ("model_id", "changes"),
    [("gpt-image-1.5", {"aspect_ratio": "16:9"}), ("seedream-4.5", {"quality": "1k"})],
)
def test_a_request_the_mapping_cannot_express_fails_without_calling_kie(
    kie_mock, provider, model_id, changes
):
    outcome = provider.submit(make_request(model_id, **changes))

    assert (outcome.code, outcome.retryable) == ("invalid_input", False)
    assert len(kie_mock.calls) == 0


def test_upload_answer_without_download_url_is_retryable(kie_mock, provider):
    kie_mock.post(UPLOAD_URL, json={"success": True, "code": 200, "msg": "ok", "data": None})

    outcome = provider.submit(make_request("flux-2"))

    assert (outcome.code, outcome.retryable) == ("upstream_error", True)


def test_create_answer_without_task_id_is_retryable(kie_mock, provider):
    add_upload(kie_mock)
    kie_mock.post(CREATE, json={"code": 200, "msg": "success", "data": {}})

    outcome = provider.submit(make_request("flux-2"))

    assert (outcome.code, outcome.retryable) == ("upstream_error", True)


# Refusals on create: the code table, whether it comes in the body or as the HTTP status.

PERMANENT_OR_COUNTED = [
    (400, "content_policy", False),
    (401, "upstream_auth", False),
    (404, "upstream_rejected", False),
    (422, "invalid_input", False),
    (451, "invalid_input", False),
    (455, "upstream_unavailable", True),
    (500, "upstream_error", True),
    (501, "generation_failed", False),
    (505, "upstream_rejected", False),
    (550, "upstream_unavailable", True),
]


@pytest.mark.parametrize(("code", "error_code", "retryable"), PERMANENT_OR_COUNTED)
def test_body_codes_under_http_200_are_classified(kie_mock, provider, code, error_code, retryable):
    kie_mock.post(CREATE, json={"code": code, "msg": "something went wrong"})

    outcome = provider.submit(make_request("nano-banana", "t2i"))

    assert isinstance(outcome, Failed)
    assert (outcome.code, outcome.retryable) == (error_code, retryable)
    assert outcome.message


@pytest.mark.parametrize(("code", "error_code", "retryable"), PERMANENT_OR_COUNTED)
def test_http_statuses_without_a_body_code_are_classified_the_same(
    kie_mock, provider, code, error_code, retryable
):
    kie_mock.post(CREATE, status=code, body="<html>error</html>")

    outcome = provider.submit(make_request("nano-banana", "t2i"))

    assert (outcome.code, outcome.retryable) == (error_code, retryable)


def test_an_unknown_5xx_without_json_is_retryable(kie_mock, provider):
    kie_mock.post(CREATE, status=503, body="<html>Bad gateway</html>")

    outcome = provider.submit(make_request("nano-banana", "t2i"))

    assert (outcome.code, outcome.retryable) == ("upstream_unavailable", True)


@pytest.mark.parametrize(
    "answer",
    [
        {"json": {"code": 429, "msg": "Rate limited"}},
        {"status": 429, "body": "Too Many Requests"},
        {"json": {"code": 433, "msg": "Sub-key limit"}},
    ],
    ids=["body-429", "http-429", "body-433"],
)
def test_a_rate_limit_on_create_waits_at_least_one_window_without_failing(
    kie_mock, provider, answer
):
    kie_mock.post(CREATE, **answer)

    outcome = provider.submit(make_request("nano-banana", "t2i"))

    assert isinstance(outcome, Throttled)
    assert provider.rate_limited_wait <= outcome.seconds <= provider.rate_limited_wait * 1.5
    assert (outcome.refusal.code, outcome.refusal.retryable) == ("rate_limited", True)


@pytest.mark.parametrize(("retry_after", "wait"), [("42", 42.0), ("1", 10.0), ("9000", 300.0)])
def test_retry_after_is_honoured_within_bounds(kie_mock, provider, retry_after, wait):
    kie_mock.post(CREATE, status=429, headers={"Retry-After": retry_after}, body="slow down")

    outcome = provider.submit(make_request("nano-banana", "t2i"))

    assert outcome.seconds == wait


def test_kie_out_of_credits_waits_alerts_ops_and_does_not_blame_the_user(
    kie_mock, provider, caplog
):
    kie_mock.post(CREATE, json={"code": 402, "msg": "Your credits are insufficient"})

    with caplog.at_level(logging.ERROR):
        outcome = provider.submit(make_request("nano-banana", "t2i"))

    assert isinstance(outcome, Throttled)
    assert outcome.seconds == provider.out_of_credits_wait
    assert (outcome.refusal.code, outcome.refusal.retryable) == ("upstream_unavailable", True)
    assert "insufficient" not in outcome.refusal.message
    assert "not a problem with your request" in outcome.refusal.message
    [alert] = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert "out of credits" in alert.getMessage()


def test_a_rejected_api_key_fails_the_image_and_alerts_ops(kie_mock, provider, caplog):
    kie_mock.post(CREATE, status=401, json={"code": 401, "msg": "Unauthorized"})

    with caplog.at_level(logging.ERROR):
        outcome = provider.submit(make_request("nano-banana", "t2i"))

    assert (outcome.code, outcome.retryable) == ("upstream_auth", False)
    assert any("KIE_API_KEY" in record.getMessage() for record in caplog.records)


def test_error_text_is_read_from_message_when_msg_is_absent(kie_mock, provider):
    kie_mock.post(CREATE, json={"code": 422, "message": "aspect_ratio is invalid"})

    outcome = provider.submit(make_request("nano-banana", "t2i"))

    assert outcome.code == "invalid_input"
    assert "aspect_ratio is invalid" in outcome.message


def test_server_error_that_names_the_content_policy_is_permanent(kie_mock, provider):
    kie_mock.post(CREATE, json={"code": 500, "msg": "Prompt flagged as NSFW"})

    outcome = provider.submit(make_request("nano-banana", "t2i"))

    assert (outcome.code, outcome.retryable) == ("content_policy", False)


def test_timeout_is_retryable(kie_mock, provider):
    add_upload(kie_mock)
    kie_mock.post(CREATE, body=requests.exceptions.ReadTimeout("read timed out"))

    outcome = provider.submit(make_request("flux-2"))

    assert (outcome.code, outcome.retryable) == ("upstream_timeout", True)


def test_connection_error_on_upload_is_retryable(kie_mock, provider):
    kie_mock.post(UPLOAD_URL, body=requests.exceptions.ConnectionError("refused"))

    outcome = provider.submit(make_request("flux-2"))

    assert (outcome.code, outcome.retryable) == ("upstream_unavailable", True)
    assert len(kie_mock.calls) == 1


def test_api_key_never_appears_in_a_message(kie_mock, provider):
    kie_mock.post(CREATE, json={"code": 404, "msg": f"no such key {KEY}"})

    outcome = provider.submit(make_request("nano-banana", "t2i"))

    assert KEY not in outcome.message


# Choosing the engine


def kie_config(**overrides):
    config = {
        "GENERATION_BACKEND": "kie",
        "KIE_API_KEY": KEY,
        "KIE_API_BASE": API,
        "KIE_UPLOAD_BASE": UPLOAD,
        "KIE_TIMEOUT_SECONDS": 7.5,
        "UPSTREAM_RATE_PERIOD": 10,
        "PUBLIC_BASE_URL": None,
        "SECRET_KEY": "test-secret",
        "KIE_CONFIRM_GRACE_SECONDS": 120.0,
    }
    config.update(overrides)
    return config


def test_kie_backend_builds_the_kie_provider():
    provider = create_provider(kie_config())

    assert isinstance(provider, KieProvider)
    assert (provider.client.api_base, provider.client.upload_base) == (API, UPLOAD)
    assert provider.client.timeout == (5, 7.5)
    assert provider.callback_url is None
    assert provider.rate_limited_wait == 10


def test_kie_backend_registers_the_callback_under_the_public_base_url():
    provider = create_provider(kie_config(PUBLIC_BASE_URL="https://img.example.com"))

    assert provider.callback_url == CALLBACK


def test_the_client_keeps_one_pooled_session_with_room_for_every_worker():
    provider = create_provider(kie_config())

    for base in (API, UPLOAD, "https://cdn.kie.test/result.png"):
        assert provider.client.session.get_adapter(base)._pool_maxsize >= 8


def test_kie_backend_without_api_key_is_refused():
    with pytest.raises(ValueError, match="KIE_API_KEY"):
        create_provider(kie_config(KIE_API_KEY=None))


def test_every_catalog_model_names_a_known_api_style():
    assert {model.kie.style for model in load_catalog()} <= set(STYLES)
