"""A kie create whose answer is lost is never blindly created again: the attempt waits for the
callback that names its task (each callBackUrl names its attempt, signed), and is re-created
only after a grace."""

import dataclasses
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from tests.unit.kie_mocks import (
    API,
    CREATE,
    KEY,
    UPLOAD,
    UPLOAD_URL,
    add_upload,
    make_request,
    sent_json,
)
from webapp.models import utcnow
from webapp.providers import Failed, Pending, Submitted
from webapp.providers.kie import KieProvider
from webapp.providers.kie.callbacks import attempt_named, attempt_query

CALLBACK = "https://img.example.com/api/callbacks/kie"
SECRET = "secret-key"


def _provider(callback_url=CALLBACK):
    return KieProvider(
        KEY, API, UPLOAD, callback_url=callback_url, callback_secret=SECRET,
        confirm_grace_seconds=60,
    )


def _request(**fields):
    return dataclasses.replace(make_request("flux-2"), attempt="lease-token-1", **fields)


ANSWER_LOST = {
    "the connection dropped mid-answer": requests.ConnectionError(
        ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
    ),
    "the read timed out": requests.ReadTimeout("read timed out"),
}


@pytest.mark.parametrize("error", ANSWER_LOST.values(), ids=ANSWER_LOST.keys())
def test_a_create_whose_answer_is_lost_waits_for_its_callback(kie_mock, error):
    add_upload(kie_mock)
    kie_mock.post(CREATE, body=error)

    outcome = _provider().submit(_request())

    assert outcome == Submitted("unconfirmed:jobs", confirmed=False)
    assert len(kie_mock.calls) == 2  # one upload, one create: nothing sent again


def test_a_gateway_5xx_without_kies_envelope_may_have_created_the_task(kie_mock):
    add_upload(kie_mock)
    kie_mock.post(CREATE, status=502, body="<html>Bad gateway</html>")

    assert _provider().submit(_request()) == Submitted("unconfirmed:jobs", confirmed=False)


def test_kies_own_500_is_an_answer_retried_as_usual(kie_mock):
    add_upload(kie_mock)
    kie_mock.post(CREATE, json={"code": 500, "msg": "Server exception"})

    outcome = _provider().submit(_request())

    assert isinstance(outcome, Failed) and outcome.retryable
    assert outcome.code == "upstream_error"


def test_a_connection_never_made_created_nothing_and_is_retried_as_usual(kie_mock):
    add_upload(kie_mock)
    # What requests raises when nothing listens: urllib3 gave up on making a connection.
    refused = MaxRetryError(None, CREATE, reason=NewConnectionError(None, "refused"))
    kie_mock.post(CREATE, body=requests.ConnectionError(refused))

    outcome = _provider().submit(_request())

    assert isinstance(outcome, Failed) and outcome.code == "upstream_unavailable"


def test_without_callbacks_a_lost_answer_is_a_retryable_failure(kie_mock):
    """Nothing could ever name the task, so waiting would only delay the image."""
    add_upload(kie_mock)
    kie_mock.post(CREATE, body=requests.ReadTimeout("read timed out"))

    outcome = _provider(callback_url=None).submit(_request())

    assert isinstance(outcome, Failed) and outcome.retryable


def test_each_create_names_its_attempt_in_a_signed_callback_url(kie_mock):
    add_upload(kie_mock)
    kie_mock.post(CREATE, json={"code": 200, "msg": "success", "data": {"taskId": "t-1"}})

    _provider().submit(_request())

    url = urlsplit(sent_json(kie_mock.calls[1])["callBackUrl"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == CALLBACK
    query = dict(parse_qsl(url.query))
    assert attempt_named(SECRET, query) == ("gen-1", "lease-token-1", "jobs")
    assert attempt_named("another-secret", query) is None
    assert attempt_named(SECRET, {**query, "attempt": "someone-else"}) is None


def test_an_unconfirmed_task_is_pending_for_the_grace_then_given_up_as_retryable():
    provider = _provider()
    fresh = _request(started_at=utcnow() - timedelta(seconds=10))
    stale = _request(started_at=utcnow() - timedelta(seconds=61))

    assert provider.poll("unconfirmed:jobs", fresh) == Pending()
    outcome = provider.poll("unconfirmed:jobs", stale)
    assert isinstance(outcome, Failed) and outcome.retryable
    assert outcome.code == "upstream_unconfirmed"


def test_an_attempt_query_is_signed_over_every_field():
    query = attempt_query(SECRET, "gen-1", "lease", "jobs")
    for field in ("generation", "attempt", "style"):
        assert attempt_named(SECRET, {**query, field: "other"}) is None
    assert attempt_named(SECRET, {**query, "sig": "é"}) is None


def test_a_create_is_marked_as_possibly_made_right_before_it_leaves(kie_mock):
    """With callbacks, the attempt stores its placeholder after the upload and before the
    create: a worker killed before the answer leaves an attempt that waits for its callback."""
    add_upload(kie_mock)
    kie_mock.post(CREATE, json={"code": 200, "msg": "success", "data": {"taskId": "t-1"}})
    marked = []

    def before_create(placeholder):
        marked.append((placeholder, [call.request.url for call in kie_mock.calls]))
        return True

    outcome = _provider().submit(_request(before_create=before_create))

    assert outcome == Submitted("jobs:t-1")
    assert marked == [("unconfirmed:jobs", [UPLOAD_URL])]
    assert len(kie_mock.calls) == 2


def test_an_attempt_whose_lease_was_lost_before_the_create_sends_none(kie_mock):
    add_upload(kie_mock)  # no create is mocked: one sent would fail the test

    outcome = _provider().submit(_request(before_create=lambda placeholder: False))

    assert isinstance(outcome, Failed) and outcome.retryable
    assert outcome.code == "lease_lost"
    assert [call.request.url for call in kie_mock.calls] == [UPLOAD_URL]


def test_without_callbacks_nothing_is_marked(kie_mock):
    """Nothing could name the task, so a mark would only make a killed attempt wait."""
    add_upload(kie_mock)
    kie_mock.post(CREATE, json={"code": 200, "msg": "success", "data": {"taskId": "t-1"}})
    marked = []

    outcome = _provider(callback_url=None).submit(
        _request(before_create=lambda placeholder: marked.append(placeholder) or True)
    )

    assert outcome == Submitted("jobs:t-1")
    assert marked == []
