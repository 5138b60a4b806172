"""Concurrent requests never spend the same credits twice, and never go below zero."""

import threading

import pytest

from tests.support import ApiClient, batch_body, create_user, media_files


@pytest.mark.parametrize("requests_count", [30])
def test_concurrent_batches_accept_exactly_what_the_balance_covers(app, requests_count):
    user_id, token = create_user(app, "racer", credits=15)  # covers 5 one-image batches
    body = batch_body(1)
    statuses = []
    barrier = threading.Barrier(requests_count)

    def submit():
        client = ApiClient(app, user_id, token)
        barrier.wait()
        statuses.append(client.post("/api/generate/batch", json=body).status_code)

    threads = [threading.Thread(target=submit) for _ in range(requests_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    client = ApiClient(app, user_id, token)
    assert sorted(statuses) == [200] * 5 + [402] * (requests_count - 5)
    assert client.balance() == 0
    assert client.ledger().count(("batch_debit", -3)) == 5
    assert len(media_files(app)) == 5  # refused requests kept no file
