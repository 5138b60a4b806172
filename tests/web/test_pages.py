"""The HTML side with a session: sign in, upload, the live grid, history, download."""

import io
import re
import zipfile

from tests.support import (
    ApiClient,
    batch_body,
    create_user,
    csrf_token_from,
    drain,
    image_bytes,
    media_files,
    signed_in_browser,
)


def _upload(http, files, **fields):
    page = http.get("/").get_data(as_text=True)
    data = {
        "csrf_token": csrf_token_from(page),
        "prompt": "Add white background",
        "model": "flux-2",
        "quality": "1k",
        "aspectRatio": "1:1",
        "concurrency": "2",
        **fields,
        "images": [(io.BytesIO(raw), name) for name, raw in files],
    }
    return http.post("/batches", data=data, content_type="multipart/form-data")


def test_anonymous_home_page_says_which_engine_runs(client):
    html = client.get("/").get_data(as_text=True)

    assert "engine: local" in html
    assert "offline sandbox" in html
    assert "Sign in" in html


def test_sign_in_with_a_token_sets_an_httponly_samesite_session_cookie(app, user):
    http = app.test_client()
    page = http.get("/login").get_data(as_text=True)

    response = http.post("/login", data={"token": user[1], "csrf_token": csrf_token_from(page)})

    assert response.status_code == 303
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("telegram_session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "alice" in http.get("/").get_data(as_text=True)


def test_the_session_cookie_also_works_for_the_api(app, user):
    http = signed_in_browser(app, user[1])

    assert http.get("/api/me").get_json()["name"] == "alice"


def test_a_wrong_token_does_not_sign_in(app, user):
    http = app.test_client()
    page = http.get("/login").get_data(as_text=True)

    response = http.post("/login", data={"token": "bg_wrong", "csrf_token": csrf_token_from(page)})

    assert response.status_code == 401
    assert "not valid" in response.get_data(as_text=True)


def test_forms_without_a_csrf_token_are_refused(app, user):
    response = app.test_client().post("/login", data={"token": user[1]})

    assert response.status_code == 400


def test_pages_need_a_session(client):
    response = client.get("/batches")

    assert response.status_code == 302
    assert "/login?next=/batches" in response.headers["Location"]


def test_htmx_requests_without_a_session_get_hx_redirect(client):
    response = client.get("/batches/batch_x", headers={"HX-Request": "true"})

    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/login")


def test_login_never_redirects_off_site(app, user):
    http = app.test_client()
    page = http.get("/login").get_data(as_text=True)

    response = http.post(
        "/login?next=//evil.example/x", data={"token": user[1], "csrf_token": csrf_token_from(page)}
    )

    assert response.headers["Location"] == "/"


def test_upload_creates_a_batch_charges_once_and_shows_the_live_grid(app, user):
    http = signed_in_browser(app, user[1])

    response = _upload(http, [("cat.png", image_bytes()), ("dog.jpg", image_bytes("JPEG"))])

    assert response.status_code == 303
    batch_url = response.headers["Location"]
    page = http.get(batch_url).get_data(as_text=True)
    assert 'hx-trigger="every 2s"' in page
    assert "cat.png" in page and "dog.jpg" in page
    assert ApiClient(app, *user).balance() == 94

    drain(app)
    fragment = http.get(batch_url, headers={"HX-Request": "true"})

    html = fragment.get_data(as_text=True)
    assert "HX-Request" in fragment.headers["Vary"]
    assert "<html" not in html
    assert 'data-status="completed"' in html
    assert "hx-trigger" not in html  # a finished grid stops polling
    assert html.count('data-status="success"') == 2
    assert "Download all" in html


def test_two_files_with_the_same_name_both_count(app, user):
    http = signed_in_browser(app, user[1])

    response = _upload(http, [("photo.png", image_bytes()), ("photo.png", image_bytes())])

    assert response.status_code == 303
    assert "photo.png (2)" in http.get(response.headers["Location"]).get_data(as_text=True)


def test_a_file_that_is_not_an_image_is_refused_without_charging(app, user):
    http = signed_in_browser(app, user[1])

    response = _upload(http, [("notes.png", b"plain text, not an image")])

    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "notes.png is not a readable PNG, JPEG or WebP image" in html
    assert "Add white background" in html  # the form keeps what was typed
    assert ApiClient(app, *user).balance() == 100
    assert media_files(app) == []


def test_upload_without_files_is_refused(app, user):
    http = signed_in_browser(app, user[1])

    response = _upload(http, [])

    assert response.status_code == 400
    assert "Choose at least one image" in response.get_data(as_text=True)


def test_upload_beyond_the_balance_says_how_much_is_missing(app):
    user = create_user(app, "penny", credits=4)
    http = signed_in_browser(app, user[1])

    response = _upload(http, [("a.png", image_bytes()), ("b.png", image_bytes())])

    assert response.status_code == 402
    assert "costs 6⭐ and you have 4⭐" in response.get_data(as_text=True)
    assert media_files(app) == []


def test_model_options_fragment_lists_that_models_choices(app, user):
    http = signed_in_browser(app, user[1])

    html = http.get("/upload/options?model=nano-banana-pro").get_data(as_text=True)

    assert "4k · 15⭐ per image" in html
    assert "21:9" in html


def test_prompts_are_escaped_in_pages(app, user):
    client = ApiClient(app, *user)
    body = batch_body(1, prompt='<script>alert("x")</script> white background')
    batch_id = client.post("/api/generate/batch", json=body).get_json()["batchId"]
    http = signed_in_browser(app, user[1])

    html = http.get(f"/batches/{batch_id}").get_data(as_text=True)

    assert "<script>alert" not in html
    assert "&lt;script&gt;alert" in html


def test_another_users_batch_page_is_not_found(app, user):
    client = ApiClient(app, *user)
    batch_id = client.post("/api/generate/batch", json=batch_body(1)).get_json()["batchId"]
    eve = create_user(app, "eve")

    response = signed_in_browser(app, eve[1]).get(f"/batches/{batch_id}")

    assert response.status_code == 404


def test_history_lists_own_batches_only(app, user):
    ApiClient(app, *user).post("/api/generate/batch", json=batch_body(1, prompt="mine, grayscale"))
    other = create_user(app, "otto")
    ApiClient(app, *other).post("/api/generate/batch", json=batch_body(1, prompt="theirs, blur"))

    html = signed_in_browser(app, user[1]).get("/batches").get_data(as_text=True)

    assert "mine, grayscale" in html
    assert "theirs, blur" not in html


def test_download_all_zips_the_results(app, user):
    http = signed_in_browser(app, user[1])
    batch_url = _upload(http, [("one.png", image_bytes()), ("two.webp", image_bytes("WEBP"))])
    drain(app)

    with http.get(batch_url.headers["Location"] + "/download") as response:
        assert response.status_code == 200
        assert response.mimetype == "application/zip"
        names = zipfile.ZipFile(io.BytesIO(response.data)).namelist()

    assert names == ["01-one.png", "02-two.png"]
    assert all(re.match(r"^\d\d-", name) for name in names)


def test_sign_out_ends_the_session(app, user):
    http = signed_in_browser(app, user[1])
    page = http.get("/").get_data(as_text=True)

    http.post("/logout", data={"csrf_token": csrf_token_from(page)})

    assert http.get("/batches").status_code == 302


def test_unknown_pages_get_a_friendly_html_page(client):
    response = client.get("/no-such-page")

    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "Back to the start page" in response.get_data(as_text=True)


def test_account_page_shows_the_balance_and_its_ledger(app, user):
    client = ApiClient(app, *user)
    batch_id = client.post("/api/generate/batch", json=batch_body(2)).get_json()["batchId"]

    html = signed_in_browser(app, user[1]).get("/account").get_data(as_text=True)

    assert "94⭐" in html
    assert "+100⭐" in html and "-6⭐" in html
    assert batch_id in html
