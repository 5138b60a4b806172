"""The pages around a batch: the start page, the header, history, the account, errors."""

import re

from tests.support import (
    ApiClient,
    batch_body,
    create_user,
    drain,
    make_app,
    signed_in_browser,
)


def test_the_start_page_says_what_the_service_is_and_how_to_sign_in(client):
    html = client.get("/").get_data(as_text=True)

    assert "Batch image generation" in html
    assert 'href="/login"' in html


def test_a_banner_says_when_the_local_engine_is_serving(client):
    html = client.get("/login").get_data(as_text=True)

    assert "offline engine: images are edited locally, not by the upstream model" in html


def test_no_banner_when_an_upstream_engine_serves(tmp_path, database_url):
    app = make_app(tmp_path, database_url, GENERATION_BACKEND="kie", KIE_API_KEY="test-key")

    assert "offline engine" not in app.test_client().get("/login").get_data(as_text=True)


def test_pages_load_no_script_style_or_font_from_elsewhere(app, user):
    html = signed_in_browser(app, user[1]).get("/").get_data(as_text=True)

    assert re.findall(r'(?:src|href)="(https?:)?//', html) == []
    assert '<script src="/static/vendor/htmx-2.0.11.min.js" defer></script>' in html


def test_the_header_shows_the_balance(app, user):
    html = signed_in_browser(app, user[1]).get("/batches").get_data(as_text=True)

    assert re.search(r'id="credits"[^>]*>alice · 100⭐</a>', html)


def test_history_lists_own_batches_newest_first_with_counts_cost_and_refunds(app, user):
    alice = ApiClient(app, *user)
    first = alice.post("/api/generate/batch", json=batch_body(2, prompt="first, grayscale"))
    drain(app)
    second = alice.post("/api/generate/batch", json=batch_body(3, prompt="second, blur"))
    alice.post(f"/api/generate/batch/{second.get_json()['batchId']}/cancel")
    other = create_user(app, "otto")
    ApiClient(app, *other).post("/api/generate/batch", json=batch_body(1, prompt="theirs"))

    html = signed_in_browser(app, user[1]).get("/batches").get_data(as_text=True)

    rows = re.findall(r'<tr class="row-link">.*?</tr>', html.split("<tbody>")[1], re.S)
    assert len(rows) == 2
    assert "second, blur" in rows[0] and "first, grayscale" in rows[1]
    assert "0 done · 3 cancelled of 3" in rows[0] and "9⭐" in rows[0] and "cancelled" in rows[0]
    assert "2 done of 2" in rows[1] and "6⭐" in rows[1] and "completed" in rows[1]
    assert f'href="/batches/{first.get_json()["batchId"]}"' in rows[1]
    assert "theirs" not in html


def test_history_is_paginated(app, user):
    alice = ApiClient(app, *user)
    for number in range(21):
        alice.post("/api/generate/batch", json=batch_body(1, prompt=f"batch number {number:02d}"))
    http = signed_in_browser(app, user[1])

    first = http.get("/batches").get_data(as_text=True)
    second = http.get("/batches?page=2").get_data(as_text=True)

    assert first.count("batch number") == 20 and "batch number 20" in first
    assert 'href="/batches?page=2" rel="next">Older' in first
    assert second.count("batch number") == 1 and "batch number 00" in second
    assert 'href="/batches?page=1" rel="prev">' in second and "Older" not in second


def test_the_account_shows_the_balance_and_the_ledger_linked_to_batches(app, user):
    alice = ApiClient(app, *user)
    batch_id = alice.post("/api/generate/batch", json=batch_body(2)).get_json()["batchId"]
    alice.post(f"/api/generate/batch/{batch_id}/cancel")

    html = signed_in_browser(app, user[1]).get("/account").get_data(as_text=True)

    assert "Balance: <strong>100⭐</strong>" in html
    assert "+100⭐" in html and "-6⭐" in html
    # The two refunds are one line (+6⭐), the rows behind it in a <details>.
    assert "+6⭐" in html and html.count("+3⭐") == 2 and "<details" in html
    assert html.count(f'<a href="/batches/{batch_id}">') == 2  # the debit's line, the refunds'



def test_the_ledger_is_one_line_per_batch_and_kind_with_exact_sums(app, user):
    alice = ApiClient(app, *user)
    big = alice.post("/api/generate/batch", json=batch_body(7)).get_json()["batchId"]
    alice.post(f"/api/generate/batch/{big}/cancel")  # seven refunds of 3⭐
    small = alice.post("/api/generate/batch", json=batch_body(1)).get_json()["batchId"]
    drain(app)
    rows = alice.get("/api/ledger?limit=100").get_json()["entries"]

    html = signed_in_browser(app, user[1]).get("/account").get_data(as_text=True)

    lines = re.findall(r'<tr class="ledger-line" data-count="(\d+)">(.*?)</tr>', html, re.S)
    shown = [(int(count), re.search(r'data-label="Amount"[^>]*>([+-]\d+)⭐', body).group(1),
              re.search(r'data-label="For"><a href="/batches/(\w+)"|$', body).group(1))
             for count, body in lines]
    # Newest first: the small debit, the big batch's refunds in one line, its debit, the grant.
    assert shown == [(1, "-3", small), (7, "+21", big), (1, "-21", big), (1, "+100", None)]
    assert sum(int(amount) for _, amount, _ in shown) == alice.balance() == 100 - 3
    refunds = lines[1][1]
    assert "<details" in refunds and "Refund" in refunds and "7 images" in refunds
    assert refunds.count("+3⭐") == 7
    # The ledger itself is unchanged: one row per movement, as GET /api/ledger answers.
    assert len(rows) == 1 + 1 + 7 + 1
    assert sum(row["amount"] for row in rows) == alice.balance()


def test_unknown_pages_get_a_friendly_html_page(client):
    response = client.get("/no-such-page")

    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "Back to the start page" in response.get_data(as_text=True)
