"""POST /api/generate/batch: the contract's answer, one charge, and refusals that cost nothing."""

import base64
import io
import json

import pytest
from PIL import Image

from tests.support import (
    ApiClient,
    batch_body,
    create_user,
    data_url,
    drain,
    image_bytes,
    media_files,
    png_data_url,
)


def test_batch_answer_follows_the_contract_and_charges_once(api_client):
    response = api_client.post("/api/generate/batch", json=batch_body(2))

    assert response.status_code == 200
    body = response.get_json()
    assert body["batchId"].startswith("batch_")
    assert [job["clientId"] for job in body["jobs"]] == ["img-0", "img-1"]
    assert all(job["generationId"].startswith("gen_") for job in body["jobs"])
    assert body["totalCost"] == 6
    assert body["status"] == "queued"
    assert body["message"] == "Queued 2 images for processing"
    assert body["engine"] == "local"
    assert api_client.balance() == 94
    assert api_client.ledger() == [("grant", 100), ("batch_debit", -6)]


def test_ten_flux_2_images_cost_thirty_stars(api_client):
    response = api_client.post("/api/generate/batch", json=batch_body(10))

    assert response.get_json()["totalCost"] == 30
    assert api_client.balance() == 70


def test_price_follows_model_and_quality(api_client):
    body = batch_body(3, model="nano-banana-pro", quality="4k")

    response = api_client.post("/api/generate/batch", json=body)

    assert response.get_json()["totalCost"] == 45
    assert api_client.balance() == 55


def test_inputs_are_stored_and_queue_carries_ids_only(app, api_client):
    from tasks import get_queue

    response = api_client.post("/api/generate/batch", json=batch_body(2))

    batch_id = response.get_json()["batchId"]
    assert len(media_files(app)) == 2
    huey = get_queue(app).huey
    assert huey.pending_count() == 2  # one lane per image, up to the concurrency
    for task in huey.pending():
        assert task.args == (batch_id,)


def test_batch_with_51_images_is_rejected_without_charging(app, api_client):
    response = api_client.post("/api/generate/batch", json=batch_body(51))

    assert response.status_code == 400
    assert "images" in response.get_json()["error"]
    assert api_client.balance() == 100
    assert api_client.ledger() == [("grant", 100)]
    assert media_files(app) == []


def _replace(body, **changes):
    body = dict(body)
    body.update(changes)
    return body


def _with_image(data, client_id="img-0"):
    return batch_body(1, images=[{"id": client_id, "data": data}])


def _truncated_png():
    raw = image_bytes("PNG", size=(200, 200))
    return data_url(raw[: len(raw) // 2])


def _bomb_png():
    # A 10000×10000 PNG of one colour is tiny on disk and 100 megapixels when opened.
    image = Image.new("L", (10000, 10000), 0)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return data_url(buffer.getvalue())


INVALID_BODIES = {
    "missing prompt": (lambda: _replace(batch_body(1), prompt=None), "prompt"),
    "empty prompt": (lambda: _replace(batch_body(1), prompt="   "), "prompt"),
    "unknown model": (lambda: _replace(batch_body(1), model="dall-e-9"), "model"),
    "missing model": (lambda: _replace(batch_body(1), model=None), "model"),
    "quality not offered": (lambda: _replace(batch_body(1), quality="4k"), "quality"),
    "aspect ratio not offered": (
        lambda: _replace(batch_body(1), aspectRatio="5:7"),
        "aspectRatio",
    ),
    "images missing": (lambda: {"prompt": "x", "model": "flux-2"}, "images"),
    "images empty": (lambda: batch_body(0), "images"),
    "images not a list": (lambda: _replace(batch_body(1), images="abc"), "images"),
    "image not an object": (lambda: _replace(batch_body(1), images=["abc"]), "images[0]"),
    "empty client id": (lambda: _with_image(png_data_url(), client_id=""), "images[0].id"),
    "duplicate client id": (
        lambda: _replace(
            batch_body(1),
            images=[{"id": "a", "data": png_data_url()}, {"id": "a", "data": png_data_url()}],
        ),
        "images[1].id",
    ),
    "missing data": (lambda: _replace(batch_body(1), images=[{"id": "a"}]), "images[0].data"),
    "not a data url": (lambda: _with_image("https://example.com/cat.png"), "images[0].data"),
    "gif data url": (
        lambda: _with_image("data:image/gif;base64,R0lGODlhAQABAAAAACw="),
        "images[0].data",
    ),
    "broken base64": (lambda: _with_image("data:image/png;base64,@@@notbase64"), "images[0].data"),
    "bytes are not an image": (
        lambda: _with_image(data_url(b"hello, not an image at all")),
        "images[0].data",
    ),
    "jpeg labelled as png": (
        lambda: _with_image(data_url(image_bytes("JPEG"), "png")),
        "images[0].data",
    ),
    "truncated png": (lambda: _with_image(_truncated_png()), "images[0].data"),
    "decompression bomb": (lambda: _with_image(_bomb_png()), "images[0].data"),
    "concurrency zero": (lambda: _replace(batch_body(1), concurrency=0), "concurrency"),
    "concurrency text": (lambda: _replace(batch_body(1), concurrency="fast"), "concurrency"),
    "body is a list": (lambda: [batch_body(1)], "body"),
}


@pytest.mark.parametrize("case", sorted(INVALID_BODIES))
def test_invalid_batch_is_rejected_naming_the_field_without_charging(app, api_client, case):
    make_body, field = INVALID_BODIES[case]

    response = api_client.post("/api/generate/batch", json=make_body())

    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert body["field"] == field
    assert field.split("[")[0] in body["error"]
    assert api_client.balance() == 100
    assert api_client.ledger() == [("grant", 100)]
    assert media_files(app) == []


def test_wrong_aspect_ratio_error_lists_the_choices(api_client):
    response = api_client.post("/api/generate/batch", json=batch_body(1, aspectRatio="5:7"))

    assert "16:9" in response.get_json()["error"]


def test_model_without_image_to_image_is_rejected(app, api_client, monkeypatch):
    from webapp import catalog

    text_only = catalog.parse_catalog(
        catalog.CATALOG_PATH.read_text().replace('modes = ["i2i", "t2i"]', 'modes = ["t2i"]', 1)
    )
    monkeypatch.setattr("webapp.api.load_catalog", lambda: text_only)

    response = api_client.post("/api/generate/batch", json=batch_body(1))

    assert response.status_code == 400
    assert "image-to-image" in response.get_json()["error"]
    assert api_client.balance() == 100


def test_image_over_the_byte_limit_is_rejected(tmp_path, database_url):
    from tests.support import make_app

    app = make_app(tmp_path, database_url, MAX_IMAGE_BYTES=2000)
    client = ApiClient(app, *create_user(app))
    noisy = Image.effect_noise((200, 200), 100).convert("RGB")
    buffer = io.BytesIO()
    noisy.save(buffer, format="PNG")

    response = client.post("/api/generate/batch", json=_with_image(data_url(buffer.getvalue())))

    assert response.status_code == 400
    assert "larger than" in response.get_json()["error"]
    assert client.balance() == 100
    assert media_files(app) == []


def test_body_over_the_request_limit_answers_413_json(tmp_path, database_url):
    from tests.support import make_app

    app = make_app(tmp_path, database_url, MAX_CONTENT_LENGTH=50_000)
    client = ApiClient(app, *create_user(app))
    body = batch_body(1)
    body["images"][0]["data"] = "data:image/png;base64," + base64.b64encode(b"x" * 60_000).decode()

    response = client.post("/api/generate/batch", json=body)

    assert response.status_code == 413
    assert response.is_json
    assert "larger than" in response.get_json()["error"]
    assert client.balance() == 100


def test_a_body_of_exactly_the_request_limit_is_accepted(tmp_path, database_url):
    from tests.support import make_app

    body = json.dumps(batch_body(1)).encode()
    app = make_app(tmp_path, database_url, MAX_CONTENT_LENGTH=len(body) + 10)
    client = ApiClient(app, *create_user(app))

    def post(padding):
        return client.post(
            "/api/generate/batch",
            data=body + b" " * padding,
            content_type="application/json",
            # As gunicorn says: the server ends the stream, Werkzeug enforces the limit on it.
            environ_overrides={"wsgi.input_terminated": True},
        )

    exactly, over = post(10), post(11)

    assert exactly.status_code == 200
    assert over.status_code == 413
    assert over.get_json()["error"] == (
        f"The request body is larger than the limit of {len(body) + 10:,} bytes "
        f"({(len(body) + 10) / 2**20:.4g} MiB)."
    )
    assert client.balance() == 100 - 3


def test_non_json_body_is_rejected(api_client):
    response = api_client.post("/api/generate/batch", data="prompt=hi")

    assert response.status_code == 400
    assert response.get_json()["field"] == "body"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"prompt": "hi"', "premature EOF"),
        (b'{"prompt": "hi"} {"prompt": "again"}', "trailing garbage"),
        (b'{"prompt": "\xff"}', "invalid bytes in UTF8 string"),
        (b"", "premature EOF"),
        (b'{"prompt": NaN}', "invalid char"),
    ],
)
def test_malformed_json_is_rejected_saying_why_without_charging(app, api_client, body, reason):
    response = api_client.post(
        "/api/generate/batch", data=body, content_type="application/json"
    )

    assert response.status_code == 400
    error = response.get_json()
    assert error["field"] == "body"
    assert error["error"].startswith("The body is not valid JSON: ")
    assert reason in error["error"]
    assert "\n" not in error["error"]  # the parser's drawing of the spot is left out
    assert api_client.balance() == 100
    assert media_files(app) == []


def test_a_batch_body_parses_from_the_stream_like_any_json(api_client):
    """Whitespace, escapes and non-ASCII text parse as json.loads would read them."""
    body = batch_body(2, prompt="Fond blanc, s’il vous plaît \u2728 \"vite\"")
    text = json.dumps(body, indent=2, ensure_ascii=False)

    response = api_client.post(
        "/api/generate/batch", data=text.encode(), content_type="application/json"
    )

    assert response.status_code == 200
    detail = api_client.get(f"/api/generate/batch/{response.get_json()['batchId']}").get_json()
    assert detail["prompt"] == body["prompt"]


def test_short_balance_answers_402_with_required_and_available(app):
    client = ApiClient(app, *create_user(app, "bob", credits=5))

    response = client.post("/api/generate/batch", json=batch_body(2))

    assert response.status_code == 402
    assert response.get_json() == {"error": "Insufficient credits", "required": 6, "available": 5}
    assert client.balance() == 5
    assert client.ledger() == [("grant", 5)]
    assert media_files(app) == []


def test_balance_covering_exactly_the_price_is_enough(app):
    client = ApiClient(app, *create_user(app, "carol", credits=6))

    response = client.post("/api/generate/batch", json=batch_body(2))

    assert response.status_code == 200
    assert client.balance() == 0


def test_without_auth_the_api_answers_401_json_and_nothing_happens(app, api_client):
    response = app.test_client().post("/api/generate/batch", json=batch_body(1))

    assert response.status_code == 401
    assert "error" in response.get_json()
    assert api_client.balance() == 100
    assert api_client.ledger() == [("grant", 100)]
    assert media_files(app) == []


def test_a_wrong_token_is_401(client):
    response = client.get("/api/me", headers={"Authorization": "Bearer bg_not-a-real-token"})

    assert response.status_code == 401
    assert response.is_json


def test_concurrency_is_capped_by_config(api_client, app):
    response = api_client.post("/api/generate/batch", json=batch_body(2, concurrency=99))

    assert response.get_json()["concurrency"] == app.config["MAX_CONCURRENCY"]


def test_batch_runs_to_completion_when_the_queue_drains(app, api_client):
    response = api_client.post("/api/generate/batch", json=batch_body(3, concurrency=1))
    batch_id = response.get_json()["batchId"]

    drain(app)

    detail = api_client.get(f"/api/generate/batch/{batch_id}").get_json()
    assert detail["status"] == "completed"
    assert detail["summary"]["completed"] == 3
    assert detail["isComplete"] is True
