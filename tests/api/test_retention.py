"""Retention with the clock moved: inputs go after INPUT_RETENTION_HOURS, results after
RESULT_RETENTION_DAYS; a link to a deleted result answers 410; money rows stay."""

import os
from datetime import datetime, timedelta

from tasks import get_queue
from tests.support import (
    batch_body,
    drain,
    media_files,
    photo_body,
    running_consumer,
    signed_in_browser,
)
from webapp.generation import reaper
from webapp.storage import get_storage


def _parse(stamp):
    return datetime.fromisoformat(stamp.removesuffix("Z"))


def _reap_at(app, moment):
    with app.app_context():
        return reaper.reap(get_queue(app).settings, 30, get_storage(), now=moment)


def _files(app, kind):
    return [path for path in media_files(app) if f"{os.sep}{kind}{os.sep}" in path]


def test_inputs_then_results_are_deleted_and_a_link_to_one_answers_410(app, api_client, user):
    batch = api_client.post("/api/generate/batch", json=batch_body(2)).get_json()
    drain(app)
    detail = api_client.get(f"/api/generate/batch/{batch['batchId']}").get_json()
    finished = _parse(detail["finishedAt"])
    assert _parse(detail["expiresAt"]) == finished + timedelta(days=30)
    assert len(_files(app, "inputs")) == 2 and len(_files(app, "results")) == 2
    ledger_before = api_client.ledger()

    report = _reap_at(app, finished + timedelta(hours=23))
    assert (report.expired_inputs, report.expired_results) == (0, 0)
    report = _reap_at(app, finished + timedelta(hours=25))
    assert (report.expired_inputs, report.expired_results) == (2, 0)
    assert _files(app, "inputs") == [] and len(_files(app, "results")) == 2
    link = api_client.get(f"/api/generate/batch/{batch['batchId']}").get_json()["results"][0][
        "imageUrl"
    ]
    kept = app.test_client().get(link)
    assert kept.status_code == 200
    kept.close()

    report = _reap_at(app, finished + timedelta(days=30, minutes=1))
    assert report.expired_results == 2
    assert _files(app, "results") == []
    after = api_client.get(f"/api/generate/batch/{batch['batchId']}").get_json()
    assert [result["imageUrl"] for result in after["results"]] == [None, None]
    assert [result["status"] for result in after["results"]] == ["success", "success"]

    gone = app.test_client().get(link)
    assert gone.status_code == 410 and "kept 30 days" in gone.get_json()["error"]
    in_a_tab = app.test_client().get(link, headers={"Accept": "text/html,*/*;q=0.8"})
    assert in_a_tab.status_code == 410 and "text/html" in in_a_tab.content_type
    assert "kept 30 days" in in_a_tab.get_data(as_text=True)

    browser = signed_in_browser(app, user[1])
    page = browser.get(f"/batches/{batch['batchId']}").get_data(as_text=True)
    assert "its results were deleted" in page and "/media/" not in page
    assert browser.get(f"/batches/{batch['batchId']}/download").status_code == 410
    generation_id = batch["jobs"][0]["generationId"]
    image = browser.get(f"/batches/{batch['batchId']}/images/{generation_id}")
    assert image.status_code == 410

    assert api_client.ledger() == ledger_before
    assert _reap_at(app, finished + timedelta(days=40)).expired_results == 0  # once


def test_a_single_photo_expires_from_when_it_finished(app, api_client):
    app.config["PHOTO_WAIT_SECONDS"] = 10
    with running_consumer(app):
        photo = api_client.post("/api/generate/photo", json=photo_body()).get_json()
    assert photo["status"] == "success"
    expires = _parse(photo["expiresAt"])
    assert _reap_at(app, expires - timedelta(minutes=1)).expired_results == 0
    assert _reap_at(app, expires + timedelta(minutes=1)).expired_results == 1
    assert app.test_client().get(photo["imageUrl"]).status_code == 410


def test_a_running_batch_is_never_swept(app, api_client):
    batch = api_client.post("/api/generate/batch", json=batch_body(2)).get_json()
    detail = api_client.get(f"/api/generate/batch/{batch['batchId']}").get_json()
    assert detail["expiresAt"] is None
    report = _reap_at(app, _parse(detail["createdAt"]) + timedelta(days=365))
    assert (report.expired_inputs, report.expired_results) == (0, 0)
    assert len(_files(app, "inputs")) == 2
