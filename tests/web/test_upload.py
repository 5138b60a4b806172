"""The upload page: its fields, the live cost line, and what a refused or accepted upload gets."""

import io
import re

import pytest

from tests.support import (
    HTMX,
    ApiClient,
    create_user,
    csrf_token_from,
    image_bytes,
    media_files,
    signed_in_browser,
)

HOSTILE_NAME = "<img src=x onerror=alert(1)>.png"


def upload(http, files, headers=None, **fields):
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
    return http.post(
        "/batches", data=data, content_type="multipart/form-data", headers=headers or {}
    )


def cost_line(http, **params):
    fields = {"prompt": "Add white background", "model": "flux-2", "quality": "1k", **params}
    response = http.get("/upload/cost", query_string=fields, headers=HTMX)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_the_form_fields_are_named_like_the_json_fields_and_each_has_a_label(browser):
    html = browser.get("/").get_data(as_text=True)

    for name in (
        "images",
        "prompt",
        "negativePrompt",
        "model",
        "quality",
        "aspectRatio",
        "concurrency",
    ):
        assert f'name="{name}"' in html
        assert f'<label for="{name}"' in html
    assert re.search(r'<input id="images" name="images" type="file"[^>]* multiple', html)
    assert "Sequential: one image at a time" in html and "Parallel: 4 at once" in html


def test_the_model_choice_offers_only_image_to_image_models(app, browser):
    from webapp.catalog import load_catalog

    html = browser.get("/").get_data(as_text=True)
    select = html[
        html.index('<select id="model"') : html.index("</select>", html.index('id="model"'))
    ]

    offered = set(re.findall(r'<option value="([^"]+)"', select))
    assert offered == {model.id for model in load_catalog() if "i2i" in model.modes}


def test_the_options_follow_the_chosen_model_and_keep_a_quality_it_offers(browser):
    html = browser.get(
        "/upload/options?model=nano-banana-pro&quality=2k&aspectRatio=21:9", headers=HTMX
    ).get_data(as_text=True)

    assert '<option value="4k">4k · 15⭐ per image</option>' in html
    assert '<option value="2k" selected>' in html
    assert '<option value="21:9" selected>' in html
    assert "<html" not in html


def test_the_cost_line_multiplies_images_by_the_price_and_shows_the_balance(app):
    user = create_user(app, "bea", credits=45)
    http = signed_in_browser(app, user[1])

    html = cost_line(http, imageCount="10")

    assert "10 images × 3⭐ = 30⭐ · balance 45⭐" in html
    assert "cost-problem" not in html  # nothing stops the submit


def test_the_cost_line_disables_submit_when_the_balance_is_short(app):
    user = create_user(app, "bea", credits=20)
    http = signed_in_browser(app, user[1])

    html = cost_line(http, imageCount="10")

    assert "10 images × 3⭐ = 30⭐ · balance 20⭐" in html
    assert '<p class="cost-problem" id="cost-problem">Not enough credits: 10⭐ short</p>' in html


@pytest.mark.parametrize(
    "params, reason",
    [
        ({"imageCount": "0"}, "Choose at least one image"),
        ({"imageCount": "51"}, "51 images chosen; at most 50 are allowed"),
        ({"imageCount": "2", "prompt": "  "}, "prompt is required"),
        ({"imageCount": "2", "imageBytes": str(101 * 2**20)}, "one upload takes at most 100 MB"),
    ],
)
def test_the_cost_line_disables_submit_for_an_invalid_batch_and_says_why(browser, params, reason):
    html = cost_line(browser, **params)

    assert re.search(rf'<p class="cost-problem" id="cost-problem">[^<]*{re.escape(reason)}', html)


def test_the_cost_line_prices_the_model_and_quality_chosen(browser):
    assert "2 images × 15⭐ = 30⭐" in cost_line(
        browser, imageCount="2", model="nano-banana-pro", quality="4k"
    )
    # A quality picked for the previous model: priced as the options fragment now shows it.
    assert "2 images × 3⭐ = 6⭐" in cost_line(browser, imageCount="2", quality="4k")


def test_before_the_browser_counts_the_images_the_line_shows_the_price_per_image(browser):
    html = browser.get("/").get_data(as_text=True)

    assert "3⭐ per image · balance 100⭐" in html
    assert 'hx-get="/upload/cost"' in html
    # The prompt is still empty: the line says so. The page's script disables Generate for it;
    # the server leaves it enabled, so a browser without JavaScript can still submit.
    assert "prompt is required" in html
    assert '<button type="submit" id="generate" aria-describedby="cost-line cost-problem">' in html


def test_an_upload_goes_through_the_apis_service_and_charges_once(app, user, browser):
    response = upload(browser, [("cat.png", image_bytes()), ("dog.jpg", image_bytes("JPEG"))])

    assert response.status_code == 303
    assert re.fullmatch(r"/batches/batch_\d+_[0-9a-f]{8}", response.headers["Location"])
    assert ApiClient(app, *user).ledger() == [("grant", 100), ("batch_debit", -6)]


def test_an_htmx_upload_is_sent_to_the_batch_page_with_hx_redirect(app, user, browser):
    response = upload(browser, [("cat.png", image_bytes())], headers=HTMX)

    assert response.status_code == 200
    assert response.headers["HX-Redirect"].startswith("/batches/batch_")
    assert ApiClient(app, *user).balance() == 97


def test_a_refused_upload_shows_each_problem_next_to_its_field_and_keeps_the_choices(
    app, user, browser
):
    response = upload(
        browser,
        [("notes.png", b"plain text, not an image")],
        prompt="",
        negativePrompt="no blur",
        model="nano-banana-pro",
        quality="4k",
        aspectRatio="21:9",
        concurrency="1",
    )

    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert '<p class="field-error" id="prompt-error">prompt is required' in html
    images_error = '<ul class="field-error" id="images-error"><li>notes.png is not a readable'
    assert images_error in html
    assert re.search(
        r'<textarea id="prompt"[^>]* aria-describedby="prompt-error [^>]*aria-invalid', html
    )
    assert 'value="no blur"' in html
    assert '<option value="nano-banana-pro" selected>' in html
    assert '<option value="4k" selected>' in html
    assert '<option value="21:9" selected>' in html
    assert '<option value="1" selected>Sequential' in html
    assert "nothing was charged" in html
    assert ApiClient(app, *user).balance() == 100
    assert media_files(app) == []


def test_every_bad_file_is_named_with_its_reason_in_one_answer(app, user, browser):
    response = upload(
        browser,
        [
            ("notes.png", b"plain text, renamed"),
            ("good.png", image_bytes()),
            ("empty.png", b""),
        ],
    )

    assert response.status_code == 422
    html = response.get_data(as_text=True)
    field = html[
        html.index('id="images-error"') : html.index("</ul>", html.index('id="images-error"'))
    ]
    assert re.findall(r"<li>([^<]*)</li>", field) == [
        "notes.png is not a readable PNG, JPEG or WebP image",
        "empty.png is empty",
    ]
    summary = html[
        html.index('id="form-errors"') : html.index("</div>", html.index('id="form-errors"'))
    ]
    assert '<a href="#images">notes.png is not a readable' in summary
    assert '<a href="#images">empty.png is empty</a>' in summary
    assert "good.png" not in field + summary
    assert "1 image × 3⭐ = 3⭐" in html  # the cost line counts the good one only
    assert ApiClient(app, *user).ledger() == [("grant", 100)]
    assert media_files(app) == []


def test_a_long_prompt_is_refused_at_the_prompt_field(app, user, browser):
    response = upload(browser, [("a.png", image_bytes())], prompt="x" * 5016)

    assert response.status_code == 422
    html = response.get_data(as_text=True)
    textarea = re.search(r'<textarea id="prompt"[^>]*>', html).group(0)
    assert 'maxlength="4000"' in textarea
    assert 'aria-describedby="prompt-error prompt-count"' in textarea
    assert 'aria-invalid="true"' in textarea
    # The message sits at the prompt: straight after it, before the next field.
    after = html[html.index("</textarea>") : html.index('<label for="negativePrompt"')]
    assert (
        '<p class="field-error" id="prompt-error">prompt is longer than 4000 characters</p>'
        in after
    )
    assert (
        '<p id="prompt-count" class="hint prompt-count" data-max="4000">5,016 / 4,000 characters'
        in after
    )
    assert ApiClient(app, *user).balance() == 100
    assert media_files(app) == []


def test_the_prompt_has_the_servers_limit_as_maxlength_and_a_polite_counter(browser):
    html = browser.get("/").get_data(as_text=True)

    assert re.search(
        r'<textarea id="prompt"[^>]* maxlength="4000"[^>]* aria-describedby="prompt-count"', html
    )
    assert (
        '<p id="prompt-count" class="hint prompt-count" data-max="4000">0 / 4,000 characters</p>'
        in html
    )
    assert (
        '<p id="prompt-count-status" class="visually-hidden" role="status" aria-live="polite">'
        in html
    )


def test_a_line_break_in_the_prompt_counts_as_one_character_as_the_browser_counts_it(browser):
    # A form posts a typed line break as CRLF; maxlength counted it as one.
    response = upload(browser, [("a.png", image_bytes())], prompt="a" * 3998 + "\r\nb")

    assert response.status_code == 303


def test_a_refused_htmx_upload_answers_the_form_alone_with_the_picker_preserved(browser):
    response = upload(browser, [("a.png", image_bytes())], headers=HTMX, prompt="")

    assert response.status_code == 422  # htmx swaps 422 in (base.html's htmx-config)
    html = response.get_data(as_text=True)
    assert "<html" not in html
    assert '<form id="upload-form"' in html
    assert 'id="picker" class="dropzone" hx-preserve="true"' in html
    assert "1 image × 3⭐ = 3⭐" in html  # the cost line counts the images that were sent


def test_an_upload_beyond_the_balance_is_refused_without_charging(app):
    user = create_user(app, "penny", credits=4)
    http = signed_in_browser(app, user[1])

    response = upload(http, [("a.png", image_bytes()), ("b.png", image_bytes())])

    assert response.status_code == 422
    assert "Insufficient credits: this batch costs 6⭐ and you have 4⭐." in response.get_data(
        as_text=True
    )
    assert ApiClient(app, *user).balance() == 4
    assert media_files(app) == []


def test_an_upload_without_a_csrf_token_is_refused(app, user, browser):
    response = browser.post(
        "/batches",
        data={"prompt": "x", "model": "flux-2", "images": [(io.BytesIO(image_bytes()), "a.png")]},
        content_type="multipart/form-data",
    )

    assert response.status_code == 400
    assert ApiClient(app, *user).balance() == 100


def test_a_hostile_file_name_is_escaped_in_the_error_and_on_the_batch_page(browser):
    refused = upload(browser, [(HOSTILE_NAME, b"not an image")]).get_data(as_text=True)
    accepted = upload(browser, [(HOSTILE_NAME, image_bytes())])
    page = browser.get(accepted.headers["Location"]).get_data(as_text=True)

    for html in (refused, page):
        assert "<img src=x onerror" not in html
        assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_two_files_with_the_same_name_both_count(browser):
    response = upload(browser, [("photo.png", image_bytes()), ("photo.png", image_bytes())])

    assert response.status_code == 303
    assert "photo.png (2)" in browser.get(response.headers["Location"]).get_data(as_text=True)
