"""Security headers on every answer: pages, fragments, the API, media and errors alike."""

from urllib.parse import urlsplit

import pytest

from tests.support import HTMX, batch_body, drain, make_app, signed_in_browser

STRICT = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def assert_secured(response, policy=STRICT):
    headers = response.headers
    assert headers["Content-Security-Policy"] == policy
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Server"] == "batchgen"
    assert "Strict-Transport-Security" not in headers  # served over http here


def test_every_kind_of_answer_carries_the_headers(app, user, api_client):
    browser = signed_in_browser(app, user[1])
    created = api_client.post("/api/generate/batch", json=batch_body(1)).get_json()
    drain(app)
    batch_id = created["batchId"]
    detail = api_client.get(f"/api/generate/batch/{batch_id}").get_json()
    image = urlsplit(detail["results"][0]["imageUrl"])

    answers = {
        "start page, signed out": app.test_client().get("/"),
        "sign-in page": app.test_client().get("/login"),
        "upload page": browser.get("/"),
        "batch page": browser.get(f"/batches/{batch_id}"),
        "grid fragment": browser.get(f"/batches/{batch_id}", headers=HTMX),
        "history": browser.get("/batches"),
        "account": browser.get("/account"),
        "zip": browser.get(f"/batches/{batch_id}/download"),
        "API answer": api_client.get("/api/me"),
        "API error": api_client.get("/api/generate/batch/batch_missing"),
        "API 401": app.test_client().get("/api/me"),
        "media": app.test_client().get(f"{image.path}?{image.query}"),
        "media 403": app.test_client().get("/media/results/x.png?expires=1&signature=x"),
        "page 404": browser.get("/batches/batch_missing"),
        "static file": app.test_client().get("/static/app.css"),
    }
    for name, response in answers.items():
        with response:
            assert response.status_code < 500, name
            assert_secured(response)


def test_a_stored_image_is_served_inline_under_its_own_name(app, api_client):
    created = api_client.post("/api/generate/batch", json=batch_body(1)).get_json()
    drain(app)
    detail = api_client.get(f"/api/generate/batch/{created['batchId']}").get_json()
    image = urlsplit(detail["results"][0]["imageUrl"])

    with app.test_client().get(f"{image.path}?{image.query}") as response:
        name = image.path.rsplit("/", 1)[-1]
        assert response.headers["Content-Disposition"] == f"inline; filename={name}"
        assert response.headers["Content-Type"] == "image/png"


def test_only_the_sign_in_page_allows_telegram_and_only_when_it_is_configured(
    tmp_path, database_url
):
    app = make_app(
        tmp_path, database_url, TELEGRAM_BOT_TOKEN="123:abc", TELEGRAM_BOT_NAME="batchgen_bot"
    )
    client = app.test_client()

    login = client.get("/login")
    policy = login.headers["Content-Security-Policy"]
    assert "script-src 'self' https://telegram.org 'unsafe-eval'" in policy
    assert "frame-src https://oauth.telegram.org" in policy
    assert "frame-ancestors 'none'" in policy
    assert_secured(client.get("/"))


@pytest.mark.parametrize("base", ["https://img.example.com"])
def test_https_deployments_send_hsts(tmp_path, database_url, base):
    app = make_app(tmp_path, database_url, PUBLIC_BASE_URL=base)

    response = app.test_client().get("/")

    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
