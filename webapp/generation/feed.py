"""Batches changed, said after the commit that changed them: the fan-out of the event streams.

The change counter is kept by database triggers (webapp/versions.py), so no write site says
which batch it changed; this module notices instead, in every session: an ORM flush of a batch
or an image names its batch, and a Core UPDATE, INSERT or DELETE of `batches` or `generations`
(a claim, an outcome, a cancel) counts as "some batch" (ANY). Once the unit commits, what it
noticed is handed to the publisher the app was given (`set_publisher`: webapp/fanout.py
publishes on Redis when REDIS_URL is set); a rollback forgets it. A listener that hears ANY
compares the versions of the batches it watches (one query), so a notice costs each web process
one small read, then one batched read per batch whose version moved.

Nothing is lost when a notice is: the web processes also compare versions on a timer
(webapp/api/event_hub.py), and the events are read from the database, never from a notice.
"""

import logging

from flask import current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.orm import Session

from ..models import Batch, Generation

log = logging.getLogger(__name__)

_CHANGED = "batchgen.batches_changed"
_PUBLISHER = "batchgen.change_publisher"
# "Some batch changed, look at the versions": a Core write names no batch.
ANY = "*"
_TABLES = {"batches", "generations"}


def set_publisher(app, publish):
    """`publish(batch_ids)` is called after each commit that changed batches."""
    app.extensions[_PUBLISHER] = publish


@event.listens_for(Session, "after_flush")
def _note_flushed(session, flush_context):
    for row in (*session.new, *session.dirty, *session.deleted):
        if isinstance(row, Batch):
            session.info.setdefault(_CHANGED, set()).add(row.id)
        elif isinstance(row, Generation) and row.batch_id is not None:
            session.info.setdefault(_CHANGED, set()).add(row.batch_id)


@event.listens_for(Session, "do_orm_execute")
def _note_written(state):
    if not (state.is_update or state.is_delete or state.is_insert):
        return
    table = getattr(state.statement, "table", None)
    if getattr(table, "name", None) in _TABLES:
        state.session.info.setdefault(_CHANGED, set()).add(ANY)


@event.listens_for(Session, "after_commit")
def _publish_changed(session):
    batch_ids = session.info.pop(_CHANGED, None)
    if not batch_ids or not has_app_context():
        return
    publish = current_app.extensions.get(_PUBLISHER)
    if publish is None:
        return
    try:
        publish([ANY] if ANY in batch_ids else sorted(batch_ids))
    except Exception:  # the streams' timer finds the change instead
        log.warning("could not publish %d batch change(s)", len(batch_ids), exc_info=True)


@event.listens_for(Session, "after_rollback")
def _forget_changed(session):
    session.info.pop(_CHANGED, None)
