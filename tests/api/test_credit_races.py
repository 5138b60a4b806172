"""Concurrent requests never spend the same credits twice, and never go below zero."""

import threading

from sqlalchemy import event

from tests.support import ApiClient, batch_body, create_user, make_app, media_files
from webapp.extensions import db

REQUESTS = 30


class ConnectionPeak:
    """The most database connections checked out at once: proof that the requests overlapped."""

    def __init__(self, engine):
        self.lock = threading.Lock()
        self.current = self.peak = 0
        event.listen(engine, "checkout", self.checked_out)
        event.listen(engine, "checkin", self.checked_in)

    def checked_out(self, *_):
        with self.lock:
            self.current += 1
            self.peak = max(self.peak, self.current)

    def checked_in(self, *_):
        with self.lock:
            self.current -= 1


def test_concurrent_batches_accept_exactly_what_the_balance_covers(tmp_path, database_url):
    # A connection per thread, so no request waits for the pool instead of for the database.
    pool = {"pool_size": REQUESTS, "max_overflow": 0, "pool_pre_ping": True}
    app = make_app(tmp_path, database_url, SQLALCHEMY_ENGINE_OPTIONS=pool)
    user_id, token = create_user(app, "racer", credits=15)  # covers 5 one-image batches
    with app.app_context():
        connections = ConnectionPeak(db.engine)
    body = batch_body(1)
    statuses = []
    barrier = threading.Barrier(REQUESTS)

    def submit():
        client = ApiClient(app, user_id, token)  # its own test client, sessions, connections
        barrier.wait()
        statuses.append(client.post("/api/generate/batch", json=body).status_code)

    threads = [threading.Thread(target=submit) for _ in range(REQUESTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    client = ApiClient(app, user_id, token)
    assert sorted(statuses) == [200] * 5 + [402] * (REQUESTS - 5)
    assert connections.peak > 1, "the requests ran one after another, not concurrently"
    assert client.balance() == 0
    assert client.ledger().count(("batch_debit", -3)) == 5
    assert len(media_files(app)) == 5  # refused requests kept no file
