"""Metrics after a real batch: a `huey_consumer` process on Redis runs the kie engine against the
stub kie.ai (some creates answered 429, one image refused) and delivers webhooks to a real
receiver (the first attempt answered 500). Its own metrics, on METRICS_PORT behind
METRICS_TOKEN, count exactly the calls the stub saw and the attempts the database logged; the
web's /metrics reads back the generations, the money and the deliveries the database holds.
Then gunicorn with two workers in multiprocess mode: every worker's requests are counted, by
whichever worker answers the scrape."""

import concurrent.futures
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from devtools.kie_stub import KieStub
from tests.consumers import ConsumerProcess, queue_name
from tests.metrics import per_process, samples, value, value_or_zero
from tests.receiver import Reply, receiving
from tests.support import (
    ApiClient,
    batch_finished,
    create_batch_id,
    create_user,
    free_port,
    make_app,
    wait_for,
)
from webapp.extensions import db
from webapp.generation import webhook_endpoints
from webapp.models import DeliveryStatus, Generation, LedgerEntry, WebhookAttempt, WebhookDelivery

PROJECT_ROOT = Path(__file__).resolve().parents[2]
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
TOKEN = "scrape-secret"
REFUSAL = "Your image was flagged as sensitive by the content moderation system."
KIE = {
    "GENERATION_BACKEND": "kie",
    "KIE_API_KEY": "test-key",
    "WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    # No pacer (the stub's 429s are the test), and a 429 waits only a second or so.
    "UPSTREAM_RATE_LIMIT": 0,
    "UPSTREAM_RATE_PERIOD": 1,
}


def _scrape_consumer(port, token=TOKEN):
    answer = requests.get(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    return answer


def _deliveries_settled(app):
    def settled():
        with app.app_context():
            statuses = db.session.scalars(select(WebhookDelivery.status)).all()
            db.session.rollback()
        return statuses and DeliveryStatus.PENDING not in statuses

    return settled


def _counted_every_attempt(app, port):
    def counted():
        with app.app_context():
            logged = db.session.scalar(select(func.count()).select_from(WebhookAttempt))
            db.session.rollback()
        answer = _scrape_consumer(port)
        assert answer.status_code == 200, answer.text
        found = samples(answer.text)
        outcomes = ("delivered", "retrying", "failed")
        counted = sum(value(found, "batchgen_webhook_attempts_total", outcome=o) for o in outcomes)
        return found if counted == logged else None

    return counted


@pytest.mark.e2e
@pytest.mark.redis
def test_after_a_real_batch_the_metrics_are_what_the_stub_saw_and_the_database_holds(
    tmp_path, database_url, redis_url
):
    port = free_port()
    with (
        KieStub(
            polls_until_done=0,
            rate_429=0.3,
            seed=3,
            fail_tasks={2},
            fail_code="400",
            fail_msg=REFUSAL,
        ) as stub,
        receiving() as receiver,
    ):
        settings = {**KIE, "KIE_API_BASE": stub.base_url, "KIE_UPLOAD_BASE": stub.base_url}
        app = make_app(
            tmp_path,
            database_url,
            HUEY_MEMORY=False,
            REDIS_URL=redis_url,
            HUEY_NAME=queue_name(),
            **settings,
        )
        user_id, token = create_user(app)
        with app.app_context():
            webhook_endpoints.set_endpoint(user_id, f"{receiver.url}/hooks")
        receiver.script(Reply(500))
        client = ApiClient(app, user_id, token)
        consumer = ConsumerProcess(
            app,
            tmp_path / "consumer.log",
            **settings,
            METRICS_PORT=port,
            METRICS_HOST="127.0.0.1",
            METRICS_TOKEN=TOKEN,
        )
        with consumer:
            consumer.start("thread", workers=4)
            batch_id = create_batch_id(client, 6)
            detail = wait_for(batch_finished(client, batch_id), timeout=120)
            wait_for(_deliveries_settled(app), timeout=60)
            unauthorised = _scrape_consumer(port, token="guess")
            # A counter moves right after its commit: scrape until the attempts are all in.
            own = wait_for(_counted_every_attempt(app, port), timeout=30)
            consumer.stop()
        seen = dict(stub.counts)
        creates = len(stub.create_attempt_times)
    web = samples(app.test_client().get("/metrics").get_data(as_text=True))

    assert detail["status"] == "partial", consumer.log()
    assert unauthorised.status_code == 401 and "error" in unauthorised.json()
    # The consumer's events: every call the stub saw, and each 429 it answered.
    assert seen["rate_limited"] > 0, seen
    upstream = "batchgen_upstream_request_duration_seconds_count"
    assert value(own, upstream, operation="create") == creates == 6 + seen["rate_limited"]
    assert value(own, upstream, operation="upload") == seen["upload"]
    assert value(own, upstream, operation="poll") == seen["poll"]
    assert value(own, upstream, operation="download") == seen["result_download"] == 5
    limited = "batchgen_upstream_rate_limited_total"
    assert value(own, limited, operation="create") == seen["rate_limited"]
    assert value(own, limited, operation="poll") == 0
    # Its webhook attempts, as the database logged them: one 500, then each delivered.
    with app.app_context():
        attempts = db.session.scalar(select(func.count()).select_from(WebhookAttempt))
        delivered = db.session.scalar(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(WebhookDelivery.status == DeliveryStatus.DELIVERED)
        )
        by_status = dict(
            db.session.execute(
                select(Generation.status, func.count()).group_by(Generation.status)
            ).all()
        )
        ledger = db.session.execute(select(LedgerEntry.kind, LedgerEntry.amount)).all()
    webhook = "batchgen_webhook_attempts_total"
    assert value(own, webhook, outcome="retrying") == 1
    assert value(own, webhook, outcome="delivered") == delivered >= 1
    assert value(own, webhook, outcome="failed") == 0
    assert sum(value(own, webhook, outcome=o) for o in ("delivered", "retrying")) == attempts
    # The web's state, read from the database.
    assert by_status == {"success": 5, "failed": 1}
    for status, count in by_status.items():
        assert value(web, "batchgen_generations", status=status, model="flux-2") == count
    assert value(web, "batchgen_images_in_flight") == 0
    refunds = [amount for kind, amount in ledger if kind == "refund"]
    assert value(web, "batchgen_refunds_total") == len(refunds) == 1
    assert value(web, "batchgen_credits_refunded_total") == sum(refunds) == 3
    assert value(web, "batchgen_credits_charged_total") == 6 * 3
    assert value(web, "batchgen_webhook_deliveries", status="delivered") == delivered
    assert value(web, "batchgen_queue_depth") == 0


@pytest.mark.e2e
def test_gunicorn_with_two_workers_counts_every_workers_requests_in_one_scrape(tmp_path):
    """PROMETHEUS_MULTIPROC_DIR: each worker writes its own file; any worker's scrape adds them."""
    folder = tmp_path / "prometheus"
    port = free_port()
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "MEDIA_ROOT", "PUBLIC_BASE_URL")
    }
    environment.update(INSTANCE_PATH=str(tmp_path), SECRET_KEY="test-secret")
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "init-db"],
        cwd=PROJECT_ROOT,
        env=environment,
        check=True,
        capture_output=True,
    )
    # As ops start it: a folder emptied before gunicorn starts (the README's recipe).
    environment.update(PROMETHEUS_MULTIPROC_DIR=str(folder), METRICS_TOKEN=TOKEN)
    log = open(tmp_path / "gunicorn.log", "w")
    server = subprocess.Popen(
        [GUNICORN, "-w", "2", "-k", "sync", "-b", f"127.0.0.1:{port}", "app:app"],
        cwd=PROJECT_ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def up():
            try:
                return requests.get(f"{base}/healthz", timeout=5).status_code == 200
            except requests.RequestException:  # still booting
                return False

        wait_for(up, timeout=60)
        # Concurrent requests, each on its own connection: both sync workers take some.
        requests_made = 200

        def one(_):
            return requests.get(f"{base}/readyz", timeout=30).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(requests_made)))
        scrapes = [
            samples(
                requests.get(
                    f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
                ).text
            )
            for _ in range(6)
        ]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        log.close()

    assert answers == [200] * requests_made
    # Each worker's own file: both answered some of the probes.
    by_worker = [
        value_or_zero(
            found,
            "batchgen_http_request_duration_seconds_count",
            route="/readyz",
            method="GET",
            status="200",
        )
        for found in per_process(folder).values()
    ]
    assert len(by_worker) == 2 and sum(by_worker) == requests_made, by_worker
    assert all(count > 0 for count in by_worker), by_worker
    counted = [
        value(
            found,
            "batchgen_http_request_duration_seconds_count",
            route="/readyz",
            method="GET",
            status="200",
        )
        for found in scrapes
    ]
    assert counted == [requests_made] * len(scrapes)
    healthz = ("batchgen_http_request_duration_seconds_count", "/healthz")
    assert all(
        value(found, healthz[0], route=healthz[1], method="GET", status="200") >= 1
        for found in scrapes
    )
