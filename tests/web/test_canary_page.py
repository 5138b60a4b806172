"""Try a few first on the pages (issue 16, item 1): the upload form's "Try N first", and the
batch page's decision once the first images are done: *Approve and run the rest (N images)*
and *Stop here (refund N⭐)*, CSRF forms that htmx posts and that work without it too."""

import re

from tests.support import (
    HTMX,
    ApiClient,
    batch_body,
    create_user,
    csrf_token_from,
    drain,
    generation_rows,
    image_bytes,
    signed_in_browser,
)
from tests.web.test_upload import upload

PRICE = 3  # flux-2 at 1k


def _waiting_batch(app, alice, images=5, canary=2):
    response = alice.post("/api/generate/batch", json=batch_body(images, canary=canary))
    assert response.status_code == 200, response.get_json()
    drain(app)
    return response.get_json()["batchId"]


def _csrf(browser):
    return csrf_token_from(browser.get("/").get_data(as_text=True))


def test_the_upload_form_offers_to_try_a_few_first_and_makes_a_canary_batch(app, browser):
    html = browser.get("/").get_data(as_text=True)
    assert '<label for="canary">Try a few first</label>' in html
    assert '<option value="">No: run every image</option>' in html
    assert re.search(r'<option value="5"\s*>Try 5 first, then decide</option>', html)
    assert '<option value="6"' not in html

    files = [(f"cat-{n}.png", image_bytes()) for n in range(3)]
    response = upload(browser, files, canary="2")

    assert response.status_code == 303
    batch_id = response.headers["Location"].rsplit("/", 1)[1]
    drain(app)
    assert [row["status"] for row in generation_rows(app, batch_id)] == [
        "success",
        "success",
        "pending",
    ]
    page = browser.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert "Approve and run the rest (1 image)" in page
    assert "Stop here (refund 3⭐)" in page


def test_trying_as_many_as_are_chosen_is_refused_at_its_field_and_charges_nothing(
    app, user, browser
):
    response = upload(browser, [("a.png", image_bytes()), ("b.png", image_bytes())], canary="2")

    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert (
        '<p class="field-error" id="canary-error">Try first needs more images than it tries: '
        "2 chosen, so try at most 1 first, or run every image</p>"
    ) in html
    assert re.search(r'<select id="canary"[^>]*aria-describedby="canary-error canary-hint"', html)
    assert '<option value="2" selected>Try 2 first' in html
    assert ApiClient(app, *user).balance() == 100


def test_the_page_of_a_batch_awaiting_approval_offers_both_decisions(app, alice, browser):
    batch_id = _waiting_batch(app, alice)

    html = browser.get(f"/batches/{batch_id}").get_data(as_text=True)

    assert '<strong class="status status-awaiting_approval">awaiting approval</strong>' in html
    assert "The first 2 images of this batch have run: look at them below." in html
    assert "3 images wait for your decision until" in html
    assert "waiting for your decision" in html.split('id="progress-text"')[1].split("</p>")[0]
    assert html.count("Waits for your approval of the first 2 images.") == 3
    approve = re.search(r'<form method="post" action="([^"]+)"[^>]*>\s*<input type="hidden" '
                        r'name="csrf_token" value="[^"]+">\s*<button type="submit" '
                        r'id="approve-canary">Approve and run the rest \(3 images\)</button>', html)
    assert approve and approve.group(1) == f"/batches/{batch_id}/approve"
    assert f'hx-post="/batches/{batch_id}/approve" hx-target="#batch-grid"' in html
    assert 'id="reject-canary" class="danger">Stop here (refund 9⭐)</button>' in html
    assert 'hx-trigger="every 2s, sse:' in html  # it keeps polling: a decision may come elsewhere


def test_approving_from_the_page_runs_the_rest_charged_once(app, alice, browser):
    batch_id = _waiting_batch(app, alice)

    response = browser.post(
        f"/batches/{batch_id}/approve", data={"csrf_token": _csrf(browser)}, headers=HTMX
    )

    assert response.status_code == 200
    grid = response.get_data(as_text=True)
    assert grid.lstrip().startswith('<section id="batch-grid"')
    assert 'data-status="running"' in grid
    assert "Approved: the other 3 images run now." in grid
    assert "approve-canary" not in grid
    drain(app)
    assert alice.get(f"/api/generate/batch/{batch_id}").get_json()["status"] == "completed"
    assert alice.ledger() == [("grant", 100), ("batch_debit", -5 * PRICE)]

    again = browser.post(f"/batches/{batch_id}/approve", data={"csrf_token": _csrf(browser)})
    assert again.status_code == 303
    assert "The batch was already approved." in browser.get(again.headers["Location"]).get_data(
        as_text=True
    )


def test_stopping_from_the_page_refunds_the_rest_once(app, alice, browser):
    batch_id = _waiting_batch(app, alice)

    response = browser.post(f"/batches/{batch_id}/reject", data={"csrf_token": _csrf(browser)})

    assert response.status_code == 303
    page = browser.get(response.headers["Location"]).get_data(as_text=True)
    assert "Cancelled 3 images not started; 9⭐ refunded." in page
    assert "reject-canary" not in page
    assert alice.balance() == 100 - 2 * PRICE

    again = browser.post(
        f"/batches/{batch_id}/reject", data={"csrf_token": _csrf(browser)}, headers=HTMX
    )
    assert "The batch was already stopped." in again.get_data(as_text=True)
    assert alice.balance() == 100 - 2 * PRICE


def test_the_decision_forms_need_a_csrf_token_and_the_owner(app, alice, browser):
    batch_id = _waiting_batch(app, alice)
    bob = signed_in_browser(app, create_user(app, "bob")[1])

    assert browser.post(f"/batches/{batch_id}/approve").status_code == 400
    for action in ("approve", "reject"):
        response = bob.post(f"/batches/{batch_id}/{action}", data={"csrf_token": _csrf(bob)})
        assert response.status_code == 404
    assert alice.get(f"/api/generate/batch/{batch_id}").get_json()["status"] == (
        "awaiting_approval"
    )
    assert alice.balance() == 100 - 5 * PRICE
