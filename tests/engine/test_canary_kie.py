"""A canary batch through the kie.ai engine (submit, then polls) on the stub kie.ai, with a real
consumer: only the canary's images are created upstream before the approval, a refused canary
image is refunded and the batch still waits, and the rest are created once approved."""

import pytest

from devtools.kie_stub import KieStub
from tests.support import (
    ApiClient,
    batch_finished,
    create_batch_id,
    create_user,
    generation_rows,
    running_consumer,
    wait_for,
)

PRICE = 3  # flux-2 at 1k
REFUSAL = "Your image was flagged as sensitive by the content moderation system."


def _awaiting(client, batch_id):
    def awaiting():
        detail = client.get(f"/api/generate/batch/{batch_id}").get_json()
        return detail if detail["status"] == "awaiting_approval" else None

    return awaiting


@pytest.mark.e2e
def test_only_the_canary_reaches_the_upstream_until_approved(kie_app):
    with KieStub(polls_until_done=1, fail_tasks={1}, fail_code="400", fail_msg=REFUSAL) as stub:
        app = kie_app(stub)
        client = ApiClient(app, *create_user(app))
        with running_consumer(app, workers=3):
            batch_id = create_batch_id(client, 6, canary=2, concurrency=4)
            waiting = wait_for(_awaiting(client, batch_id), timeout=60)
            assert len(stub.created) == 2
            statuses = sorted(result["status"] for result in waiting["results"][:2])
            assert statuses == ["failed", "success"]
            assert [r["status"] for r in waiting["results"][2:]] == ["pending"] * 4
            assert client.balance() == 100 - 6 * PRICE + PRICE  # the refusal, refunded at once

            approved = client.post(f"/api/generate/batch/{batch_id}/approve").get_json()
            assert approved["released"] == 4
            detail = wait_for(batch_finished(client, batch_id), timeout=60)

    assert detail["status"] == "partial"
    assert len(stub.created) == 6  # each image created upstream once
    rows = generation_rows(app, batch_id)
    assert [row["attempts"] for row in rows] == [1] * 6
    assert client.ledger() == [("grant", 100), ("batch_debit", -6 * PRICE), ("refund", PRICE)]
    assert client.balance() == 100 - 5 * PRICE
