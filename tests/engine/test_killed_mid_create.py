"""A consumer killed after kie.ai accepted a create, before the task id was stored.

With callbacks, the dead attempt's task is still found: its callback names the attempt (the
lease token in the callBackUrl), and the callback gives that attempt its task, which is then
polled rather than created again. Right before the create left, the attempt stored a
placeholder task id (`unconfirmed:<style>`), so when its lease runs out before the upstream
calls back, the reaper keeps the attempt and polls it, and the poll waits
KIE_CONFIRM_GRACE_SECONDS for that callback instead of the image being created again: one
upstream task whether the upstream is faster or slower than LEASE_SECONDS.
"""

import time
from collections import Counter
from urllib.parse import parse_qsl, urlsplit

import pytest

from devtools.kie_stub import KieStub
from tests.consumers import ConsumerProcess, queue_name
from tests.support import (
    ApiClient,
    batch_finished,
    create_batch_id,
    create_user,
    free_port,
    generation_rows,
    make_app,
    serving,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

LEASE_SECONDS = 4


class SlowToAnswer(KieStub):
    """Accepts a create at once and answers it 1.5 s later: a window to kill the consumer in."""

    def create(self, style, body):
        answer = super().create(style, body)
        time.sleep(1.5)
        return answer


def _creates_per_generation(stub):
    return Counter(
        dict(parse_qsl(urlsplit(body["callBackUrl"]).query))["generation"] for body in stub.created
    )


def _kill_mid_create_and_finish(tmp_path, redis_url, upstream_seconds):
    with SlowToAnswer(latency=upstream_seconds, polls_until_done=10**9) as stub:
        port = free_port()
        settings = {
            "GENERATION_BACKEND": "kie",
            "KIE_API_KEY": "test-key",
            "KIE_API_BASE": stub.base_url,
            "KIE_UPLOAD_BASE": stub.base_url,
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "LEASE_SECONDS": LEASE_SECONDS,
            "STALL_SECONDS": 2,
            "REAP_SECONDS": 1,
        }
        app = make_app(
            tmp_path, HUEY_MEMORY=False, REDIS_URL=redis_url, HUEY_NAME=queue_name(), **settings
        )
        client = ApiClient(app, *create_user(app))
        consumer = ConsumerProcess(app, tmp_path / "consumer.log", **settings)
        with serving(app, port), consumer:
            consumer.start("thread", workers=2)
            batch_id = create_batch_id(client, 1)
            wait_for(lambda: stub.counts["create"] >= 1, timeout=60)
            consumer.kill_9()  # the create was accepted; its answer had not come back
            consumer.start("thread", workers=2)
            detail = wait_for(batch_finished(client, batch_id), timeout=90)
        [row] = generation_rows(app, batch_id)
        return detail, row, _creates_per_generation(stub)


def test_a_task_that_finishes_within_the_dead_attempts_lease_is_adopted_not_made_again(
    tmp_path, redis_url
):
    detail, row, creates = _kill_mid_create_and_finish(tmp_path, redis_url, upstream_seconds=1.0)

    assert detail["status"] == "completed"
    assert creates == {row["id"]: 1}
    assert row["attempts"] == 1


def test_a_task_slower_than_the_lease_is_still_one_upstream_task(tmp_path, redis_url):
    detail, row, creates = _kill_mid_create_and_finish(
        tmp_path, redis_url, upstream_seconds=2 * LEASE_SECONDS
    )

    assert detail["status"] == "completed"
    assert creates == {row["id"]: 1}
    assert row["attempts"] == 1  # the dead attempt was kept, not put back in line
