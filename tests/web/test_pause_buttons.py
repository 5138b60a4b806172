"""The batch page's Pause and Resume: CSRF forms that htmx posts (answered with the grid and the
notice) or plain ones (a redirect and a flash); the grid and the progress line say Paused and
keep polling; only the owner's batch."""

import pytest

from tests.support import (
    HTMX,
    batch_body,
    create_user,
    csrf_token_from,
    drain,
    signed_in_browser,
)


def create(client, images=3, **fields):
    response = client.post("/api/generate/batch", json=batch_body(images, **fields))
    assert response.status_code == 200, response.get_json()
    return response.get_json()["batchId"]


def csrf(browser):
    return csrf_token_from(browser.get("/").get_data(as_text=True))


def test_a_running_batch_offers_pause_and_a_paused_one_resume(app, alice, browser):
    batch_id = create(alice)

    page = browser.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert f'action="/batches/{batch_id}/pause"' in page
    assert 'id="pause-batch"' in page
    assert 'id="resume-batch"' not in page

    paused = browser.post(
        f"/batches/{batch_id}/pause", headers={**HTMX, "X-CSRFToken": csrf(browser)}
    )

    assert paused.status_code == 200
    html = paused.get_data(as_text=True)
    assert html.lstrip().startswith(
        '<section id="batch-grid" class="batch-grid" data-status="paused"'
    )
    assert 'id="resume-batch"' in html and 'id="pause-batch"' not in html
    assert "Paused. 3 images will wait until you resume it." in html  # the notice
    assert "· 0 running · Paused since " in html  # the progress line, out of band
    assert 'hx-trigger="every 2s, sse:' in html  # it keeps polling, to see a resume elsewhere
    assert 'id="cancel-batch"' in html  # cancel still works on a paused batch
    drain(app)
    assert alice.get(f"/api/generate/batch/{batch_id}").get_json()["summary"]["pending"] == 3

    resumed = browser.post(
        f"/batches/{batch_id}/resume", headers={**HTMX, "X-CSRFToken": csrf(browser)}
    ).get_data(as_text=True)

    assert 'data-status="queued"' in resumed
    assert 'id="pause-batch"' in resumed
    assert "Resumed: 3 images will start as slots free." in resumed
    drain(app)
    settled = browser.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert 'id="pause-batch"' not in settled and 'id="resume-batch"' not in settled
    assert alice.get(f"/api/generate/batch/{batch_id}").get_json()["status"] == "completed"


def test_without_htmx_pause_redirects_to_the_page_that_says_paused(alice, browser):
    batch_id = create(alice, 2)

    response = browser.post(f"/batches/{batch_id}/pause", data={"csrf_token": csrf(browser)})

    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/batches/{batch_id}")
    page = browser.get(response.headers["Location"]).get_data(as_text=True)
    assert "Paused. 2 images will wait until you resume it." in page
    assert '<strong class="status status-paused">paused</strong>' in page
    assert "Paused since " in page


def test_pausing_a_finished_batch_says_why_it_cannot(app, alice, browser):
    batch_id = create(alice, 1)
    drain(app)

    response = browser.post(f"/batches/{batch_id}/pause", data={"csrf_token": csrf(browser)})

    page = browser.get(response.headers["Location"]).get_data(as_text=True)
    assert "The batch is already completed; there is nothing to pause." in page


def test_without_a_csrf_token_nothing_is_paused(alice, browser):
    batch_id = create(alice, 2)

    response = browser.post(f"/batches/{batch_id}/pause", headers=HTMX)

    assert response.status_code == 400
    assert alice.get(f"/api/generate/batch/{batch_id}").get_json()["status"] == "queued"


@pytest.mark.parametrize("route", ["pause", "resume"])
def test_another_users_batch_is_not_found(app, alice, route):
    batch_id = create(alice, 2)
    alice.post(f"/api/generate/batch/{batch_id}/pause")
    mallory = signed_in_browser(app, create_user(app, "mallory")[1])

    response = mallory.post(f"/batches/{batch_id}/{route}", data={"csrf_token": csrf(mallory)})

    assert response.status_code == 404
    assert alice.get(f"/api/generate/batch/{batch_id}").get_json()["status"] == "paused"
