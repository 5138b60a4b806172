"""`flask --app app ledger audit | batches list|show|cancel|requeue | users list` (ops_cli.py),
through Flask's CliRunner on real batches (SQLite and PostgreSQL)."""

import pytest
from sqlalchemy import func, select, text, update

from tasks import get_queue
from tests.support import (
    ApiClient,
    create_batch_id,
    create_batch_jobs,
    create_user,
    drain,
    free_port,
    make_app,
    photo_body,
    work_next_image,
)
from webapp.extensions import db
from webapp.models import Batch, Generation, LedgerEntry, LedgerKind, User
from webapp.providers import Failed

REFUSED = Failed("content_policy", "The engine refused this image.")


def run(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def finished_batch_with_a_refund(app, api_client):
    """A batch of 3: the first image failed for good (refunded), the other two made for real."""
    batch_id, generation_ids = create_batch_jobs(api_client, count=3)
    work_next_image(app, batch_id, REFUSED)
    drain(app)
    with app.app_context():
        statuses = dict(db.session.execute(
            select(Generation.id, Generation.status).where(Generation.batch_id == batch_id)
        ).all())
        assert db.session.get(Batch, batch_id).status == "partial"
    assert statuses == {generation_ids[0]: "failed", generation_ids[1]: "success",
                        generation_ids[2]: "success"}
    return batch_id, generation_ids


def test_audit_passes_on_real_batches_with_refunds(app, api_client):
    finished_batch_with_a_refund(app, api_client)
    cancelled = create_batch_id(api_client, count=2)
    assert run(app, "batches", "cancel", cancelled).exit_code == 0
    assert [kind for kind, _ in api_client.ledger()].count("refund") == 3
    photo = api_client.post("/api/generate/photo", json=photo_body())
    assert photo.status_code == 202
    drain(app)
    with app.app_context():
        made = db.session.get(Generation, photo.get_json()["generationId"])
        assert made.status == "success" and made.batch_id is None

    result = run(app, "ledger", "audit")

    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines() == [
        "Ledger audit passed: 1 users, 7 ledger rows, 2 batches, 6 images; every balance is "
        "the sum of its ledger, one debit per batch and photo, one refund per failed or "
        "cancelled image, none for a success."
    ]


def _credits(user_id, change):
    db.session.execute(
        update(User).where(User.id == user_id).values(credits=User.credits + change)
    )


def _add_entry(user_id, amount, kind, **ids):
    """A ledger row written by hand, past the services (and past the UNIQUE constraint when it
    has been dropped): on SQLite a rebuilt table has no id sequence, so the id is given."""
    next_id = db.session.scalar(select(func.max(LedgerEntry.id))) + 1
    db.session.execute(
        LedgerEntry.__table__.insert().values(
            id=next_id, user_id=user_id, amount=amount, kind=kind, **ids
        )
    )
    return next_id


def _drop_one_refund_per_generation_rule():
    """Take away the database's UNIQUE(generation_id, kind), as a database restored by hand
    or edited past the app might be, so a second refund can be written."""
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text("ALTER TABLE ledger DROP CONSTRAINT uq_ledger_generation_id_kind"))
    else:  # SQLite cannot drop a table's constraint: the table is copied without it
        db.session.execute(text("ALTER TABLE ledger RENAME TO ledger_constrained"))
        db.session.execute(text("CREATE TABLE ledger AS SELECT * FROM ledger_constrained"))
        db.session.execute(text("DROP TABLE ledger_constrained"))


def corrupt_credits(user_id, batch_id, failed_id, success_id):
    credits = db.session.get(User, user_id).credits
    _credits(user_id, 7)
    return [f"user 1 (alice): credits {credits + 7} but the ledger sums to {credits}"]


def corrupt_second_refund(user_id, batch_id, failed_id, success_id):
    _drop_one_refund_per_generation_rule()
    cost = db.session.get(Generation, failed_id).cost
    _add_entry(user_id, cost, LedgerKind.REFUND, batch_id=batch_id, generation_id=failed_id)
    _credits(user_id, cost)
    return [
        f"generation {failed_id} in batch {batch_id} of user 1 (alice): refunded 2 times "
        "(at most once)",
        f"batch {batch_id} of user 1 (alice): says {cost} refunded, its refunds sum to {2 * cost}",
    ]


def corrupt_refund_of_a_success(user_id, batch_id, failed_id, success_id):
    cost = db.session.get(Generation, success_id).cost
    _add_entry(user_id, cost, LedgerKind.REFUND, batch_id=batch_id, generation_id=success_id)
    _credits(user_id, cost)
    return [
        f"generation {success_id} in batch {batch_id} of user 1 (alice): refunded although "
        "its status is success",
        f"batch {batch_id} of user 1 (alice): says {cost} refunded, its refunds sum to {2 * cost}",
    ]


def corrupt_second_debit(user_id, batch_id, failed_id, success_id):
    cost = db.session.get(Batch, batch_id).total_cost
    _add_entry(user_id, -cost, LedgerKind.BATCH_DEBIT, batch_id=batch_id)
    _credits(user_id, -cost)
    return [f"batch {batch_id} of user 1 (alice): 2 debits (one expected)"]


@pytest.mark.parametrize(
    "corrupt",
    [corrupt_credits, corrupt_second_refund, corrupt_refund_of_a_success, corrupt_second_debit],
)
def test_audit_fails_and_names_the_offender_of_a_corrupted_ledger(app, api_client, corrupt):
    user_id = api_client.user_id
    batch_id, (failed_id, success_id, _) = finished_batch_with_a_refund(app, api_client)
    assert run(app, "ledger", "audit").exit_code == 0
    with app.app_context():
        expected = corrupt(user_id, batch_id, failed_id, success_id)
        db.session.commit()
        entries = db.session.scalar(select(func.count(LedgerEntry.id)))

    try:
        result = run(app, "ledger", "audit")
    finally:
        if corrupt is corrupt_credits:  # put right, for the ledger check after every test
            with app.app_context():
                _credits(user_id, -7)
                db.session.commit()

    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines[:-1] == expected
    assert lines[-1] == (
        f"Ledger audit FAILED: {len(expected)} problem(s) in 1 users, {entries} ledger rows, "
        "1 batches, 3 images."
    )
    if corrupt is corrupt_credits:
        assert run(app, "ledger", "audit").exit_code == 0


def test_audit_names_a_failure_never_refunded(app, api_client):
    batch_id, (failed_id, *_) = finished_batch_with_a_refund(app, api_client)
    with app.app_context():
        db.session.execute(
            update(Generation).where(Generation.id == failed_id).values(status="cancelled")
        )
        refund = db.session.scalar(select(LedgerEntry).where(LedgerEntry.kind == "refund"))
        db.session.delete(refund)
        _credits(api_client.user_id, -refund.amount)
        db.session.execute(update(Batch).where(Batch.id == batch_id).values(refunded=0))
        db.session.commit()

    result = run(app, "ledger", "audit")

    assert result.exit_code == 1
    assert result.output.splitlines()[0] == (
        f"generation {failed_id} in batch {batch_id} of user 1 (alice): cancelled but never "
        "refunded"
    )


def test_batches_list_filters_by_user_and_status_newest_first(app, api_client):
    bob = ApiClient(app, *create_user(app, "bob"))
    first = create_batch_id(api_client, count=1)
    second = create_batch_id(api_client, count=2)
    bobs = create_batch_id(bob, count=1)
    assert run(app, "batches", "cancel", second).exit_code == 0

    every = run(app, "batches", "list").output.strip().splitlines()
    alices = run(app, "batches", "list", "--user", "alice").output.strip().splitlines()
    cancelled = run(app, "batches", "list", "--status", "cancelled").output.strip().splitlines()
    newest = run(app, "batches", "list", "--limit", "1").output.strip().splitlines()

    assert [line.split("\t")[0] for line in every] == [bobs, second, first]
    assert [line.split("\t")[0] for line in alices] == [second, first]
    assert cancelled[0].split("\t")[:4] == [second, "alice", "cancelled", "2/2 done (2 cancelled)"]
    assert len(cancelled) == 1
    assert [line.split("\t")[0] for line in newest] == [bobs]
    assert run(app, "batches", "list", "--status", "failed").output == "No batch matches.\n"
    unknown = run(app, "batches", "list", "--user", "nobody")
    assert unknown.exit_code != 0 and "no user named 'nobody'" in unknown.output
    wrong = run(app, "batches", "list", "--status", "exploded")
    assert wrong.exit_code != 0 and "exploded" in wrong.output


def test_batches_show_names_each_image_with_its_attempts_and_error(app, api_client):
    batch_id, (failed_id, success_id, other_id) = finished_batch_with_a_refund(app, api_client)

    result = run(app, "batches", "show", batch_id)

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"batch\t{batch_id}" in lines and "status\tpartial" in lines
    assert "user\talice (id 1)" in lines
    assert "images\t3: 0 pending, 0 processing, 2 success, 1 failed, 0 cancelled" in lines
    assert f"0\t{failed_id}\tfailed\t1\t\tcontent_policy: The engine refused this image." in lines
    assert f"1\t{success_id}\tsuccess\t1\t\t" in lines
    assert f"2\t{other_id}\tsuccess\t1\t\t" in lines
    missing = run(app, "batches", "show", "batch_nope")
    assert missing.exit_code != 0 and "no batch with id 'batch_nope'" in missing.output
    assert "no batch with id" in run(app, "batches", "show", "not an id\x00").output


def test_batches_cancel_refunds_exactly_once(app, api_client):
    batch_id = create_batch_id(api_client, count=3)
    before = api_client.get("/api/me").get_json()["credits"]

    first = run(app, "batches", "cancel", batch_id)
    again = run(app, "batches", "cancel", batch_id)

    assert first.exit_code == 0, first.output
    assert first.output.startswith(f"{batch_id}: Cancelled 3 images not started;")
    assert again.exit_code == 0 and "already cancelled" in again.output
    refunds = [amount for kind, amount in api_client.ledger() if kind == "refund"]
    assert len(refunds) == 3
    assert api_client.get("/api/me").get_json()["credits"] == before + sum(refunds)
    assert api_client.get(f"/api/generate/batch/{batch_id}").get_json()["status"] == "cancelled"
    ledger = api_client.ledger()
    drain(app)  # the lanes rung at create find nothing to claim: nothing more is charged
    assert api_client.ledger() == ledger and run(app, "ledger", "audit").exit_code == 0


def test_batches_cancel_refuses_a_finished_batch(app, api_client):
    batch_id, _ = finished_batch_with_a_refund(app, api_client)

    result = run(app, "batches", "cancel", batch_id)

    assert result.exit_code == 1
    assert f"batch {batch_id} is already partial: there is nothing to cancel" in result.output


def test_batches_requeue_rings_lanes_again_and_twice_is_harmless(app, api_client):
    batch_id = create_batch_id(api_client, count=3, concurrency=2)
    huey = get_queue(app).huey
    huey.flush()  # the queue lost its tasks (Redis restarted empty, say)

    first = run(app, "batches", "requeue", batch_id)
    second = run(app, "batches", "requeue", batch_id)

    assert first.exit_code == 0, first.output
    assert first.output == f"Rang 2 lane(s) of {batch_id} (queued, 3 pending, 0 processing).\n"
    assert second.exit_code == 0
    assert huey.pending_count() == 4
    drain(app)
    with app.app_context():
        rows = db.session.execute(
            select(Generation.status, Generation.attempts).where(Generation.batch_id == batch_id)
        ).all()
        assert db.session.get(Batch, batch_id).status == "completed"
    assert rows == [("success", 1)] * 3  # each image made once, however often it was rung
    done = run(app, "batches", "requeue", batch_id)
    assert done.exit_code == 0
    assert done.output == (
        f"{batch_id} is completed with no image left to run: nothing to requeue.\n"
    )
    assert huey.pending_count() == 0


def test_batches_requeue_says_when_the_queue_is_down(tmp_path, database_url):
    down = f"redis://127.0.0.1:{free_port()}/0"
    app = make_app(tmp_path, database_url, HUEY_MEMORY=False, REDIS_URL=down)
    client = ApiClient(app, *create_user(app))
    batch_id = create_batch_id(client, count=1)  # committed; its doorbell failed quietly

    result = run(app, "batches", "requeue", batch_id)

    assert result.exit_code == 1
    assert "the queue cannot be reached" in result.output


def test_users_list_shows_credits_batches_and_images_in_flight(app, api_client):
    create_user(app, "bob", credits=5)
    create_batch_id(api_client, count=2)

    result = run(app, "users", "list")

    assert result.exit_code == 0, result.output
    rows = [line.split("\t")[:5] for line in result.output.strip().splitlines()]
    with app.app_context():
        alice_credits = db.session.get(User, 1).credits
    assert rows == [
        ["id", "name", "credits", "batches", "in flight"],
        ["1", "alice", str(alice_credits), "1", "2"],
        ["2", "bob", "5", "0", "0"],
    ]


def _statements_of_an_audit(app):
    """How many SQL statements one `ledger audit` sends."""
    from sqlalchemy import event

    sent = []

    def count(*args):
        sent.append(1)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert run(app, "ledger", "audit").exit_code == 0
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return len(sent)


def test_the_audit_asks_as_many_queries_for_many_users_as_for_one(app, api_client):
    """Grouped queries, never one per user or per batch: the count of statements does not grow
    with the ledger (its speed is not timed here)."""
    finished_batch_with_a_refund(app, api_client)
    few = _statements_of_an_audit(app)
    for name in ("bob", "carol", "dave"):
        client = ApiClient(app, *create_user(app, name))
        create_batch_id(client, count=2)
        work_next_image(app, create_batch_id(client, count=1), REFUSED)
    drain(app)

    assert _statements_of_an_audit(app) == few
