"""The batch page: the live grid and its polling, cancel, retry of failed images, downloads."""

import io
import re
import zipfile
from datetime import timedelta

import pytest
from PIL import Image
from sqlalchemy import select

from tests.support import (
    HTMX,
    ApiClient,
    batch_body,
    claim_next_image,
    create_user,
    csrf_token_from,
    drain,
    finish_claim,
    media_files,
    signed_in_browser,
    work_next_image,
)
from webapp.catalog import load_catalog
from webapp.extensions import db
from webapp.models import Batch, Generation
from webapp.providers import Failed
from webapp.providers.kie.codes import refusal

REFUSED = Failed("content_policy", "The engine refused this image's content; it was refunded.")
# A failure that may pass by itself: the plain retry is offered for it.
BROKE = Failed("upstream_error", "The image service had a server error. Gave up after 3 attempts.")


def create(client, images=3, **fields):
    response = client.post("/api/generate/batch", json=batch_body(images, **fields))
    assert response.status_code == 200, response.get_json()
    return response.get_json()["batchId"]


def csrf(browser):
    return csrf_token_from(browser.get("/").get_data(as_text=True))


def test_the_page_is_whole_and_the_fragment_is_only_the_grid(alice, browser):
    batch_id = create(alice)

    page = browser.get(f"/batches/{batch_id}")
    fragment = browser.get(f"/batches/{batch_id}", headers=HTMX)

    for response in (page, fragment):
        assert response.headers["Vary"] == "HX-Request, Cookie"
    page_html, grid_html = page.get_data(as_text=True), fragment.get_data(as_text=True)
    assert "<html" in page_html and "<html" not in grid_html
    assert grid_html.lstrip().startswith('<section id="batch-grid"')
    assert grid_html.count('class="tile tile-pending"') == 3
    # Out of band, the fragment refreshes the progress text and the header's balance.
    assert '<p id="progress-text" hx-swap-oob="innerHTML">' in grid_html
    assert 'id="credits"' in grid_html and 'hx-swap-oob="true"' in grid_html
    assert "hx-swap-oob" not in page_html


def test_a_boosted_or_history_request_gets_the_whole_page(alice, browser):
    batch_id = create(alice)

    for extra in ({"HX-Boosted": "true"}, {"HX-History-Restore-Request": "true"}):
        html = browser.get(f"/batches/{batch_id}", headers={**HTMX, **extra}).get_data(as_text=True)
        assert "<html" in html


def test_the_grid_polls_every_2s_while_moving_and_the_finished_grid_has_no_trigger(
    app, alice, browser
):
    batch_id = create(alice)
    moving = browser.get(f"/batches/{batch_id}", headers=HTMX).get_data(as_text=True)

    drain(app)
    finished = browser.get(f"/batches/{batch_id}", headers=HTMX).get_data(as_text=True)

    trigger = 'hx-trigger="every 2s, sse:summary, sse:batch"'  # the poll, and the page's stream
    assert f'hx-get="/batches/{batch_id}" {trigger} hx-swap="outerHTML"' in moving
    assert 'data-status="completed"' in finished
    assert "hx-trigger" not in finished and 'hx-get="/batches/' + batch_id + '"' not in finished
    assert finished.count('data-status="success"') == 3
    assert "Download all (.zip)" in finished


def test_every_card_shows_its_input_its_status_and_its_result_or_error(app, alice, browser):
    batch_id = create(alice, 3, concurrency=1)
    work_next_image(app, batch_id)  # succeeds
    work_next_image(app, batch_id, REFUSED)
    claim_next_image(app, batch_id)  # at the engine

    html = browser.get(f"/batches/{batch_id}", headers=HTMX).get_data(as_text=True)

    cards = re.findall(r'<li class="tile tile-(\w+)".*?</li>', html, re.S)
    assert cards == ["success", "failed", "processing"]
    assert html.count('<img class="input"') == 3
    assert html.count('<img class="result"') == 1
    assert "The engine refused this image&#39;s content; it was refunded." in html
    for status in ("success", "failed", "processing"):
        assert f'<span class="badge">{status}</span>' in html


def test_the_progress_counts_and_estimates_the_time_left(app, alice, browser):
    batch_id = create(alice, 4, concurrency=1)
    before = browser.get(f"/batches/{batch_id}").get_data(as_text=True)
    work_next_image(app, batch_id)
    work_next_image(app, batch_id, REFUSED)
    with app.app_context():  # the model's image took 15 s, up to the next one's start: 2 left
        done, failed = db.session.scalars(
            select(Generation)
            .where(Generation.batch_id == batch_id, Generation.status != "pending")
            .order_by(Generation.position)
        )
        done.finished_at = failed.started_at
        done.started_at = done.finished_at - timedelta(seconds=15)
        db.session.commit()

    after = browser.get(f"/batches/{batch_id}").get_data(as_text=True)

    # The API's eta (generation/eta.py) is the page's: nothing known before an image succeeded,
    # then the model's 15 s for each of the 2 left, one at a time.
    assert "0 done · 0 failed · 0 cancelled of 4 · 0 running · estimating the time left" in before
    line = r"1 done · 1 failed · 0 cancelled of 4 · 0 running · about 30 s left \(done by \d\d:\d\d"
    assert re.search(line, after)
    assert 'aria-live="polite"' in after
    assert re.search(r'<progress class="bar bar-running" [^>]*max="4" value="2"', after)


def test_each_waiting_card_shows_its_place_and_the_grid_follows_it(app, alice, browser):
    bob = ApiClient(app, *create_user(app, "bob"))
    create(bob, 2, concurrency=8)
    batch_id = create(alice, 2, concurrency=8)

    before = browser.get(f"/batches/{batch_id}", headers=HTMX).get_data(as_text=True)
    claim_next_image(app, batch_id)
    after = browser.get(f"/batches/{batch_id}", headers=HTMX).get_data(as_text=True)

    # Bob's batch is older: alice's images wait one turn each behind his (the API's places).
    assert re.findall(r'data-place="(\d+)"', before) == ["2", "4"]
    assert "Place 2 in the queue. Waiting for its turn: 1 image is ahead of it (other people" in (
        before
    )
    # Her first is at the engine now; her second waits for bob's two (he has started none).
    assert re.findall(r'data-place="(\d+)"', after) == ["3"]


def test_cancel_first_says_what_will_happen(app, alice, browser):
    batch_id = create(alice, 10, concurrency=3)
    for _ in range(3):
        claim_next_image(app, batch_id)

    dialog = browser.get(f"/batches/{batch_id}/cancel", headers=HTMX).get_data(as_text=True)
    page = browser.get(f"/batches/{batch_id}/cancel").get_data(as_text=True)

    sentence = "7 images not started will be refunded 21⭐; 3 already running will finish"
    assert sentence in dialog and sentence in page
    assert "<html" not in dialog and 'hx-post="/batches/' in dialog
    assert 'method="dialog"' in dialog  # "Keep it running" closes the dialog
    assert "<html" in page and "hx-post" not in page.split('id="content"')[1]
    assert alice.balance() == 70  # asking cancelled nothing


def test_cancel_through_htmx_answers_the_stopped_grid_and_the_refunded_balance(app, alice, browser):
    batch_id = create(alice, 10, concurrency=3)
    running = [claim_next_image(app, batch_id) for _ in range(3)]

    response = browser.post(
        f"/batches/{batch_id}/cancel", headers={**HTMX, "X-CSRFToken": csrf(browser)}
    )

    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith(
        '<section id="batch-grid" class="batch-grid" data-status="cancelled"'
    )
    assert html.count('data-status="cancelled"') == 8  # the grid and its 7 cards
    assert "alice · 91⭐" in html  # the header, out of band
    assert "Cancelled 7 images not started; 21⭐ refunded." in html
    assert "3 images already running will finish and are charged." in html
    assert alice.balance() == 91
    assert [amount for kind, amount in alice.ledger() if kind == "refund"] == [3] * 7
    # The batch is cancelled, but three images still run: the grid polls until they end.
    assert 'hx-trigger="every 2s, sse:' in html
    for claim in running:
        finish_claim(app, claim)
    settled = browser.get(f"/batches/{batch_id}", headers=HTMX).get_data(as_text=True)
    assert "hx-trigger" not in settled
    assert settled.count('data-status="success"') == 3
    assert "Download all (.zip)" in settled


def test_cancel_without_htmx_redirects_to_the_batch_with_a_message(alice, browser):
    batch_id = create(alice, 2)

    response = browser.post(f"/batches/{batch_id}/cancel", data={"csrf_token": csrf(browser)})

    assert response.status_code == 303
    page = browser.get(response.headers["Location"]).get_data(as_text=True)
    assert "Cancelled 2 images not started; 6⭐ refunded." in page
    assert alice.balance() == 100


def test_cancel_without_a_csrf_token_is_refused_and_cancels_nothing(alice, browser):
    batch_id = create(alice, 2)

    response = browser.post(f"/batches/{batch_id}/cancel", headers=HTMX)

    assert response.status_code == 400
    assert alice.balance() == 94


def test_cancelling_a_finished_batch_says_there_is_nothing_to_cancel(app, alice, browser):
    batch_id = create(alice, 1)
    drain(app)

    dialog = browser.get(f"/batches/{batch_id}/cancel", headers=HTMX).get_data(as_text=True)
    response = browser.post(
        f"/batches/{batch_id}/cancel", headers={**HTMX, "X-CSRFToken": csrf(browser)}
    )

    assert "already completed: there is nothing to cancel" in dialog
    assert "already completed: there was nothing to cancel" in response.get_data(as_text=True)
    assert alice.balance() == 97


def _partly_failed_batch(app, alice, images=3, failures=2, failure=BROKE):
    batch_id = create(alice, images, concurrency=1)
    for position in range(images):
        work_next_image(app, batch_id, failure if position < failures else None)
    return batch_id


def test_retry_makes_a_batch_of_the_failed_images_charged_for_them_only(app, alice, browser):
    parent_id = _partly_failed_batch(app, alice)
    assert alice.balance() == 100 - 3  # two of three failed and were refunded
    page = browser.get(f"/batches/{parent_id}").get_data(as_text=True)
    assert "Retry 2 failed images (6⭐)" in page

    response = browser.post(f"/batches/{parent_id}/retry", data={"csrf_token": csrf(browser)})

    assert response.status_code == 303
    child_id = response.headers["Location"].rsplit("/", 1)[1]
    child = alice.get(f"/api/generate/batch/{child_id}").get_json()
    assert [result["clientId"] for result in child["results"]] == ["img-0", "img-1"]
    assert child["totalCost"] == 6
    assert alice.balance() == 100 - 3 - 6
    with app.app_context():
        assert db.session.get(Batch, child_id).parent_id == parent_id
    child_page = browser.get(f"/batches/{child_id}").get_data(as_text=True)
    assert f'<a href="/batches/{parent_id}">{parent_id}</a>' in child_page  # "Retry of"
    drain(app)
    assert alice.get(f"/api/generate/batch/{child_id}").get_json()["status"] == "completed"
    parent_page = browser.get(f"/batches/{parent_id}").get_data(as_text=True)
    assert f"Failed images retried in batch {child_id}" in parent_page
    assert "Retry 2 failed images" not in parent_page


def test_retrying_twice_charges_once_and_leads_to_the_same_retry(app, alice, browser):
    parent_id = _partly_failed_batch(app, alice)
    token = csrf(browser)

    first = browser.post(f"/batches/{parent_id}/retry", data={"csrf_token": token})
    second = browser.post(f"/batches/{parent_id}/retry", data={"csrf_token": token})

    assert first.headers["Location"] == second.headers["Location"]
    assert alice.balance() == 100 - 3 - 6


def test_a_retry_racing_another_is_refused_by_the_database_without_charging(
    app, alice, browser, monkeypatch
):
    from webapp.generation import retry

    parent_id = _partly_failed_batch(app, alice)
    first = browser.post(f"/batches/{parent_id}/retry", data={"csrf_token": csrf(browser)})
    files = len(media_files(app))
    real_retry_of = retry.retry_of
    seen = []

    def blind_once(batch_id):
        """The check before creating misses the other retry, as when both run at once."""
        seen.append(batch_id)
        return None if len(seen) == 1 else real_retry_of(batch_id)

    monkeypatch.setattr(retry, "retry_of", blind_once)

    second = browser.post(f"/batches/{parent_id}/retry", data={"csrf_token": csrf(browser)})

    assert second.headers["Location"] == first.headers["Location"]
    assert alice.balance() == 100 - 3 - 6  # one retry paid for
    assert len(media_files(app)) == files  # the refused one kept no input copies


def test_a_retry_the_balance_cannot_pay_is_refused_without_charging(app):
    user = create_user(app, "penny", credits=9)
    client = ApiClient(app, *user)
    failed_id = _partly_failed_batch(app, client, images=3, failures=3)  # all 9⭐ refunded
    create(client, 2)  # 6⭐ spent on another batch: 3⭐ left
    http = signed_in_browser(app, user[1])

    response = http.post(f"/batches/{failed_id}/retry", data={"csrf_token": csrf(http)})

    assert response.headers["Location"] == f"/batches/{failed_id}"
    page = http.get(response.headers["Location"]).get_data(as_text=True)
    assert "Insufficient credits: retrying costs 9⭐ and you have 3⭐." in page
    assert client.balance() == 3


def test_a_running_batch_cannot_be_retried(app, alice, browser):
    batch_id = create(alice, 2, concurrency=1)
    work_next_image(app, batch_id, REFUSED)

    response = browser.post(f"/batches/{batch_id}/retry", data={"csrf_token": csrf(browser)})

    page = browser.get(response.headers["Location"]).get_data(as_text=True)
    assert "The batch is still running" in page
    assert alice.balance() == 97


def test_one_result_downloads_as_a_named_png(app, alice, browser):
    batch_id = create(alice, 1)
    drain(app)
    html = browser.get(f"/batches/{batch_id}").get_data(as_text=True)
    url = re.search(r'class="download" href="([^"]+)"', html).group(1)

    with browser.get(url) as response:
        assert response.status_code == 200
        assert response.headers["Content-Disposition"] == "attachment; filename=01-img-0.png"
        assert Image.open(io.BytesIO(response.data)).format == "PNG"


def test_all_results_download_as_a_streamed_zip(app, alice, browser):
    batch_id = create(alice, 3, concurrency=1)
    work_next_image(app, batch_id)
    work_next_image(app, batch_id, REFUSED)
    work_next_image(app, batch_id)

    response = browser.get(f"/batches/{batch_id}/download")

    assert response.status_code == 200 and response.is_streamed
    assert response.headers["Content-Disposition"] == f'attachment; filename="{batch_id}.zip"'
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    assert archive.namelist() == ["01-img-0.png", "03-img-2.png"]
    assert archive.testzip() is None


def test_zip_entries_keep_a_number_the_name_has_and_stay_unique(app, alice, browser):
    """`01-red-on-white.png` is not zipped as `01-01-red-on-white.png`; names that meet get -2."""
    names = ["01-red-on-white.png", "blue.png", "03-green.jpg", "03-green.png", "02-blue.png"]
    body = batch_body(len(names), concurrency=1)
    for image, name in zip(body["images"], names, strict=True):
        image["id"] = name
    created = alice.post("/api/generate/batch", json=body)
    assert created.status_code == 200, created.get_json()
    batch_id = created.get_json()["batchId"]
    drain(app)

    archive = zipfile.ZipFile(io.BytesIO(browser.get(f"/batches/{batch_id}/download").data))

    assert archive.namelist() == [
        "01-red-on-white.png",
        "02-blue.png",
        "03-green.png",
        "03-green-2.png",
        "02-blue-2.png",
    ]


def test_a_batch_without_results_has_nothing_to_zip(alice, browser):
    batch_id = create(alice, 1)

    assert browser.get(f"/batches/{batch_id}/download").status_code == 404


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", ""),
        ("get", "/cancel"),
        ("post", "/cancel"),
        ("post", "/retry"),
        ("get", "/download"),
    ],
)
def test_another_users_batch_is_not_found_anywhere(app, alice, method, path):
    batch_id = create(alice, 1)
    drain(app)
    eve = signed_in_browser(app, create_user(app, "eve")[1])

    response = getattr(eve, method)(
        f"/batches/{batch_id}{path}", headers={**HTMX, "X-CSRFToken": csrf(eve)}
    )

    assert response.status_code == 404
    assert alice.balance() == 97


def test_another_users_result_is_not_found(app, alice):
    batch_id = create(alice, 1)
    drain(app)
    generation_id = alice.get(f"/api/generate/batch/{batch_id}").get_json()["results"][0][
        "generationId"
    ]
    eve = signed_in_browser(app, create_user(app, "eve")[1])

    assert eve.get(f"/batches/{batch_id}/images/{generation_id}").status_code == 404


def test_a_prompt_with_a_script_is_escaped_on_every_page(alice, browser):
    batch_id = create(alice, 1, prompt="<script>alert(1)</script> white background")

    for url in (f"/batches/{batch_id}", "/batches"):
        html = browser.get(url).get_data(as_text=True)
        assert "<script>alert(1)</script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_page_is_titled_by_its_prompt_and_names_its_model(app, alice, browser):
    batch_id = create(alice, 1, prompt="Put the vase on a marble table")
    with app.app_context():
        name = load_catalog().get(db.session.get(Batch, batch_id).model).name

    html = browser.get(f"/batches/{batch_id}").get_data(as_text=True)

    assert "<title>Put the vase on a marble table · batch" in html
    assert '<h1 class="batch-title">Put the vase on a marble table</h1>' in html
    assert f"<dt>Model</dt><dd>{name} · 1k" in html and name != "flux-2"


def test_content_policy_failures_name_no_vendor_and_are_offered_another_prompt(
    app, alice, browser
):
    refused = refusal(400, "Generation failed.")  # the words kie's 400 becomes
    batch_id = _partly_failed_batch(app, alice, failures=2, failure=refused)

    html = browser.get(f"/batches/{batch_id}").get_data(as_text=True)

    grid = html.split('id="batch-grid"')[1]
    assert "kie" not in grid.lower()
    assert "refused the prompt or image under its content policy (Generation failed.)" in grid
    assert "change the prompt or the image" in grid
    assert 'id="retry-failed"' not in html  # resending the same prompt would be refused again
    link = re.search(r'<a class="button secondary" id="retry-reprompt" href="([^"]+)">', html)
    assert link and "Retry with another prompt" in html
    assert link.group(1) == f"/batches/{batch_id}/reprompt"
    form = browser.get(link.group(1)).get_data(as_text=True)
    # The failed images themselves, with the prompt to change.
    assert re.search(r'<textarea id="prompt"[^>]*>Add white background</textarea>', form)
    assert form.count('alt="Input img-') == 2 and 'alt="Input img-2"' not in form
    assert "Retry 2 images (6⭐)" in form


def test_retry_with_another_prompt_remakes_the_failed_images_with_the_new_words(
    app, alice, browser
):
    batch_id = _partly_failed_batch(app, alice, failures=2, failure=refusal(400, "Refused."))
    assert alice.balance() == 100 - 3
    page = browser.get(f"/batches/{batch_id}/reprompt").get_data(as_text=True)

    empty = browser.post(
        f"/batches/{batch_id}/reprompt", data={"prompt": "  ", "csrf_token": csrf(browser)}
    )
    assert empty.status_code == 422
    assert 'id="prompt-error"' in empty.get_data(as_text=True)
    assert alice.balance() == 100 - 3  # refused: nothing charged

    response = browser.post(
        f"/batches/{batch_id}/reprompt",
        data={"prompt": "Put it on a plain grey card", "negativePrompt": "", "csrf_token":
              csrf_token_from(page)},
    )
    assert response.status_code == 303
    child_id = response.headers["Location"].rsplit("/", 1)[1]
    child = alice.get(f"/api/generate/batch/{child_id}").get_json()
    assert child["prompt"] == "Put it on a plain grey card" and child["model"] == "flux-2"
    assert [result["clientId"] for result in child["results"]] == ["img-0", "img-1"]
    assert alice.balance() == 100 - 3 - 6
    again = browser.post(
        f"/batches/{batch_id}/reprompt", data={"prompt": "Once more", "csrf_token": csrf(browser)}
    )
    assert again.headers["Location"].endswith(f"/batches/{child_id}")  # retried once only
    assert alice.balance() == 100 - 3 - 6


def test_someone_elses_batch_cannot_be_reprompted(app, alice):
    batch_id = _partly_failed_batch(app, alice, failures=1)
    bob = signed_in_browser(app, create_user(app, name="bob")[1])
    assert bob.get(f"/batches/{batch_id}/reprompt").status_code == 404
    page = bob.get("/account").get_data(as_text=True)
    answer = bob.post(
        f"/batches/{batch_id}/reprompt", data={"prompt": "x", "csrf_token": csrf_token_from(page)}
    )
    assert answer.status_code == 404


def test_a_transient_failure_is_offered_a_plain_retry(app, alice, browser):
    batch_id = _partly_failed_batch(app, alice, failures=1)

    html = browser.get(f"/batches/{batch_id}").get_data(as_text=True)

    assert "Retry 1 failed image (3⭐)" in html
    assert "Retry with another prompt" not in html
    assert re.search(r'<progress class="bar bar-partial" data-state="partial"', html)
