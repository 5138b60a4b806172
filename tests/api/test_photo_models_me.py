"""POST /api/generate/photo (the existing client), GET /api/models and GET /api/me."""

import os

import pytest

from tests.support import ApiClient, create_user, drain, media_files, photo_body


def test_photo_charges_per_request_and_answers_when_queued_work_is_slow(app, api_client):
    response = api_client.post("/api/generate/photo", json=photo_body())

    assert response.status_code == 202  # PHOTO_WAIT_SECONDS is 0 here: not done yet
    body = response.get_json()
    assert body["generationId"].startswith("gen_")
    assert body["status"] == "pending"
    assert body["imageUrl"] is None
    assert body["cost"] == 3
    assert api_client.balance() == 97
    assert api_client.ledger() == [("grant", 100), ("photo_debit", -3)]

    drain(app)

    status = api_client.get(f"/api/generate/batch?jobIds={body['generationId']}").get_json()
    assert status["results"][0]["status"] == "success"
    assert status["batchId"] is None


def test_text_to_image_photo_needs_no_reference(app, api_client):
    body = photo_body(mode="t2i", referenceImage=None, prompt="A blue sky", aspectRatio="16:9")

    response = api_client.post("/api/generate/photo", json=body)
    drain(app)

    assert response.status_code == 202
    result = api_client.get(f"/api/generate/batch?jobIds={response.get_json()['generationId']}")
    assert result.get_json()["results"][0]["status"] == "success"


def test_failed_photo_is_refunded_exactly_once(app, api_client):
    generation_id = api_client.post("/api/generate/photo", json=photo_body()).get_json()[
        "generationId"
    ]
    for path in media_files(app):  # the stored input vanishes before the engine runs
        os.unlink(path)

    drain(app)
    drain(app)

    result = api_client.get(f"/api/generate/batch?jobIds={generation_id}").get_json()["results"][0]
    assert result["status"] == "failed"
    assert result["errorCode"] == "input_missing"
    assert "missing" in result["error"]
    assert api_client.balance() == 100
    assert api_client.ledger() == [("grant", 100), ("photo_debit", -3), ("refund", 3)]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"mode": "edit"}, "mode"),
        ({"referenceImage": None}, "referenceImage"),
        ({"referenceImage": "data:image/png;base64,AAAA"}, "referenceImage"),
        ({"model": "seedream-4.5", "mode": "t2i", "referenceImage": None}, "model"),
        ({"prompt": ""}, "prompt"),
        ({"quality": "8k"}, "quality"),
    ],
)
def test_invalid_photo_is_rejected_without_charging(app, api_client, fields, field):
    response = api_client.post("/api/generate/photo", json=photo_body(**fields))

    assert response.status_code == 400
    assert response.get_json()["field"] == field
    assert api_client.balance() == 100
    assert media_files(app) == []


def test_photo_with_short_balance_is_402(app):
    client = ApiClient(app, *create_user(app, "dan", credits=2))

    response = client.post("/api/generate/photo", json=photo_body())

    assert response.status_code == 402
    assert response.get_json() == {"error": "Insufficient credits", "required": 3, "available": 2}
    assert media_files(app) == []


def test_models_lists_the_catalog_with_prices(client):
    body = client.get("/api/models").get_json()

    models = {model["id"]: model for model in body["models"]}
    assert body["engine"] == "local"
    assert len([m for m in models.values() if "i2i" in m["modes"]]) >= 6
    flux = models["flux-2"]
    assert flux["prices"]["1k"] == 3
    assert flux["modes"] == ["i2i", "t2i"]
    assert "16:9" in flux["aspectRatios"]
    assert flux["qualities"] == ["1k", "2k"]


def test_me_answers_id_name_and_credits(api_client):
    assert api_client.get("/api/me").get_json() == {
        "id": api_client.user_id,
        "name": "alice",
        "credits": 100,
    }


def test_me_without_auth_is_401(client):
    assert client.get("/api/me").status_code == 401
