"""Abuse limits: creates and polls per user, sign-ins and callbacks per address, and a cap on a
user's images in flight; over a limit is a 429 JSON with Retry-After, and costs nothing."""

import pytest

from tests.support import (
    ApiClient,
    batch_body,
    create_user,
    csrf_token_from,
    make_app,
    media_files,
)


@pytest.fixture
def limited_app(tmp_path, database_url):
    return make_app(
        tmp_path,
        database_url,
        RATE_LIMITS_ENABLED=True,
        CREATE_RATE_LIMIT="2 per minute",
        STATUS_RATE_LIMIT="3 per minute",
        SIGN_IN_RATE_LIMIT="2 per minute",
        CALLBACK_RATE_LIMIT="2 per minute",
        USER_MAX_PENDING_IMAGES=3,
    )


def assert_limited(response):
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    error = response.get_json()["error"]
    assert error.startswith("Too many requests")
    return error


def test_opening_event_streams_counts_as_polling(limited_app):
    alice = ApiClient(limited_app, *create_user(limited_app, "alice"))

    tries = [alice.get("/api/generate/batch/bat_unknown/events") for _ in range(4)]

    assert [answer.status_code for answer in tries[:3]] == [404, 404, 404]
    assert_limited(tries[3])


def test_creates_are_limited_per_user_and_the_refused_one_costs_nothing(limited_app):
    alice = ApiClient(limited_app, *create_user(limited_app, "alice"))
    bob = ApiClient(limited_app, *create_user(limited_app, "bob"))

    answers = [alice.post("/api/generate/batch", json=batch_body(1)) for _ in range(3)]

    assert [answer.status_code for answer in answers[:2]] == [200, 200]
    assert "2 per 1 minute" in assert_limited(answers[2])
    assert alice.balance() == 94  # two batches of one image, the third never charged
    assert len(media_files(limited_app)) == 2
    assert bob.post("/api/generate/batch", json=batch_body(1)).status_code == 200  # his own count


def test_polls_are_limited_per_user(limited_app):
    alice = ApiClient(limited_app, *create_user(limited_app, "alice"))
    batch_id = alice.post("/api/generate/batch", json=batch_body(1)).get_json()["batchId"]

    answers = [alice.get(f"/api/generate/batch/{batch_id}") for _ in range(4)]

    assert [answer.status_code for answer in answers[:3]] == [200, 200, 200]
    assert_limited(answers[3])
    # Only the refusal carries the limit's headers: each other answer would pay two more Redis
    # round trips for them (webapp/limits.py).
    assert not any("X-RateLimit-Limit" in answer.headers for answer in answers[:3])
    assert "Retry-After" not in answers[0].headers
    refused = answers[3].headers
    assert (refused["X-RateLimit-Limit"], refused["X-RateLimit-Remaining"]) == ("3", "0")
    assert 0 < int(refused["Retry-After"]) <= 60


@pytest.mark.parametrize("url", ["/api/batches", "/api/ledger", "/api/generate/batch/{}/webhooks"])
def test_history_and_delivery_logs_count_as_polls(limited_app, url):
    alice = ApiClient(limited_app, *create_user(limited_app, "alice"))
    batch_id = alice.post("/api/generate/batch", json=batch_body(1)).get_json()["batchId"]

    answers = [alice.get(url.format(batch_id)) for _ in range(4)]

    assert [answer.status_code for answer in answers[:3]] == [200, 200, 200]
    assert_limited(answers[3])


def test_redelivering_is_limited_at_the_pace_of_creates(limited_app):
    alice = ApiClient(limited_app, *create_user(limited_app, "alice"))
    answers = [alice.post("/api/webhooks/deliveries/msg_none/redeliver") for _ in range(3)]
    assert [answer.status_code for answer in answers[:2]] == [404, 404]
    assert_limited(answers[2])


def test_sign_in_attempts_are_limited_per_address_and_showing_the_page_is_not(limited_app):
    client = limited_app.test_client()
    for _ in range(5):
        assert client.get("/login").status_code == 200
    token = csrf_token_from(client.get("/login").get_data(as_text=True))

    form = {"token": "bg_wrong", "csrf_token": token}
    tries = [client.post("/login", data=form) for _ in range(3)]

    assert [answer.status_code for answer in tries[:2]] == [401, 401]
    assert tries[2].status_code == 429
    assert int(tries[2].headers["Retry-After"]) > 0


def test_callbacks_are_limited_per_address(limited_app):
    client = limited_app.test_client()

    answers = [client.post("/api/callbacks/kie", json={"taskId": "t-1"}) for _ in range(3)]

    assert [answer.status_code for answer in answers[:2]] == [200, 200]
    assert_limited(answers[2])


def test_a_user_with_too_many_images_in_flight_is_told_to_wait(limited_app):
    alice = ApiClient(limited_app, *create_user(limited_app, "alice"))
    assert alice.post("/api/generate/batch", json=batch_body(2)).status_code == 200

    response = alice.post("/api/generate/batch", json=batch_body(2))

    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    body = response.get_json()
    assert (body["limit"], body["inFlight"]) == (3, 2)
    assert "at most 3 images" in body["error"]
    assert alice.balance() == 94  # only the first batch was charged
    assert len(media_files(limited_app)) == 2


@pytest.mark.redis
def test_with_redis_every_web_process_counts_together(tmp_path, database_url, redis_url):
    settings = {
        "RATE_LIMITS_ENABLED": True,
        "CREATE_RATE_LIMIT": "2 per minute",
        "REDIS_URL": redis_url,
        "HUEY_MEMORY": True,  # the queue stays in memory; only the limits live on Redis
    }
    first = make_app(tmp_path, database_url, **settings)
    second = make_app(tmp_path, database_url, create_tables=False, **settings)
    user = create_user(first, "alice")

    answers = [
        ApiClient(app, *user).post("/api/generate/batch", json=batch_body(1))
        for app in (first, second, first)
    ]

    assert [answer.status_code for answer in answers] == [200, 200, 429]
