"""Fair pacing: lanes re-ring themselves at the back of the queue, so a big batch never starves
a small one that arrives after it, and one pacer shared by every consumer keeps new upstream
generations within UPSTREAM_RATE_LIMIT per UPSTREAM_RATE_PERIOD."""

import pytest

from devtools.kie_stub import KieStub, busiest_window
from tests.consumers import ConsumerProcess, queue_name
from tests.support import (
    ApiClient,
    batch_finished,
    create_batch_id,
    create_user,
    generation_rows,
    make_app,
    running_consumer,
    wait_for,
)

# How much later than its slot a create may reach the stub when the machine is busy.
ARRIVAL_JITTER = 0.25


@pytest.mark.e2e
@pytest.mark.parametrize("queue", ["sqlite", "redis"])
def test_a_small_batch_is_not_starved_by_a_big_one_that_came_first(
    tmp_path, database_url, queue, request
):
    overrides = {"HUEY_MEMORY": False, "LOCAL_ENGINE_DELAY": 0.05}
    if queue == "redis":
        overrides.update(REDIS_URL=request.getfixturevalue("redis_url"), HUEY_NAME="fairness")
    app = make_app(tmp_path, database_url, **overrides)
    big_user = ApiClient(app, *create_user(app, "big", credits=150))
    small_user = ApiClient(app, *create_user(app, "small", credits=10))
    big = create_batch_id(big_user, 40)
    small = create_batch_id(small_user, 2)

    with running_consumer(app, workers=2):
        wait_for(batch_finished(small_user, small), timeout=60)
        big_done_when_small_finished = sum(
            row["status"] == "success" for row in generation_rows(app, big)
        )
        wait_for(batch_finished(big_user, big), timeout=90)

    big_rows, small_rows = generation_rows(app, big), generation_rows(app, small)
    small_started = min(row["started_at"] for row in small_rows)
    big_finished = max(row["finished_at"] for row in big_rows)
    assert small_started < big_finished
    # Interleaved, not merely "before the very end": the small batch was through before the
    # big one got a quarter of the way.
    assert big_done_when_small_finished < 10
    assert big_user.balance() == 150 - 40 * 3
    assert small_user.balance() == 10 - 2 * 3


def _kie_settings(stub, limit, period):
    return {
        "GENERATION_BACKEND": "kie",
        "KIE_API_KEY": "test-key",
        "KIE_API_BASE": stub.base_url,
        "KIE_UPLOAD_BASE": stub.base_url,
        "UPSTREAM_RATE_LIMIT": limit,
        "UPSTREAM_RATE_PERIOD": period,
    }


@pytest.mark.e2e
@pytest.mark.redis
def test_consumer_processes_share_one_upstream_pace_and_interleave_users(
    tmp_path, database_url, redis_url
):
    limit, period = 4, 1
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
        first = ApiClient(app, *create_user(app, "first", credits=100))
        second = ApiClient(app, *create_user(app, "second", credits=100))
        consumers = [
            ConsumerProcess(app, tmp_path / f"consumer-{number}.log", **settings)
            for number in range(2)
        ]
        try:
            big = create_batch_id(first, 16)
            small = create_batch_id(second, 2)
            for consumer in consumers:
                consumer.start("thread", workers=4, periodic=False)
            wait_for(batch_finished(second, small), timeout=60)
            big_done_when_small_finished = sum(
                row["status"] == "success" for row in generation_rows(app, big)
            )
            wait_for(batch_finished(first, big), timeout=60)
        finally:
            for consumer in consumers:
                consumer.stop()
        created_times = list(stub.created_times)

    assert len(created_times) == 18
    assert busiest_window(created_times, period) <= limit
    assert all("Executing tasks.run_lane" in consumer.log() for consumer in consumers)
    assert big_done_when_small_finished < 16
    assert first.balance() == 100 - 16 * 3 and second.balance() == 100 - 2 * 3


@pytest.mark.e2e
def test_threads_share_the_database_pace_without_redis(tmp_path, database_url):
    limit, period = 3, 1
    with KieStub(polls_until_done=0) as stub:
        app = make_app(
            tmp_path,
            database_url,
            HUEY_MEMORY=False,
            POLL_DELAYS=(0.2,),
            **_kie_settings(stub, limit, period),
        )
        client = ApiClient(app, *create_user(app))
        batch_id = create_batch_id(client, 9)
        with running_consumer(app, workers=4):
            detail = wait_for(batch_finished(client, batch_id), timeout=60)
        created_times = list(stub.created_times)

    assert detail["status"] == "completed"
    assert len(created_times) == 9
    # The pacer spaces the slots it hands out; the stub sees each create a moment later, and on
    # a loaded machine (three test workers on two cores) that moment varies by more than the
    # pacer's 0.1 s margin at this 1 s period. So the window is judged less that jitter.
    assert busiest_window(created_times, period - ARRIVAL_JITTER) <= limit
    assert created_times[-1] - created_times[0] >= 2 * period - 0.1  # it really waited
