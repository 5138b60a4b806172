"""The change counter (webapp/versions.py): every state change of a batch or of its images moves
`batches.version` in its own transaction, and the changed image takes the batch's new version;
a heartbeat or a lease's extension moves nothing. Each transition is driven for real, through the
service or the API, on SQLite and on PostgreSQL."""

from datetime import timedelta

from sqlalchemy import select, update

from tests.support import (
    claim_next_image,
    create_batch_id,
    drain,
    finish_claim,
    work_next_image,
)
from webapp.extensions import db
from webapp.generation import claims, outcomes, reaper, retention
from webapp.models import Batch, Generation, utcnow
from webapp.providers import Failed
from webapp.storage import get_storage


def _versions(app, batch_id):
    """(the batch's version, {image id: (status, version)})."""
    with app.app_context():
        batch = db.session.scalar(select(Batch.version).where(Batch.id == batch_id))
        rows = db.session.execute(
            select(Generation.id, Generation.status, Generation.version)
            .where(Generation.batch_id == batch_id)
            .order_by(Generation.position)
        ).all()
        db.session.rollback()
        return batch, {row.id: (row.status, row.version) for row in rows}


class Counter:
    """Follows one batch's version: `moved()` says whether it grew since the last look."""

    def __init__(self, app, batch_id):
        self.app, self.batch_id = app, batch_id
        self.version, self.images = _versions(app, batch_id)

    def moved(self):
        self.before = self.version
        self.version, self.images = _versions(self.app, self.batch_id)
        return self.version > self.before

    def image(self, generation_id):
        return self.images[generation_id]

    def changed(self, generation_id, status):
        """The image is in `status`, at a version of the last step (after the one before it,
        at most the batch's: a refund moves the batch again in the same transaction)."""
        now, version = self.images[generation_id]
        return now == status and self.before < version <= self.version


def test_every_transition_of_a_batch_and_its_images_moves_its_version(app, api_client):
    batch_id = create_batch_id(api_client, 6, concurrency=2)
    counter = Counter(app, batch_id)
    assert counter.version == 1
    assert {version for _, version in counter.images.values()} == {1}

    claim = claim_next_image(app, batch_id)  # claim (and the batch queued → running)
    assert counter.moved()
    assert counter.changed(claim.generation.id, "processing")

    finish_claim(app, claim)  # success
    assert counter.moved()
    assert counter.changed(claim.generation.id, "success")

    retried = work_next_image(app, batch_id, Failed("upstream_error", "Try again.", True))
    assert counter.moved()  # a retryable failure: back to pending
    assert counter.changed(retried.generation.id, "pending")

    failed = work_next_image(app, batch_id, Failed("invalid_input", "No.", False))
    assert counter.moved()  # a permanent failure, refunded in its transaction
    assert counter.changed(failed.generation.id, "failed")

    assert api_client.post(f"/api/generate/batch/{batch_id}/pause").status_code == 200
    assert counter.moved()
    assert api_client.post(f"/api/generate/batch/{batch_id}/resume").status_code == 200
    assert counter.moved()

    requeued = claim_next_image(app, batch_id)
    assert counter.moved()
    with app.app_context():  # its worker died: the lease runs out, the reaper puts it back
        db.session.execute(
            update(Generation)
            .where(Generation.id == requeued.generation.id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
    assert not counter.moved()  # a lease's end alone is no change of the answer
    with app.app_context():
        settings = claims.Settings.from_config(app.config)
        report = reaper.reap(settings, app.config["STALL_SECONDS"], get_storage())
    assert requeued.generation.id in report.requeued
    assert counter.moved()
    assert counter.changed(requeued.generation.id, "pending")

    assert api_client.post(f"/api/generate/batch/{batch_id}/cancel").status_code == 200
    assert counter.moved()  # cancelled, the waiting images refunded
    cancelled = [gid for gid, (status, _) in counter.images.items() if status == "cancelled"]
    assert cancelled and all(counter.image(gid)[1] > 1 for gid in cancelled)

    with app.app_context():  # retention deletes the result of a settled batch
        inputs, results = retention.sweep(get_storage(), kept=retention.Kept(0, 0))
    assert results == 1
    assert counter.moved()
    assert counter.changed(claim.generation.id, "success")


def test_a_heartbeat_or_a_leases_extension_moves_nothing(app, api_client):
    batch_id = create_batch_id(api_client, 2)
    claim = claim_next_image(app, batch_id)
    counter = Counter(app, batch_id)
    settings = claims.Settings.from_config(app.config)

    with app.app_context():
        db.session.execute(
            update(Batch).where(Batch.id == batch_id).values(heartbeat_at=utcnow())
        )
        db.session.commit()
        assert outcomes.fenced_update(claim, lease_expires_at=outcomes.lease_end(settings))

    assert not counter.moved()


def test_a_canary_hold_its_approval_and_a_reject_move_the_version(app, api_client):
    approved = create_batch_id(api_client, 3, canary=1)
    rejected = create_batch_id(api_client, 3, canary=1)
    counters = {batch_id: Counter(app, batch_id) for batch_id in (approved, rejected)}
    drain(app)  # the canary images run, then each batch awaits approval
    for batch_id, counter in counters.items():
        assert counter.moved()
        assert api_client.get(f"/api/generate/batch/{batch_id}").get_json()["status"] == (
            "awaiting_approval"
        )
        with app.app_context():
            held = db.session.scalar(select(Batch.version).where(Batch.id == batch_id))
        assert held == counter.version

    assert api_client.post(f"/api/generate/batch/{approved}/approve").status_code == 200
    assert counters[approved].moved()
    assert api_client.post(f"/api/generate/batch/{rejected}/reject").status_code == 200
    assert counters[rejected].moved()
    assert {status for status, _ in counters[rejected].images.values()} == {"success", "cancelled"}


def test_a_single_photos_changes_count_on_its_own_row(app, api_client):
    from tests.support import photo_body

    answer = api_client.post("/api/generate/photo", json=photo_body())
    assert answer.status_code == 202, answer.get_json()  # queued: PHOTO_WAIT_SECONDS is 0
    drain(app)
    with app.app_context():
        version = db.session.scalar(
            select(Generation.version).where(Generation.id == answer.get_json()["generationId"])
        )
    assert version == 3  # claimed, then finished: each its own change


def test_a_hold_and_its_end_give_the_waiting_images_the_batchs_new_version(app, api_client):
    """A pause, a resume, a canary's hold and its approval change the waiting images' reasons
    (batch_paused, awaiting_approval), so the waiting images take the batch's new version; the
    start of a batch (queued → running) changes no waiting image's answer, and moves none."""
    batch_id = create_batch_id(api_client, 4, concurrency=1)
    counter = Counter(app, batch_id)
    claim = claim_next_image(app, batch_id)  # queued → running, one image claimed
    assert counter.moved()
    waiting = [gid for gid, (status, _) in counter.images.items() if status == "pending"]
    assert len(waiting) == 3 and all(counter.image(gid)[1] == 1 for gid in waiting)

    for action in ("pause", "resume"):
        assert api_client.post(f"/api/generate/batch/{batch_id}/{action}").status_code == 200
        assert counter.moved()
        assert all(counter.changed(gid, "pending") for gid in waiting), action
        assert counter.image(claim.generation.id)[1] < counter.before  # running: untouched

    canary = create_batch_id(api_client, 3, canary=1)
    counter = Counter(app, canary)
    drain(app)  # the canary image runs, then the batch awaits approval
    assert counter.moved()
    held = [gid for gid, (status, _) in counter.images.items() if status == "pending"]
    assert len(held) == 2 and all(counter.image(gid)[1] == counter.version for gid in held)
    assert api_client.post(f"/api/generate/batch/{canary}/approve").status_code == 200
    assert counter.moved()
    assert all(counter.image(gid)[1] == counter.version for gid in held)
