"""The history's filter in Chromium: htmx swaps only the results as the status changes and the
search is typed, the address follows (so back and reload keep the filter), and the pager's
links carry it; no console error under the strict CSP."""

import pytest

from tests.browser.test_live_grid import (  # noqa: F401  (the fixtures are used by name)
    chromium,
    console_errors,
    live_server,
    sign_in_with_a_link,
)
from tests.support import ApiClient, batch_body, create_user

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

PROMPTS = "() => [...document.querySelectorAll('td[data-label=Prompt]')].map(td => td.textContent)"


def test_the_filter_swaps_the_results_and_pushes_the_url(chromium, live_server):  # noqa: F811
    app, base = live_server
    user_id, token = create_user(app, "erin", credits=100)
    client = ApiClient(app, user_id, token)
    for prompt in ("a red fox", "a blue whale", "100% red"):
        client.post("/api/generate/batch", json=batch_body(1, prompt=prompt))
    page = chromium.new_page()
    errors = console_errors(page)
    sign_in_with_a_link(page, app, base, user_id)
    page.goto(f"{base}/batches")
    page.wait_for_function(
        "() => !!document.querySelector('form.history-filter')['htmx-internal-data']"
    )
    page.evaluate("() => { document.querySelector('h1').dataset.kept = 'yes'; }")

    page.fill("#history-q", "RED")
    page.wait_for_url(f"{base}/batches?status=&q=RED")
    page.wait_for_function(f"() => ({PROMPTS})().length === 2")
    assert page.evaluate(PROMPTS) == ["100% red", "a red fox"]
    assert page.get_attribute("h1", "data-kept") == "yes"  # swapped in place, not reloaded

    page.fill("#history-q", "0%")
    page.wait_for_url(f"{base}/batches?status=&q=0%25")
    page.wait_for_function(f"() => ({PROMPTS})().length === 1")
    assert page.evaluate(PROMPTS) == ["100% red"]

    page.select_option("#history-status", "cancelled")
    page.wait_for_url(f"{base}/batches?status=cancelled&q=0%25")
    page.wait_for_selector("#history-results .no-match")
    assert "No batch matches" in page.inner_text("#history-results")

    page.reload()
    assert page.input_value("#history-q") == "0%"
    assert page.input_value("#history-status") == "cancelled"
    assert "No batch matches" in page.inner_text("#history-results")
    assert errors == []
