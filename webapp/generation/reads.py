"""Read-only polls without an ORM unit of work: one Core query on a connection in autocommit.

A status poll only reads. Through the request's session it also paid for a transaction it
never needed (BEGIN before its SELECT, ROLLBACK at the request's end: two more round trips
to the database, each a wait for the worker's thread) and for the ORM's bookkeeping of what it
read. Here the rows come as plain Rows from one SELECT on a pooled connection in autocommit,
which goes back to the pool at once. The answers are built from them by the same presenters,
so they are the same answers (tests/api/test_status_reads.py compares them, state by state).

Each read is one statement, so it sees one snapshot of the database, as the session's did.
"""

from contextlib import contextmanager

from sqlalchemy import bindparam, select

from ..extensions import db
from ..models import Generation, User
from .presenters import RESULT_COLUMNS


@contextmanager
def autocommit():
    """A pooled connection outside any transaction (no BEGIN, no ROLLBACK), for one read, given
    back at once; or, when the request's session already holds one (a session cookie's user was
    loaded through it, say), that connection, in its transaction. So a request never holds two
    connections at once: under gevent, a thousand requests that each held one and waited for a
    second would empty the pool and all wait on it."""
    session = db.session()  # the request's Session, not its scoped proxy
    if session.in_transaction():
        yield session.connection()
        return
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        yield connection


# Built once: a poll only binds its ids and user (the statement's construction, its subqueries
# included, cost more than the database's own work on a 50-id poll).
_RESULT_ROWS = select(*RESULT_COLUMNS).where(
    Generation.id.in_(bindparam("job_ids", expanding=True)),
    Generation.user_id == bindparam("user_id"),
)


def result_rows(job_ids, user_id):
    """{generation id: row of RESULT_COLUMNS} for those of `job_ids` that are the user's."""
    with autocommit() as connection:
        rows = connection.execute(_RESULT_ROWS, {"job_ids": list(job_ids), "user_id": user_id})
        return {row.id: row for row in rows}


def balance(user_id):
    """The user's credits now (None for a user that is gone)."""
    with autocommit() as connection:
        return connection.scalar(select(User.credits).where(User.id == user_id))
