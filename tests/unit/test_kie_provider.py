"""The kie.ai engine against `responses` mocks that follow shared/spec/kie-api.md."""

import base64
import io
import json

import pytest
import requests
import responses
from PIL import Image

from webapp.catalog import load_catalog
from webapp.providers import Done, GenerationRequest, Pending, Submitted, create_provider
from webapp.providers.kie import KieProvider

API = "https://api.kie.test"
UPLOAD = "https://upload.kie.test"
KEY = "sk-test-secret-key"
CREATE = f"{API}/api/v1/jobs/createTask"
RECORD = f"{API}/api/v1/jobs/recordInfo"
KONTEXT = f"{API}/api/v1/flux/kontext/generate"
KONTEXT_RECORD = f"{API}/api/v1/flux/kontext/record-info"
UPLOAD_URL = f"{UPLOAD}/api/file-base64-upload"
INPUT_URL = "https://files.kie.test/batchgen/gen-1.png"
RESULT_URL = "https://cdn.kie.test/results/out.png"


def image_bytes(image_format="PNG", size=(8, 6)):
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, image_format)
    return buffer.getvalue()


PNG = image_bytes()


def make_request(
    model_id,
    mode="i2i",
    *,
    prompt="white background",
    negative_prompt=None,
    quality=None,
    aspect_ratio=None,
    input_image=PNG,
):
    model = load_catalog().get(model_id)
    return GenerationRequest(
        generation_id="gen-1",
        model=model,
        mode=mode,
        prompt=prompt,
        negative_prompt=negative_prompt,
        quality=quality or model.default_quality,
        aspect_ratio=aspect_ratio or model.default_aspect_ratio,
        input_image=input_image if mode == "i2i" else None,
    )


@pytest.fixture
def kie_mock():
    with responses.RequestsMock() as mock:
        yield mock


@pytest.fixture
def provider():
    return KieProvider(KEY, API, UPLOAD)


def sent_json(call):
    return json.loads(call.request.body)


def add_upload(kie_mock, url=INPUT_URL):
    kie_mock.post(
        UPLOAD_URL,
        json={"success": True, "code": 200, "msg": "ok", "data": {"downloadUrl": url}},
    )


def add_created(kie_mock, endpoint=CREATE, task_id="task-1"):
    kie_mock.post(endpoint, json={"code": 200, "msg": "success", "data": {"taskId": task_id}})


def add_record(kie_mock, data, endpoint=RECORD):
    kie_mock.get(endpoint, json={"code": 200, "msg": "success", "data": data})


# Submitting


def test_jobs_model_upload_then_create_task_sends_mapped_fields(kie_mock, provider):
    add_upload(kie_mock)
    add_created(kie_mock)

    outcome = provider.submit(make_request("flux-2", quality="2k", aspect_ratio="16:9"))

    assert outcome == Submitted("jobs:task-1")
    upload, create = kie_mock.calls
    assert sent_json(upload) == {
        "base64Data": "data:image/png;base64," + base64.b64encode(PNG).decode(),
        "uploadPath": "batchgen",
        "fileName": "gen-1.png",
    }
    assert sent_json(create) == {
        "model": "flux-2/pro-image-to-image",
        "input": {
            "prompt": "white background",
            "input_urls": [INPUT_URL],
            "aspect_ratio": "16:9",
            "resolution": "2K",
        },
    }
    for call in kie_mock.calls:
        assert call.request.headers["Authorization"] == f"Bearer {KEY}"
        assert call.request.headers["User-Agent"] == "batchgen/0.1"


def test_auto_aspect_ratio_passes_through_and_extra_fields_are_sent(kie_mock, provider):
    add_upload(kie_mock)
    add_created(kie_mock)

    provider.submit(make_request("nano-banana", aspect_ratio="auto"))

    assert sent_json(kie_mock.calls[1]) == {
        "model": "google/nano-banana-edit",
        "input": {
            "output_format": "png",
            "prompt": "white background",
            "image_urls": [INPUT_URL],
            "aspect_ratio": "auto",
        },
    }


def test_quality_is_mapped_to_the_upstream_value(kie_mock, provider):
    add_upload(kie_mock)
    add_created(kie_mock)

    provider.submit(make_request("seedream-4.5", quality="4k", aspect_ratio="3:4"))

    assert sent_json(kie_mock.calls[1])["input"] == {
        "prompt": "white background",
        "image_urls": [INPUT_URL],
        "aspect_ratio": "3:4",
        "quality": "high",
    }


def test_qwen_sends_a_single_image_string_mapped_size_and_negative_prompt(kie_mock, provider):
    add_upload(kie_mock)
    add_created(kie_mock)

    request = make_request("qwen-image-edit", aspect_ratio="16:9", negative_prompt="blurry")
    assert provider.submit(request) == Submitted("jobs:task-1")

    assert sent_json(kie_mock.calls[1]) == {
        "model": "qwen/image-edit",
        "input": {
            "output_format": "png",
            "prompt": "white background",
            "image_url": INPUT_URL,
            "image_size": "landscape_16_9",
            "negative_prompt": "blurry",
        },
    }


def test_negative_prompt_is_left_out_when_there_is_none(kie_mock, provider):
    add_upload(kie_mock)
    add_created(kie_mock)

    provider.submit(make_request("qwen-image-edit"))

    assert "negative_prompt" not in sent_json(kie_mock.calls[1])["input"]


def test_text_to_image_creates_the_task_without_an_upload(kie_mock, provider):
    add_created(kie_mock)

    outcome = provider.submit(make_request("nano-banana-pro", "t2i", quality="4k"))

    assert outcome == Submitted("jobs:task-1")
    assert len(kie_mock.calls) == 1
    assert sent_json(kie_mock.calls[0]) == {
        "model": "nano-banana-pro",
        "input": {
            "output_format": "png",
            "prompt": "white background",
            "aspect_ratio": "auto",
            "resolution": "4K",
        },
    }


def test_jpeg_input_is_uploaded_with_its_own_mime_type_and_extension(kie_mock, provider):
    jpeg = image_bytes("JPEG")
    add_upload(kie_mock)
    add_created(kie_mock)

    provider.submit(make_request("flux-2", input_image=jpeg))

    upload = sent_json(kie_mock.calls[0])
    assert upload["base64Data"].startswith("data:image/jpeg;base64,")
    assert upload["fileName"] == "gen-1.jpg"


def test_unreadable_input_image_fails_without_calling_kie(kie_mock, provider):
    outcome = provider.submit(make_request("flux-2", input_image=b"not an image"))

    assert outcome.code == "invalid_input"
    assert outcome.retryable is False
    assert len(kie_mock.calls) == 0


def test_kontext_upload_then_generate_sends_flat_camelcase_body(kie_mock, provider):
    add_upload(kie_mock)
    add_created(kie_mock, KONTEXT, "k-1")

    outcome = provider.submit(
        make_request("flux-kontext-max", aspect_ratio="9:16", negative_prompt="blurry")
    )

    assert outcome == Submitted("kontext:k-1")
    assert sent_json(kie_mock.calls[1]) == {
        "prompt": "white background",
        "model": "flux-kontext-max",
        "inputImage": INPUT_URL,
        "aspectRatio": "9:16",
        "outputFormat": "png",
    }


def test_kontext_text_to_image_has_no_input_image(kie_mock, provider):
    add_created(kie_mock, KONTEXT, "k-2")

    assert provider.submit(make_request("flux-kontext-pro", "t2i")) == Submitted("kontext:k-2")

    assert sent_json(kie_mock.calls[0]) == {
        "prompt": "white background",
        "model": "flux-kontext-pro",
        "aspectRatio": "1:1",
        "outputFormat": "png",
    }


# Errors on submit


def test_http_200_with_error_code_429_is_retryable(kie_mock, provider):
    add_upload(kie_mock)
    kie_mock.post(CREATE, json={"code": 429, "msg": "Rate limited", "data": None})

    outcome = provider.submit(make_request("flux-2"))

    assert outcome.code == "rate_limited"
    assert outcome.retryable is True


@pytest.mark.parametrize(
    ("code", "error_code", "retryable"),
    [
        (402, "upstream_unavailable", True),
        (433, "rate_limited", True),
        (455, "upstream_unavailable", True),
        (500, "upstream_error", True),
        (550, "upstream_unavailable", True),
        (400, "content_policy", False),
        (401, "upstream_auth", False),
        (404, "upstream_rejected", False),
        (422, "invalid_input", False),
        (451, "invalid_input", False),
        (501, "generation_failed", False),
        (505, "upstream_rejected", False),
    ],
)
def test_body_codes_on_create_are_classified(kie_mock, provider, code, error_code, retryable):
    kie_mock.post(CREATE, json={"code": code, "msg": "something went wrong"})

    outcome = provider.submit(make_request("nano-banana", "t2i"))

    assert (outcome.code, outcome.retryable) == (error_code, retryable)
    assert outcome.message


def test_kie_out_of_credits_is_retryable_and_does_not_blame_the_user(kie_mock, provider):
    kie_mock.post(CREATE, json={"code": 402, "msg": "Your credits are insufficient"})

    outcome = provider.submit(make_request("nano-banana", "t2i"))

    assert outcome.retryable is True
    assert "insufficient" not in outcome.message
    assert "not a problem with your request" in outcome.message


def test_error_text_is_read_from_message_when_msg_is_absent(kie_mock, provider):
    kie_mock.post(CREATE, json={"code": 422, "message": "aspect_ratio is invalid"})

    outcome = provider.submit(make_request("nano-banana", "t2i"))

    assert outcome.code == "invalid_input"
    assert "aspect_ratio is invalid" in outcome.message


def test_server_error_that_names_the_content_policy_is_permanent(kie_mock, provider):
    kie_mock.post(CREATE, json={"code": 500, "msg": "Prompt flagged as NSFW"})

    outcome = provider.submit(make_request("nano-banana", "t2i"))

    assert (outcome.code, outcome.retryable) == ("content_policy", False)


def test_http_5xx_without_json_is_retryable(kie_mock, provider):
    kie_mock.post(CREATE, status=503, body="<html>Bad gateway</html>")

    outcome = provider.submit(make_request("nano-banana", "t2i"))

    assert (outcome.code, outcome.retryable) == ("upstream_unavailable", True)


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


# Polling the jobs API


def test_record_info_null_is_pending(kie_mock, provider):
    kie_mock.get(RECORD, json={"code": 422, "msg": "recordInfo is null", "data": None})

    assert provider.poll("jobs:task-1", make_request("flux-2")) == Pending()
    assert kie_mock.calls[0].request.params == {"taskId": "task-1"}


@pytest.mark.parametrize("state", ["waiting", "queuing", "generating"])
def test_running_states_are_pending(kie_mock, provider, state):
    add_record(kie_mock, {"taskId": "task-1", "state": state})

    assert provider.poll("jobs:task-1", make_request("flux-2")) == Pending()


def test_success_downloads_the_first_result_url(kie_mock, provider):
    add_record(
        kie_mock,
        {"state": "success", "resultJson": json.dumps({"resultUrls": [RESULT_URL, "x"]})},
    )
    kie_mock.get(RESULT_URL, body=PNG, content_type="image/png")

    assert provider.poll("jobs:task-1", make_request("flux-2")) == Done(PNG, "png")


def test_result_json_may_be_an_object_and_jpeg_results_keep_their_extension(kie_mock, provider):
    jpeg = image_bytes("JPEG")
    add_record(kie_mock, {"state": "success", "resultJson": {"resultUrls": [RESULT_URL]}})
    kie_mock.get(RESULT_URL, body=jpeg)

    assert provider.poll("jobs:task-1", make_request("flux-2")) == Done(jpeg, "jpg")


def test_result_download_does_not_send_kie_authorization(kie_mock, provider):
    add_record(kie_mock, {"state": "success", "resultJson": {"resultUrls": [RESULT_URL]}})
    kie_mock.get(RESULT_URL, body=PNG)

    provider.poll("jobs:task-1", make_request("flux-2"))

    record, download = kie_mock.calls
    assert record.request.headers["Authorization"] == f"Bearer {KEY}"
    assert "Authorization" not in download.request.headers
    assert download.request.headers["User-Agent"] == "batchgen/0.1"


@pytest.mark.parametrize(
    ("fail_code", "fail_msg"),
    [("400", "Image rejected"), ("", "Your prompt violates our content policy")],
)
def test_content_policy_failure_is_permanent(kie_mock, provider, fail_code, fail_msg):
    add_record(kie_mock, {"state": "fail", "failCode": fail_code, "failMsg": fail_msg})

    outcome = provider.poll("jobs:task-1", make_request("flux-2"))

    assert (outcome.code, outcome.retryable) == ("content_policy", False)
    assert fail_msg in outcome.message


def test_failed_task_with_a_server_error_may_be_retried(kie_mock, provider):
    add_record(kie_mock, {"state": "fail", "failCode": "500", "failMsg": "internal error"})

    outcome = provider.poll("jobs:task-1", make_request("flux-2"))

    assert (outcome.code, outcome.retryable) == ("upstream_error", True)


def test_failed_task_without_a_known_code_is_a_permanent_generation_failure(kie_mock, provider):
    add_record(kie_mock, {"state": "fail", "failCode": None, "failMsg": "could not render"})

    outcome = provider.poll("jobs:task-1", make_request("flux-2"))

    assert (outcome.code, outcome.retryable) == ("generation_failed", False)


@pytest.mark.parametrize(
    "answer",
    [
        {"body": requests.exceptions.ReadTimeout("read timed out")},
        {"json": {"code": 429, "msg": "Rate limited"}},
        {"status": 502, "body": "Bad gateway"},
    ],
)
def test_transient_errors_while_polling_keep_polling_rather_than_resubmit(
    kie_mock, provider, answer
):
    kie_mock.get(RECORD, **answer)

    assert provider.poll("jobs:task-1", make_request("flux-2")) == Pending()


def test_transient_result_download_error_keeps_polling(kie_mock, provider):
    add_record(kie_mock, {"state": "success", "resultJson": {"resultUrls": [RESULT_URL]}})
    kie_mock.get(RESULT_URL, status=503)

    assert provider.poll("jobs:task-1", make_request("flux-2")) == Pending()


def test_expired_result_fails_permanently(kie_mock, provider):
    add_record(kie_mock, {"state": "success", "resultJson": {"resultUrls": [RESULT_URL]}})
    kie_mock.get(RESULT_URL, status=404)

    outcome = provider.poll("jobs:task-1", make_request("flux-2"))

    assert (outcome.code, outcome.retryable) == ("result_unavailable", False)


def test_success_without_result_urls_fails(kie_mock, provider):
    add_record(kie_mock, {"state": "success", "resultJson": '{"resultUrls": []}'})

    outcome = provider.poll("jobs:task-1", make_request("flux-2"))

    assert (outcome.code, outcome.retryable) == ("generation_failed", False)


def test_unknown_task_id_style_fails(kie_mock, provider):
    outcome = provider.poll("gpt4o:task-1", make_request("flux-2"))

    assert outcome.code == "unknown_task"
    assert len(kie_mock.calls) == 0


# Polling Flux Kontext


def test_kontext_generating_is_pending(kie_mock, provider):
    add_record(kie_mock, {"taskId": "k-1", "successFlag": 0}, KONTEXT_RECORD)

    assert provider.poll("kontext:k-1", make_request("flux-kontext-pro")) == Pending()
    assert kie_mock.calls[0].request.params == {"taskId": "k-1"}


def test_kontext_success_downloads_the_result_image(kie_mock, provider):
    add_record(
        kie_mock,
        {"successFlag": 1, "response": {"resultImageUrl": RESULT_URL}},
        KONTEXT_RECORD,
    )
    kie_mock.get(RESULT_URL, body=PNG)

    assert provider.poll("kontext:k-1", make_request("flux-kontext-pro")) == Done(PNG, "png")
    assert "Authorization" not in kie_mock.calls[1].request.headers


def test_kontext_content_policy_failure_is_permanent(kie_mock, provider):
    add_record(
        kie_mock,
        {"successFlag": 3, "errorCode": 400, "errorMessage": "Image flagged"},
        KONTEXT_RECORD,
    )

    outcome = provider.poll("kontext:k-1", make_request("flux-kontext-pro"))

    assert (outcome.code, outcome.retryable) == ("content_policy", False)
    assert "Image flagged" in outcome.message


@pytest.mark.parametrize(
    ("flag", "error_code", "expected", "retryable"),
    [(2, 500, "upstream_error", True), (3, 501, "generation_failed", False)],
)
def test_kontext_failures_are_classified(kie_mock, provider, flag, error_code, expected, retryable):
    add_record(
        kie_mock,
        {"successFlag": flag, "errorCode": error_code, "errorMessage": "failed"},
        KONTEXT_RECORD,
    )

    outcome = provider.poll("kontext:k-1", make_request("flux-kontext-pro"))

    assert (outcome.code, outcome.retryable) == (expected, retryable)


# Choosing the engine


def kie_config(**overrides):
    config = {
        "GENERATION_BACKEND": "kie",
        "KIE_API_KEY": KEY,
        "KIE_API_BASE": API,
        "KIE_UPLOAD_BASE": UPLOAD,
        "KIE_TIMEOUT_SECONDS": 7.5,
    }
    config.update(overrides)
    return config


def test_kie_backend_builds_the_kie_provider():
    provider = create_provider(kie_config())

    assert isinstance(provider, KieProvider)
    assert (provider.api_base, provider.upload_base) == (API, UPLOAD)
    assert provider.timeout == (5, 7.5)


def test_kie_backend_without_api_key_is_refused():
    with pytest.raises(ValueError, match="KIE_API_KEY"):
        create_provider(kie_config(KIE_API_KEY=None))
