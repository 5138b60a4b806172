"""The retry policy: retryable errors wait with exponential backoff and jitter and are given up
(and refunded) after MAX_ATTEMPTS; permanent ones fail at once; a 429 or an empty kie account
waits without spending attempts, for as long as POLL_TIMEOUT_SECONDS. Driven through the real
kie client against the stub kie.ai on 127.0.0.1, which misbehaves on purpose."""

import logging
from collections import Counter
from datetime import timedelta

import pytest

from devtools.kie_stub import KieStub
from tests.support import (
    ApiClient,
    batch_finished,
    create_batch_id,
    create_user,
    generation_rows,
    running_consumer,
    wait_for,
)
from webapp.extensions import db
from webapp.generation import claims, outcomes, steps
from webapp.models import Generation
from webapp.pacing import window_seconds
from webapp.providers import RETRIED, Throttled, get_provider
from webapp.storage import get_storage

PRICE = 3  # flux-2 at 1k


QUICK_RETRIES = {
    "KIE_TIMEOUT_SECONDS": 0.5,
    "POLL_DELAYS": (0.1,),
    "RETRY_BASE_SECONDS": 0.05,
    "RETRY_CAP_SECONDS": 0.2,
}


@pytest.fixture
def quick_app(kie_app):
    """An app on the kie engine, pointed at a stub, with quick retries."""
    return lambda stub, **overrides: kie_app(stub, **{**QUICK_RETRIES, **overrides})


def get_provider_of(app):
    """The app's engine, to adjust its waits for a test."""
    with app.app_context():
        return get_provider()


@pytest.mark.parametrize("attempts", range(1, 12))
def test_backoff_grows_exponentially_with_jitter_up_to_the_cap(attempts):
    settings = claims.Settings(lease_seconds=60, max_attempts=12)
    ceiling = min(300.0, 2.0 * 2 ** (attempts - 1))

    delays = [outcomes.backoff_seconds(attempts, settings) for _ in range(50)]

    assert all(ceiling * 0.5 <= delay <= ceiling for delay in delays)
    assert len(set(delays)) > 1  # jittered, so retries of many images do not line up


def test_a_retryable_error_waits_its_backoff_before_the_next_attempt(quick_app):
    with KieStub(error_5xx_rate=1.0) as stub:
        app = quick_app(stub, RETRY_BASE_SECONDS=30, RETRY_CAP_SECONDS=60)
        client = ApiClient(app, *create_user(app))
        batch_id = create_batch_id(client, 1)
        settings = claims.Settings.from_config(app.config)

        with app.app_context():
            first = steps.lane_step(batch_id, get_provider(), get_storage(), settings)
            row = db.session.scalar(db.select(Generation).where(Generation.batch_id == batch_id))
            db.session.expunge(row)  # keep what the first attempt left, as it was
            again = steps.lane_step(batch_id, get_provider(), get_storage(), settings)

    assert first.worked
    assert (row.status, row.attempts, row.error_code) == ("pending", 1, "upstream_error")
    assert RETRIED in row.error_message
    waited = row.not_before - row.started_at
    assert timedelta(seconds=15) <= waited <= timedelta(seconds=31)
    assert not again.worked  # nothing is runnable before not_before
    assert again.wake_at == row.not_before
    assert stub.counts["server_error"] == 1
    assert client.balance() == 100 - PRICE  # still charged: it will be tried again


@pytest.mark.e2e
def test_retryable_errors_are_given_up_after_max_attempts_and_refunded(quick_app):
    with KieStub(error_5xx_rate=1.0) as stub:
        app = quick_app(stub, MAX_ATTEMPTS=3)
        client = ApiClient(app, *create_user(app))
        batch_id = create_batch_id(client, 2)
        with running_consumer(app, workers=2):
            detail = wait_for(batch_finished(client, batch_id), timeout=30)

    assert detail["status"] == "failed"
    for result in detail["results"]:
        assert result["errorCode"] == "upstream_error"
        assert result["error"].startswith("The image service had a server error")
        assert "kie" not in result["error"].lower()
        assert result["error"].endswith(
            "Gave up after 3 attempts; the credits for this image were refunded."
        )
        assert RETRIED not in result["error"]
    assert [row["attempts"] for row in generation_rows(app, batch_id)] == [3, 3]
    assert stub.counts["server_error"] == 6
    assert detail["refunded"] == 2 * PRICE
    assert client.balance() == 100


@pytest.mark.e2e
def test_a_content_policy_refusal_fails_at_once_with_a_clear_message(quick_app):
    with KieStub(fail_rate=1.0, fail_code="400", fail_msg="NSFW content detected") as stub:
        app = quick_app(stub)
        client = ApiClient(app, *create_user(app))
        batch_id = create_batch_id(client, 1)
        with running_consumer(app, workers=1):
            detail = wait_for(batch_finished(client, batch_id), timeout=30)

    result = detail["results"][0]
    assert (result["status"], result["errorCode"]) == ("failed", "content_policy")
    assert "content policy" in result["error"] and "NSFW content detected" in result["error"]
    # What happened and what to do, without the vendor's name or a "try again" as it was.
    assert "kie" not in result["error"].lower()
    assert "change the prompt or the image" in result["error"]
    assert [row["attempts"] for row in generation_rows(app, batch_id)] == [1]
    assert client.balance() == 100


@pytest.mark.e2e
def test_random_upstream_faults_end_every_image_settled_within_the_retry_cap(quick_app):
    max_attempts = 4
    faults = KieStub(
        rate_429=0.15,
        error_5xx_rate=0.15,
        timeout_rate=0.1,
        fail_rate=0.1,
        hang_seconds=2.0,  # longer than the client's 0.5 s read timeout
        polls_until_done=1,
        seed=7,
    )
    with faults as stub:
        # No pacing; a 429 waits one (short) UPSTREAM_RATE_PERIOD, uncounted.
        app = quick_app(
            stub, MAX_ATTEMPTS=max_attempts, UPSTREAM_RATE_LIMIT=0, UPSTREAM_RATE_PERIOD=0.2
        )
        client = ApiClient(app, *create_user(app))
        batch_id = create_batch_id(client, 20)
        with running_consumer(app, workers=4):
            detail = wait_for(batch_finished(client, batch_id), timeout=90)
        seen = Counter(stub.counts)

    rows = generation_rows(app, batch_id)
    statuses = Counter(row["status"] for row in rows)
    assert set(statuses) <= {"success", "failed"}, statuses  # none is stuck
    assert statuses["success"] >= 10
    assert all(1 <= row["attempts"] <= max_attempts for row in rows)
    for result in detail["results"]:
        if result["status"] == "failed":
            assert result["errorCode"] and result["error"]
    # Every kind of fault really happened, and was retried rather than failed at once.
    assert seen["rate_limited"] and seen["server_error"] and seen["hung_up"]
    assert all(result["errorCode"] != "rate_limited" for result in detail["results"])
    assert sum(row["attempts"] for row in rows) > len(rows)
    assert detail["refunded"] == PRICE * statuses["failed"]
    assert client.balance() == 100 - PRICE * statuses["success"]


def test_a_full_upstream_pace_is_waited_out_not_counted_as_an_attempt(quick_app):
    with KieStub() as stub:
        app = quick_app(stub, UPSTREAM_RATE_LIMIT=1, UPSTREAM_RATE_PERIOD=60)
        client = ApiClient(app, *create_user(app))
        batch_id = create_batch_id(client, 2)
        settings = claims.Settings.from_config(app.config)
        with app.app_context():
            provider = get_provider()
            first = steps.lane_step(batch_id, provider, get_storage(), settings)
            # The pace is full for a minute: a lane does not even claim.
            asleep = steps.lane_step(batch_id, provider, get_storage(), settings)
            # An image that got past that check when the slot was taken meanwhile.
            provider.pace_hold_seconds = 0
            claim = claims.claim_for_batch(batch_id, settings)
            outcome = steps.run_claim(claim, provider, get_storage(), settings)

    assert first.worked and first.poll_generation
    assert not asleep.worked and asleep.wake_at is not None
    assert isinstance(outcome, Throttled) and 0 < outcome.seconds <= window_seconds(60)
    assert stub.counts["create"] == 1  # the throttled image reached kie's upload, not its create
    rows = generation_rows(app, batch_id)
    assert [(row["status"], row["attempts"]) for row in rows] == [("processing", 1), ("pending", 0)]
    assert client.balance() == 100 - 2 * PRICE


def test_a_429_waits_at_least_one_rate_window_without_spending_an_attempt(quick_app):
    with KieStub(rate_429=1.0) as stub:
        app = quick_app(stub, UPSTREAM_RATE_PERIOD=10)
        client = ApiClient(app, *create_user(app))
        batch_id = create_batch_id(client, 1)
        settings = claims.Settings.from_config(app.config)
        with app.app_context():
            step = steps.lane_step(batch_id, get_provider(), get_storage(), settings)
            row = db.session.scalar(db.select(Generation).where(Generation.batch_id == batch_id))

    assert not step.worked and step.wake_at is not None
    assert (row.status, row.attempts, row.error_code) == ("pending", 0, "rate_limited")
    assert RETRIED in row.error_message
    assert timedelta(seconds=10) <= row.not_before - row.started_at <= timedelta(seconds=16)
    assert stub.counts["rate_limited"] == 1
    assert client.balance() == 100 - PRICE


@pytest.mark.e2e
def test_an_upstream_that_answers_429_forever_fails_the_image_after_the_deadline(quick_app):
    # Past POLL_TIMEOUT_SECONDS (0 here) every 429 counts, so MAX_ATTEMPTS of them end it.
    with KieStub(rate_429=1.0) as stub:
        app = quick_app(stub, MAX_ATTEMPTS=3, POLL_TIMEOUT_SECONDS=0)
        client = ApiClient(app, *create_user(app))
        batch_id = create_batch_id(client, 1)
        with running_consumer(app, workers=1):
            detail = wait_for(batch_finished(client, batch_id), timeout=30)

    [result] = detail["results"]
    assert (result["status"], result["errorCode"]) == ("failed", "rate_limited")
    assert result["error"] == (
        "The image service is busy with too many requests. "
        "Gave up after 3 attempts; the credits for this image were refunded."
    )
    assert [row["attempts"] for row in generation_rows(app, batch_id)] == [3]
    assert stub.counts["rate_limited"] == 3
    assert client.balance() == 100


@pytest.mark.e2e
def test_an_empty_kie_account_holds_images_uncounted_until_ops_top_it_up(quick_app, caplog):
    with KieStub(credits=0, polls_until_done=0) as stub:
        app = quick_app(stub, MAX_ATTEMPTS=1)
        get_provider_of(app).out_of_credits_wait = 0.2
        client = ApiClient(app, *create_user(app))
        batch_id = create_batch_id(client, 2)
        with caplog.at_level(logging.ERROR), running_consumer(app, workers=2):
            wait_for(lambda: stub.counts["out_of_credits"] >= 4, timeout=30)
            waiting = client.get(f"/api/generate/batch/{batch_id}").get_json()
            rows_while_empty = generation_rows(app, batch_id)
            stub.credits = 10  # an operator tops the account up
            detail = wait_for(batch_finished(client, batch_id), timeout=30)

    # Refused many times, yet nothing failed: with MAX_ATTEMPTS=1 a counted try would have.
    assert all(row["status"] != "failed" for row in rows_while_empty)
    assert all(row["attempts"] <= 1 for row in rows_while_empty)
    assert waiting["summary"]["failed"] == 0
    assert detail["status"] == "completed"
    assert [row["attempts"] for row in generation_rows(app, batch_id)] == [1, 1]
    alerts = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert any("out of credits" in alert for alert in alerts)
    assert client.balance() == 100 - 2 * PRICE
