"""Fixtures: an app on a temporary SQLite file and an in-memory queue, users, services."""

import pytest

from tests.support import (
    CREATED_APPS,
    IN_CI,
    REDIS_URL,
    ApiClient,
    assert_ledger_balanced,
    create_user,
    make_app,
    service_available,
)
from webapp.extensions import db


@pytest.fixture(autouse=True)
def ledger_invariant():
    """After every test, every app it built has credits == sum(ledger) for every user."""
    CREATED_APPS.clear()
    yield
    for built in CREATED_APPS:
        assert_ledger_balanced(built)
        with built.app_context():
            db.engine.dispose()
    CREATED_APPS.clear()


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def user(app):
    return create_user(app)


@pytest.fixture
def api_client(app, user):
    return ApiClient(app, *user)


@pytest.fixture
def redis_url():
    """The test Redis (database 15), emptied; skipped locally if absent, required in CI."""
    if not service_available("127.0.0.1", 6379):
        if IN_CI:
            pytest.fail("Redis is required under CI=true but 127.0.0.1:6379 is not answering")
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()
