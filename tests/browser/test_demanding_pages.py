"""Issue 17 as a person sees it in Chromium: the history and account tables on a phone (stacked,
every cell labelled, nothing off-screen, a whole history row opens its batch), the grouped
ledger, and a batch page whose bar says "cancelled" by colour and pattern, with even cards that
show whole file names."""

import io

import pytest
from PIL import Image

from tests.browser.test_live_grid import (  # noqa: F401  (the fixtures are used by name)
    OVERFLOWS,
    chromium,
    console_errors,
    live_server,
    sign_in_with_a_link,
)
from tests.support import ApiClient, batch_body, create_user, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

LONG_NAME = "holiday-in-the-mountains-with-grandma-2026-summer.png"
# Every cell of the stacked tables: its label (the ::before text), and whether it is on screen.
CELLS = """sel => [...document.querySelectorAll(sel + ' tbody td:not(.no-label)')].map(td => {
    const box = td.getBoundingClientRect();
    return {label: td.dataset.label, shown: getComputedStyle(td, '::before').content,
            inside: box.left >= 0 && box.right <= window.innerWidth && box.width > 0};
})"""
BAR = """() => { const bar = document.querySelector('#batch-grid progress');
    const style = getComputedStyle(bar);
    return {cls: bar.className, fill: style.getPropertyValue('--bar-fill').trim(),
            pattern: style.getPropertyValue('--bar-pattern').trim()}; }"""


def painted_colours(page):
    """The colours Chromium paints along the middle of the batch's bar (its fill, stripes)."""
    shot = Image.open(io.BytesIO(page.locator("#batch-grid progress").screenshot()))
    shot = shot.convert("RGB")
    middle = [shot.getpixel((x, shot.height // 2)) for x in range(4, shot.width - 4)]
    return set(middle)


def finished(client, batch_id):
    def batch_finished():
        detail = client.get(f"/api/generate/batch/{batch_id}").get_json()
        running = any(r["status"] in ("pending", "processing") for r in detail["results"])
        return detail if detail["status"] not in ("queued", "running") and not running else None

    return wait_for(batch_finished, timeout=60)


def two_batches(app):
    """A completed batch of two, and a sequential batch of four cancelled at once."""
    user_id, token = create_user(app, "carol", credits=100)
    client = ApiClient(app, user_id, token)
    body = batch_body(2)
    body["images"][0]["id"] = LONG_NAME
    done = client.post("/api/generate/batch", json=body).get_json()["batchId"]
    cancelled = client.post("/api/generate/batch", json=batch_body(4, concurrency=1))
    cancelled = cancelled.get_json()["batchId"]
    client.post(f"/api/generate/batch/{cancelled}/cancel")
    finished(client, done), finished(client, cancelled)
    return user_id, client, done, cancelled


def test_on_a_phone_the_tables_are_labelled_cards_and_a_row_opens_its_batch(
    chromium, live_server  # noqa: F811
):
    app, base_url = live_server
    user_id, client, done, cancelled = two_batches(app)
    page = chromium.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    errors = console_errors(page)
    sign_in_with_a_link(page, app, base_url, user_id)

    for path, table in (("/batches", "table.history"), ("/account", "table.ledger")):
        page.goto(base_url + path)
        assert not page.evaluate(OVERFLOWS), f"{path} scrolls sideways at 390 px"
        cells = page.evaluate(CELLS, table)
        assert cells and all(cell["inside"] for cell in cells), cells
        assert all(cell["shown"] == f'"{cell["label"]}"' for cell in cells), cells
        if table == "table.history":
            labels = {cell["label"] for cell in cells}
            assert {"Cost", "Refunded", "Status"} <= labels

    # The account: the cancelled batch's refunds are one line that opens to its rows.
    line = page.locator("tr.ledger-line", has=page.locator("details")).first
    assert line.locator("[data-label=Amount]").inner_text() == "+" + str(
        sum(row["amount"] for row in client.get("/api/ledger").get_json()["entries"]
            if row["kind"] == "refund")) + "⭐"
    assert not line.locator("details li").first.is_visible()
    line.locator("summary").click()
    assert line.locator("details li").first.is_visible()

    # History: a click on the status of a row opens its batch; the keyboard uses the real link.
    page.goto(base_url + "/batches")
    # (The date's link lies over the whole row, so the click lands on it, as a person's does.)
    status = page.locator("tr.row-link").first.locator("[data-label=Status]").bounding_box()
    page.mouse.click(status["x"] + status["width"] - 10, status["y"] + status["height"] / 2)
    page.wait_for_url(f"{base_url}/batches/{cancelled}")
    page.goto(base_url + "/batches")
    page.locator("tr.row-link a.row-target").nth(1).focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base_url}/batches/{done}")
    assert errors == []


def test_a_cancelled_bar_is_grey_and_striped_and_the_cards_are_even(
    chromium, live_server  # noqa: F811
):
    app, base_url = live_server
    user_id, _client, done, cancelled = two_batches(app)
    page = chromium.new_page(viewport={"width": 1280, "height": 800})
    errors = console_errors(page)
    sign_in_with_a_link(page, app, base_url, user_id)

    page.goto(f"{base_url}/batches/{cancelled}")
    bar = page.evaluate(BAR)
    assert "bar-cancelled" in bar["cls"].split()
    assert bar["fill"] == "#6b7280" and bar["pattern"].startswith("repeating-linear-gradient")
    stripes = painted_colours(page)  # what Chromium paints: grey and pale stripes
    assert (107, 114, 128) in stripes and len(stripes) > 2

    page.goto(f"{base_url}/batches/{done}")
    bar = page.evaluate(BAR)
    assert "bar-completed" in bar["cls"].split() and bar["pattern"] == "none"
    assert painted_colours(page) == {(21, 128, 61)}  # solid green
    assert page.title().startswith("Add white background")
    name = page.locator(".caption .name", has_text=LONG_NAME)
    assert name.get_attribute("title") == LONG_NAME
    assert name.evaluate("el => el.scrollWidth <= el.clientWidth")  # whole, wrapped, not cut
    heights = page.evaluate(
        "() => [...document.querySelectorAll('.tile')].map(t => t.getBoundingClientRect().height)"
    )
    assert len(heights) == 2 and max(heights) - min(heights) < 1
    assert errors == []
