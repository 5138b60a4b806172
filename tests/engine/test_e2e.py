"""End to end: the HTTP API, a real queue, a real consumer, and the real result images."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import (
    ApiClient,
    app_config,
    batch_body,
    batch_finished,
    create_user,
    data_url,
    fetch_result,
    image_bytes,
    make_app,
    photo_body,
    running_consumer,
    wait_for,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]




def _run_batch(app, client):
    body = batch_body(6, aspectRatio="3:4", concurrency=3)
    created = client.post("/api/generate/batch", json=body).get_json()
    detail = wait_for(batch_finished(client, created["batchId"]), timeout=90)
    assert detail["status"] == "completed"
    assert detail["summary"]["completed"] == 6
    for result in detail["results"]:
        assert fetch_result(app, result["imageUrl"]) == ("PNG", (768, 1024))
    assert client.balance() == 100 - 18
    return detail


@pytest.mark.e2e
def test_batch_end_to_end_on_sqlite_huey_with_a_consumer_thread(tmp_path, database_url):
    app = make_app(tmp_path, database_url, HUEY_MEMORY=False)
    client = ApiClient(app, *create_user(app))

    with running_consumer(app, workers=3):
        _run_batch(app, client)


@pytest.mark.e2e
def test_photo_answers_with_the_finished_image_when_a_consumer_runs(tmp_path, database_url):
    app = make_app(tmp_path, database_url, HUEY_MEMORY=False, PHOTO_WAIT_SECONDS=30)
    client = ApiClient(app, *create_user(app))
    body = photo_body(model="nano-banana", referenceImage=data_url(image_bytes("WEBP"), "webp"))

    with running_consumer(app, workers=1):
        response = client.post("/api/generate/photo", json=body)

    assert response.status_code == 200
    answer = response.get_json()
    assert answer["status"] == "success"
    assert answer["error"] is None
    assert answer["cost"] == 3
    assert fetch_result(app, answer["imageUrl"]) == ("PNG", (1024, 1024))
    assert client.balance() == 97


@pytest.mark.e2e
@pytest.mark.redis
def test_batch_end_to_end_on_redis_with_a_huey_consumer_process(tmp_path, database_url, redis_url):
    queue_name = f"batchgen-test-{os.getpid()}"
    config = app_config(
        tmp_path,
        SQLALCHEMY_DATABASE_URI=database_url,
        HUEY_MEMORY=False,
        REDIS_URL=redis_url,
        HUEY_NAME=queue_name,
    )
    app = make_app(tmp_path, **{k: v for k, v in config.items() if k != "TESTING"})
    client = ApiClient(app, *create_user(app))
    environment = {
        **os.environ,
        "DATABASE_URL": config["SQLALCHEMY_DATABASE_URI"],
        "REDIS_URL": redis_url,
        "HUEY_NAME": queue_name,
        "MEDIA_ROOT": config["MEDIA_ROOT"],
        "SECRET_KEY": config["SECRET_KEY"],
        "INSTANCE_PATH": str(tmp_path),
    }
    consumer_bin = Path(sys.executable).with_name("huey_consumer")
    log_path = tmp_path / "consumer.log"
    with open(log_path, "w") as log:
        consumer = subprocess.Popen(
            [str(consumer_bin), "app.huey", "-k", "thread", "-w", "3", "--no-periodic"],
            cwd=PROJECT_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _run_batch(app, client)
    finally:
        consumer.send_signal(signal.SIGINT)
        try:
            consumer.wait(timeout=20)
        except subprocess.TimeoutExpired:
            consumer.kill()
    assert "run_lane" in log_path.read_text()
