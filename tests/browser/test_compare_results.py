"""Issue 17's "results you can compare" in Chromium: a result opens large in a lightbox that ←
and → move through the batch's results while htmx keeps swapping the grid under it, Esc closes
it with the focus back on the card; its slider reveals the input over the result from the
keyboard; "New batch with these settings" opens the upload page filled in."""

import pytest

from tests.browser.test_live_grid import (  # noqa: F401  (the fixtures are used by name)
    ARTIFACTS,
    chromium,
    console_errors,
    live_server,
    sign_in_with_a_link,
)
from tests.support import ApiClient, batch_body, create_user

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

SETTINGS = {"negativePrompt": "blur", "quality": "2k", "aspectRatio": "4:3"}
SHOWN = """() => ({name: document.getElementById('compare-name').textContent,
    count: document.getElementById('compare-count').textContent,
    result: document.getElementById('compare-result').getAttribute('src'),
    input: document.getElementById('compare-input').getAttribute('src'),
    alts: [...document.querySelectorAll('#compare-stage img')].map(img => img.alt)})"""
# The dialog's close event, which gives the focus back, comes a task after it closed.
FOCUS_ON_TILE = "id => document.activeElement.closest('.tile')?.id === id"
# How far from the left the input is painted over the result, in % of the stage's width.
REVEALED = """() => { const stage = document.getElementById('compare-stage');
    const clip = getComputedStyle(document.getElementById('compare-before')).clipPath;
    return {reveal: stage.style.getPropertyValue('--reveal'), clip}; }"""


def test_the_lightbox_walks_the_results_compares_and_a_new_batch_takes_the_settings(
    chromium, live_server  # noqa: F811
):
    app, base_url = live_server
    user_id, token = create_user(app, "dora", credits=100)
    client = ApiClient(app, user_id, token)
    page = chromium.new_page(viewport={"width": 1100, "height": 900})
    errors = console_errors(page)
    sign_in_with_a_link(page, app, base_url, user_id)
    body = batch_body(3, **SETTINGS)
    batch_id = client.post("/api/generate/batch", json=body).get_json()["batchId"]

    # Opened as soon as the first result is in, while the others still run and the grid polls.
    page.goto(f"{base_url}/batches/{batch_id}")
    first = page.locator(".tile").first
    first.locator("a.open-compare").wait_for(timeout=15000)
    first_id = first.get_attribute("id")
    grid = page.locator("#batch-grid").element_handle()
    # On a busy machine the batch may already be finished here: then no swap is due.
    running = page.locator("#batch-grid[hx-trigger]").count() == 1
    first.locator("a.open-compare").click()
    dialog = page.get_by_role("dialog", name="img-0")
    assert dialog.is_visible()
    assert page.locator("#compare-close").is_visible()
    shown = page.evaluate(SHOWN)
    assert shown["name"] == "img-0" and shown["alts"] == ["Result for img-0", "Input img-0"]
    assert shown["result"] == first.locator("img.result").get_attribute("src")
    assert shown["input"] == first.locator("img.input").get_attribute("src")
    # The rest finish under the open dialog: htmx swaps the grid until it settles.
    page.wait_for_selector("#batch-grid[data-status=completed]:not([hx-trigger])", timeout=15000)
    if running:
        assert grid.evaluate("el => !el.isConnected"), "the grid was never swapped"
    assert page.locator("#batch-grid a.open-compare").count() == 3

    page.keyboard.press("ArrowRight")
    shown = page.evaluate(SHOWN)
    assert shown["name"] == "img-1" and shown["count"] == "result 2 of 3"
    assert shown["alts"] == ["Result for img-1", "Input img-1"]
    assert page.get_by_role("dialog", name="img-1").is_visible()
    page.keyboard.press("ArrowLeft")
    assert page.evaluate(SHOWN)["name"] == "img-0"
    page.keyboard.press("ArrowLeft")  # from the first, round to the last
    assert page.evaluate(SHOWN)["count"] == "result 3 of 3"
    page.keyboard.press("ArrowRight")

    # The slider: the arrows move the divide (not the results), End shows the input whole.
    slider = page.get_by_role("slider", name="Input over the result")
    assert page.evaluate(REVEALED)["clip"] == "inset(0px 50% 0px 0px)"
    slider.focus()
    page.keyboard.press("ArrowRight")
    assert slider.input_value() == "55" and page.evaluate(SHOWN)["name"] == "img-0"
    assert page.evaluate(REVEALED) == {"reveal": "55%", "clip": "inset(0px 45% 0px 0px)"}
    assert slider.get_attribute("aria-valuetext") == "the left 55% shows the input"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "compare-lightbox.png"))
    page.keyboard.press("Home")
    assert page.evaluate(REVEALED)["reveal"] == "0%"

    page.keyboard.press("Escape")
    assert not dialog.is_visible()
    page.wait_for_function(FOCUS_ON_TILE, arg=first_id, timeout=2000)
    # The close button does the same.
    page.keyboard.press("Enter")
    assert page.locator("#compare-dialog").is_visible()
    page.click("#compare-close")
    assert not page.locator("#compare-dialog").is_visible()
    page.wait_for_function(FOCUS_ON_TILE, arg=first_id, timeout=2000)

    page.click("#new-batch-same")
    page.wait_for_url(f"{base_url}/?*")
    assert page.input_value("#prompt") == body["prompt"]
    assert page.input_value("#negativePrompt") == "blur"
    assert page.input_value("#model") == "flux-2"
    assert page.input_value("#quality") == "2k"
    assert page.input_value("#aspectRatio") == "4:3"
    assert errors == []
