"""Issue 17, item 6, as a person sees it in Chromium: an image refused under the content policy
says so without naming the vendor, and is offered *Retry with another prompt* (its own images,
the prompt to change), not a plain retry that would be refused again."""

import pytest

from tests.browser.test_accessibility import fail_inputs_of_width
from tests.browser.test_demanding_pages import finished
from tests.browser.test_live_grid import (  # noqa: F401  (the fixtures are used by name)
    chromium,
    console_errors,
    live_server,
    sign_in_with_a_link,
)
from tests.support import ApiClient, batch_body, create_user, data_url, image_bytes
from webapp.providers.kie.codes import refusal

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

# An input this wide is refused, as the upstream refuses a prompt or image under its policy.
REFUSED_WIDTH = 83


@pytest.fixture
def refusing_engine(monkeypatch):
    """The local engine, refusing (content policy) an image REFUSED_WIDTH pixels wide."""
    fail_inputs_of_width(monkeypatch, REFUSED_WIDTH, refusal(400, "Generation failed."))


def test_a_refused_image_is_told_in_plain_words_and_retried_with_another_prompt(
    chromium, live_server, refusing_engine  # noqa: F811
):
    app, base = live_server
    user_id, token = create_user(app, "erin", credits=100)
    client = ApiClient(app, user_id, token)
    body = batch_body(2)
    body["images"][1]["data"] = data_url(image_bytes("PNG", size=(REFUSED_WIDTH, 60)))
    batch_id = client.post("/api/generate/batch", json=body).get_json()["batchId"]
    assert finished(client, batch_id)["status"] == "partial"

    page = chromium.new_page(viewport={"width": 1280, "height": 800})
    errors = console_errors(page)
    sign_in_with_a_link(page, app, base, user_id)
    page.goto(f"{base}/batches/{batch_id}")
    card = page.locator(".tile-failed")
    words = card.locator(".error").inner_text()
    assert "content policy" in words and "change the prompt or the image" in words
    assert "kie" not in page.locator("#batch-grid").inner_text().lower()
    assert page.locator("#retry-failed").count() == 0  # the same prompt would be refused again

    page.click("#retry-reprompt")
    page.wait_for_url(f"{base}/batches/{batch_id}/reprompt")
    assert page.locator(".reprompt-images img").count() == 1
    assert page.input_value("#prompt") == "Add white background"
    page.fill("#prompt", "Put it on a plain grey card")
    page.click("#retry-with-prompt")
    page.wait_for_url(lambda url: "/batches/batch_" in url and batch_id not in url)
    assert "Put it on a plain grey card" in page.locator("h1").inner_text()
    # Charged once for the one image retried (refused again here, it is refunded again).
    assert client.ledger()[:4] == [("grant", 100), ("batch_debit", -6), ("refund", 3),
                                   ("batch_debit", -3)]
    assert errors == []
