"""A kie create is marked before it leaves: with callbacks, the attempt stores its placeholder
task id (`unconfirmed:<style>`) right before the create is sent, so an attempt whose worker dies
before the answer may be paid for upstream. The reaper keeps such an attempt and polls it; the
poll waits KIE_CONFIRM_GRACE_SECONDS for the callback that names its task, and only then is the
image created again (spending an attempt: it fails and is refunded once they are spent)."""

from datetime import timedelta

import pytest

from devtools.kie_stub import KieStub
from tests.support import ApiClient, claim_next_image, create_batch_id, create_user

PLACEHOLDER = "unconfirmed:jobs"


def _row(app, generation_id):
    from webapp.extensions import db
    from webapp.models import Generation

    with app.app_context():
        row = db.session.get(Generation, generation_id)
        return {
            "status": row.status,
            "attempts": row.attempts,
            "task": row.provider_task_id,
            "lease_owner": row.lease_owner,
            "error_code": row.error_code,
        }


def _settings(app):
    from webapp.generation import claims

    return claims.Settings.from_config(app.config)


def _mark(app, claim):
    from webapp.generation import outcomes

    with app.app_context():
        return outcomes.create_marker(claim, _settings(app))(PLACEHOLDER)


def _reap_after_the_lease(app):
    from webapp.generation import reaper
    from webapp.models import utcnow
    from webapp.storage import get_storage

    later = utcnow() + timedelta(seconds=app.config["LEASE_SECONDS"] + 1)
    with app.app_context():
        return reaper.reap(_settings(app), app.config["STALL_SECONDS"], get_storage(), now=later)


def _poll(app, generation_id):
    from webapp.generation import steps
    from webapp.providers import get_provider
    from webapp.storage import get_storage

    with app.app_context():
        return steps.poll_step(generation_id, get_provider(), get_storage(), _settings(app))


def test_an_attempt_marked_before_its_create_outlives_its_lease_and_takes_its_callbacks_task(
    kie_app,
):
    from webapp.providers.kie.callbacks import attempt_query

    with KieStub() as stub:
        app = kie_app(stub, PUBLIC_BASE_URL="https://img.example.com")
        client = ApiClient(app, *create_user(app))
        batch_id = create_batch_id(client, 2)
        marked = claim_next_image(app, batch_id)
        unmarked = claim_next_image(app, batch_id)  # killed before its create left
        assert _mark(app, marked) is True

        report = _reap_after_the_lease(app)
        kept = _row(app, marked.generation.id)
        query = attempt_query(app.config["SECRET_KEY"], marked.generation.id, marked.token, "jobs")
        answer = app.test_client().post(
            "/api/callbacks/kie", query_string=query, json={"code": 200, "data": {"taskId": "t-1"}}
        )
        adopted = _row(app, marked.generation.id)

    assert report.polls == [marked.generation.id]  # kept and polled, not put back in line
    assert report.requeued == [unmarked.generation.id]
    assert kept == {
        "status": "processing",
        "attempts": 1,
        "task": PLACEHOLDER,
        "lease_owner": marked.token,
        "error_code": None,
    }
    assert answer.get_json()["polling"] is True
    assert adopted["task"] == "jobs:t-1"


def test_a_marked_attempt_nobody_names_is_created_again_after_the_grace_then_refunded(kie_app):
    """The callback never comes (kie gave up delivering it, or the create never arrived):
    after the grace the attempt is a retryable failure, so the image is bounded by
    MAX_ATTEMPTS like any other, and refunded exactly once."""
    with KieStub() as stub:
        app = kie_app(
            stub,
            PUBLIC_BASE_URL="https://img.example.com",
            KIE_CONFIRM_GRACE_SECONDS=0,
            MAX_ATTEMPTS=2,
            RETRY_BASE_SECONDS=0,
            RETRY_CAP_SECONDS=0,
        )
        client = ApiClient(app, *create_user(app))
        batch_id = create_batch_id(client, 1)
        first = claim_next_image(app, batch_id)
        _mark(app, first)
        _poll(app, first.generation.id)
        retried = _row(app, first.generation.id)
        second = claim_next_image(app, batch_id)
        _mark(app, second)
        _poll(app, second.generation.id)
        failed = _row(app, second.generation.id)

    assert (retried["status"], retried["attempts"]) == ("pending", 1)
    assert retried["error_code"] == "upstream_unconfirmed"
    assert (failed["status"], failed["attempts"]) == ("failed", 2)
    assert failed["error_code"] == "upstream_unconfirmed"
    assert client.ledger() == [("grant", 100), ("batch_debit", -3), ("refund", 3)]


def test_a_stopping_worker_keeps_an_attempt_whose_create_may_have_left(kie_app, monkeypatch):
    """A worker told to stop while its create is on the wire hands the image back only if
    nothing can have reached kie; a marked attempt keeps its lease for its callback."""
    from webapp.generation import steps
    from webapp.providers import get_provider
    from webapp.providers.kie.payloads import STYLES
    from webapp.storage import get_storage

    with KieStub() as stub:
        app = kie_app(stub, PUBLIC_BASE_URL="https://img.example.com")
        client = ApiClient(app, *create_user(app))
        batch_id = create_batch_id(client, 1)
        with app.app_context():
            provider = get_provider()
            call = provider.client.call

            def stopped_mid_create(method, path, base=None, **kwargs):
                if path == STYLES["jobs"].create_path:
                    raise KeyboardInterrupt  # the stop signal, while the create is sent
                return call(method, path, base, **kwargs)

            monkeypatch.setattr(provider.client, "call", stopped_mid_create)
            with pytest.raises(KeyboardInterrupt):
                steps.lane_step(batch_id, provider, get_storage(), _settings(app))
            released = steps.release_held_claims()
        [generation_id] = [row["id"] for row in _rows(app, batch_id)]
        kept = _row(app, generation_id)

    assert released == []
    assert (kept["status"], kept["attempts"], kept["task"]) == ("processing", 1, PLACEHOLDER)


def _rows(app, batch_id):
    from tests.support import generation_rows

    return generation_rows(app, batch_id)
