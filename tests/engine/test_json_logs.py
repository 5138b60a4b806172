"""LOG_FORMAT=json in the processes ops run: a `huey_consumer app.huey` on Redis, whose lines
(huey's own too) are JSON and name the batch and image they were about, and gunicorn started
with deploy/gunicorn.conf.py, whose lines (gunicorn's own too) are JSON with the request id."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from tests.consumers import PROJECT_ROOT, ConsumerProcess, queue_name
from tests.support import (
    ApiClient,
    batch_finished,
    create_batch_jobs,
    create_user,
    free_port,
    make_app,
    wait_for,
)
from webapp.extensions import db
from webapp.models import Generation

pytestmark = [pytest.mark.e2e, pytest.mark.redis]
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def _json_lines(text):
    """Every line of a log as JSON; a line that is not JSON fails the test, named."""
    parsed = []
    for line in text.splitlines():
        if line.strip():
            try:
                parsed.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"not a JSON line: {line!r}") from None
    return parsed


def test_a_consumer_logs_json_lines_naming_the_batch_and_the_image(
    tmp_path, database_url, redis_url
):
    app = make_app(
        tmp_path, database_url, HUEY_MEMORY=False, REDIS_URL=redis_url, HUEY_NAME=queue_name()
    )
    client = ApiClient(app, *create_user(app))
    batch_id, (generation_id,) = create_batch_jobs(client, count=1)
    with app.app_context():
        key = db.session.scalar(select(Generation.input_key).where(Generation.id == generation_id))
    # The input becomes unreadable (a folder where the file was): the lane logs a warning.
    path = Path(app.config["MEDIA_ROOT"], key)
    path.unlink()
    path.mkdir()

    log_path = tmp_path / "consumer.log"
    with ConsumerProcess(app, log_path, LOG_FORMAT="json", MAX_ATTEMPTS=1) as consumer:
        consumer.start(workers=2, periodic=False)
        detail = wait_for(batch_finished(client, batch_id), timeout=60)
        consumer.stop()
    shutil.rmtree(path)

    assert detail["status"] == "failed"  # its one attempt spent, refunded
    lines = _json_lines(log_path.read_text())
    warning = next(line for line in lines if line["logger"] == "webapp.generation.steps")
    assert warning["level"] == "WARNING"
    assert warning["message"].startswith(f"reading the input of {generation_id} failed")
    assert warning["batch_id"] == batch_id and warning["generation_id"] == generation_id
    huey_lines = [line for line in lines if line["logger"].startswith("huey")]
    assert any("Huey consumer started" in line["message"] for line in huey_lines), huey_lines
    assert {"time", "level", "logger", "message"} <= set(huey_lines[0])


def test_gunicorn_with_the_deploy_config_logs_json_with_the_request_id(tmp_path):
    app = make_app(tmp_path)  # the tables, on the SQLite file the server will use
    _, token = create_user(app)
    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "SECRET_KEY": app.config["SECRET_KEY"],
        "INSTANCE_PATH": app.instance_path,
        "MEDIA_ROOT": app.config["MEDIA_ROOT"],
        "LOG_FORMAT": "json",
        "WEB_BIND": f"127.0.0.1:{port}",
        "WEB_WORKERS": "1",
        "PROXY_HOPS": "1",
    }
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [GUNICORN, "-c", "deploy/gunicorn.conf.py", "app:app"],
            cwd=PROJECT_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"

        def answering():
            try:
                return requests.get(f"{base}/login", timeout=5)
            except requests.RequestException:  # not listening yet, or its worker still booting
                assert server.poll() is None, log_path.read_text()
                return None

        wait_for(answering, timeout=60, interval=0.2)
        denied = requests.get(
            f"{base}/api/me", headers={"X-Request-Id": "from-nginx-1"}, timeout=10
        )
        me = requests.get(
            f"{base}/api/me",
            headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": "203.0.113.7"},
            timeout=10,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)

    assert denied.status_code == 401 and denied.headers["X-Request-Id"] == "from-nginx-1"
    assert me.status_code == 200 and len(me.headers["X-Request-Id"]) == 32
    lines = _json_lines(log_path.read_text())
    loggers = {line["logger"] for line in lines}
    assert "gunicorn.error" in loggers, lines  # "Starting gunicorn", "Booting worker"…
    answered = [line for line in lines if line["logger"] == "webapp.requests"]
    assert ("from-nginx-1", 401) in [(line["request_id"], line["status"]) for line in answered]
    mine = next(line for line in answered if line["path"] == "/api/me" and line["status"] == 200)
    assert mine["request_id"] == me.headers["X-Request-Id"] and mine["user_id"] == 1
    assert mine["client"] == "203.0.113.7"  # PROXY_HOPS=1: the address nginx forwarded
