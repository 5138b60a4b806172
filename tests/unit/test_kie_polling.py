"""Polling kie.ai in each API style, in every state, including malformed and partial answers
(sources disagree on some shapes, so every form kie-api.md names is accepted)."""

import json
from datetime import UTC, datetime, timedelta

import pytest
import requests

from tests.unit.kie_mocks import (
    GPT4O_RECORD,
    KEY,
    KONTEXT_RECORD,
    PNG,
    RECORD,
    RESULT_URL,
    add_record,
    add_result,
    image_bytes,
    make_request,
)
from webapp.providers import Done, Pending


def utcnow():
    return datetime.now(UTC).replace(tzinfo=None)


def poll(provider, task_id="jobs:task-1", model_id="flux-2", started_at=None):
    """Poll a task whose attempt started `started_at` (just now by default)."""
    request = make_request(model_id, started_at=started_at or utcnow())
    return provider.poll(task_id, request)


# The jobs API (recordInfo)


def test_record_info_null_is_pending_while_the_task_is_new(kie_mock, provider):
    kie_mock.get(RECORD, json={"code": 422, "msg": "recordInfo is null", "data": None})

    assert poll(provider) == Pending()
    assert kie_mock.calls[0].request.params == {"taskId": "task-1"}
    assert kie_mock.calls[0].request.headers["Authorization"] == f"Bearer {KEY}"


def test_record_info_null_past_the_grace_period_fails_for_good(kie_mock, provider):
    kie_mock.get(RECORD, json={"code": 422, "msg": "recordInfo is null", "data": None})
    long_ago = utcnow() - timedelta(seconds=provider.record_grace_seconds + 5)

    outcome = poll(provider, started_at=long_ago)

    assert (outcome.code, outcome.retryable) == ("task_not_found", False)


@pytest.mark.parametrize("state", ["waiting", "queuing", "generating", "something-new", None])
def test_running_and_unknown_states_are_pending(kie_mock, provider, state):
    add_record(kie_mock, {"taskId": "task-1", "state": state})

    assert poll(provider) == Pending()


def test_an_answer_without_data_is_pending(kie_mock, provider):
    kie_mock.get(RECORD, json={"code": 200, "msg": "success", "data": None})

    assert poll(provider) == Pending()


@pytest.mark.parametrize(
    "result_json",
    [
        json.dumps({"resultUrls": [RESULT_URL, "https://cdn.kie.test/second.png"]}),
        {"resultUrls": [RESULT_URL]},
        json.dumps({"result_urls": [RESULT_URL]}),
        {"result_urls": [RESULT_URL]},
        {"resultUrls": RESULT_URL},
    ],
    ids=["string", "object", "string-snake-case", "object-snake-case", "one-url"],
)
def test_success_downloads_the_first_result_in_any_form(kie_mock, provider, result_json):
    add_record(kie_mock, {"state": "success", "resultJson": result_json})
    add_result(kie_mock)

    assert poll(provider) == Done(PNG, "png")


@pytest.mark.parametrize(
    "record",
    [
        {"state": "success"},
        {"state": "success", "resultJson": ""},
        {"state": "success", "resultJson": "{not json"},
        {"state": "success", "resultJson": '{"resultUrls": []}'},
        {"state": "success", "resultJson": '["https://cdn.kie.test/x.png"]'},
    ],
    ids=["missing", "empty", "unparseable", "no-urls", "not-an-object"],
)
def test_success_without_a_readable_result_fails_the_image(kie_mock, provider, record):
    add_record(kie_mock, record)

    outcome = poll(provider)

    assert (outcome.code, outcome.retryable) == ("generation_failed", False)


def test_jpeg_results_keep_their_extension(kie_mock, provider):
    jpeg = image_bytes("JPEG")
    add_record(kie_mock, {"state": "success", "resultJson": {"resultUrls": [RESULT_URL]}})
    add_result(kie_mock, jpeg)

    assert poll(provider) == Done(jpeg, "jpg")


def test_result_download_does_not_send_kie_authorization(kie_mock, provider):
    add_record(kie_mock, {"state": "success", "resultJson": {"resultUrls": [RESULT_URL]}})
    add_result(kie_mock)

    poll(provider)

    record, download = kie_mock.calls
    assert record.request.headers["Authorization"] == f"Bearer {KEY}"
    assert "Authorization" not in download.request.headers
    assert download.request.headers["User-Agent"] == "batchgen/0.1"


def test_a_result_that_is_not_an_image_fails_the_image(kie_mock, provider):
    add_record(kie_mock, {"state": "success", "resultJson": {"resultUrls": [RESULT_URL]}})
    add_result(kie_mock, b"<html>expired</html>")

    outcome = poll(provider)

    assert (outcome.code, outcome.retryable) == ("generation_failed", False)


@pytest.mark.parametrize(
    ("fail_code", "fail_msg"),
    [("400", "Image rejected"), ("", "Your prompt violates our content policy")],
)
def test_content_policy_failure_is_permanent(kie_mock, provider, fail_code, fail_msg):
    add_record(kie_mock, {"state": "fail", "failCode": fail_code, "failMsg": fail_msg})

    outcome = poll(provider)

    assert (outcome.code, outcome.retryable) == ("content_policy", False)
    assert fail_msg in outcome.message
    assert "would be refused again: change the prompt or the image" in outcome.message
    assert "kie" not in outcome.message.lower()


@pytest.mark.parametrize(
    ("fail_code", "error_code", "retryable"),
    [
        ("500", "upstream_error", True),
        (451, "invalid_input", False),
        ("501", "generation_failed", False),
        (None, "generation_failed", False),
        ("9999", "generation_failed", False),
    ],
)
def test_failed_tasks_are_classified_by_their_fail_code(
    kie_mock, provider, fail_code, error_code, retryable
):
    add_record(kie_mock, {"state": "fail", "failCode": fail_code, "failMsg": "failed"})

    outcome = poll(provider)

    assert (outcome.code, outcome.retryable) == (error_code, retryable)


@pytest.mark.parametrize(
    "answer",
    [
        {"body": requests.exceptions.ReadTimeout("read timed out")},
        {"body": requests.exceptions.ConnectionError("refused")},
        {"json": {"code": 429, "msg": "Rate limited"}},
        {"json": {"code": 455, "msg": "Maintenance"}},
        {"status": 502, "body": "Bad gateway"},
        {"status": 200, "body": "not json"},
    ],
    ids=["timeout", "unreachable", "429", "maintenance", "502", "unreadable"],
)
def test_transient_errors_while_polling_keep_polling_rather_than_resubmit(
    kie_mock, provider, answer
):
    kie_mock.get(RECORD, **answer)

    assert poll(provider) == Pending()


def test_a_rejected_key_while_polling_fails_the_image(kie_mock, provider):
    kie_mock.get(RECORD, json={"code": 401, "msg": "Unauthorized"})

    assert poll(provider).code == "upstream_auth"


def test_transient_result_download_error_keeps_polling(kie_mock, provider):
    add_record(kie_mock, {"state": "success", "resultJson": {"resultUrls": [RESULT_URL]}})
    kie_mock.get(RESULT_URL, status=503)

    assert poll(provider) == Pending()


def test_expired_result_fails_permanently(kie_mock, provider):
    add_record(kie_mock, {"state": "success", "resultJson": {"resultUrls": [RESULT_URL]}})
    kie_mock.get(RESULT_URL, status=404)

    outcome = poll(provider)

    assert (outcome.code, outcome.retryable) == ("result_unavailable", False)


@pytest.mark.parametrize("task_id", ["midjourney:task-1", "jobs:", "task-1"])
def test_a_task_id_of_no_known_style_fails_without_calling_kie(kie_mock, provider, task_id):
    outcome = poll(provider, task_id)

    assert outcome.code == "unknown_task"
    assert len(kie_mock.calls) == 0


# Flux Kontext (record-info, successFlag)


def kontext_poll(provider):
    return poll(provider, "kontext:k-1", "flux-kontext-pro")


@pytest.mark.parametrize("flag", [0, "0", None])
def test_kontext_generating_is_pending(kie_mock, provider, flag):
    add_record(kie_mock, {"taskId": "k-1", "successFlag": flag}, KONTEXT_RECORD)

    assert kontext_poll(provider) == Pending()
    assert kie_mock.calls[0].request.params == {"taskId": "k-1"}


@pytest.mark.parametrize("flag", [1, "1"])
def test_kontext_success_downloads_the_result_image(kie_mock, provider, flag):
    add_record(
        kie_mock, {"successFlag": flag, "response": {"resultImageUrl": RESULT_URL}}, KONTEXT_RECORD
    )
    add_result(kie_mock)

    assert kontext_poll(provider) == Done(PNG, "png")
    assert "Authorization" not in kie_mock.calls[1].request.headers


def test_kontext_success_without_a_result_fails_the_image(kie_mock, provider):
    add_record(kie_mock, {"successFlag": 1, "response": None}, KONTEXT_RECORD)

    assert kontext_poll(provider).code == "generation_failed"


@pytest.mark.parametrize(
    ("flag", "error_code", "expected", "retryable"),
    [
        (2, 400, "content_policy", False),
        (3, 400, "content_policy", False),
        (2, 500, "upstream_error", True),
        (3, 501, "generation_failed", False),
    ],
)
def test_kontext_failures_are_classified(kie_mock, provider, flag, error_code, expected, retryable):
    add_record(
        kie_mock,
        {"successFlag": flag, "errorCode": error_code, "errorMessage": "It went wrong"},
        KONTEXT_RECORD,
    )

    outcome = kontext_poll(provider)

    assert (outcome.code, outcome.retryable) == (expected, retryable)
    assert "It went wrong" in outcome.message


# 4o image (record-info, status)


def gpt4o_poll(provider):
    return poll(provider, "gpt4o:g-1", "gpt-4o-image")


def test_gpt4o_generating_is_pending(kie_mock, provider):
    record = {"taskId": "g-1", "status": "GENERATING", "progress": "0.40"}
    add_record(kie_mock, record, GPT4O_RECORD)

    assert gpt4o_poll(provider) == Pending()
    assert kie_mock.calls[0].request.params == {"taskId": "g-1"}


@pytest.mark.parametrize("key", ["resultUrls", "result_urls"])
def test_gpt4o_success_reads_either_result_list(kie_mock, provider, key):
    add_record(kie_mock, {"status": "SUCCESS", "response": {key: [RESULT_URL]}}, GPT4O_RECORD)
    add_result(kie_mock)

    assert gpt4o_poll(provider) == Done(PNG, "png")


def test_gpt4o_success_without_a_result_fails_the_image(kie_mock, provider):
    add_record(kie_mock, {"status": "SUCCESS", "response": {}}, GPT4O_RECORD)

    assert gpt4o_poll(provider).code == "generation_failed"


@pytest.mark.parametrize(
    ("status", "error_code", "expected", "retryable"),
    [
        ("CREATE_TASK_FAILED", 400, "content_policy", False),
        ("GENERATE_FAILED", 400, "content_policy", False),
        ("GENERATE_FAILED", 500, "upstream_error", True),
        ("GENERATE_FAILED", None, "generation_failed", False),
    ],
)
def test_gpt4o_failures_are_classified(kie_mock, provider, status, error_code, expected, retryable):
    add_record(
        kie_mock,
        {"status": status, "errorCode": error_code, "errorMessage": "refused"},
        GPT4O_RECORD,
    )

    outcome = gpt4o_poll(provider)

    assert (outcome.code, outcome.retryable) == (expected, retryable)


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://cdn.kie.test/out.png", "gopher://x", "/relative.png"]
)
def test_a_result_link_that_is_not_http_is_never_fetched(kie_mock, provider, url):
    add_record(kie_mock, {"state": "success", "resultJson": {"resultUrls": [url]}})

    outcome = poll(provider)

    assert (outcome.code, outcome.retryable) == ("generation_failed", False)
    assert len(kie_mock.calls) == 1  # the record only


def test_a_result_larger_than_any_image_is_refused_not_held(kie_mock, provider, monkeypatch):
    from webapp.providers.kie import client

    monkeypatch.setattr(client, "MAX_RESULT_BYTES", len(PNG) - 1)
    add_record(kie_mock, {"state": "success", "resultJson": {"resultUrls": [RESULT_URL]}})
    add_result(kie_mock)

    outcome = poll(provider)

    assert outcome.code == "result_unavailable"
    assert "larger than" in outcome.message
