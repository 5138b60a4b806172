"""The canary's decision in Chromium: a batch that tries 2 first, run by a real consumer, stops
in awaiting_approval and its page offers both forms (templates/batches/_canary.html, posted by
htmx under the CSP, web/control.py); *Approve* runs the rest to completed, *Stop here* (another
batch) cancels the rest and the header shows the refund. Money exact throughout: charged once at
creation, the rest refunded once, credits == sum(ledger)."""

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
from webapp import billing
from webapp.extensions import db
from webapp.models import LedgerKind

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

PRICE = 3  # flux-2 at 1k
HELD_WORDS = "Waits for your approval of the first 2 images."


def open_awaiting(page, base_url, batch_id):
    """The batch page once its canary has run and it waits, with htmx ready on both forms."""
    page.goto(f"{base_url}/batches/{batch_id}")
    page.locator("#batch-grid[data-status=awaiting_approval]").wait_for(timeout=20000)
    for button in ("#approve-canary", "#reject-canary"):
        page.wait_for_function(HTMX_PROCESSED, arg=button, timeout=15000)


def test_approve_and_stop_here_from_the_page(chromium, live_server):  # noqa: F811
    app, base_url = live_server
    user_id, token = create_user(app, "carla", credits=100)
    client = ApiClient(app, user_id, token)
    page = chromium.new_page(viewport={"width": 1100, "height": 900})
    errors = console_errors(page)
    sign_in_with_a_link(page, app, base_url, user_id)
    # Both made at once: the second's canary runs while the first waits for its decision.
    approved_id = client.post(
        "/api/generate/batch", json=batch_body(5, canary=2, concurrency=2)
    ).get_json()["batchId"]
    rejected_id = client.post(
        "/api/generate/batch", json=batch_body(4, canary=2, concurrency=2)
    ).get_json()["batchId"]
    assert client.balance() == 100 - 9 * PRICE  # each charged once, whole, at creation

    # Approve: the 3 held images run, nothing more is charged.
    open_awaiting(page, base_url, approved_id)
    grid = page.locator("#batch-grid")
    assert grid.evaluate(TILE_STATUSES) == ["success"] * 2 + ["pending"] * 3
    assert grid.inner_text().count(HELD_WORDS) == 3
    assert page.inner_text("#approve-canary") == "Approve and run the rest (3 images)"
    assert page.inner_text("#reject-canary") == f"Stop here (refund {3 * PRICE}⭐)"
    assert page.inner_text("#credits") == f"carla · {100 - 9 * PRICE}⭐"
    page.click("#approve-canary")
    page.locator("#canary-decision").wait_for(state="detached", timeout=15000)
    assert "Approved" in page.locator("#batch-notice").inner_text()
    page.wait_for_selector("#batch-grid[data-status=completed]:not([hx-trigger])", timeout=30000)
    assert grid.evaluate(TILE_STATUSES) == ["success"] * 5
    assert page.inner_text("#credits") == f"carla · {100 - 9 * PRICE}⭐"

    # Stop here: the 2 held images are cancelled and refunded, the header says so at once.
    open_awaiting(page, base_url, rejected_id)
    assert page.inner_text("#reject-canary") == f"Stop here (refund {2 * PRICE}⭐)"
    page.click("#reject-canary")
    page.wait_for_selector("#batch-grid[data-status=cancelled]", timeout=15000)
    assert grid.evaluate(TILE_STATUSES) == ["success"] * 2 + ["cancelled"] * 2
    assert page.locator("#canary-decision, #approve-canary, #reject-canary").count() == 0
    refunded_balance = f"carla · {100 - 9 * PRICE + 2 * PRICE}⭐"
    page.wait_for_function(
        "text => document.getElementById('credits').innerText === text",
        arg=refunded_balance,
        timeout=5000,
    )
    page.reload()
    assert page.inner_text("#credits") == refunded_balance
    assert f"{2 * PRICE}⭐ refunded" in page.locator("#batch-grid .progress-line").inner_text()

    # The money: two debits and one refund per cancelled image, and credits == sum(ledger).
    ledger = client.ledger()
    assert sorted(amount for kind, amount in ledger if kind == LedgerKind.REFUND) == [PRICE] * 2
    assert sorted(-amount for kind, amount in ledger if kind == LedgerKind.BATCH_DEBIT) == [
        4 * PRICE,
        5 * PRICE,
    ]
    assert client.balance() == sum(amount for _, amount in ledger) == 100 - 7 * PRICE
    with app.app_context():
        assert billing.ledger_mismatches() == []
        db.session.remove()
    for batch_id, status in ((approved_id, "completed"), (rejected_id, "cancelled")):
        assert client.get(f"/api/generate/batch/{batch_id}").get_json()["status"] == status
    assert errors == []
