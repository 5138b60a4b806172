"""The ETags of the status answers, from the change counter (webapp/versions.py), each told by
one indexed query without building the answer.

A tag is weak (`W/"…"`): two answers under one tag mean the same, not byte for byte the same.
It is the digest of everything that makes two answers differ:

- the versions of the batches the answer is about (a single photo: its own row's version),
  which move in the transaction of every state change of the batch or its images;
- what was asked (the job ids in their order, the batchId; the route's kind) and by whom;
- the signed links' period (SIGNED_URL_SECONDS): a link in a kept answer stays valid;
- while a batch is queued or running, the estimates' window (ETAG_ESTIMATE_SECONDS): its `eta`
  and its waiting images' places move with the clock and with other users' batches, which no
  version of this batch counts, so such an answer is asked again at least once a window. A held
  batch (paused, awaiting approval) and a finished one have no moving estimate;
- the grid fragment's other parts: the header's balance and name, and whether a retry batch
  of its failed images exists.

The tags are read as the polls' answers are (generation/reads.py): one statement in autocommit,
outside the request's session and its transaction. Each function answers None when the answer
would not be the ordinary one (an unknown or another user's batch or image): the route then
answers as it always does. The tag is read before the answer is built, so an answer is never
labelled with a newer state than its own; at worst an answer carries an older tag, and the next
poll gets it again.
"""

import hashlib
import time

from flask import current_app
from sqlalchemy import bindparam, exists, func, select
from sqlalchemy.orm import aliased

from ..models import Batch, BatchStatus, Generation, GenerationStatus, User, looks_like_id
from .reads import autocommit

_retry = aliased(Batch, name="retry")


def _windows(moving):
    """The clock's part of a tag: the links' period, and the estimates' window if `moving`."""
    config = current_app.config
    now = time.time()
    parts = [f"l{int(now // config['SIGNED_URL_SECONDS'])}"]
    if moving:
        parts.append(f"e{int(now // max(config['ETAG_ESTIMATE_SECONDS'], 0.001))}")
    return parts


def _tag(*parts):
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=12).hexdigest()
    return f'W/"{digest}"'


def _rows(statement):
    with autocommit() as connection:
        return connection.execute(statement).all()


def _first(statement):
    rows = _rows(statement)
    return rows[0] if rows else None


def _moving(status):
    return status in BatchStatus.ACTIVE


def batch_tag(user_id, batch_id):
    """The tag of GET /api/generate/batch/<batch_id> for this user; None if not theirs."""
    if not looks_like_id(batch_id):
        return None
    row = _first(
        select(Batch.version, Batch.status).where(Batch.id == batch_id, Batch.user_id == user_id)
    )
    if row is None:
        return None
    return _tag("batch", user_id, batch_id, row.version, *_windows(_moving(row.status)))


def grid_tag(user_id, batch_id):
    """The tag of the batch page's grid fragment: the batch's, the header's balance and name,
    and whether its failed images were retried; None if the batch is not the user's."""
    if not looks_like_id(batch_id):
        return None
    retried = exists().where(_retry.parent_id == Batch.id).correlate(Batch)
    row = _first(
        select(
            Batch.version, Batch.status, User.credits, User.name, User.display_name, retried
        )
        .join(User, User.id == Batch.user_id)
        .where(Batch.id == batch_id, Batch.user_id == user_id)
    )
    if row is None:
        return None
    moving = _moving(row.status)
    return _tag("grid", user_id, batch_id, *row, *_windows(moving))


# Each job's batch version (a photo's own), built once: a poll binds its ids and user.
_JOB_VERSIONS = (
    select(
        Generation.id,
        Generation.batch_id,
        func.coalesce(Batch.version, Generation.version),
        Batch.status,
        Generation.status,
    )
    .outerjoin(Batch, Batch.id == Generation.batch_id)
    .where(
        Generation.id.in_(bindparam("job_ids", expanding=True)),
        Generation.user_id == bindparam("user_id"),
    )
)


def jobs_tag(user_id, job_ids, batch_id=None):
    """The tag of GET /api/generate/batch?jobIds=…[&batchId=…]; None unless every job is the
    user's (the answer is then a 404). One query: each job's batch version (a photo's own)."""
    with autocommit() as connection:
        rows = connection.execute(_JOB_VERSIONS, {"job_ids": job_ids, "user_id": user_id}).all()
    if len(rows) != len(job_ids):
        return None
    versions = {}
    moving = False
    for job_id, job_batch, version, batch_status, status in rows:
        versions[job_batch or job_id] = version
        if job_batch:
            moving = moving or _moving(batch_status)
        else:  # a photo: its reason moves while it waits or runs
            moving = moving or status not in GenerationStatus.TERMINAL
    if batch_id and batch_id not in versions:  # the eta is of the batch named
        named = _first(
            select(Batch.version, Batch.status).where(
                Batch.id == batch_id, Batch.user_id == user_id
            )
        )
        if named is None:
            return None
        versions[batch_id] = named.version
        moving = moving or _moving(named.status)
    held = sorted(versions.items())
    return _tag("jobs", user_id, ",".join(job_ids), batch_id, held, *_windows(moving))
