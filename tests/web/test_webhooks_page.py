"""/account/webhooks as a person uses it: set the endpoint (the secret shown once), rotate,
see deliveries and send one again; the batch page shows its own deliveries."""

import re

from standardwebhooks import Webhook

from tests.receiver import receiving
from tests.support import (
    batch_body,
    create_user,
    csrf_token_from,
    running_consumer,
    signed_in_browser,
    wait_for,
)


def _save(browser, url, events=()):
    page = browser.get("/account/webhooks").get_data(as_text=True)
    return browser.post(
        "/account/webhooks",
        data={"url": url, "events": list(events), "csrf_token": csrf_token_from(page)},
    )


def _secret_in(html):
    found = re.search(r"<code>(whsec_[A-Za-z0-9+/=]+)</code>", html)
    return found and found.group(1)


def test_saving_an_endpoint_shows_its_secret_once_and_rotating_shows_a_new_one(app, user):
    app.config["WEBHOOK_ALLOW_HOSTS"] = "127.0.0.1"
    browser = signed_in_browser(app, user[1])
    first = _save(browser, "http://127.0.0.1:9/hook", ["generation.failed"])
    assert first.status_code == 200
    secret = _secret_in(first.get_data(as_text=True))
    Webhook(secret)

    again = _save(browser, "http://127.0.0.1:9/hook")
    assert again.status_code == 303
    page = browser.get("/account/webhooks").get_data(as_text=True)
    assert _secret_in(page) is None and "http://127.0.0.1:9/hook" in page

    rotated = browser.post(
        "/account/webhooks/rotate", data={"csrf_token": csrf_token_from(page)}
    ).get_data(as_text=True)
    assert _secret_in(rotated) not in (None, secret)
    assert "also signs until" in rotated


def test_a_private_address_is_refused_in_words_next_to_the_field(app, user):
    browser = signed_in_browser(app, user[1])
    answer = _save(browser, "http://10.0.0.7/hook")
    assert answer.status_code == 422
    html = answer.get_data(as_text=True)
    assert 'id="webhook-url-error"' in html and "private or reserved address" in html
    assert _secret_in(html) is None


def test_the_batch_page_lists_its_deliveries_and_sends_one_again(app, user, api_client):
    app.config["WEBHOOK_ALLOW_HOSTS"] = "127.0.0.1"
    app.config["PUBLIC_BASE_URL"] = "http://127.0.0.1:5000"
    browser = signed_in_browser(app, user[1])
    with receiving() as receiver:
        _save(browser, f"{receiver.url}/hooks")
        batch = api_client.post("/api/generate/batch", json=batch_body(1)).get_json()
        with running_consumer(app):
            receiver.wait_for(1)
            page = wait_for(
                lambda: "Delivered" in (html := browser.get(f"/batches/{batch['batchId']}")
                                        .get_data(as_text=True)) and html
            )
            assert "batch.completed" in page and receiver.url in page
            [delivery_id] = re.findall(r"/webhooks/deliveries/(msg_[0-9a-f]+)/redeliver", page)
            sent = browser.post(
                f"/webhooks/deliveries/{delivery_id}/redeliver",
                data={"batch_id": batch["batchId"], "csrf_token": csrf_token_from(page)},
            )
            assert sent.status_code == 303
            assert sent.headers["Location"].endswith(f"/batches/{batch['batchId']}#webhooks")
            again = receiver.wait_for(2)
    assert again[0].webhook_id == again[1].webhook_id == delivery_id

    other = signed_in_browser(app, create_user(app, name="bob")[1])
    page = other.get("/account/webhooks").get_data(as_text=True)
    refused = other.post(
        f"/webhooks/deliveries/{delivery_id}/redeliver", data={"csrf_token": csrf_token_from(page)}
    )
    assert refused.status_code == 404
