"""Health: /healthz answers from the process alone; /readyz and `flask check` check the database,
the queue and the storage within READY_TIMEOUT_SECONDS, go 503 naming the part that is down
(a PostgreSQL or a Redis really stopped, a storage that cannot be written) and 200 again once
it is back."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import make_url

from tests.outages import RedisServer, TcpProxy, redis_available, silent_port
from tests.support import CREATED_APPS, IN_CI, free_port, make_app, retire_apps, wait_for

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FLASK = str(Path(sys.executable).with_name("flask"))
NOBODY = "postgresql+psycopg://postgres@127.0.0.1:{port}/test"


def _unreachable_app(tmp_path, url, **settings):
    """An app on a database that does not answer (left out of the after-test ledger check)."""
    app = make_app(tmp_path, url, create_tables=False, READY_TIMEOUT_SECONDS=1, **settings)
    CREATED_APPS.remove(app)
    return app


def _ready(app):
    response = app.test_client().get("/readyz")
    return response.status_code, response.get_json()


def _readyz_is(app, status):
    def answered():
        return _ready(app)[0] == status

    answered.__name__ = f"readyz_{status}"
    return answered


@pytest.fixture
def redis_server(tmp_path):
    if not redis_available():
        if IN_CI:
            pytest.fail("redis-server is required under CI=true")
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path / "redis.log").start()
    yield server
    server.stop()


def test_healthz_answers_without_the_database_and_sets_no_cookie(tmp_path):
    """The database does not even exist: /healthz is about the process alone."""
    app = _unreachable_app(tmp_path, NOBODY.format(port=free_port()))
    client = app.test_client()
    client.set_cookie("telegram_session", "some-old-session")
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response.headers


def test_readyz_is_ready_naming_each_part(app):
    client = app.test_client()
    response = client.get("/readyz")

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "queue", "storage"}
    assert {part["status"] for part in body["checks"].values()} == {"ok"}
    assert body["checks"]["queue"]["backend"] == "memory"
    assert "Set-Cookie" not in response.headers


def test_the_probes_need_no_sign_in_and_no_csrf_and_count_against_no_limit(tmp_path):
    app = make_app(
        tmp_path,
        RATE_LIMITS_ENABLED=True,
        STATUS_RATE_LIMIT="1 per minute",
        SIGN_IN_RATE_LIMIT="1 per minute",
        WTF_CSRF_ENABLED=True,
    )
    client = app.test_client()
    answers = [client.get(path).status_code for path in ("/healthz", "/readyz") * 15]
    head = client.head("/healthz")

    assert answers == [200] * 30
    assert head.status_code == 200
    assert "X-RateLimit-Limit" not in head.headers


def test_readyz_names_a_database_nobody_answers_and_the_other_parts_stay_ok(tmp_path):
    app = _unreachable_app(tmp_path, NOBODY.format(port=free_port()))
    status, body = _ready(app)

    assert status == 503
    assert body["status"] == "unavailable"
    assert body["failed"] == ["database"]
    assert body["error"] == "Not ready: database (OperationalError)"
    assert body["checks"]["database"] == {
        "status": "failed",
        "error": "OperationalError",
        "seconds": body["checks"]["database"]["seconds"],
    }
    assert body["checks"]["queue"]["status"] == body["checks"]["storage"]["status"] == "ok"
    # The open probe names no host, port or path; the log and `flask check` say it all.
    assert "127.0.0.1" not in str(body) and str(tmp_path) not in str(body)


@pytest.mark.parametrize("part", ["database", "queue"])
def test_a_part_that_takes_the_connection_and_never_answers_is_down_after_the_timeout(
    tmp_path, part
):
    """A hung server (it accepts, then says nothing) must not hold the probe for 30 s: the
    answer comes once READY_TIMEOUT_SECONDS have passed, and a probe right after it does not
    pile a second check onto the one still waiting."""
    with silent_port() as port:
        if part == "database":
            app = _unreachable_app(tmp_path, NOBODY.format(port=port))
        else:
            app = make_app(
                tmp_path,
                HUEY_MEMORY=False,
                REDIS_URL=f"redis://127.0.0.1:{port}/0",
                READY_TIMEOUT_SECONDS=1,
            )
        started = time.monotonic()
        status, body = _ready(app)
        first = time.monotonic() - started
        again_status, again = _ready(app)

    assert status == 503 and body["failed"] == [part], body
    assert body["checks"][part]["error"] in (
        "no answer within 1 s",
        "TimeoutError",
        "OperationalError",
    )
    assert 1 <= first < 15, first  # the timeout, not libpq's or the kernel's
    assert again_status == 503 and again["failed"] == [part]


def test_readyz_goes_503_while_postgresql_is_unreachable_and_200_when_it_is_back(pg_url, tmp_path):
    """The path to the real server goes down (a proxy in front of it, stopped) and comes back."""
    server = make_url(pg_url)
    proxy = TcpProxy(server.host, server.port).start()
    try:
        app = make_app(
            tmp_path, server.set(port=proxy.port).render_as_string(False), READY_TIMEOUT_SECONDS=1
        )
        assert _ready(app)[0] == 200
        proxy.stop()
        status, body = _ready(app)
        proxy.start()
        wait_for(_readyz_is(app, 200), timeout=30)
    finally:
        if not proxy.running:
            proxy.start()
        retire_apps()  # the ledger check, while the path is up
        proxy.stop()

    assert status == 503, body
    assert body["failed"] == ["database"]
    assert body["checks"]["queue"]["status"] == "ok"


def test_readyz_goes_503_while_redis_is_stopped_and_200_when_it_is_back(tmp_path, redis_server):
    app = make_app(tmp_path, HUEY_MEMORY=False, REDIS_URL=redis_server.url, READY_TIMEOUT_SECONDS=1)
    before = _ready(app)
    redis_server.stop()
    status, body = _ready(app)
    redis_server.start()
    wait_for(_readyz_is(app, 200), timeout=30)

    assert before[0] == 200 and before[1]["checks"]["queue"]["backend"] == "redis"
    assert status == 503, body
    assert body["failed"] == ["queue"]
    assert body["checks"]["queue"]["error"] == "ConnectionError"
    assert body["checks"]["database"]["status"] == "ok"


def test_readyz_goes_503_while_the_storage_cannot_be_written_and_200_when_it_can(tmp_path):
    """The media folder's place for partial writes is taken by a file: nothing can be written
    (chmod would not stop root)."""
    app = make_app(tmp_path, READY_TIMEOUT_SECONDS=1)
    media = Path(app.config["MEDIA_ROOT"])
    assert _ready(app)[0] == 200
    os.rmdir(media / ".partial")
    (media / ".partial").write_text("not a folder")
    status, body = _ready(app)
    (media / ".partial").unlink()
    after = _ready(app)

    assert status == 503, body
    assert body["failed"] == ["storage"]
    assert body["checks"]["storage"]["error"] == "StorageUnavailable"
    assert after[0] == 200


def test_flask_check_prints_each_part_and_exits_1_naming_what_is_down(tmp_path):
    app = make_app(tmp_path, READY_TIMEOUT_SECONDS=1)
    ready = app.test_cli_runner().invoke(args=["check"])
    as_json = app.test_cli_runner().invoke(args=["check", "--json"])

    assert ready.exit_code == 0, ready.output
    lines = ready.output.splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["database", "queue", "storage"]
    assert all(" ok " in line for line in lines[:3])
    assert lines[-1] == "ready"
    assert as_json.exit_code == 0 and '"status": "ready"' in as_json.output

    # As ops run it, on a database nobody answers: the whole reason, and exit 1.
    environment = {
        **os.environ,
        "INSTANCE_PATH": str(tmp_path),
        "DATABASE_URL": NOBODY.format(port=free_port()),
        "READY_TIMEOUT_SECONDS": "1",
    }
    environment.pop("REDIS_URL", None)
    run = subprocess.run(
        [FLASK, "--app", "app", "check"],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    database_line = next(line for line in run.stdout.splitlines() if line.startswith("database"))
    assert "FAILED" in database_line and "Connection refused" in database_line
    assert run.stdout.splitlines()[-1] == "not ready: database"


def test_readyz_goes_503_while_the_s3_server_is_stopped_and_200_when_it_is_back(
    tmp_path, monkeypatch
):
    """A moto server of this test's own (the suite's shared one stays up), stopped and started
    again on its port; moto forgets its buckets, so the bucket is made again, as a real
    server would have kept it."""
    from tests.s3 import MOTO_CREDENTIALS, MotoServer, S3Place

    for name, setting in MOTO_CREDENTIALS.items():
        monkeypatch.setenv(name, setting)
    server = MotoServer(tmp_path / "moto.log").start()
    try:
        place = S3Place(server.endpoint_url, "readiness")
        place.client.create_bucket(Bucket=place.bucket)
        app = make_app(tmp_path, READY_TIMEOUT_SECONDS=1, **place.settings(place.new_prefix()))
        # The first check also builds the process's boto3 client, which may take longer.
        wait_for(_readyz_is(app, 200), timeout=30)
        before = _ready(app)
        server.stop()
        status, body = _ready(app)
        server.start()
        place.client.create_bucket(Bucket=place.bucket)
        wait_for(_readyz_is(app, 200), timeout=30)
    finally:
        server.stop()

    assert before[0] == 200, before
    assert status == 503, body
    assert body["failed"] == ["storage"]
    assert body["checks"]["storage"]["error"] in ("StorageUnavailable", "no answer within 1 s")


def test_on_postgresql_a_probes_statement_gives_up_after_the_timeout(pg_url, tmp_path):
    """A server that takes the query and sits on it (a lock, a stuck backend) cancels it itself
    once READY_TIMEOUT_SECONDS have passed, so the probe's connection is not left behind."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from webapp import probes

    app = make_app(tmp_path, pg_url, READY_TIMEOUT_SECONDS=1)
    with probes.database_connection(app) as connection:
        setting = connection.execute(text("SHOW statement_timeout")).scalar()
        with pytest.raises(OperationalError, match="statement timeout"):
            connection.execute(text("SELECT pg_sleep(10)"))
    with probes.database_connection(app) as connection:  # a new one, as every probe's
        assert connection.execute(text("SELECT 1")).scalar() == 1

    assert setting == "1s"
