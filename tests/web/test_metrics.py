"""/metrics in Prometheus' text format: the state families read back what the database and the
queue hold, request latency is labelled by route (never by a raw path), METRICS_TOKEN guards
it, and a database that is down costs the scrape its state families, not its answer."""

from sqlalchemy import func, select

from tasks import get_queue
from tests.metrics import samples, value, value_or_zero
from tests.support import (
    CREATED_APPS,
    ApiClient,
    create_batch_id,
    create_user,
    drain,
    free_port,
    make_app,
)
from webapp.extensions import db
from webapp.models import Batch, Generation, LedgerEntry

BATCH_ROUTE = "/api/generate/batch/<batch_id>"


def scrape(client, **headers):
    """{(sample name, ((label, value), …)): value} of one /metrics answer."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(response.get_data(as_text=True))


def test_the_state_families_read_back_what_the_database_holds(app, api_client):
    done = create_batch_id(api_client, 3)
    drain(app)
    cancelled = create_batch_id(api_client, 2)
    assert api_client.post(f"/api/generate/batch/{cancelled}/cancel").status_code == 200
    drain(app)
    found = scrape(app.test_client())

    with app.app_context():
        by_status = dict(
            db.session.execute(
                select(Generation.status, func.count())
                .where(Generation.model == "flux-2")
                .group_by(Generation.status)
            ).all()
        )
        batches = dict(
            db.session.execute(select(Batch.status, func.count()).group_by(Batch.status)).all()
        )
        ledger = db.session.execute(select(LedgerEntry.kind, LedgerEntry.amount)).all()
    assert by_status == {"success": 3, "cancelled": 2}
    for status in ("pending", "processing", "success", "failed", "cancelled"):
        assert value(found, "batchgen_generations", status=status, model="flux-2") == (
            by_status.get(status, 0)
        )
    assert value(found, "batchgen_images_in_flight") == 0
    assert value(found, "batchgen_batches", status="completed") == batches["completed"] == 1
    assert value(found, "batchgen_batches", status="cancelled") == batches["cancelled"] == 1
    debits = -sum(amount for kind, amount in ledger if kind.endswith("_debit"))
    refunds = [amount for kind, amount in ledger if kind == "refund"]
    assert value(found, "batchgen_credits_charged_total") == debits == 5 * 3
    assert value(found, "batchgen_credits_refunded_total") == sum(refunds) == 2 * 3
    assert value(found, "batchgen_refunds_total") == len(refunds) == 2
    assert value(found, "batchgen_credits_granted_total") == 100
    assert value(found, "batchgen_webhook_deliveries", status="pending") == 0
    assert value(found, "batchgen_metrics_source_up", source="database") == 1
    assert value(found, "batchgen_metrics_source_up", source="queue") == 1
    assert done != cancelled


def test_queue_depth_and_queued_lanes_are_the_queues_own(app, api_client):
    create_batch_id(api_client, 3, concurrency=2)
    create_batch_id(api_client, 1)
    waiting = scrape(app.test_client())
    huey = get_queue(app).huey
    depth = huey.pending_count()
    drain(app)
    empty = scrape(app.test_client())

    assert depth == 3  # one lane per image allowed in flight: 2, and 1
    assert value(waiting, "batchgen_queue_depth") == depth
    assert value(waiting, "batchgen_queued_lanes") == 3
    assert value(waiting, "batchgen_generations", status="pending", model="flux-2") == 4
    assert value(empty, "batchgen_queue_depth") == value(empty, "batchgen_queued_lanes") == 0


def test_request_latency_is_labelled_by_route_method_and_status(app, api_client):
    batch_id = create_batch_id(api_client, 1)
    client = app.test_client()
    before = scrape(client)
    for _ in range(3):
        assert api_client.get(f"/api/generate/batch/{batch_id}").status_code == 200
    api_client.get("/api/generate/batch/batch_nobody_has")
    client.get("/no/such/page")
    after = scrape(client)

    def count(route, status):
        key = dict(route=route, method="GET", status=status)
        name = "batchgen_http_request_duration_seconds_count"
        return value(after, name, **key) - value_or_zero(before, name, **key)

    assert count(BATCH_ROUTE, "200") == 3
    assert count(BATCH_ROUTE, "404") == 1
    assert count("unmatched", "404") == 1
    routes = {dict(labels).get("route") for _, labels in after}
    assert not any(batch_id in (route or "") for route in routes), routes


def test_metrics_token_is_required_when_set(tmp_path):
    app = make_app(tmp_path, METRICS_TOKEN="metrics-secret")
    client = app.test_client()
    missing = client.get("/metrics")
    wrong = client.get("/metrics", headers={"Authorization": "Bearer guess"})
    found = scrape(client, Authorization="Bearer metrics-secret")

    for refused in (missing, wrong):
        assert refused.status_code == 401
        assert refused.get_json() == {
            "error": "Authentication required: send Authorization: Bearer <METRICS_TOKEN>."
        }
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert "Set-Cookie" not in refused.headers
    assert value(found, "batchgen_metrics_source_up", source="database") == 1


def test_a_database_that_is_down_leaves_the_state_out_and_says_so(tmp_path):
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    app = make_app(tmp_path, url, create_tables=False, READY_TIMEOUT_SECONDS=1)
    CREATED_APPS.remove(app)  # nothing to check the ledger of
    found = scrape(app.test_client())

    assert value(found, "batchgen_metrics_source_up", source="database") == 0
    assert value(found, "batchgen_metrics_source_up", source="queue") == 1
    assert not any(name == "batchgen_generations" for name, _ in found)
    assert value(found, "batchgen_queue_depth") == 0


def test_a_second_user_sees_the_same_numbers_no_sign_in_needed(app):
    """The scrape is not per user: it needs no session and answers the whole service."""
    for name in ("bob", "carol"):
        client = ApiClient(app, *create_user(app, name=name))
        create_batch_id(client, 2)
    found = scrape(app.test_client())

    assert value(found, "batchgen_generations", status="pending", model="flux-2") == 4
    assert value(found, "batchgen_credits_granted_total") == 200
