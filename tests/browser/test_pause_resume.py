"""Pause and resume in Chromium: the batch page's Pause stops new images (htmx posts the form
under the CSP and swaps the grid in), the paused grid says so and keeps polling, so a pause or a
resume made elsewhere (the API, another tab) shows; Resume runs the batch to the end."""

import pytest

from tests.browser.test_live_grid import (  # noqa: F401  (the fixtures are used by name)
    HTMX_PROCESSED,
    TILE_STATUSES,
    chromium,
    console_errors,
    live_server,
    sign_in_with_a_link,
)
from tests.support import ApiClient, batch_body, create_user

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def test_pause_and_resume_from_the_page_and_from_elsewhere(chromium, live_server):  # noqa: F811
    app, base_url = live_server
    user_id, token = create_user(app, "paula", credits=100)
    client = ApiClient(app, user_id, token)
    page = chromium.new_page(viewport={"width": 1100, "height": 900})
    errors = console_errors(page)
    sign_in_with_a_link(page, app, base_url, user_id)
    body = batch_body(6, concurrency=1)
    batch_id = client.post("/api/generate/batch", json=body).get_json()["batchId"]

    page.goto(f"{base_url}/batches/{batch_id}")
    page.wait_for_function(HTMX_PROCESSED, arg="#pause-batch", timeout=15000)
    page.click("#pause-batch")

    grid = page.locator("#batch-grid[data-status=paused]")
    grid.wait_for(timeout=15000)
    assert page.locator("#resume-batch").is_visible()
    assert page.locator("#pause-batch").count() == 0
    assert "will wait until you resume it" in page.locator("#batch-notice").inner_text()
    assert "Paused since" in page.locator("#progress-text").inner_text()
    # The image running at the pause finishes; the polls go on, and nothing else starts.
    page.wait_for_function(
        f"() => !({TILE_STATUSES})(document.getElementById('batch-grid')).includes('processing')",
        timeout=15000,
    )
    held = page.eval_on_selector("#batch-grid", TILE_STATUSES)
    assert "pending" in held
    page.wait_for_timeout(4500)  # two polls and more: a paused batch would have started images
    assert page.eval_on_selector("#batch-grid", TILE_STATUSES) == held
    assert page.locator("#batch-grid[hx-trigger]").count() == 1  # still polling

    page.wait_for_function(HTMX_PROCESSED, arg="#resume-batch", timeout=15000)
    page.click("#resume-batch")
    page.locator("#batch-grid[data-status=running]").wait_for(timeout=15000)
    assert "Resumed:" in page.locator("#batch-notice").inner_text()

    # Paused and resumed elsewhere: the page's polls show both.
    assert client.post(f"/api/generate/batch/{batch_id}/pause").status_code == 200
    page.locator("#batch-grid[data-status=paused]").wait_for(timeout=15000)
    assert client.post(f"/api/generate/batch/{batch_id}/resume").status_code == 200
    page.wait_for_selector("#batch-grid[data-status=completed]:not([hx-trigger])", timeout=60000)
    assert page.eval_on_selector("#batch-grid", TILE_STATUSES) == ["success"] * 6
    assert page.locator("#pause-batch, #resume-batch").count() == 0
    assert errors == []
