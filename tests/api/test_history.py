"""GET /api/batches and GET /api/ledger: the caller's history, newest first, a page at a time
by keyset cursors that stay put while new rows arrive, filtered by status, and refused in JSON
when a parameter is wrong."""

import base64
import json
from datetime import datetime

import pytest
from sqlalchemy import update

from tests.support import (
    ApiClient,
    create_batch_id,
    create_user,
    drain,
    signed_in_browser,
    work_next_image,
)
from webapp.extensions import db
from webapp.models import Batch
from webapp.providers import Failed

PRICE = 3  # flux-2 at 1k


def all_pages(client, url, key, limit):
    """Every item of a list, following nextCursor; answers (items, pages seen)."""
    items, pages, cursor = [], 0, None
    while True:
        query = f"{url}?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(query).get_json()
        assert len(body[key]) <= limit
        items.extend(body[key])
        pages += 1
        cursor = body["nextCursor"]
        if cursor is None:
            return items, pages


def batch_ids(body):
    return [batch["batchId"] for batch in body["batches"]]


def test_batches_come_newest_first_a_page_at_a_time(app, api_client):
    created = [create_batch_id(api_client, 1) for _ in range(5)]

    items, pages = all_pages(api_client, "/api/batches", "batches", limit=2)

    assert [item["batchId"] for item in items] == created[::-1]
    assert pages == 3
    first = api_client.get("/api/batches").get_json()  # the default limit holds all five
    assert batch_ids(first) == created[::-1] and first["nextCursor"] is None


def test_a_list_item_has_the_batch_fields_and_the_status_summary(app, api_client):
    batch_id = create_batch_id(api_client, 2, negativePrompt="blur", concurrency=1)
    drain(app)

    item = api_client.get("/api/batches").get_json()["batches"][0]
    detail = api_client.get(f"/api/generate/batch/{batch_id}").get_json()

    # The batch's own fields (batch_fields) are the detail's, whatever fields it gains.
    assert set(item) == set(detail) - {"results", "isComplete"}
    own_fields = {key: detail[key] for key in item if key != "summary"}
    assert item == {**own_fields, "summary": detail["summary"]}
    assert {
        "batchId", "status", "model", "prompt", "negativePrompt", "quality", "aspectRatio",
        "concurrency", "totalCost", "refunded", "engine", "createdAt", "startedAt",
        "finishedAt", "summary",
    } <= set(item)
    assert (item["status"], item["negativePrompt"], item["totalCost"]) == (
        "completed", "blur", 2 * PRICE
    )
    assert item["summary"] == {
        "total": 2, "pending": 0, "processing": 0, "completed": 2, "failed": 0, "cancelled": 0
    }


def test_new_batches_never_shift_a_later_page(app, api_client):
    older = [create_batch_id(api_client, 1) for _ in range(4)]
    first = api_client.get("/api/batches?limit=2").get_json()

    newer = [create_batch_id(api_client, 1) for _ in range(2)]
    second = api_client.get(f"/api/batches?limit=2&cursor={first['nextCursor']}").get_json()
    fresh = api_client.get("/api/batches?limit=2").get_json()

    assert batch_ids(first) == [older[3], older[2]]
    assert batch_ids(second) == [older[1], older[0]]
    assert second["nextCursor"] is None
    assert batch_ids(fresh) == newer[::-1]


def test_batches_made_in_the_same_instant_keep_one_order_by_id(app, api_client):
    created = [create_batch_id(api_client, 1) for _ in range(5)]
    with app.app_context():
        db.session.execute(
            update(Batch).where(Batch.id.in_(created)).values(created_at=datetime(2026, 12, 1))
        )
        db.session.commit()

    items, _ = all_pages(api_client, "/api/batches", "batches", limit=2)

    assert [item["batchId"] for item in items] == sorted(created, reverse=True)


def test_another_users_cursor_shows_only_the_callers_own_batches(app, api_client):
    bob = ApiClient(app, *create_user(app, "bob"))
    bobs = [create_batch_id(bob, 1) for _ in range(2)]
    alices = [create_batch_id(api_client, 1) for _ in range(3)]
    alice_cursor = api_client.get("/api/batches?limit=1").get_json()["nextCursor"]

    seen_by_bob = bob.get(f"/api/batches?cursor={alice_cursor}").get_json()

    assert batch_ids(seen_by_bob) == bobs[::-1]  # bob's, older than alice's newest
    assert not set(alices) & set(batch_ids(seen_by_bob))
    assert batch_ids(api_client.get("/api/batches").get_json()) == alices[::-1]


def test_the_status_filter_takes_one_status_or_several(app, api_client):
    completed = create_batch_id(api_client, 1)
    drain(app)
    partial = create_batch_id(api_client, 2, concurrency=1)
    work_next_image(app, partial, Failed("generation_failed", "It could not be made."))
    work_next_image(app, partial)
    cancelled = create_batch_id(api_client, 1)
    assert api_client.post(f"/api/generate/batch/{cancelled}/cancel").status_code == 200
    queued = create_batch_id(api_client, 1)

    def listed(status):
        response = api_client.get(f"/api/batches?status={status}")
        assert response.status_code == 200
        return batch_ids(response.get_json())

    assert listed("completed") == [completed]
    assert listed("queued") == [queued]
    assert listed("partial,cancelled") == [cancelled, partial]
    assert listed("running,failed") == []
    assert listed("queued,completed,partial,cancelled") == [queued, cancelled, partial, completed]
    filtered = api_client.get("/api/batches?status=completed,partial,queued&limit=1").get_json()
    page_two = api_client.get(
        f"/api/batches?status=completed,partial,queued&limit=1&cursor={filtered['nextCursor']}"
    ).get_json()
    assert batch_ids(filtered) == [queued] and batch_ids(page_two) == [partial]


def encoded(value):
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "query, field",
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=1.5", "limit"),
        ("limit=%C2%B2", "limit"),  # "²", a digit to str.isdigit
        ("limit=99999999999999999999", "limit"),
        ("cursor=not*base64", "cursor"),
        ("cursor=a", "cursor"),
        ("cursor=" + encoded({"batches": 1}), "cursor"),
        ("cursor=" + encoded(["ledger", 5]), "cursor"),
        ("cursor=" + encoded(["batches", "yesterday", "batch_1"]), "cursor"),
        ("cursor=" + encoded(["batches", "2026-12-01T00:00:00+00:00", "batch_1"]), "cursor"),
        ("cursor=" + encoded(["batches", "2026-12-01T00:00:00", "no such id!"]), "cursor"),
        ("cursor=" + encoded(["batches", "2026-12-01T00:00:00"]), "cursor"),
        ("cursor=" + base64.urlsafe_b64encode(b"\xff\xfe").decode(), "cursor"),
        ("cursor=" + "A" * 300, "cursor"),
        ("status=done", "status"),
        ("status=completed,", "status"),
        ("status=COMPLETED", "status"),
        ("status=completed;failed", "status"),
    ],
)
def test_a_wrong_parameter_of_the_batch_list_is_a_400_naming_it(api_client, query, field):
    response = api_client.get(f"/api/batches?{query}")

    assert response.status_code == 400
    body = response.get_json()
    assert body["field"] == field and body["error"]


@pytest.mark.parametrize(
    "query, field",
    [
        ("limit=0", "limit"),
        ("limit=1000", "limit"),
        ("cursor=%%%", "cursor"),
        ("cursor=" + encoded(["ledger", "5"]), "cursor"),
        ("cursor=" + encoded(["ledger", 0]), "cursor"),
        ("cursor=" + encoded(["ledger", 2**63]), "cursor"),
        ("cursor=" + encoded(["ledger", True]), "cursor"),
        ("cursor=" + encoded(["ledger", 1, 2]), "cursor"),
        ("cursor=" + encoded(["batches", "2026-12-01T00:00:00", "batch_1"]), "cursor"),
    ],
)
def test_a_wrong_parameter_of_the_ledger_is_a_400_naming_it(api_client, query, field):
    response = api_client.get(f"/api/ledger?{query}")

    assert response.status_code == 400
    assert response.get_json()["field"] == field


def test_both_lists_need_a_sign_in_and_take_a_session_too(app, client, user):
    for url in ("/api/batches", "/api/ledger"):
        refused = client.get(url)
        assert refused.status_code == 401 and refused.is_json
    browser = signed_in_browser(app, user[1])

    assert browser.get("/api/batches").get_json() == {"batches": [], "nextCursor": None}
    entries = browser.get("/api/ledger").get_json()["entries"]
    assert [(e["kind"], e["amount"], e["balanceAfter"]) for e in entries] == [("grant", 100, 100)]


def test_the_ledger_comes_newest_first_with_the_balance_after_each_entry(app, api_client):
    bob = ApiClient(app, *create_user(app, "bob", credits=50))
    kept = create_batch_id(api_client, 2)
    create_batch_id(bob, 1)  # bob's entries fall between alice's: her ids are not contiguous
    cancelled = create_batch_id(api_client, 3)
    assert api_client.post(f"/api/generate/batch/{cancelled}/cancel").status_code == 200
    create_batch_id(bob, 2)
    drain(app)

    entries, pages = all_pages(api_client, "/api/ledger", "entries", limit=2)

    ids = [entry["id"] for entry in entries]
    assert ids == sorted(ids, reverse=True) and pages == 3
    oldest_first = entries[::-1]
    assert [(e["kind"], e["amount"]) for e in oldest_first] == api_client.ledger()
    running = 0
    for entry in oldest_first:
        running += entry["amount"]
        assert entry["balanceAfter"] == running
    assert entries[0]["balanceAfter"] == api_client.balance() == 100 - 2 * PRICE
    assert entries[0]["balanceAfter"] == api_client.get("/api/me").get_json()["credits"]
    debit = next(e for e in entries if e["batchId"] == kept)
    assert (debit["kind"], debit["amount"], debit["generationId"]) == (
        "batch_debit", -2 * PRICE, None
    )
    refunds = [e for e in entries if e["kind"] == "refund"]
    assert len(refunds) == 3
    assert {e["batchId"] for e in refunds} == {cancelled}
    assert all(e["generationId"] and e["note"] == "cancelled" for e in refunds)
    assert all(e["createdAt"].endswith("Z") for e in entries)
    bobs = bob.get("/api/ledger?limit=1").get_json()
    assert bobs["entries"][0]["balanceAfter"] == bob.balance() == 50 - 3 * PRICE
    assert not {e["id"] for e in all_pages(bob, "/api/ledger", "entries", 100)[0]} & set(ids)


def test_new_entries_never_shift_a_later_ledger_page(app, api_client):
    for _ in range(3):
        create_batch_id(api_client, 1)
    first = api_client.get("/api/ledger?limit=2").get_json()

    create_batch_id(api_client, 1)
    second = api_client.get(f"/api/ledger?limit=2&cursor={first['nextCursor']}").get_json()

    assert [e["kind"] for e in first["entries"] + second["entries"]] == [
        "batch_debit", "batch_debit", "batch_debit", "grant"
    ]
    assert [e["balanceAfter"] for e in second["entries"]] == [100 - PRICE, 100]
    assert second["nextCursor"] is None
