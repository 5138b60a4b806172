"""Fixtures: an app on SQLite and on PostgreSQL with an in-memory queue, users, services."""

import os

import pytest
from sqlalchemy.exc import OperationalError

from tests.postgres import PostgresServer
from tests.support import (
    CREATED_APPS,
    IN_CI,
    REDIS_URL,
    ApiClient,
    create_user,
    make_app,
    retire_apps,
    service_available,
)


@pytest.fixture(autouse=True)
def ledger_invariant():
    """After every test, every app it built has credits == sum(ledger) for every user."""
    CREATED_APPS.clear()
    yield
    retire_apps()


@pytest.fixture(scope="session")
def pg_server():
    """The test PostgreSQL (TEST_DATABASE_URL); skipped locally if absent, required in CI."""
    server = PostgresServer()
    try:
        server.check()
    except OperationalError as error:
        server.close()
        first_line = str(error.orig).splitlines()[0]
        reason = f"PostgreSQL at {server.describe()} is not answering ({first_line})"
        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI=true: {reason}")
        pytest.skip(f"{reason}; set TEST_DATABASE_URL to use another server")
    yield server
    server.close()


@pytest.fixture
def pg_url(pg_server):
    """The URL of an empty PostgreSQL schema of this test's own, dropped after the test."""
    schema, url = pg_server.create_schema()
    yield url
    try:
        retire_apps()  # their pooled connections would keep DROP SCHEMA waiting
    finally:
        pg_server.drop_schema(schema)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """Runs the test twice: on a SQLite file of its own, then on a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def app(tmp_path, database_url):
    return make_app(tmp_path, database_url)


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


@pytest.fixture(scope="session")
def s3_place():
    """A real S3-compatible server and a bucket on it: the one TEST_S3_URL names (MinIO, say),
    else moto's server started here, on 127.0.0.1. Starting moto never skips: it is a dev
    dependency, so a failure to start fails the tests that need it (tests/s3.py)."""
    from tests.s3 import MOTO_CREDENTIALS, MotoServer, S3Place, place_from_environment

    place = place_from_environment()
    if place is not None:
        yield place
        return
    saved = {name: os.environ.get(name) for name in MOTO_CREDENTIALS}
    for name, value in MOTO_CREDENTIALS.items():
        os.environ.setdefault(name, value)  # the app's and its consumers' boto3 chain finds them
    for attempt in range(3):  # a free port may be taken by another process meanwhile
        server = MotoServer()
        try:
            server.start()
            break
        except RuntimeError as error:
            if attempt == 2:
                pytest.fail(f"could not start moto's S3 server: {error}")
    try:
        place = S3Place(server.endpoint_url, "batchgen-tests")
        place.client.create_bucket(Bucket=place.bucket)
        yield place
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)


@pytest.fixture
def s3_prefix(s3_place):
    """A prefix of this test's own in the test bucket."""
    return s3_place.new_prefix()
