"""Conditional polls (webapp/conditional.py, generation/etags.py): the status answers carry a
weak ETag from the batch's change counter; the same tag while nothing changes, a new one after
every change (claim, success, failure and its refund, cancel and its refunds, pause, approve),
304 with no body only on a match, never a stale 304 after a change."""

import time

import pytest
from sqlalchemy import event

from tests.support import (
    ApiClient,
    claim_next_image,
    create_batch_jobs,
    create_user,
    drain,
    finish_claim,
    photo_body,
    work_next_image,
)
from webapp.extensions import db
from webapp.generation import etags
from webapp.providers import Failed


def _routes(batch_id, job_ids):
    return (
        f"/api/generate/batch/{batch_id}",
        f"/api/generate/batch?jobIds={','.join(job_ids)}",
        f"/api/generate/batch?jobIds={','.join(job_ids)}&batchId={batch_id}",
    )


class Poller:
    """Polls every status route of one batch with the tags it was last answered."""

    def __init__(self, client, batch_id, job_ids):
        self.client = client
        self.routes = _routes(batch_id, job_ids)
        self.tags = {route: self._fresh(route) for route in self.routes}

    def _fresh(self, route):
        answer = self.client.get(route)
        assert answer.status_code == 200
        assert answer.headers["ETag"].startswith('W/"')
        assert answer.headers["Cache-Control"] == "private, no-cache"
        return answer.headers["ETag"]

    def unchanged(self):
        """Every route answers its tag with a 304 and no body."""
        for route, tag in self.tags.items():
            answer = self.client.get(route, headers={"If-None-Match": tag})
            assert answer.status_code == 304, route
            assert answer.data == b""
            assert answer.headers["ETag"] == tag
        return True

    def changed(self):
        """Every route answers its old tag with a 200 and a new tag (kept for the next look)."""
        for route, tag in self.tags.items():
            answer = self.client.get(route, headers={"If-None-Match": tag})
            assert answer.status_code == 200, route
            assert answer.get_json()["results"]
            assert answer.headers["ETag"] != tag
            self.tags[route] = answer.headers["ETag"]
        return True


@pytest.fixture
def still_clock(monkeypatch):
    """The tags' clock stands still (the estimates' window and the links' period), so a tag
    moves only with the batch; `advance(seconds)` moves it."""
    now = [time.time()]
    monkeypatch.setattr(etags.time, "time", lambda: now[0])

    def advance(seconds):
        now[0] += seconds

    return advance


def test_the_tag_holds_while_nothing_changes_and_moves_with_every_change(
    app, api_client, still_clock
):
    batch_id, job_ids = create_batch_jobs(api_client, 4, concurrency=1)
    poller = Poller(api_client, batch_id, job_ids)
    assert poller.unchanged() and poller.unchanged()

    claim = claim_next_image(app, batch_id)
    assert poller.changed() and poller.unchanged()  # a claim
    finish_claim(app, claim)
    assert poller.changed() and poller.unchanged()  # a success
    work_next_image(app, batch_id, Failed("upstream_error", "Try again.", True))
    assert poller.changed() and poller.unchanged()  # a retryable failure: back in line
    work_next_image(app, batch_id, Failed("invalid_input", "No.", False))
    assert poller.changed() and poller.unchanged()  # a failure, refunded
    assert api_client.post(f"/api/generate/batch/{batch_id}/pause").status_code == 200
    assert poller.changed() and poller.unchanged()
    assert api_client.post(f"/api/generate/batch/{batch_id}/cancel").status_code == 200
    assert poller.changed() and poller.unchanged()  # cancelled, the rest refunded

    still_clock(3600)  # a new period of signed links: a kept answer's links would expire
    assert poller.changed() and poller.unchanged()


def test_a_running_batchs_tag_moves_with_the_estimates_window_a_held_ones_does_not(
    app, api_client, still_clock
):
    batch_id, jobs = create_batch_jobs(api_client, 3, canary=1)
    poller = Poller(api_client, batch_id, jobs)
    still_clock(app.config["ETAG_ESTIMATE_SECONDS"])
    assert poller.changed()  # queued: its eta and places move with the clock

    drain(app)  # the canary image runs; the batch awaits approval (held: nothing estimated)
    assert poller.changed()
    still_clock(app.config["ETAG_ESTIMATE_SECONDS"])
    assert poller.unchanged()
    assert api_client.post(f"/api/generate/batch/{batch_id}/approve").status_code == 200
    assert poller.changed()


def test_304_only_on_a_match(app, api_client, still_clock):
    batch_id, jobs = create_batch_jobs(api_client, 2)
    route = f"/api/generate/batch/{batch_id}"
    tag = api_client.get(route).headers["ETag"]
    strong = tag.removeprefix("W/")

    assert api_client.get(route, headers={"If-None-Match": strong}).status_code == 304  # weak
    assert api_client.get(route, headers={"If-None-Match": f'"x", {tag}'}).status_code == 304
    assert api_client.get(route, headers={"If-None-Match": "*"}).status_code == 304
    for other in ('W/"0123456789abcdef01234567"', '"nope"', "", "W/"):
        answer = api_client.get(route, headers={"If-None-Match": other})
        assert answer.status_code == 200 and answer.get_json()["batchId"] == batch_id

    jobs_route = f"/api/generate/batch?jobIds={jobs[0]}"
    jobs_tag = api_client.get(jobs_route).headers["ETag"]
    assert jobs_tag != tag  # another answer, another tag
    both = f"/api/generate/batch?jobIds={jobs[0]},{jobs[1]}"
    assert api_client.get(both, headers={"If-None-Match": jobs_tag}).status_code == 200


def test_another_users_batch_is_a_404_whatever_the_tag(app, api_client, still_clock):
    batch_id, jobs = create_batch_jobs(api_client, 1)
    tag = api_client.get(f"/api/generate/batch/{batch_id}").headers["ETag"]
    other = ApiClient(app, *create_user(app, "bob"))
    for route in _routes(batch_id, [jobs[0]]):
        for sent in (tag, "*"):
            answer = other.get(route, headers={"If-None-Match": sent})
            assert answer.status_code == 404, route
            assert "ETag" not in answer.headers
    bad = api_client.get("/api/generate/batch?jobIds=", headers={"If-None-Match": "*"})
    assert bad.status_code == 400


def test_a_single_photos_poll_is_tagged_by_its_own_changes(app, api_client, still_clock):
    photo = api_client.post("/api/generate/photo", json=photo_body()).get_json()
    route = f"/api/generate/batch?jobIds={photo['generationId']}"
    waiting = api_client.get(route).headers["ETag"]
    assert api_client.get(route, headers={"If-None-Match": waiting}).status_code == 304
    drain(app)
    done = api_client.get(route, headers={"If-None-Match": waiting})
    assert done.status_code == 200 and done.get_json()["results"][0]["status"] == "success"
    assert api_client.get(route, headers={"If-None-Match": done.headers["ETag"]}).status_code == 304


def test_a_poll_reads_its_tag_and_its_answer_outside_any_transaction(
    app, api_client, still_clock
):
    """A finished batch's poll: two SELECTs (the tag's, the answer's), each on a checkout of
    its own in autocommit, given back at once (the request's session, which would wrap its
    reads in BEGIN … ROLLBACK and keep its connection to the request's end, is never used);
    its 304 is the tag's SELECT alone."""
    batch_id, jobs = create_batch_jobs(api_client, 3)
    drain(app)
    route = f"/api/generate/batch?jobIds={','.join(jobs)}"
    tag = api_client.get(route).headers["ETag"]  # the token is cached from here on
    with app.app_context():
        engine = db.engine
    seen = {"checkouts": 0, "statements": []}

    def checkout(*_):
        seen["checkouts"] += 1

    def statement(conn, cursor, text, *_):
        seen["statements"].append(text.split()[0].upper())

    listeners = [
        (engine.pool, "checkout", checkout),
        (engine, "before_cursor_execute", statement),
    ]
    for target, name, function in listeners:
        event.listen(target, name, function)
    try:
        full = api_client.get(route)
        full_seen = (seen["checkouts"], list(seen["statements"]))
        seen.update(checkouts=0, statements=[])
        unchanged = api_client.get(route, headers={"If-None-Match": tag})
        unchanged_seen = (seen["checkouts"], list(seen["statements"]))
    finally:
        for target, name, function in listeners:
            event.remove(target, name, function)

    assert (full.status_code, unchanged.status_code) == (200, 304)
    assert full_seen == (2, ["SELECT", "SELECT"])
    assert unchanged_seen == (1, ["SELECT"])


def test_a_signed_in_pages_poll_reads_through_the_one_connection_its_session_holds(
    app, api_client, still_clock
):
    """The grid's poll with a session cookie: the user is loaded through the request's session,
    which then holds a connection; the tag reads through that one rather than taking a second
    (generation/reads.py), so a request never holds two at once."""
    batch_id, _ = create_batch_jobs(api_client, 2)
    drain(app)
    browser = app.test_client()
    with browser.session_transaction() as session:
        session["_user_id"] = str(api_client.user_id)
    route, fragment = f"/batches/{batch_id}", {"HX-Request": "true"}
    tag = browser.get(route, headers=fragment).headers["ETag"]
    with app.app_context():
        engine = db.engine
    out = {"now": 0, "most": 0}

    def checkout(*_):
        out["now"] += 1
        out["most"] = max(out["most"], out["now"])

    def checkin(*_):
        out["now"] -= 1

    event.listen(engine.pool, "checkout", checkout)
    event.listen(engine.pool, "checkin", checkin)
    try:
        answers = [
            browser.get(route, headers=fragment).status_code,
            browser.get(route, headers={**fragment, "If-None-Match": tag}).status_code,
        ]
    finally:
        event.remove(engine.pool, "checkout", checkout)
        event.remove(engine.pool, "checkin", checkin)

    assert answers == [200, 304]
    assert out["most"] == 1
