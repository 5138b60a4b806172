"""Across machines, on a real S3-compatible server (moto's, started by the tests): the web
process writes the inputs, a real consumer process reads them and writes the results, the API's
imageUrl is a presigned GET any client fetches; links through /media and the zip read from the
bucket; retention deletes objects; an outage is an image's outcome, refunded, never stuck."""

import io
import zipfile
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image
from sqlalchemy import update

from tasks import get_queue
from tests.consumers import ConsumerProcess, queue_name
from tests.s3 import MotoServer, admin_client
from tests.support import (
    ApiClient,
    batch_body,
    batch_finished,
    claim_next_image,
    create_batch_id,
    create_user,
    drain,
    fetch_result,
    finish_claim,
    free_port,
    generation_rows,
    make_app,
    media_files,
    signed_in_browser,
    wait_for,
)
from webapp.extensions import db
from webapp.generation import reaper
from webapp.models import Generation, utcnow
from webapp.storage import get_storage


def _image_of(content):
    with Image.open(io.BytesIO(content)) as image:
        image.load()
        return image.format, image.size


def _kinds(keys):
    """How many objects of each kind (inputs, results) the keys hold."""
    counts = {}
    for key in keys:
        kind = key.split("/", 1)[0]
        counts[kind] = counts.get(kind, 0) + 1
    return counts


@pytest.mark.e2e
@pytest.mark.redis
def test_a_batch_on_s3_with_a_real_consumer_process(
    tmp_path, database_url, redis_url, s3_place, s3_prefix
):
    """The web process (this one) and `huey_consumer app.huey` share nothing but PostgreSQL or
    SQLite, Redis and the bucket: no folder."""
    app = make_app(
        tmp_path,
        database_url,
        HUEY_MEMORY=False,
        REDIS_URL=redis_url,
        HUEY_NAME=queue_name(),
        **s3_place.settings(s3_prefix),
    )
    client = ApiClient(app, *create_user(app))
    batch_id, _ = _created(client, 4, aspectRatio="3:4", concurrency=2)
    assert _kinds(s3_place.keys(s3_prefix)) == {"inputs": 4}  # written by the web process

    consumer = ConsumerProcess(app, tmp_path / "consumer.log", **s3_place.environment(s3_prefix))
    with consumer.start(workers=2, periodic=False):
        detail = wait_for(batch_finished(client, batch_id), timeout=120)
        consumer.stop()

    assert detail["status"] == "completed", consumer.log()
    for result in detail["results"]:
        link = result["imageUrl"]
        assert link.startswith(f"{s3_place.endpoint_url}/{s3_place.bucket}/{s3_prefix}results/")
        response = requests.get(link, timeout=10)  # a client without a cookie, or a browser
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "image/png"
        assert _image_of(response.content) == ("PNG", (768, 1024))
    assert _kinds(s3_place.keys(s3_prefix)) == {"inputs": 4, "results": 4}
    assert media_files(app) == []  # nothing went to a local folder
    assert client.balance() == 100 - 12
    assert client.ledger() == [("grant", 100), ("batch_debit", -12)]


def test_proxy_links_the_zip_and_a_download_read_from_the_bucket(tmp_path, s3_place, s3_prefix):
    app = make_app(tmp_path, **s3_place.settings(s3_prefix, S3_LINKS="proxy"))
    user_id, token = create_user(app)
    client = ApiClient(app, user_id, token)
    batch_id, generation_ids = _created(client, 3)
    drain(app)

    detail = client.get(f"/api/generate/batch/{batch_id}").get_json()
    assert detail["status"] == "completed"
    for result in detail["results"]:
        assert urlsplit(result["imageUrl"]).path.startswith("/media/results/")
        assert fetch_result(app, result["imageUrl"]) == ("PNG", (1024, 768))
    browser = signed_in_browser(app, token)
    archive = zipfile.ZipFile(io.BytesIO(browser.get(f"/batches/{batch_id}/download").data))
    assert archive.testzip() is None
    assert [_image_of(archive.read(name)) for name in archive.namelist()] == [
        ("PNG", (1024, 768))
    ] * 3
    one = browser.get(f"/batches/{batch_id}/images/{generation_ids[0]}")
    assert one.status_code == 200 and _image_of(one.data) == ("PNG", (1024, 768))
    one.close()
    assert media_files(app) == []


def test_retention_deletes_the_objects(tmp_path, s3_place, s3_prefix):
    app = make_app(tmp_path, **s3_place.settings(s3_prefix))
    client = ApiClient(app, *create_user(app))
    batch_id, _ = _created(client, 2)
    drain(app)
    detail = client.get(f"/api/generate/batch/{batch_id}").get_json()
    finished = datetime.fromisoformat(detail["finishedAt"].removesuffix("Z"))
    link = detail["results"][0]["imageUrl"]
    assert requests.get(link, timeout=10).status_code == 200
    ledger = client.ledger()

    assert _reap_at(app, finished + timedelta(hours=25)).expired_inputs == 2
    assert _kinds(s3_place.keys(s3_prefix)) == {"results": 2}
    assert _reap_at(app, finished + timedelta(days=30, minutes=1)).expired_results == 2

    assert s3_place.keys(s3_prefix) == []
    after = client.get(f"/api/generate/batch/{batch_id}").get_json()
    assert [result["imageUrl"] for result in after["results"]] == [None, None]
    assert requests.get(link, timeout=10).status_code == 404  # the bucket's answer, not 410
    assert client.ledger() == ledger


def test_an_s3_outage_makes_a_claimed_image_retry_then_fail_refunded(
    tmp_path, database_url, s3_place, s3_prefix
):
    """The web box reaches the bucket; the worker's side of the network is cut (nothing listens
    where it looks). Each attempt is an outcome: retried, then failed, refunded exactly once."""
    web = make_app(tmp_path, database_url, MAX_ATTEMPTS=2, **s3_place.settings(s3_prefix))
    cut_off = {
        "STORAGE_URL": s3_place.url(s3_prefix),
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "S3_MAX_ATTEMPTS": 1,
    }
    worker = make_app(tmp_path, database_url, MAX_ATTEMPTS=2, **cut_off)
    client = ApiClient(web, *create_user(web))
    batch_id = create_batch_id(client, 1)

    finish_claim(worker, claim_next_image(worker, batch_id))

    [row] = generation_rows(web, batch_id)
    assert (row["status"], row["error_code"], row["attempts"]) == (
        "pending",
        "storage_unavailable",
        1,
    )
    assert client.balance() == 97
    _backoff_over(web, batch_id)

    finish_claim(worker, claim_next_image(worker, batch_id))

    [row] = generation_rows(web, batch_id)
    assert (row["status"], row["error_code"]) == ("failed", "storage_unavailable")
    detail = client.get(f"/api/generate/batch/{batch_id}").get_json()
    assert detail["status"] == "failed" and detail["isComplete"]
    assert "storage could not read the input image" in detail["results"][0]["error"]
    assert client.balance() == 100
    assert client.ledger() == [("grant", 100), ("batch_debit", -3), ("refund", 3)]


@pytest.mark.e2e
@pytest.mark.redis
def test_a_consumer_whose_s3_server_stopped_fails_the_images_refunded_never_stuck(
    tmp_path, redis_url, s3_place
):
    """moto's server of this test's own holds the inputs, then stops: a real consumer retries
    each image and, its attempts spent, fails it and refunds it; the batch ends."""
    server = MotoServer(tmp_path / "moto.log").start()
    try:
        admin_client(server.endpoint_url).create_bucket(Bucket="outage")
        settings = {"STORAGE_URL": "s3://outage/media", "S3_ENDPOINT_URL": server.endpoint_url}
        app = make_app(
            tmp_path, HUEY_MEMORY=False, REDIS_URL=redis_url, HUEY_NAME=queue_name(), **settings
        )
        client = ApiClient(app, *create_user(app))
        batch_id = create_batch_id(client, 2)
    finally:
        server.stop()
    consumer = ConsumerProcess(
        app,
        tmp_path / "consumer.log",
        **settings,
        MAX_ATTEMPTS=2,
        RETRY_BASE_SECONDS=0.2,
        RETRY_CAP_SECONDS=0.5,
        S3_MAX_ATTEMPTS=1,
        S3_TIMEOUT_SECONDS=1,
    )

    with consumer.start(workers=2, periodic=False):
        detail = wait_for(batch_finished(client, batch_id), timeout=120)
        consumer.stop()

    assert detail["status"] == "failed", consumer.log()
    assert [row["error_code"] for row in generation_rows(app, batch_id)] == [
        "storage_unavailable"
    ] * 2
    assert all(row["attempts"] == 2 for row in generation_rows(app, batch_id))
    assert client.balance() == 100
    assert sorted(client.ledger()) == sorted(
        [("grant", 100), ("batch_debit", -6), ("refund", 3), ("refund", 3)]
    )


def test_a_batch_whose_inputs_cannot_reach_the_bucket_answers_503_and_charges_nothing(
    tmp_path, database_url, s3_place, s3_prefix
):
    app = make_app(
        tmp_path,
        database_url,
        STORAGE_URL=s3_place.url(s3_prefix),
        S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
        S3_MAX_ATTEMPTS=1,
    )
    client = ApiClient(app, *create_user(app))

    response = client.post("/api/generate/batch", json=batch_body(2))

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "image storage cannot be reached" in response.get_json()["error"]
    assert client.ledger() == [("grant", 100)]
    assert s3_place.keys(s3_prefix) == []


def test_the_reaper_recovers_work_while_the_bucket_is_out_of_reach(
    tmp_path, s3_place, s3_prefix
):
    """A worker died holding an image during an outage: its lease is recovered and its lane
    rung; only the storage's own sweeps (stale uploads, retention) wait for the next run."""
    web = make_app(tmp_path, **s3_place.settings(s3_prefix))
    client = ApiClient(web, *create_user(web))
    batch_id = create_batch_id(client, 1)
    claim = claim_next_image(web, batch_id)  # …and its worker is killed
    cut_off = make_app(
        tmp_path,
        STORAGE_URL=s3_place.url(s3_prefix),
        S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
        S3_MAX_ATTEMPTS=1,
    )

    report = _reap_at(cut_off, utcnow() + timedelta(seconds=web.config["LEASE_SECONDS"] + 1))

    assert report.requeued == [claim.generation.id]
    assert report.lanes == {batch_id: 1}
    assert (report.partials, report.expired_inputs, report.expired_results) == (0, 0, 0)
    [row] = generation_rows(web, batch_id)
    assert row["status"] == "pending"


def _created(client, count, **fields):
    response = client.post("/api/generate/batch", json=batch_body(count, **fields))
    assert response.status_code == 200, response.get_json()
    created = response.get_json()
    return created["batchId"], [job["generationId"] for job in created["jobs"]]


def _reap_at(app, moment):
    with app.app_context():
        return reaper.reap(get_queue(app).settings, 30, get_storage(), now=moment)


def _backoff_over(app, batch_id):
    with app.app_context():
        db.session.execute(
            update(Generation)
            .where(Generation.batch_id == batch_id)
            .values(not_before=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
