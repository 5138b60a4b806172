"""Upstream pacing: no window of `period` seconds ever holds more than `limit` slots, on Redis,
SQLite and PostgreSQL, across threads and processes, and the limit is still used in full."""

import bisect
import contextlib
import logging
import multiprocessing
import secrets
import threading
import time
from typing import NamedTuple

import pytest

from tests.support import app_config
from webapp import create_app
from webapp.config import defaults, from_environment
from webapp.extensions import db
from webapp.pacing import Unpaced, pacer_for, window_seconds

LIMIT, PERIOD = 5, 1
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class Backend(NamedTuple):
    """What an app (in this process or another) needs to share one pacer's backend."""

    config: dict
    instance_path: str


def build_app(backend, **overrides):
    """An app on the backend, with its tables created."""
    app = create_app({**backend.config, **overrides}, instance_path=backend.instance_path)
    with app.app_context():
        db.create_all()
    return app


@contextlib.contextmanager
def disposing(app):
    """The app for the block; its connections closed after, so its database can be dropped."""
    try:
        yield app
    finally:
        with app.app_context():
            db.engine.dispose()


@pytest.fixture(params=["redis", "sqlite", "postgresql"])
def backend(request, tmp_path):
    """Settings pacing LIMIT slots per PERIOD seconds on one backend, its tables created."""
    config = app_config(
        tmp_path,
        UPSTREAM_RATE_LIMIT=LIMIT,
        UPSTREAM_RATE_PERIOD=PERIOD,
        HUEY_NAME=f"pacing-{secrets.token_hex(4)}",
    )
    if request.param == "redis":
        config["REDIS_URL"] = request.getfixturevalue("redis_url")
    elif request.param == "postgresql":
        config["SQLALCHEMY_DATABASE_URI"] = request.getfixturevalue("pg_url")
    backend = Backend(config, str(tmp_path))
    with disposing(build_app(backend)):
        pass
    return backend


@pytest.fixture
def pacer(backend):
    with disposing(create_app(backend.config, instance_path=backend.instance_path)) as app:
        yield pacer_for(app)


def hammer(pacer, threads, seconds):
    """Every thread takes slots as fast as the pacer allows; answers when each slot was taken."""
    taken = []
    deadline = time.time() + seconds

    def take_slots():
        while (now := time.time()) < deadline:
            wait = pacer.acquire()
            if wait == 0:
                taken.append(pacer.last_slot().taken_at)
            else:
                time.sleep(min(wait, deadline - now))

    workers = [threading.Thread(target=take_slots) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return taken


def hammer_in_a_process(backend, start, results, threads, seconds):
    """A process of its own, with its own app and pacer, hammering once all processes are up."""
    with disposing(create_app(backend.config, instance_path=backend.instance_path)) as app:
        pacer = pacer_for(app)
        start.wait()
        results.put(hammer(pacer, threads, seconds))


def busiest_window(stamps, period=PERIOD):
    """The most slots in one window [t, t + period); the busiest one starts at a slot."""
    stamps = sorted(stamps)
    ends = (bisect.bisect_left(stamps, start + period) for start in stamps)
    return max((end - i for i, end in enumerate(ends)), default=0)


def test_threads_never_get_more_than_the_limit_in_any_window(pacer):
    taken = hammer(pacer, threads=6, seconds=1.5)

    assert busiest_window(taken) == LIMIT
    assert len(taken) > LIMIT  # slots came free again once the window moved on


def test_processes_never_get_more_than_the_limit_in_any_window(backend):
    processes, seconds = 3, 1.5
    # Processes fork from a server that has the app's modules loaded, not from threaded pytest.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    start, results = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(target=hammer_in_a_process, args=(backend, start, results, 2, seconds))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    taken = [stamp for _ in workers for stamp in results.get(timeout=60)]
    for worker in workers:
        worker.join(timeout=10)
        assert worker.exitcode == 0

    assert busiest_window(taken) == LIMIT
    assert len(taken) > LIMIT  # slots came free again once the window moved on


def test_a_full_window_answers_the_wait_until_its_oldest_slot_leaves(pacer):
    assert [pacer.acquire() for _ in range(LIMIT)] == [0.0] * LIMIT
    last = pacer.last_slot()

    wait = pacer.acquire()

    assert 0 < wait <= window_seconds(PERIOD)
    assert pacer.last_slot() == last  # a refusal takes nothing
    time.sleep(wait)
    assert pacer.acquire() == 0.0


def test_peek_says_how_long_until_a_slot_is_free_and_takes_nothing(pacer):
    assert pacer.peek() == 0.0
    assert [pacer.acquire() for _ in range(LIMIT - 1)] == [0.0] * (LIMIT - 1)
    assert pacer.peek() == 0.0
    assert pacer.acquire() == 0.0  # peeking took nothing: the last slot was still there

    wait = pacer.peek()

    assert 0 < wait <= window_seconds(PERIOD)
    assert abs(pacer.acquire() - wait) < 0.2
    time.sleep(wait)
    assert pacer.peek() == 0.0


def test_release_gives_the_last_slot_back(pacer):
    assert [pacer.acquire() for _ in range(LIMIT)] == [0.0] * LIMIT

    pacer.release()

    assert pacer.last_slot() is None
    assert pacer.acquire() == 0.0
    assert pacer.acquire() > 0


def test_release_gives_back_only_a_slot_this_thread_took(pacer):
    assert [pacer.acquire() for _ in range(LIMIT)] == [0.0] * LIMIT
    pacer.release()
    assert pacer.acquire() == 0.0

    pacer.release()  # the thread's slot now: given back
    pacer.release()  # nothing more is this thread's
    other_thread = threading.Thread(target=pacer.release)
    other_thread.start()
    other_thread.join()

    assert pacer.acquire() == 0.0
    assert pacer.acquire() > 0


def test_buckets_are_kept_apart_by_name(backend):
    with disposing(create_app(backend.config, instance_path=backend.instance_path)) as app:
        kie = pacer_for(app, "kie")
        assert [kie.acquire() for _ in range(LIMIT)] == [0.0] * LIMIT
        assert kie.acquire() > 0

        assert pacer_for(app, "kie") is kie  # one per process, so release() finds its slot
        assert pacer_for(app, "other").acquire() == 0.0


def test_deployments_sharing_a_redis_are_kept_apart_by_queue_name(tmp_path, redis_url):
    def pacer_of(queue_name):
        config = app_config(
            tmp_path, REDIS_URL=redis_url, HUEY_NAME=queue_name, UPSTREAM_RATE_LIMIT=1
        )
        return pacer_for(create_app(config, instance_path=str(tmp_path)))

    first = pacer_of("first")
    assert first.acquire() == 0.0
    assert first.acquire() > 0

    assert pacer_of("second").acquire() == 0.0


def test_a_limit_of_zero_turns_pacing_off(tmp_path):
    app = create_app(app_config(tmp_path, UPSTREAM_RATE_LIMIT=0), instance_path=str(tmp_path))
    pacer = pacer_for(app)

    assert isinstance(pacer, Unpaced)
    assert [pacer.acquire() for _ in range(100)] == [0.0] * 100
    pacer.release()


def test_an_unreachable_redis_answers_a_full_period_instead_of_raising(tmp_path, caplog):
    config = app_config(tmp_path, REDIS_URL="redis://127.0.0.1:1/0", UPSTREAM_RATE_PERIOD=7)
    pacer = pacer_for(create_app(config, instance_path=str(tmp_path)))

    with caplog.at_level(logging.WARNING, logger="webapp.pacing"):
        assert pacer.acquire() == pytest.approx(window_seconds(7))
        assert pacer.peek() == pytest.approx(window_seconds(7))
    assert pacer.last_slot() is None
    assert "Redis failed" in caplog.text


def test_the_rate_comes_from_the_environment(tmp_path):
    assert defaults(str(tmp_path))["UPSTREAM_RATE_LIMIT"] == 20
    assert defaults(str(tmp_path))["UPSTREAM_RATE_PERIOD"] == 10
    assert from_environment({"UPSTREAM_RATE_LIMIT": "0", "UPSTREAM_RATE_PERIOD": "60"}) == {
        "UPSTREAM_RATE_LIMIT": 0,
        "UPSTREAM_RATE_PERIOD": 60,
    }
