"""Hostile input on the pages: redirects that stay on this site, and odd numbers and paths that
answer like any other wrong input, never with a 500."""

import io

import pytest

from tests.support import HTMX, csrf_token_from, image_bytes, png_data_url


@pytest.mark.parametrize(
    "target",
    [
        "/%09/evil.example",
        "/%0a/evil.example",
        "/%0d/evil.example",
        "//evil.example",
        "/\\evil.example",
        "/%5cevil.example",
        "https://evil.example",
        "http:evil.example",
        "/%00",
        "javascript:alert(1)",
    ],
)
def test_after_sign_in_next_never_leaves_the_site(browser, target):
    response = browser.get(f"/login?next={target}")

    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert "stolen" not in response.headers.get("Set-Cookie", "")


def test_a_line_break_in_next_injects_no_header(browser):
    response = browser.get("/login?next=/%0d%0aSet-Cookie:%20stolen=1")

    assert response.status_code == 302
    assert response.headers["Location"].startswith("/")  # a path of this site, nothing more
    assert not response.headers["Location"].startswith("//")
    assert "stolen" not in response.headers.get("Set-Cookie", "")


def test_after_sign_in_next_keeps_a_path_of_this_site(browser):
    response = browser.get("/login?next=/batches%3Fpage%3D2")

    assert response.headers["Location"] == "/batches?page=2"


@pytest.mark.parametrize("page", ["9" * 25, "²", "-3", "1e3", "", "0", "%00"])
def test_an_odd_page_number_shows_the_first_page(browser, page):
    for url in (f"/batches?page={page}", f"/account?page={page}"):
        response = browser.get(url)
        assert response.status_code == 200, url


@pytest.mark.parametrize("count", ["²", "٣", "9" * 25, "-1", "1.5"])
def test_an_odd_image_count_prices_nothing_and_answers(browser, count):
    response = browser.get(
        "/upload/cost",
        query_string={"imageCount": count, "imageBytes": count, "model": "flux-2"},
        headers=HTMX,
    )
    assert response.status_code == 200
    assert "per image" in response.get_data(as_text=True)


def _upload(browser, file_name="a.png", **fields):
    """Post the upload form with one real image, as the page would."""
    page = browser.get("/").get_data(as_text=True)
    data = {
        "csrf_token": csrf_token_from(page),
        "prompt": "Add white background",
        "model": "flux-2",
        "images": [(io.BytesIO(image_bytes()), file_name)],
        **fields,
    }
    return browser.post("/batches", data=data, content_type="multipart/form-data")


@pytest.mark.parametrize("concurrency", ["²", "9" * 25, "-1", "many"])
def test_an_odd_concurrency_in_the_form_is_a_form_error(browser, concurrency):
    response = _upload(browser, concurrency=concurrency)

    assert response.status_code == 422
    assert "concurrency" in response.get_data(as_text=True)


def test_an_upload_whose_file_name_holds_a_nul_is_created_with_that_character_replaced(browser):
    response = _upload(browser, file_name="hol\x00iday.png")

    assert response.status_code == 303
    grid = browser.get(response.headers["Location"]).get_data(as_text=True)
    assert "hol_iday.png" in grid


@pytest.mark.parametrize("path", ["batch_%00", "%00", "x" * 300])
def test_a_batch_page_path_that_is_no_id_of_ours_is_a_404(browser, path):
    assert browser.get(f"/batches/{path}").status_code == 404
    assert browser.get(f"/batches/{path}/images/gen_%00").status_code == 404


def test_png_data_url_helper_still_makes_a_real_image():
    assert png_data_url().startswith("data:image/png;base64,")
