"""Fair shares between users (generation/shares.py): when the upstream's pace binds, active
users share it equally, whatever their number of batches or their batches' concurrency, and
USER_MAX_CONCURRENCY caps a user's images in flight over all their batches."""

import json
import time
from datetime import UTC

import pytest

from devtools.kie_stub import KieStub, busiest_window
from tests.consumers import ConsumerProcess, queue_name
from tests.support import (
    ApiClient,
    batch_finished,
    create_batch_id,
    create_user,
    generation_rows,
    image_bytes,
    make_app,
    max_overlap,
    running_consumer,
    wait_for,
)
from webapp.generation import claims, outcomes, shares, steps
from webapp.models import GenerationStatus
from webapp.providers import Done, get_provider
from webapp.storage import get_storage

PRICE = 3  # flux-2 at 1k
# How much later than its slot a create may reach the stub when the machine is busy.
ARRIVAL_JITTER = 0.25


def _settings(app):
    return claims.Settings.from_config(app.config)


def _claim_next(app):
    """One lane's turn, up to the claim: the batch the share model puts first, claimed."""
    with app.app_context():
        settings = _settings(app)
        order = shares.turn_order(settings)
        return claims.claim_for_batch(order[0], settings) if order else None


def test_turns_go_round_robin_over_users_then_over_a_users_batches(app):
    first = ApiClient(app, *create_user(app, "first", credits=100))
    second = ApiClient(app, *create_user(app, "second", credits=100))
    first_a = create_batch_id(first, 6)
    first_b = create_batch_id(first, 6)
    other = create_batch_id(second, 6)

    claimed = [_claim_next(app).generation.batch_id for _ in range(6)]

    # Users alternate (ties: the oldest work first); within a user, the batch with the fewest
    # in flight (ties: the oldest): the user with two batches gets one share, not two.
    assert claimed == [first_a, other, first_b, other, first_a, other]
    rows = generation_rows(app, first_a)
    assert [row["status"] for row in rows[:3]] == ["processing", "processing", "pending"]


def test_a_held_or_full_batch_is_passed_over_for_the_next_one(app):
    first = ApiClient(app, *create_user(app, "first", credits=100))
    second = ApiClient(app, *create_user(app, "second", credits=100))
    full = create_batch_id(first, 3, concurrency=1)
    other = create_batch_id(second, 3, concurrency=1)

    assert _claim_next(app).generation.batch_id == full
    # `full` has its one slot taken: the turn serves the other user's batch, even a lane of
    # `full`'s.
    assert _claim_next(app).generation.batch_id == other
    assert _claim_next(app) is None  # both full: nothing to claim anywhere
    with app.app_context():
        assert shares.turn_order(_settings(app)) == []


def test_a_lane_serves_whichever_users_turn_it_is_even_after_its_own_batch_ended(app):
    first = ApiClient(app, *create_user(app, "first", credits=100))
    second = ApiClient(app, *create_user(app, "second", credits=100))
    mine = create_batch_id(first, 3)
    theirs = create_batch_id(second, 3)

    def turn():
        with app.app_context():
            return steps.lane_step(mine, get_provider(), get_storage(), _settings(app))

    assert turn().worked and turn().worked  # the local engine makes each image in the turn
    assert [row["status"] for row in generation_rows(app, mine)].count("success") == 1
    assert [row["status"] for row in generation_rows(app, theirs)].count("success") == 1
    assert first.post(f"/api/generate/batch/{mine}/cancel").status_code == 200
    # The lane's own batch is cancelled: its turns go on serving the other user's images.
    assert turn().worked and turn().worked
    assert [row["status"] for row in generation_rows(app, theirs)] == ["success"] * 3
    final = turn()
    assert not final.worked and final.wake_at is None  # nothing left anywhere: the lane stops
    assert first.balance() == 100 - PRICE and second.balance() == 100 - 3 * PRICE


def test_user_max_concurrency_caps_a_user_over_all_their_batches(tmp_path, database_url):
    app = make_app(tmp_path, database_url, USER_MAX_CONCURRENCY=3)
    first = ApiClient(app, *create_user(app, "first", credits=100))
    second = ApiClient(app, *create_user(app, "second", credits=100))
    first_a = create_batch_id(first, 3)
    first_b = create_batch_id(first, 3)
    other = create_batch_id(second, 4)
    settings = _settings(app)

    with app.app_context():
        held = [claims.claim_for_batch(batch_id, settings) for batch_id in (first_a, first_a)]
        held.append(claims.claim_for_batch(first_b, settings))
        # Three in flight over the user's two batches: the cap holds in the claim itself...
        assert claims.claim_for_batch(first_b, settings) is None
        assert claims.claim_for_batch(first_a, settings) is None
        # ...the share model offers the user nothing, and the other user is not held back.
        assert shares.turn_order(settings) == [other]
        assert claims.claim_for_batch(other, settings) is not None
        # One of the user's images ends: their slot is free again.
        outcomes.record_outcome(held[0], Done(image_bytes()), get_storage(), settings)
        assert claims.claim_for_batch(first_b, settings) is not None

    statuses = [
        row["status"] for row in generation_rows(app, first_a) + generation_rows(app, first_b)
    ]
    assert statuses.count(GenerationStatus.PROCESSING) == 3
    assert first.balance() == 100 - 6 * PRICE and second.balance() == 100 - 4 * PRICE


@pytest.mark.e2e
def test_user_max_concurrency_holds_with_a_consumer_and_other_users_run_beside(
    tmp_path, database_url
):
    app = make_app(
        tmp_path, database_url, HUEY_MEMORY=False, LOCAL_ENGINE_DELAY=0.3, USER_MAX_CONCURRENCY=3
    )
    first = ApiClient(app, *create_user(app, "first", credits=100))
    second = ApiClient(app, *create_user(app, "second", credits=100))
    first_batches = [create_batch_id(first, 6, concurrency=4) for _ in range(2)]
    other = create_batch_id(second, 6, concurrency=4)

    with running_consumer(app, workers=8):
        for batch_id in first_batches:
            wait_for(batch_finished(first, batch_id), timeout=60)
        wait_for(batch_finished(second, other), timeout=60)

    first_rows = [row for batch_id in first_batches for row in generation_rows(app, batch_id)]
    other_rows = generation_rows(app, other)
    assert [row["status"] for row in first_rows + other_rows] == ["success"] * 18
    assert 2 <= max_overlap(first_rows) <= 3  # parallel, and capped over both batches
    assert max_overlap(other_rows) >= 2  # the first user's cap holds no one else back
    assert first.balance() == 100 - 12 * PRICE and second.balance() == 100 - 6 * PRICE


def _kie_settings(stub, limit, period):
    return {
        "GENERATION_BACKEND": "kie",
        "KIE_API_KEY": "test-key",
        "KIE_API_BASE": stub.base_url,
        "KIE_UPLOAD_BASE": stub.base_url,
        "UPSTREAM_RATE_LIMIT": limit,
        "UPSTREAM_RATE_PERIOD": period,
    }


def _creates_by_user(stub, prompts):
    """[(arrival time, user)] of every create the stub accepted, told by the user's prompt."""
    creates = []
    for arrived, body in zip(stub.created_times, stub.created, strict=True):
        text = json.dumps(body)
        [user] = [user for user, prompt in prompts.items() if prompt in text]
        creates.append((arrived, user))
    return creates


def _shares(creates, horizon):
    """{user: (creates, equal share)} over the creates within `horizon` seconds of the first.

    A user is active from the start until their last create (all their images sent); each
    create counts 1/n towards the equal share of each of the n users active at it.
    """
    last = {user: index for index, (_, user) in enumerate(creates)}
    start = creates[0][0]
    counted = {user: [0, 0.0] for user in last}
    for index, (arrived, user) in enumerate(creates):
        if arrived - start > horizon:
            break
        active = [other for other, final in last.items() if index <= final]
        counted[user][0] += 1
        for other in active:
            counted[other][1] += 1 / len(active)
    return {user: tuple(numbers) for user, numbers in counted.items()}


def _assert_equal_shares(creates, horizon, tolerance=0.15):
    for user, (made, equal) in _shares(creates, horizon).items():
        assert abs(made - equal) <= tolerance * equal, (user, made, equal, creates)


def _sent_for(stub, seconds):
    """A predicate for wait_for: the stub has accepted creates for more than `seconds`."""

    def sent():
        times = list(stub.created_times)
        return len(times) > 1 and times[-1] - times[0] > seconds

    return sent


def _epoch(moment):
    return moment.replace(tzinfo=UTC).timestamp()


@pytest.mark.e2e
@pytest.mark.redis
def test_three_users_share_the_upstream_pace_equally_and_a_small_batch_goes_first(
    tmp_path, database_url, redis_url
):
    limit, period, horizon = 20, 10, 30
    sizes = {"first": 50, "second": 50, "small": 5}
    prompts = {user: f"Add white background for {user}" for user in sizes}
    with KieStub(polls_until_done=0) as stub:
        settings = _kie_settings(stub, limit, period)
        app = make_app(
            tmp_path,
            database_url,
            HUEY_MEMORY=False,
            REDIS_URL=redis_url,
            HUEY_NAME=queue_name(),
            **settings,
        )
        clients = {user: ApiClient(app, *create_user(app, user, credits=200)) for user in sizes}
        batches = {
            user: create_batch_id(clients[user], count, prompt=prompts[user])
            for user, count in sizes.items()
        }
        consumers = [
            ConsumerProcess(app, tmp_path / f"consumer-{number}.log", **settings)
            for number in range(2)
        ]
        # The stub's clock (monotonic) against the database's (UTC wall time).
        monotonic_minus_wall = time.monotonic() - time.time()
        try:
            for consumer in consumers:
                consumer.start("thread", workers=4, periodic=False)
            wait_for(batch_finished(clients["small"], batches["small"]), timeout=60)
            wait_for(_sent_for(stub, horizon), timeout=90)
            for user in ("first", "second"):
                answer = clients[user].post(f"/api/generate/batch/{batches[user]}/cancel")
                assert answer.status_code == 200
            for user, batch_id in batches.items():
                wait_for(batch_finished(clients[user], batch_id), timeout=60)
        finally:
            for consumer in consumers:
                consumer.stop()
        creates = _creates_by_user(stub, prompts)
        created_times = list(stub.created_times)

    assert busiest_window(created_times, period - ARRIVAL_JITTER) <= limit
    _assert_equal_shares(creates, horizon)
    # The small batch did not wait behind the big ones: all of it was sent, and finished,
    # within the pace's first window (before the first create of the second window).
    small_rows = generation_rows(app, batches["small"])
    assert [user for _, user in creates[:limit]].count("small") == 5
    small_finished = max(_epoch(row["finished_at"]) for row in small_rows) + monotonic_minus_wall
    assert small_finished < created_times[limit]
    # Exact money: each image sent was made and charged; every other one was refunded.
    for user, batch_id in batches.items():
        rows = generation_rows(app, batch_id)
        made = [row["status"] for row in rows].count("success")
        assert made == [who for _, who in creates].count(user)
        assert made + [row["status"] for row in rows].count("cancelled") == sizes[user]
        assert clients[user].balance() == 200 - made * PRICE


@pytest.mark.e2e
def test_a_user_with_two_batches_gets_the_same_share_as_a_user_with_one(tmp_path, database_url):
    limit, period, horizon = 4, 2, 20
    prompts = {"two": "Add white background, two batches", "one": "Add white background, one"}
    with KieStub(polls_until_done=0) as stub:
        app = make_app(
            tmp_path,
            database_url,
            HUEY_MEMORY=False,
            POLL_DELAYS=(0.2,),
            **_kie_settings(stub, limit, period),
        )
        two = ApiClient(app, *create_user(app, "two", credits=200))
        one = ApiClient(app, *create_user(app, "one", credits=200))
        mine = [create_batch_id(two, 30, prompt=prompts["two"]) for _ in range(2)]
        # The same room in flight for both: USER_MAX_CONCURRENCY (8) over the two batches of
        # four, and one batch of eight (an image waiting for its slot, or for its poll, is in
        # flight; a batch at its concurrency is passed over whatever its user's share).
        theirs = create_batch_id(one, 30, prompt=prompts["one"], concurrency=8)
        with running_consumer(app, workers=4):
            wait_for(_sent_for(stub, horizon), timeout=60)
            for client, batch_id in [(two, mine[0]), (two, mine[1]), (one, theirs)]:
                assert client.post(f"/api/generate/batch/{batch_id}/cancel").status_code == 200
            for client, batch_id in [(two, mine[0]), (two, mine[1]), (one, theirs)]:
                wait_for(batch_finished(client, batch_id), timeout=60)
        creates = _creates_by_user(stub, prompts)

    # Per lane, the user with two batches (eight lanes to four) would get two thirds.
    _assert_equal_shares(creates, horizon)
    made = {client: 0 for client in (two, one)}
    for client, batch_id in [(two, mine[0]), (two, mine[1]), (one, theirs)]:
        statuses = [row["status"] for row in generation_rows(app, batch_id)]
        assert set(statuses) <= {"success", "cancelled"}
        made[client] += statuses.count("success")
    assert made[two] == [user for _, user in creates].count("two")
    assert two.balance() == 200 - made[two] * PRICE and one.balance() == 200 - made[one] * PRICE
